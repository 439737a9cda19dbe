//! A segment's index file: a memory-mapped array of fixed 12-byte entries,
//! entry `i` being the record at `base + i`:
//!
//! ```text
//! | relative offset u32 LE | position in the store u64 LE |
//! ```
//!
//! The file is grown to its capacity and mapped when the segment opens
//! (the segment sizes it: as many entries as its store can hold, see
//! `LogConfig::index_capacity`), cut back to its entries when the segment
//! is sealed (`trim`: the map stays, and nothing reads or writes past the
//! entries until `reserve` regrows the file) and when the index is
//! dropped. A sealed index is opened at exactly its entries, whatever
//! length an older version left it at, but mapped at the capacity an
//! active segment gets: a cut or a reset may make it active again, and
//! readers keep reading through the map, so it cannot be remapped then. Unwritten slots are zero; after an
//! unclean stop the zero tail is found and dropped by recovery.
//!
//! One writer pushes entries past `len`; readers read entries below `len`,
//! which is published with release ordering after the entry is written.
//! Every slot is read and written as three 32-bit atomic words (an entry is
//! 4-byte aligned in the page-aligned map), so a reader that loaded `len`
//! before a cut lowered it can still read the slots it saw without a data
//! race. A cut lowers `len` first and never zeroes a slot that a reader of
//! a kept record may still read: slot `len` (where the last kept record's
//! frame ends) keeps its value, and the next push at the cut writes the same
//! position into it (the store is cut exactly there). The slots past it are
//! zeroed before the index is flushed, so that no stale run of them can be
//! taken for entries after a power cut; only readers of cut records read
//! them, and those look again (`Bounds::across_cuts`). Recovery zeroes
//! what it drops the same way. (`tests/loom_log_protocol.rs` models this.)

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use memmap2::{MmapMut, MmapOptions};

use super::fsops;

pub const ENTRY_BYTES: u64 = 12;

/// How `open` sizes the file.
enum Sizing {
    /// At least the capacity asked for; a longer file keeps its entries.
    AtLeast,
    /// Exactly this many entries (a sealed index of known length), mapped
    /// at the capacity asked for: a cut or a reset may make the segment
    /// active again, and the map cannot grow under readers.
    Exactly(u32),
}

#[derive(Debug)]
pub(super) struct Index {
    file: File,
    path: PathBuf,
    map: Option<MmapMut>,
    base_ptr: *mut u8,
    capacity: u32,
    len: AtomicU32,
    /// The file was removed: dropping the index only closes it.
    removed: AtomicBool,
}

// SAFETY: the mapping is owned by `map` and lives as long as the Index; its
// bytes are only ever accessed through atomic words (`word`).
unsafe impl Send for Index {}
unsafe impl Sync for Index {}

/// 32-bit words per entry.
const ENTRY_WORDS: usize = (ENTRY_BYTES / 4) as usize;

impl Index {
    /// Opens (or creates) the index, grows it to `capacity` entries and maps
    /// it. `len` starts at zero: the caller decides how many entries are good.
    /// Returns whether the file already existed.
    /// With `reserve`, the file's blocks are allocated at once (see
    /// `reserve`): for indexes that will be written to.
    pub(super) fn open(path: &Path, capacity: u32, reserve: bool) -> io::Result<(Index, bool)> {
        Self::open_sized(path, capacity, reserve, Sizing::AtLeast)
    }

    /// Opens a sealed segment's index of exactly `count` entries, mapped
    /// for at least `capacity` (what the segment takes should it become
    /// active again; the file grows to it only then, see `reserve`). A
    /// shorter file is grown (sparse) to `count` entries; the entries of a
    /// longer one (written by older versions at full size) past `count`
    /// are never read, and `trim` cuts them.
    pub(super) fn open_sealed(path: &Path, count: u32, capacity: u32) -> io::Result<(Index, bool)> {
        let count = count.max(1);
        Self::open_sized(path, capacity.max(count), false, Sizing::Exactly(count))
    }

