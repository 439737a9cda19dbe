//! A segment's index file: a memory-mapped array of fixed 12-byte entries,
//! entry `i` being the record at `base + i`:
//!
//! ```text
//! | relative offset u32 LE | position in the store u64 LE |
//! ```
//!
//! The file is grown to its maximum size and mapped when the segment opens,
//! and cut back to its entries when the index is dropped (after the map is
//! gone, so a mapped file never shrinks). Unwritten slots are zero; after an
//! unclean stop the zero tail is found and dropped by recovery.
//!
//! One writer pushes entries past `len`; readers read entries below `len`,
//! which is published with release ordering after the entry is written, so
//! the two never touch the same bytes.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::MmapMut;

pub const ENTRY_BYTES: u64 = 12;

#[derive(Debug)]
pub struct Index {
    file: File,
    path: PathBuf,
    map: Option<MmapMut>,
    base_ptr: *mut u8,
    capacity: u32,
    len: AtomicU32,
}

// SAFETY: the mapping is owned by `map` and lives as long as the Index. The
// only writer writes slots at or past `len` and publishes them with a release
// store; readers only read slots below an acquired `len`. `truncate` is the
// writer's, and readers racing with it see a stale slot, which the frame's
// own offset and checksum then reject.
unsafe impl Send for Index {}
unsafe impl Sync for Index {}

impl Index {
    /// Opens (or creates) the index, grows it to `capacity` entries and maps
    /// it. `len` starts at zero: the caller decides how many entries are good.
    /// Returns whether the file already existed.
    /// With `reserve`, the file's blocks are allocated at once (see
    /// `reserve`): for indexes that will be written to.
    pub fn open(path: &Path, capacity: u32, reserve: bool) -> io::Result<(Index, bool)> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let on_disk = file.metadata()?.len();
        let wanted = u64::from(capacity) * ENTRY_BYTES;
        // Never shrink here: a file longer than the configured size keeps its entries.
        let size = on_disk.max(wanted);
        if size != on_disk {
            file.set_len(size)?;
        }
        if reserve {
            reserve_blocks(&file, size)?;
        }
        let capacity = (size / ENTRY_BYTES).min(u64::from(u32::MAX)) as u32;
        // SAFETY: the file is ours (the data directory is locked) and never
        // shrinks while this map exists.
        let mut map = unsafe { MmapMut::map_mut(&file)? };
        // Entries are touched one page at a time; readahead around each
        // fault would only fill the page cache with zeros.
        map.advise(memmap2::Advice::Random)?;
        let base_ptr = map.as_mut_ptr();
        let index = Index {
            file,
            path: path.to_path_buf(),
            map: Some(map),
            base_ptr,
            capacity,
            len: AtomicU32::new(0),
        };
        Ok((index, existed && on_disk > 0))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Entries published to readers.
    pub fn len(&self) -> u32 {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw slot `i` (any slot below capacity), written or not.
    pub fn slot(&self, i: u32) -> (u32, u64) {
        assert!(i < self.capacity, "index slot {i} is past the map");
        let mut raw = [0u8; ENTRY_BYTES as usize];
        // SAFETY: slot `i` lies inside the map (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base_ptr.add(i as usize * ENTRY_BYTES as usize),
                raw.as_mut_ptr(),
                raw.len(),
            );
        }
        let rel = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let mut pos = [0u8; 8];
        pos.copy_from_slice(&raw[4..12]);
        (rel, u64::from_le_bytes(pos))
    }

    /// Store position of entry `i`, if it is published.
    pub fn position(&self, i: u32) -> Option<u64> {
        (i < self.len()).then(|| self.slot(i).1)
    }

    /// Appends an entry. Only the writer calls this.
    pub fn push(&self, pos: u64) -> io::Result<()> {
        let i = self.len.load(Ordering::Relaxed);
        if i >= self.capacity {
            return Err(io::Error::other(format!("index {} is full", self.path.display())));
        }
        debug_assert!(i == 0 || self.slot(i - 1).1 < pos, "positions grow with offsets");
        self.write_slot(i, i, pos);
        self.len.store(i + 1, Ordering::Release);
        Ok(())
    }

    /// Keeps the first `len` entries and zeroes the rest of what was written
    /// past them, so that a later recovery cannot mistake them for entries.
    pub fn truncate(&self, len: u32, written_up_to: u32) {
        debug_assert!(len <= self.capacity);
        self.len.store(len, Ordering::Release);
        for i in len..written_up_to.min(self.capacity) {
            self.write_slot(i, 0, 0);
        }
    }

    /// Publishes the first `len` slots, already checked by recovery.
    pub fn set_len(&self, len: u32) {
        debug_assert!(len <= self.capacity);
        self.len.store(len, Ordering::Release);
    }

    fn write_slot(&self, i: u32, rel: u32, pos: u64) {
        let mut raw = [0u8; ENTRY_BYTES as usize];
        raw[0..4].copy_from_slice(&rel.to_le_bytes());
        raw[4..12].copy_from_slice(&pos.to_le_bytes());
        assert!(i < self.capacity, "index slot {i} is past the map");
        // SAFETY: inside the map; readers never read slots at or past `len`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                raw.as_ptr(),
                self.base_ptr.add(i as usize * ENTRY_BYTES as usize),
                raw.len(),
            );
        }
    }

    /// Allocates the whole file (an index that becomes writable again).
    pub fn reserve(&self) -> io::Result<()> {
        reserve_blocks(&self.file, u64::from(self.capacity) * ENTRY_BYTES)
    }

    /// Makes the file's existence and size durable (a new segment's index).
    pub fn sync_file(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Writes the mapped pages back to the file (msync).
    pub fn flush(&self) -> io::Result<()> {
        match &self.map {
            Some(map) => map.flush(),
            None => Ok(()),
        }
    }
}

/// Allocates the file's blocks now. A sparse mapped file would fault
/// (SIGBUS, killing the process) on the first write to a page the disk has
/// no room for; allocating up front turns a full disk into an error here.
/// Filesystems that cannot allocate ahead keep the sparse file.
fn reserve_blocks(file: &File, size: u64) -> io::Result<()> {
    super::store::allocate(file, size).map(|_| ())
}

impl Drop for Index {
    /// A clean close: unmap, then cut the file back to its entries.
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
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
    fn refuses_to_push_past_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = Index::open(&dir.path().join("0.index"), 2, true).unwrap();
        index.push(0).unwrap();
        index.push(10).unwrap();
        assert_eq!(index.len(), index.capacity());
        assert!(index.push(20).is_err());
    }

    #[test]
    fn truncate_zeroes_dropped_slots() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = Index::open(&dir.path().join("0.index"), 10, false).unwrap();
        for pos in [0, 10, 20, 30] {
            index.push(pos).unwrap();
        }
        index.truncate(2, 4);
        assert_eq!(index.len(), 2);
        assert_eq!(index.slot(2), (0, 0));
        index.push(25).unwrap();
        assert_eq!(index.slot(2), (2, 25));
    }
}
