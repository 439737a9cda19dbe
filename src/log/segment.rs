//! A segment: one store file and one index file named by the segment's base
//! offset, `<base>.store` and `<base>.index` (the base zero-padded to 20
//! digits so that names sort like numbers). Entry `i` of the index is the
//! record at offset `base + i`.
//!
//! The segment owns both files: `store` (the frames, `store.rs`) and `index`
//! (offset -> position, `index.rs`) are private to it, and so is the
//! `recovery` of its tail on open; the log above asks the segment, never
//! its files. Reading is in `reading`, cutting the tail in `cutting`.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::config::{Durability, LogConfig};
use super::error::{LogError, Result};
use super::fsops;
use super::record::{FRAME_HEADER, FRAME_PREFIX, MAX_STORED_FRAME, Record, frame_body_len};
// For the files' own modules below, which name these as `super::...`.
use super::{error, record};

mod cutting;
pub(super) mod index;
mod reading;
mod recovery;
mod store;

use index::Index;
pub use recovery::Recovered;
use store::Store;

pub const STORE_SUFFIX: &str = "store";
pub const INDEX_SUFFIX: &str = "index";

#[derive(Debug)]
pub struct Segment {
    base: u64,
    store: Store,
    index: Index,
    max_frame_len: usize,
    /// What the store is allocated and mapped to while the segment is
    /// active; `None` keeps positioned writes. With `Durability::Always`
    /// every append is synced, and syncing pages written through a map into
    /// allocated-ahead blocks measured several times slower per fdatasync
    /// than syncing positioned writes.
    mapped_appends: Option<u64>,
    /// How much of the active store readers see through a map.
    read_map_bytes: u64,
}

/// A recovered active segment, or the error recovery stopped at and the
/// segment it stopped in (see `Segment::open_active`).
type Recovering = std::result::Result<(Segment, Recovered), (LogError, Segment)>;

/// Whole frames read in one go, checked, with the records they hold.
#[derive(Debug, Default)]
pub struct Chunk {
    pub frames: Bytes,
    pub records: Vec<Record>,
}

pub fn segment_path(dir: &Path, base: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{base:020}.{suffix}"))
}

