//! A segment: one store file and one index file named by the segment's base
//! offset, `<base>.store` and `<base>.index` (the base zero-padded to 20
//! digits so that names sort like numbers). Entry `i` of the index is the
//! record at offset `base + i`.

use std::path::{Path, PathBuf};

use bytes::Buf;
use bytes::Bytes;

use super::config::{Durability, LogConfig};
use super::error::{LogError, Result};
use super::fsops;
use super::index::Index;
use super::record::{
    FLAG_BATCH_CONTINUES, FRAME_HEADER, FRAME_PREFIX, FrameView, MAX_STORED_FRAME, Payload, Record, RecordRef,
    decode_frame, encode_frame, frame_body_len, split_frames,
};
use super::recovery::{self, Recovered};
use super::store::Store;

pub const STORE_SUFFIX: &str = "store";
/// The bytes of a frame's header that `end_batch_at` rewrites: crc, version, flags.
const HEADER_REWRITTEN: std::ops::Range<usize> = 4..10;
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Whether `bytes` more in `records` records stay within the limits.
    pub fn has_room(&self, bytes: u64, records: u32, max_segment_bytes: u64) -> bool {
        let entries_fit = u64::from(self.index.len()) + u64::from(records) <= u64::from(self.index.capacity());
        entries_fit && self.store.size() + bytes <= max_segment_bytes
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

    /// Reads the record at `offset`, which must be below `next_offset`:
    /// one positioned read of exactly its frame, checked.
    pub fn read(&self, offset: u64) -> Result<Record> {
        let (pos, len) = self.frame_span(offset)?;
        let frame = Bytes::from(self.store.read_at(pos, len)?);
        let view = self.check_frame(&frame, pos, offset)?;
        let (timestamp_ms, attributes) = (view.timestamp_ms, view.attributes);
        // `advance` keeps the buffer as it is; `slice` would allocate a shared header.
        let mut value = frame;
        value.advance(FRAME_HEADER);
        Ok(Record {
            offset,
            timestamp_ms,
            attributes,
            value,
        })
    }

    /// Like `read`, but hands `f` the record where it lies (in the active
    /// segment's read map) instead of copying it out first.
    pub fn read_with<R>(&self, offset: u64, f: impl FnOnce(RecordRef<'_>) -> R) -> Result<R> {
        let (pos, len) = self.frame_span(offset)?;
        self.store.with_bytes(pos, len, |frame| {
            let view = self.check_frame(frame, pos, offset)?;
            Ok(f(RecordRef {
                offset,
                timestamp_ms: view.timestamp_ms,
                attributes: view.attributes,
                value: view.value,
            }))
        })?
    }

    /// Where the frame of `offset`, which must be below `next_offset`, lies
    /// and how long it is.
    fn frame_span(&self, offset: u64) -> Result<(u64, usize)> {
        let published = self.index.len();
        let i = offset
            .checked_sub(self.base)
            .and_then(|i| u32::try_from(i).ok())
            .filter(|i| *i < published)
            .ok_or_else(|| self.corrupt(0, Some(offset), "record missing from the index".into()))?;
        let pos = self.slot_position(i)?;
        let end = self.end_of(i, published)?;
        // `end_of` checked that the frame ends after it starts and is not too long.
        Ok((pos, (end - pos) as usize))
    }

    /// Decodes the one frame `frame` must be: checksummed, and holding `offset`.
    fn check_frame<'a>(&self, frame: &'a [u8], pos: u64, offset: u64) -> Result<FrameView<'a>> {
        let view =
            decode_frame(frame, self.max_frame_len).map_err(|e| self.corrupt(pos, Some(offset), e.to_string()))?;
        if view.offset != offset || view.frame_len != frame.len() {
            let reason = format!(
                "frame at this position holds offset {} in {} bytes",
                view.offset, view.frame_len
            );
            return Err(self.corrupt(pos, Some(offset), reason));
        }
        Ok(view)
    }

    /// Reads records from `from`, stopping before `upto`, after `max_records`,
    /// or once `max_bytes` of frames are gathered. With `take_one`, the first
    /// record comes whatever its size, so that a reader makes progress.
    pub fn read_chunk(&self, from: u64, upto: u64, max_records: u32, max_bytes: u64, take_one: bool) -> Result<Chunk> {
        let published = self.index.len();
        let first = u32::try_from(from.saturating_sub(self.base)).unwrap_or(u32::MAX);
        let last_excl = upto.saturating_sub(self.base).min(u64::from(published)) as u32;
        if first >= last_excl || max_records == 0 {
            return Ok(Chunk::default());
        }
        let wanted = (last_excl - first).min(max_records);
        let start = self.slot_position(first)?;
        // The largest count whose frames stay within the budget: positions grow with offsets.
        let (mut lo, mut hi) = (u32::from(take_one), wanted);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.span_from(start, first + mid - 1, published)? <= max_bytes {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let count = lo;
        if count == 0 {
            return Ok(Chunk::default());
        }
        let len = self.span_from(start, first + count - 1, published)?;
        let buf = self.store.read_at(start, len as usize)?;
        let frames = Bytes::from(buf);
        let records = split_frames(frames.clone(), from, self.max_frame_len)
            .map_err(|(at, offset, err)| self.corrupt(start + at as u64, Some(offset), err.to_string()))?;
        debug_assert_eq!(records.len(), count as usize);
        Ok(Chunk { frames, records })
    }

    /// Bytes from `start` to the end of entry `i`'s frame, checked: an index
    /// whose positions do not grow is corrupt, not a reason to underflow.
    fn span_from(&self, start: u64, i: u32, published: u32) -> Result<u64> {
        let end = self.end_of(i, published)?;
        end.checked_sub(start).ok_or_else(|| {
            self.corrupt(
                start,
                Some(self.base + u64::from(i)),
                format!("index positions go backwards (frame ends at {end})"),
            )
        })
    }

    fn slot_position(&self, i: u32) -> Result<u64> {
        let (_, pos) = self.index.slot(i);
        if pos >= self.store.size() {
            return Err(self.corrupt(
                pos,
                Some(self.base + u64::from(i)),
                "index points past the store".into(),
            ));
        }
        Ok(pos)
    }

    /// Where the frame of entry `i` ends: the next entry's position, or for the
    /// newest entry its own length field, bounded before it is trusted.
    fn end_of(&self, i: u32, published: u32) -> Result<u64> {
        let pos = self.slot_position(i)?;
        let offset = Some(self.base + u64::from(i));
        let end = if i + 1 < published {
            self.index.slot(i + 1).1
        } else {
            let prefix = self.store.read_at(pos, FRAME_PREFIX)?;
            pos.saturating_add(FRAME_PREFIX as u64)
                .saturating_add(u64::from(frame_body_len(&prefix)))
        };
        if end <= pos || end - pos > self.max_frame_len as u64 || end > self.store.size() {
            return Err(self.corrupt(pos, offset, format!("impossible frame end {end}")));
        }
        Ok(end)
    }

    pub fn corrupt(&self, position: u64, offset: Option<u64>, reason: String) -> LogError {
        LogError::Corrupt {
            file: self.store.path().to_path_buf(),
            position,
            offset,
            reason,
        }
    }

    /// Makes a segment that may be sealed ready to take appends again (a cut
    /// is about to make it the last one): the fallible allocation comes
    /// before any change, so a full disk leaves the log as it was.
    pub fn prepare_for_appends(&self) -> Result<()> {
        Ok(self.index.reserve()?)
    }

    /// Cuts the segment so that it ends before `offset`, synced, and makes
    /// it the active one. Only the writer calls this, after
    /// `prepare_for_appends`. Readers of kept records are never shown a
    /// changing byte: the store is cut and the last frame rewritten while
    /// they are excluded (see `store`), and index slots are not zeroed.
    pub fn cut_from(&self, offset: u64) -> Result<()> {
        let written = self.index.len();
        let keep = offset
            .checked_sub(self.base)
            .and_then(|keep| u32::try_from(keep).ok())
            .filter(|keep| *keep <= written)
            .ok_or_else(|| self.corrupt(0, Some(offset), format!("a cut at {offset} is outside the segment")))?;
        let cut = if keep < written {
            self.index.slot(keep).1
        } else {
            self.store.size()
        };
        // The record that will end the log is made the end of its batch
        // first, durably: shortened first, a crash would leave a batch with
        // no end, which recovery drops whole, kept records and all.
        if let Some(last_kept) = keep.checked_sub(1) {
            self.end_batch_at(last_kept, cut)?;
        }
        self.index.cut_to(keep);
        // Slots past the cut point's own go back to zero before the index is
        // flushed: left stale on disk, recovery after a power cut could take
        // a run of them for entries of the records appended after the cut.
        // Slot `keep` stays: a reader of the last kept record reads its end
        // there, and the next append writes the same position into it.
        self.index.clear_slots(keep.saturating_add(1), written);
        self.store.cut_to(cut)?;
        self.store.sync()?;
        self.index.flush()?;
        // Best effort: without the maps appends and reads use positioned I/O.
        if let Err(e) = self.map_while_active() {
            tracing::warn!(error = %e, base = self.base, "cannot map the cut segment for appends");
        }
        Ok(())
    }

    /// After a cut inside a batch the last record kept would still say that
    /// the batch goes on, and recovery would take what is left of it for a
    /// torn write and drop it on the next open. Rewrites entry `i`'s frame,
    /// which ends at `end`, (flags and checksum, in place, with readers
    /// excluded) as the end of its batch, and syncs it.
    fn end_batch_at(&self, i: u32, end: u64) -> Result<()> {
        let pos = self.index.slot(i).1;
        let len = end.saturating_sub(pos) as usize;
        let buf = self.store.read_at(pos, len)?;
        // A frame that does not decode is left for recovery and readers to report.
        let Ok(view) = decode_frame(&buf, self.max_frame_len) else {
            return Ok(());
        };
        if view.flags & FLAG_BATCH_CONTINUES == 0 {
            return Ok(());
        }
        let mut frame = Vec::with_capacity(view.frame_len);
        let payload = Payload {
            attributes: view.attributes,
            value: view.value,
        };
        encode_frame(
            &mut frame,
            view.offset,
            view.timestamp_ms,
            view.flags & !FLAG_BATCH_CONTINUES,
            payload,
        );
        debug_assert_eq!(frame.len(), view.frame_len);
        // Only the checksum, version and flags differ.
        let changed = frame.get(HEADER_REWRITTEN).unwrap_or_default();
        self.store.rewrite_at(pos + HEADER_REWRITTEN.start as u64, changed)?;
        Ok(self.store.sync()?)
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<()> {
        self.store.sync()?;
        self.index.flush()?;
        Ok(())
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