    fn open_sized(path: &Path, capacity: u32, reserve: bool, sizing: Sizing) -> io::Result<(Index, bool)> {
        let existed = path.exists();
        let file = fsops::open(path)?;
        let on_disk = file.metadata().map_err(|e| fsops::naming(path, e))?.len();
        let wanted = u64::from(capacity) * ENTRY_BYTES;
        let (file_size, map_size) = match sizing {
            // Never shrink here: a file longer than the configured size keeps its entries.
            Sizing::AtLeast => (on_disk.max(wanted), on_disk.max(wanted)),
            Sizing::Exactly(count) => (u64::from(count) * ENTRY_BYTES, wanted),
        };
        debug_assert!(file_size <= map_size);
        if on_disk < file_size {
            fsops::set_len(&file, path, file_size)?;
        }
        if reserve {
            fsops::allocate(&file, path, 0, file_size)?;
        }
        let capacity = (map_size / ENTRY_BYTES).min(u64::from(u32::MAX)) as u32;
        let len = usize::try_from(u64::from(capacity) * ENTRY_BYTES)
            .map_err(|_| fsops::naming(path, io::Error::other("index too large to map")))?;
        // SAFETY: the file is ours (the data directory is locked) and holds
        // every entry below `len` as long as this map exists: it is only cut
        // to the entries (`trim`, `Drop`), and regrown before more are
        // written (`reserve`). A sealed index's map may reach past the end
        // of its file; nothing touches those slots until `reserve`.
        let mut map = unsafe { MmapOptions::new().len(len).map_mut(&file) }.map_err(|e| fsops::naming(path, e))?;
        // Entries are touched one page at a time; readahead around each
        // fault would only fill the page cache with zeros.
        map.advise(memmap2::Advice::Random)
            .map_err(|e| fsops::naming(path, e))?;
        let base_ptr = map.as_mut_ptr();
        let index = Index {
            file,
            path: path.to_path_buf(),
            map: Some(map),
            base_ptr,
            capacity,
            len: AtomicU32::new(0),
            removed: AtomicBool::new(false),
        };
        Ok((index, existed && on_disk > 0))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Entries published to readers.
    pub(super) fn len(&self) -> u32 {
        self.len.load(Ordering::Acquire)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Word `w` of the map, which must lie inside it.
    fn word(&self, w: usize) -> &AtomicU32 {
        assert!(
            w < self.capacity as usize * ENTRY_WORDS,
            "index word {w} is past the map"
        );
        // SAFETY: inside the map (checked above), which lives as long as
        // `self`; the map is page-aligned, so every word is 4-byte aligned;
        // all accesses to the map's bytes go through such atomic words.
        unsafe { &*self.base_ptr.add(w * 4).cast::<AtomicU32>() }
    }

    /// The raw slot `i` (any slot below capacity), written or not. Acquire
    /// loads, paired with the release stores of `write_slot`: a reader that
    /// sees a slot a cut zeroed also sees that cut counted (`Bounds`), so it
    /// knows to read again rather than report corruption. (Free on x86.)
    pub(super) fn slot(&self, i: u32) -> (u32, u64) {
        let w = i as usize * ENTRY_WORDS;
        let rel = self.word(w).load(Ordering::Acquire);
        let low = self.word(w + 1).load(Ordering::Acquire);
        let high = self.word(w + 2).load(Ordering::Acquire);
        // Stored little-endian on disk, whatever the machine.
        let rel = u32::from_le(rel);
        let pos = u64::from(u32::from_le(low)) | (u64::from(u32::from_le(high)) << 32);
        (rel, pos)
    }

    /// Store position of entry `i`, if it is published.
    pub(super) fn position(&self, i: u32) -> Option<u64> {
        (i < self.len()).then(|| self.slot(i).1)
    }

    /// Appends an entry. Only the writer calls this.
    pub(super) fn push(&self, pos: u64) -> io::Result<()> {
        let i = self.len.load(Ordering::Relaxed);
        if i >= self.capacity {
            return Err(io::Error::other(format!("index {} is full", self.path.display())));
        }
        debug_assert!(i == 0 || self.slot(i - 1).1 < pos, "positions grow with offsets");
        self.write_slot(i, i, pos);
        self.len.store(i + 1, Ordering::Release);
        Ok(())
    }

    /// Keeps the first `len` entries. The slots past them keep what they
    /// held until cleared (see the module doc).
    pub(super) fn cut_to(&self, len: u32) {
        debug_assert!(len <= self.len(), "a cut only drops entries");
        self.len.store(len, Ordering::Release);
    }

    /// Zeroes slots `[from, to)`, so that a later recovery finds the zero
    /// tail where the entries end. Only slots past the entries (and past
    /// the one that ends the last entry's frame, while readers may look).
    pub(super) fn clear_slots(&self, from: u32, to: u32) {
        debug_assert!(from >= self.len(), "only slots past the entries are cleared");
        for i in from..to.min(self.capacity) {
            self.write_slot(i, 0, 0);
        }
    }

    /// Publishes the first `len` slots, already checked by recovery.
    pub(super) fn set_len(&self, len: u32) {
        debug_assert!(len <= self.capacity);
        self.len.store(len, Ordering::Release);
    }

    fn write_slot(&self, i: u32, rel: u32, pos: u64) {
        let w = i as usize * ENTRY_WORDS;
        self.word(w).store(rel.to_le(), Ordering::Release);
        self.word(w + 1).store((pos as u32).to_le(), Ordering::Release);
        self.word(w + 2).store(((pos >> 32) as u32).to_le(), Ordering::Release);
    }

    /// Allocates the whole file (an index that becomes writable again). A
    /// sparse mapped file would fault (SIGBUS, killing the process) on the
    /// first write to a page the disk has no room for; allocating up front
    /// turns a full disk into an error here. Filesystems that cannot
    /// allocate ahead keep the sparse file.
    pub(super) fn reserve(&self) -> io::Result<()> {
        let size = u64::from(self.capacity) * ENTRY_BYTES;
        if fsops::allocate(&self.file, &self.path, 0, size)? {
            return Ok(());
        }
        // No allocation ahead here: the file must still reach the map's end
        // (a trimmed or sealed index is shorter), or a push past it faults.
        let on_disk = self.file.metadata().map_err(|e| fsops::naming(&self.path, e))?.len();
        if on_disk < size {
            fsops::set_len(&self.file, &self.path, size)?;
        }
        Ok(())
    }

    /// Cuts the file to its entries: for a sealed index, which takes no
    /// more. The map stays (readers read entries below `len`, all still in
    /// the file); `reserve` grows the file again before an entry is written
    /// past them. Each state in between opens: the entries were flushed
    /// before, and what is cut is unwritten slots.
    pub(super) fn trim(&self) -> io::Result<()> {
        let entries = u64::from(self.len()) * ENTRY_BYTES;
        let on_disk = self.file.metadata().map_err(|e| fsops::naming(&self.path, e))?.len();
        if on_disk > entries {
            fsops::set_len(&self.file, &self.path, entries)?;
        }
        Ok(())
    }

    /// Makes the file's existence and size durable (a new segment's index).
    pub(super) fn sync_file(&self) -> io::Result<()> {
        fsops::sync_all(&self.file, &self.path)
    }

    /// Writes the mapped pages back to the file (msync).
    pub(super) fn flush(&self) -> io::Result<()> {
        match &self.map {
            Some(map) => fsops::flush_map(map, &self.path),
            None => Ok(()),
        }
    }

    /// The file was removed: dropping the index only closes it.
    pub(super) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }
}

impl Drop for Index {
    /// A clean close: unmap, then cut the file back to its entries (a
    /// removed file is only unmapped and closed).
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            if self.removed.load(Ordering::Acquire) {
                return;
            }
            let _ = map.flush();
            drop(map);
            let _ = self.file.set_len(u64::from(self.len()) * ENTRY_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_on_open_and_trims_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let (index, existed) = Index::open(&path, 100, true).unwrap();
        assert!(!existed);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1200);
        index.push(0).unwrap();
        index.push(40).unwrap();
        assert_eq!(index.position(1), Some(40));
        assert_eq!(index.position(2), None);
        drop(index);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);