/// The base offset a segment file's name gives, if it is a segment file.
pub fn parse_segment_name(name: &str) -> Option<(u64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if suffix != STORE_SUFFIX && suffix != INDEX_SUFFIX {
        return None;
    }
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Offsets stay below 2^63 (the API's bound), so that a base plus a
    // segment's records never overflows: a larger name is not ours.
    let base: u64 = stem.parse().ok()?;
    (base <= i64::MAX as u64).then_some((base, suffix))
}

impl Segment {
    fn assemble(base: u64, store: Store, index: Index, config: &LogConfig) -> Segment {
        Segment {
            base,
            store,
            index,
            max_frame_len: MAX_STORED_FRAME,
            mapped_appends: (config.durability != Durability::Always).then_some(config.max_segment_bytes),
            read_map_bytes: config.max_segment_bytes,
        }
    }

    /// The active segment's files: the index at `capacity` entries (or
    /// longer, if the file already is).
    fn open_files(dir: &Path, base: u64, capacity: u32) -> Result<(Store, Index, bool)> {
        let store = Store::open(&segment_path(dir, base, STORE_SUFFIX))?;
        let (index, index_existed) = Index::open(&segment_path(dir, base, INDEX_SUFFIX), capacity, true)?;
        Ok((store, index, index_existed))
    }

    /// A new, empty segment whose files and directory entry are on disk.
    /// If that fails half-way, what it created is removed again: an empty
    /// segment file left behind would end the log at its base on the next
    /// open. Fails with `PartlyCreated` if even that removal fails.
    pub fn create(dir: &Path, base: u64, config: &LogConfig) -> Result<Segment> {
        Self::create_files(dir, base, config).map_err(|error| {
            let removed = [STORE_SUFFIX, INDEX_SUFFIX]
                .iter()
                .map(|suffix| segment_path(dir, base, suffix))
                .filter(|path| path.exists())
                .try_for_each(|path| fsops::remove(&path))
                .and_then(|()| fsops::sync_dir(dir));
            match removed {
                Ok(()) => error,
                Err(left) => LogError::PartlyCreated {
                    base,
                    error: Box::new(error),
                    left: left.to_string(),
                },
            }
        })
    }

    fn create_files(dir: &Path, base: u64, config: &LogConfig) -> Result<Segment> {
        let (store, index, _) = Self::open_files(dir, base, config.index_capacity())?;
        let segment = Segment::assemble(base, store, index, config);
        segment.map_while_active()?;
        segment.store.sync()?;
        segment.index.sync_file()?;
        fsops::sync_dir(dir)?;
        Ok(segment)
    }

    /// A sealed segment holding exactly `count` records (its successor's base
    /// tells). Its index is trusted if its last entry checks out; otherwise it
    /// is rebuilt from the store, and a store that does not hold exactly
    /// `count` sound records is reported as corrupt.
    pub fn open_sealed(dir: &Path, base: u64, count: u64, config: &LogConfig) -> Result<Segment> {
        let store = Store::open(&segment_path(dir, base, STORE_SUFFIX))?;
        // Every frame takes at least a header: a count the store cannot
        // hold is refused before an index is sized for it.
        let count = u32::try_from(count)
            .ok()
            .filter(|c| u64::from(*c).saturating_mul(FRAME_HEADER as u64) <= store.size())
            .ok_or_else(|| {
                let reason = format!("a sealed segment of {} bytes cannot hold {count} records", store.size());
                LogError::Corrupt {
                    file: store.path().to_path_buf(),
                    position: 0,
                    offset: None,
                    reason,
                }
            })?;
        let (index, index_existed) =
            Index::open_sealed(&segment_path(dir, base, INDEX_SUFFIX), count, config.index_capacity())?;
        let segment = Segment::assemble(base, store, index, config);
        if !(index_existed
            && recovery::sealed_index_checks_out(&segment.store, &segment.index, base, count, segment.max_frame_len)?)
        {
            segment.index.reserve()?;
            recovery::rebuild_sealed(&segment.store, &segment.index, base, count, segment.max_frame_len)?;
        }
        segment.index.set_len(count);
        // An index an older version left at full size takes no more room than its entries.
        segment.trim_index();
        Ok(segment)
    }

    /// The last segment: its tail is checked and anything torn is cut.
    ///
    /// Its index gets the capacity a new segment gets, or more if the file
    /// is longer. A store written with a larger segment size may hold more
    /// records than that, which recovery finds only as it indexes them (the
    /// index may be missing or short): if it runs out of room, the index is
    /// closed (its entries flushed and kept) and reopened as large as the
    /// store could need, one entry per smallest frame. Not at once: that
    /// allocates far more than a store of real records takes.
    pub fn open_active(dir: &Path, base: u64, config: &LogConfig) -> Result<(Segment, Recovered)> {
        let first = Self::recover_active(dir, base, config, config.index_capacity())?;
        let segment = match first {
            Ok(recovered) => recovered,
            Err((error, segment)) => {
                let most_records = segment.store.size() / FRAME_HEADER as u64;
                let capacity = u32::try_from(most_records).unwrap_or(u32::MAX);
                if segment.index.len() < segment.index.capacity() || capacity <= segment.index.capacity() {
                    return Err(error);
                }
                tracing::warn!(
                    segment = base,
                    capacity,
                    "the active store holds more records than its index has room for; resizing the index"
                );
                drop(segment);
                Self::recover_active(dir, base, config, capacity)?.map_err(|(error, _)| error)?
            }
        };
        segment.0.map_while_active()?;
        Ok(segment)
    }

    /// Opens the active segment with an index of `capacity` entries and
    /// recovers its tail. A failed recovery hands the segment back with its
    /// error, for `open_active` to look at.
    fn recover_active(dir: &Path, base: u64, config: &LogConfig, capacity: u32) -> Result<Recovering> {
        let (store, index, index_existed) = Self::open_files(dir, base, capacity)?;
        let segment = Segment::assemble(base, store, index, config);
        let recovered = recovery::recover_tail(
            &segment.store,
            &segment.index,
            base,
            segment.max_frame_len,
            index_existed,
        );
        Ok(match recovered {
            Ok(report) => Ok((segment, report)),
            Err(error) => Err((error, segment)),
        })
    }

    /// The active segment's store is read through a map, and written
    /// through one unless every append is synced (see `store`).
    fn map_while_active(&self) -> Result<()> {
        // Best effort: without the map readers use positioned reads.
        if let Err(e) = self.store.map_for_reads(self.read_map_bytes) {
            tracing::warn!(error = %e, base = self.base, "cannot map the active store for reads");
        }
        match self.mapped_appends {
            Some(capacity) => self.store.map_for_appends(capacity)?,
            None => self.store.zero_ahead_up_to(self.read_map_bytes),
        }
        Ok(())
    }

    /// The segment stops taking appends: its store is cut back to its data.
    pub fn seal(&self) -> Result<()> {
        Ok(self.store.seal()?)
    }

    /// Cuts a sealed segment's index file to its entries, once no append can
    /// reach it (its successor is in the log). Best effort: a longer index
    /// still opens, and a clean close cuts it too.
    pub fn trim_index(&self) {
        if let Err(e) = self.index.trim() {
            tracing::warn!(error = %e, base = self.base, "cannot cut a sealed index to its entries");
        }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// One past the last record this segment holds.
    pub fn next_offset(&self) -> u64 {
        self.base + u64::from(self.index.len())
    }

    pub fn size_bytes(&self) -> u64 {
        self.store.size()
    }

    /// Store bytes that hold the records below `next` (all of them if it is
    /// past this segment's end): where a snapshot of the log up to `next`
    /// ends in this segment.
    pub fn bytes_below(&self, next: u64) -> u64 {
        if next <= self.base {
            0
        } else if next < self.next_offset() {
            let i = u32::try_from(next - self.base).unwrap_or(u32::MAX);
            self.index.position(i).unwrap_or(0)
        } else {
            self.size_bytes()
        }
    }

    /// Exactly `len` store bytes at `pos` (a snapshot's raw frames); asking
    /// past `size_bytes` is an error.
    pub fn read_bytes(&self, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.store.read_at(pos, len)
    }

    /// Whether the log's background thread has work in this (active)
    /// segment's store (see `Store::work_ahead`).
    pub fn wants_work_ahead(&self) -> bool {
        self.store.wants_work_ahead()
    }

    /// The store work done off the writer's path, by the background thread.
    pub fn work_ahead(&self) {
        self.store.work_ahead()
    }

    /// Whether `bytes` more in `records` records stay within the limits.
    pub fn has_room(&self, bytes: u64, records: u32, max_segment_bytes: u64) -> bool {
        let entries_fit = u64::from(self.index.len()) + u64::from(records) <= u64::from(self.index.capacity());
        entries_fit && self.store.size() + bytes <= max_segment_bytes
    }

    /// `has_room`, and the store takes the bytes without growing its file
    /// (see `Store::appends_in_place`).
    pub fn has_room_in_place(&self, bytes: u64, records: u32, max_segment_bytes: u64) -> bool {
        self.has_room(bytes, records, max_segment_bytes) && self.store.appends_in_place(bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Appends `count` encoded frames held back to back in `frames`.
    /// Only the log's writer calls this.
    pub fn append(&self, frames: &[u8], count: u32) -> Result<()> {
        // Checked before a byte is written: a batch the index could not
        // take whole would leave frames in the store that no offset was
        // given for.
        if u64::from(self.index.len()) + u64::from(count) > u64::from(self.index.capacity()) {
            let full = format!(
                "index {} has room for {} more entries, not {count}",
                self.index.path().display(),
                self.index.capacity() - self.index.len()
            );
            return Err(LogError::Io(std::io::Error::other(full)));
        }
        let start = self.store.append(frames)?;
        let mut at = 0usize;
        for _ in 0..count {
            self.index.push(start + at as u64)?;
            let len = frames.get(at..).map(frame_body_len).unwrap_or(0);
            at += FRAME_PREFIX + len as usize;
        }
        debug_assert_eq!(at, frames.len(), "frames and count must agree");
        Ok(())
    }

    pub fn corrupt(&self, position: u64, offset: Option<u64>, reason: String) -> LogError {
        LogError::Corrupt {
            file: self.store.path().to_path_buf(),
            position,
            offset,
            reason,
        }
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<()> {
        self.sync_records()?;
        self.flush_index()
    }

    /// Makes the records written so far durable (fdatasync of the store;
    /// an index that lags behind is rebuilt from them on open).
    pub fn sync_records(&self) -> Result<()> {
        Ok(self.store.sync()?)
    }

    /// Writes the index's mapped entries back to its file (msync).
    pub fn flush_index(&self) -> Result<()> {
        Ok(self.index.flush()?)
    }

    /// Deletes both files, the index first: a crash in between leaves a
    /// store without its index, which opens (the index is rebuilt), never
    /// the reverse. Readers holding this segment keep reading the unlinked
    /// files until they let go. The caller syncs the directory.
    pub fn remove_files(&self) -> Result<()> {
        self.index.mark_removed();
        fsops::remove(self.index.path())?;
        self.store.mark_removed();
        fsops::remove(self.store.path())?;
        Ok(())
    }
}