        let (index, existed) = Index::open(&path, 100, true).unwrap();
        assert!(existed);
        assert_eq!(index.slot(1), (1, 40));
        assert_eq!(index.slot(2), (0, 0));
    }

    #[test]
    fn a_sealed_index_is_cut_to_its_entries_and_grows_again_before_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let (index, _) = Index::open(&path, 1000, true).unwrap();
        for pos in [0, 10, 20] {
            index.push(pos).unwrap();
        }
        index.trim().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 36);
        assert_eq!(index.position(2), Some(20), "entries read on through the map");
        index.reserve().unwrap();
        index.push(30).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12_000);
        drop(index);

        // As an older version left it: full size, zeros past the entries.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(12_000)
            .unwrap();
        let (index, existed) = Index::open_sealed(&path, 4, 4).unwrap();
        assert!(existed);
        assert_eq!(index.capacity(), 4, "mapped at exactly its entries");
        assert_eq!(index.slot(3), (3, 30));
        drop(index);

        // Mapped for what it may take once active again; the file grows to
        // that only when it does.
        let (index, _) = Index::open_sealed(&path, 4, 1000).unwrap();
        assert_eq!(index.capacity(), 1000);
        index.set_len(4);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            48,
            "a sealed index is not grown"
        );
        index.reserve().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12_000);
        index.push(40).unwrap();
        assert_eq!(index.position(4), Some(40));
    }

    #[test]
    fn refuses_to_push_past_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = Index::open(&dir.path().join("0.index"), 2, true).unwrap();
        index.push(0).unwrap();
        index.push(10).unwrap();
        assert_eq!(index.len(), index.capacity());
        assert!(index.push(20).is_err());
    }

    #[test]
    fn a_cut_keeps_the_slots_a_reader_may_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = Index::open(&dir.path().join("0.index"), 10, false).unwrap();
        for pos in [0, 10, 20, 30] {
            index.push(pos).unwrap();
        }
        index.cut_to(2);
        assert_eq!(index.len(), 2);
        assert_eq!(index.slot(2), (2, 20), "a reader of entry 1's end still finds it");
        index.push(20).unwrap();
        assert_eq!(index.slot(2), (2, 20));
        index.clear_slots(3, 4);
        assert_eq!(index.slot(3), (0, 0));
    }
}
