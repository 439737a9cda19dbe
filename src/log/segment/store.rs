//! A segment's store file: frames back to back, nothing else (see `record`).
//!
//! While its segment is active the file is mapped at the segment's maximum
//! size, and the single writer appends by copying into the map (no system
//! call per record; a killed process loses nothing, the pages are the page
//! cache's). The map is only address space: the file is allocated (and
//! extended) a chunk at a time: an append that passes what is allocated
//! allocates up to the end of the `ALLOCATE_AHEAD` chunk after the one it
//! ends in, so the file is allocated 0 to 8 MiB past the data (4 to 8 MiB
//! right after an allocation, less as appends fill it). The log's
//! background thread (`work_ahead`) usually allocates that chunk before the
//! writer needs it, faults the pages in up to 4 MiB ahead of the data
//! (never past what is allocated), and starts writeback, so that appenders
//! do none of it; but the writer checks and allocates for itself whenever
//! the background has not got far enough. The writer never copies past
//! what is allocated, because a store into a mapped page past the end of
//! the file, or into a hole the disk has no room for, is SIGBUS. So a full
//! disk is an ENOSPC from the writer's allocation, returned to that
//! appender before it wrote anything, and a huge segment size takes a few
//! MiB of disk, not the whole segment. Sealing unmaps the store and cuts
//! the file back to its data; so does a clean close. Appends that do not
//! fit the map (an oversized batch) and stores on filesystems that cannot
//! allocate ahead use positioned writes instead. With `--fsync always`
//! appends stay positioned writes (an fdatasync of map-written pages
//! measured several times slower), and the writer writes zeros a chunk
//! ahead of the data, so that each group-commit fdatasync overwrites blocks
//! that already exist instead of growing the file and committing metadata.
//! `size` is published after the bytes are written, and readers never ask
//! for bytes past it; after an unclean stop the file may run on past its
//! data with zeros, which recovery cuts.
//!
//! Readers of the active store (the hot one, whatever the durability) copy
//! from a second, read-only map of it instead of calling `pread`: no system
//! call per read. Reading a map past the end of its file faults (SIGBUS), so
//! the file is only ever shortened under that map's write lock, and readers
//! check `size` under its read lock. Sealed stores are read with `pread`: a
//! map per segment would count against the process's map limit.
//!
//! That lock (`view`) is also what keeps readers away from bytes that
//! change under them: every reader holds it shared while it copies bytes,
//! from the map or with `pread`, and the writer holds it exclusively to
//! shorten the store (`cut_to`, `seal`) or to rewrite a written frame's
//! header in place (`rewrite_at`, when a cut ends a batch early). Appends
//! write past `size` and need no lock: no reader reads there.
//!
//! What is done ahead of the writer (allocation, zeros, faulting pages in)
//! and behind it (writeback) is in `ahead`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use memmap2::{Advice, Mmap, MmapMut, MmapOptions};

use super::fsops;

mod ahead;

use ahead::allocation_for;

#[derive(Debug)]
pub(super) struct Store {
    file: File,
    path: PathBuf,
    size: AtomicU64,
    /// The writable map of an active store; only the writer locks it.
    mapped: Mutex<Option<MmapMut>>,
    /// While there is an append map: the file is allocated up to here, and
    /// the map is never written past it (changed under `mapped`'s lock; 0
    /// whenever there is no append map).
    allocated_to: AtomicU64,
    /// How far the store is faulted in ahead of the writer.
    prefaulted_to: AtomicU64,
    /// Positioned appends zero the file ahead of them up to this size (0: off).
    zero_limit: AtomicU64,
    /// The file holds written zeros (or data) up to here.
    zeroed_to: AtomicU64,
    /// The size the store opened at, or was cut to since: what it took
    /// since sets how far ahead it zeroes (`ahead::zero_chunk`).
    opened_size: AtomicU64,
    /// The read-only map readers copy from while the store is active. Its
    /// lock is also what keeps readers and in-place changes apart: readers
    /// hold it shared while they copy bytes (from the map or with pread), and
    /// a cut or a rewrite of written bytes holds it exclusively.
    view: RwLock<Option<Mmap>>,
    /// The file was removed (purged or cut away): dropping the store only
    /// closes it, with no sealing work for a file nobody will open again.
    removed: AtomicBool,
    /// Writeback was started for the data below this.
    writeback_from: AtomicU64,
    /// The append map's page-table entries below this were dropped (see
    /// `zap_below`; only the background thread changes it).
    zapped_to: AtomicU64,
}

impl Store {
    pub(super) fn open(path: &Path) -> io::Result<Store> {
        let file = fsops::open(path)?;
        let size = file.metadata().map_err(|e| fsops::naming(path, e))?.len();
        Ok(Store {
            file,
            path: path.to_path_buf(),
            size: AtomicU64::new(size),
            mapped: Mutex::new(None),
            allocated_to: AtomicU64::new(0),
            prefaulted_to: AtomicU64::new(0),
            zero_limit: AtomicU64::new(0),
            zeroed_to: AtomicU64::new(size),
            opened_size: AtomicU64::new(size),
            view: RwLock::new(None),
            removed: AtomicBool::new(false),
            writeback_from: AtomicU64::new(size),
            zapped_to: AtomicU64::new(0),
        })
    }

    fn map(&self) -> MutexGuard<'_, Option<MmapMut>> {
        self.mapped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn view_for_readers(&self) -> RwLockReadGuard<'_, Option<Mmap>> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Excludes every reader of this store's bytes.
    fn view_exclusive(&self) -> RwLockWriteGuard<'_, Option<Mmap>> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes this store take appends through a map of `capacity` bytes, the
    /// first chunk of it allocated now: a full disk is an error here rather
    /// than a fault later. Only the writer calls this.
    pub(super) fn map_for_appends(&self, capacity: u64) -> io::Result<()> {
        let mut mapped = self.map();
        if mapped.is_some() || capacity <= self.size() {
            return Ok(());
        }
        let len = usize::try_from(capacity)
            .map_err(|_| fsops::naming(&self.path, io::Error::other("store too large to map")))?;
        let allocated = allocation_for(self.size(), capacity);
        // From 0: a file left longer by an unclean stop may hold holes.
        if !fsops::allocate(&self.file, &self.path, 0, allocated)? {
            return Ok(());
        }
        // SAFETY: the file is ours (the data directory is locked); the map
        // is written only below `allocated_to`, which the file always
        // reaches (it is only shortened after this map is dropped: `seal`,
        // `Drop`, or below it by `cut_to`, which keeps it allocated).
        let map =
            unsafe { MmapOptions::new().len(len).map_mut(&self.file) }.map_err(|e| fsops::naming(&self.path, e))?;
        // A write fault on a page not yet in the page cache otherwise reads
        // around it, up to the device's read-ahead (8 MiB here), all under
        // the writer lock; pages are faulted in ahead off that path instead
        // (`prefault_ahead`). Best effort.
        let _ = map.advise(Advice::Random);
        self.allocated_to.store(allocated, Ordering::Release);
        *mapped = Some(map);
        Ok(())
    }

    /// Lets readers copy from a map of the first `capacity` bytes. The map
    /// may run past the end of the file: readers stay below `size`.
    pub(super) fn map_for_reads(&self, capacity: u64) -> io::Result<()> {
        let mut view = self.view_exclusive();
        if view.is_some() || capacity == 0 {
            return Ok(());
        }
        let len = usize::try_from(capacity).map_err(|_| io::Error::other("store too large to map"))?;
        // SAFETY: the file is ours (the data directory is locked), nothing
        // writes through this map, and the file is only shortened under the
        // write lock of `view`, with `size` lowered first (`cut_to`, `seal`).
        let map = unsafe { MmapOptions::new().len(len).map(&self.file) }.map_err(|e| fsops::naming(&self.path, e))?;
        *view = Some(map);
        Ok(())
    }

    /// Stops mapped appends and reads and cuts the file back to its data.
    pub(super) fn seal(&self) -> io::Result<()> {
        let mut view = self.view_exclusive();
        view.take();
        let mut mapped = self.map();
        self.zero_limit.store(0, Ordering::Relaxed);
        let zeroed_past_data = self.zeroed_to.load(Ordering::Relaxed) > self.size();
        // Under both locks, before the file is cut: see `prefault_ahead`.
        self.allocated_to.store(0, Ordering::Release);
        if mapped.take().is_some() || zeroed_past_data {
            fsops::set_len(&self.file, &self.path, self.size())?;
        }
        self.zeroed_to.store(self.size(), Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub(super) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Whether appending `bytes` now only copies them into the file's
    /// blocks: under an append map allocated and faulted in past their end,
    /// or (positioned writes) below the zeros already written ahead. Such an
    /// append neither grows, allocates nor zeroes the file on the way.
    pub(super) fn appends_in_place(&self, bytes: u64) -> bool {
        let end = self.size().saturating_add(bytes);
        let allocated = self.allocated_to.load(Ordering::Acquire);
        match allocated > 0 {
            true => end <= allocated && end <= self.prefaulted_to.load(Ordering::Relaxed),
            false => end <= self.zeroed_to.load(Ordering::Relaxed),
        }
    }

    /// Writes `bytes` at the end and returns where they start. Only the log's
    /// writer calls this. On failure the file is cut back so that no partial
    /// frame stays behind.
    pub(super) fn append(&self, bytes: &[u8]) -> io::Result<u64> {
        let pos = self.size();
        let end = pos + bytes.len() as u64;
        let mut mapped = self.map();
        let fits_the_map = mapped.as_ref().is_some_and(|map| end <= map.len() as u64);
        // The allocation comes before any byte is written: if the disk is
        // full, this append fails and the store is as it was.
        let copy_into_map = fits_the_map && self.allocate_ahead(&mut mapped, end)?;
        match mapped.as_mut() {
            Some(map) if copy_into_map => {
                if let Some(target) = map.get_mut(pos as usize..end as usize) {
                    target.copy_from_slice(bytes);
                }
            }
            _ => {
                if let Err(e) = self.file.write_all_at(bytes, pos) {
                    // Best effort: if even this fails, recovery cuts the torn tail on open.
                    if mapped.is_none() {
                        let _ = self.file.set_len(pos);
                        self.zeroed_to.store(pos, Ordering::Relaxed);
                    }
                    return Err(fsops::naming(&self.path, e));
                }
                self.zero_ahead(end);
            }
        }
        self.size.store(end, Ordering::Release);
        Ok(pos)
    }

    /// Overwrites bytes already written, in place, while no reader copies
    /// any. Only the writer calls this.
    pub(super) fn rewrite_at(&self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        let end = pos.saturating_add(bytes.len() as u64);
        if end > self.size() {
            return Err(io::Error::other(format!(
                "rewrite of {} bytes at {pos} passes the end of {}",
                bytes.len(),
                self.path.display()
            )));
        }
        let _readers_excluded = self.view_exclusive();
        let mut mapped = self.map();
        match mapped.as_mut().and_then(|map| map.get_mut(pos as usize..end as usize)) {
            Some(target) => {
                target.copy_from_slice(bytes);
                Ok(())
            }
            None => fsops::rewrite(&self.file, &self.path, pos, bytes),
        }
    }

    /// Hands `f` exactly `len` bytes at `pos`: borrowed from the read map
    /// (under its lock) when there is one, else read into a buffer first.
    /// Asking past `size` is an error.
    pub(super) fn with_bytes<R>(&self, pos: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
        {
            let view = self.view_for_readers();
            if let Some(bytes) = self.mapped_bytes(&view, pos, len) {
                return Ok(f(bytes));
            }
        }
        Ok(f(&self.read_at(pos, len)?))
    }

    /// `len` bytes at `pos` in the read map, if it has them and they are
    /// below `size` (checked under the lock: a cut lowers `size` before it
    /// changes bytes).
    fn mapped_bytes<'a>(&self, view: &'a Option<Mmap>, pos: u64, len: usize) -> Option<&'a [u8]> {
        let end = pos.checked_add(len as u64).filter(|end| *end <= self.size())?;
        view.as_ref()?.get(pos as usize..end as usize)
    }

    /// Reads exactly `len` bytes at `pos`; asking past `size` is an error.
    pub(super) fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = pos.checked_add(len as u64);
        if end.is_none_or(|end| end > self.size()) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {len} bytes at {pos} passes the end of {}", self.path.display()),
            ));
        }
        // Held through the pread too: a cut or a rewrite waits until this
        // copy is whole, so that it never mixes bytes from before and after.
        let view = self.view_for_readers();
        if let Some(bytes) = self.mapped_bytes(&view, pos, len) {
            return Ok(bytes.to_vec());
        }
        // Checked again under the lock, for the pread.
        if pos.checked_add(len as u64).is_none_or(|end| end > self.size()) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {len} bytes at {pos} passes the end of {}", self.path.display()),
            ));
        }
        let mut buf = vec![0; len];
        self.file
            .read_exact_at(&mut buf, pos)
            .map_err(|e| fsops::naming(&self.path, e))?;
        Ok(buf)
    }

    /// Cuts the store's data to its first `size` bytes. Only the writer calls this.
    pub(super) fn cut_to(&self, size: u64) -> io::Result<()> {
        let old = self.size();
        debug_assert!(size <= old, "a cut only shortens a store");
        // No reader may be copying bytes while the file shrinks.
        let _view = self.view_exclusive();
        let mut mapped = self.map();
        self.size.store(size, Ordering::Release);
        self.writeback_from.fetch_min(size, Ordering::Relaxed);
        // Recovery cuts a file opened with zeros (or allocation) past its data.
        self.opened_size.fetch_min(size, Ordering::Relaxed);
        match mapped.as_mut() {
            // The file stays allocated: zero what was cut, so that no old
            // frame can be mistaken for data after a crash.
            Some(map) => {
                let mapped_end = (old as usize).min(map.len());
                if let Some(cut) = map.get_mut(size as usize..mapped_end) {
                    cut.fill(0);
                }
                // Positioned writes past the map: cut them, keeping the
                // allocated part the map may still be written through.
                let allocated = self.allocated_to.load(Ordering::Relaxed);
                if old > allocated {
                    fsops::set_len(&self.file, &self.path, size.max(allocated))?;
                }
            }
            None => {
                self.zeroed_to.store(size, Ordering::Relaxed);
                fsops::set_len(&self.file, &self.path, size)?;
            }
        }
        Ok(())
    }

    /// Forces written bytes to disk: fdatasync also writes back pages
    /// dirtied through the map.
    pub(super) fn sync(&self) -> io::Result<()> {
        fsops::sync_data(&self.file, &self.path)
    }

    /// The file was removed: dropping the store only closes it.
    pub(super) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }
}

impl Drop for Store {
    /// A clean close: unmap, then cut the file back to its data (a removed
    /// file is only closed).
    fn drop(&mut self) {
        if !self.removed.load(Ordering::Acquire) {
            let _ = self.seal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ahead::{
        ALLOCATE_AHEAD, FIRST_ZERO_CHUNK, PAGE, PREFAULT_AHEAD, PREFAULT_CHUNK, ZERO_CHUNK, zero_chunk, zeros_ahead_of,
    };
    use super::*;

    #[test]
    fn appends_and_reads_back_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("0.store")).unwrap();
        assert_eq!(store.append(b"hello").unwrap(), 0);
        assert_eq!(store.append(b"world!").unwrap(), 5);
        assert_eq!(store.size(), 11);
        assert_eq!(store.read_at(5, 6).unwrap(), b"world!");
        assert!(store.read_at(8, 4).is_err(), "reads past the end must fail");
    }

    #[test]
    fn mapped_appends_read_back_and_the_file_is_cut_when_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.store");
        let store = Store::open(&path).unwrap();
        store.map_for_appends(4096).unwrap();
        store.append(b"hello").unwrap();
        assert_eq!(
            store.append(&[7u8; 5000]).unwrap(),
            5,
            "past the map: a positioned write"
        );
        assert_eq!(store.read_at(0, 5).unwrap(), b"hello");
        store.cut_to(3).unwrap();
        assert_eq!(store.append(b"p!").unwrap(), 3);
        store.seal().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"help!");
    }

    #[test]
    fn a_mapped_store_is_allocated_a_chunk_at_a_time_within_its_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.store");
        let store = Store::open(&path).unwrap();
        let capacity = 2 * ALLOCATE_AHEAD + 100;
        store.map_for_appends(capacity).unwrap();
        let len = || std::fs::metadata(&path).unwrap().len();
        assert_eq!(len(), ALLOCATE_AHEAD, "one chunk ahead of nothing");
        let chunk = vec![1u8; ALLOCATE_AHEAD as usize];
        store.append(&chunk).unwrap();
        assert_eq!(len(), ALLOCATE_AHEAD, "filled exactly: no allocation yet");
        store.append(b"x").unwrap();
        assert_eq!(len(), capacity, "past it: a chunk ahead, but never past the map");
        assert_eq!(store.read_at(ALLOCATE_AHEAD, 1).unwrap(), b"x");
        store.seal().unwrap();
        assert_eq!(len(), ALLOCATE_AHEAD + 1);
    }

    #[test]
    fn reads_through_the_read_map_stop_at_the_size_and_survive_cuts_and_sealing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("0.store")).unwrap();
        // Positioned writes (as with `--fsync always`) seen through a map that
        // runs past the end of the file.
        store.map_for_reads(1 << 20).unwrap();
        store.append(b"0123456789").unwrap();
        assert_eq!(store.read_at(2, 5).unwrap(), b"23456");
        assert!(store.read_at(8, 3).is_err(), "never past the size");
        store.cut_to(4).unwrap();
        assert!(store.read_at(2, 5).is_err(), "a cut lowers what readers see");
        store.append(b"xy").unwrap();
        assert_eq!(store.read_at(0, 6).unwrap(), b"0123xy");
        store.seal().unwrap();
        assert_eq!(store.read_at(0, 6).unwrap(), b"0123xy", "sealed: positioned reads");
        assert_eq!(std::fs::metadata(dir.path().join("0.store")).unwrap().len(), 6);
    }

    #[test]
    fn positioned_appends_zero_ahead_and_sealing_cuts_the_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.store");
        let store = Store::open(&path).unwrap();
        store.zero_ahead_up_to(3 * ZERO_CHUNK);
        store.append(b"hello").unwrap();
        let len = || std::fs::metadata(&path).unwrap().len();
        assert_eq!(len(), 2 * FIRST_ZERO_CHUNK, "zeros one (first) chunk past the data");
        assert_eq!(store.read_at(0, 5).unwrap(), b"hello");
        store.cut_to(2).unwrap();
        assert_eq!(len(), 2, "a cut drops the zeros too");
        store.append(b"y!").unwrap();
        assert_eq!(len(), 2 * FIRST_ZERO_CHUNK);
        store.seal().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hey!");
        store.append(b"?").unwrap();
        assert_eq!(len(), 5, "a sealed store zeroes nothing ahead");
    }

    #[test]
    fn a_store_reopened_for_one_small_append_zeroes_little_ahead_of_it() {
        // A named log's replica reopened at a restart takes one blank
        // entry from its new leader and may take nothing more for hours:
        // a whole chunk of zeros for it was 2 MiB of page cache and disk
        // writes a replica, 2 GB at each restart of a node of 1,000.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.store");
        let store = Store::open(&path).unwrap();
        store.append(&[1u8; 700]).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        store.zero_ahead_up_to(100 * ZERO_CHUNK);
        store.append(&[2u8; 80]).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= 2 * FIRST_ZERO_CHUNK, "{len} bytes after one append of 80 to 700");
        assert!(len > 780, "still some zeros ahead: {len}");
        // A store that keeps taking appends zeroes whole chunks ahead again.
        for _ in 0..(3 * ZERO_CHUNK / 4096) {
            store.append(&[3u8; 4096]).unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(
            len > store.size() && len.is_multiple_of(ZERO_CHUNK),
            "{len} for {} bytes of data",
            store.size()
        );
        assert_eq!(store.read_at(700, 80).unwrap(), [2u8; 80]);
        let last = store.size() - 4096;
        assert_eq!(
            store.read_at(last, 4096).unwrap(),
            [3u8; 4096],
            "zeros never under data"
        );
    }

    #[test]
    fn the_zeroing_chunk_grows_with_what_the_store_took_up_to_a_whole_one() {
        assert_eq!(zero_chunk(0), FIRST_ZERO_CHUNK);
        assert_eq!(zero_chunk(100), FIRST_ZERO_CHUNK);
        assert_eq!(zero_chunk(FIRST_ZERO_CHUNK + 1), 2 * FIRST_ZERO_CHUNK);
        assert_eq!(zero_chunk(ZERO_CHUNK - 1), ZERO_CHUNK);
        assert_eq!(zero_chunk(u64::MAX), ZERO_CHUNK);
        assert_eq!(
            zeros_ahead_of(5, 0, 100 * ZERO_CHUNK, FIRST_ZERO_CHUNK),
            5..2 * FIRST_ZERO_CHUNK
        );
    }

    #[test]
    fn zeros_go_ahead_of_the_data_never_under_it() {
        // An append of [ZERO_CHUNK * 3 / 2, end) that passes the zeros.
        let end = 4 * ZERO_CHUNK + 10;
        // Zeros under it would be copied into the page cache only
        // to be overwritten by the data at once: twice the copying for
        // appends that pass what is zeroed, as large batches do.
        let zeros = zeros_ahead_of(end, 2 * ZERO_CHUNK, 100 * ZERO_CHUNK, ZERO_CHUNK);
        assert_eq!(zeros, end..6 * ZERO_CHUNK);
        assert_eq!(zeros_ahead_of(5, 0, 100 * ZERO_CHUNK, ZERO_CHUNK), 5..2 * ZERO_CHUNK);
        assert!(zeros_ahead_of(5, 0, 3, ZERO_CHUNK).is_empty(), "never past the limit");
        let within = zeros_ahead_of(5, 2 * ZERO_CHUNK, 100 * ZERO_CHUNK, ZERO_CHUNK);
        assert!(
            within.is_empty(),
            "nothing to do while the append stays within the zeros"
        );
    }

    /// How many of the first `len` bytes' pages of `path` are in the page cache.
    fn resident_pages(path: &Path, len: usize) -> usize {
        let file = File::open(path).unwrap();
        let map = unsafe { MmapOptions::new().len(len).map(&file) }.unwrap();
        let page = 4096;
        let mut resident = vec![0u8; len.div_ceil(page)];
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, resident.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        resident.iter().filter(|r| **r & 1 != 0).count()
    }

    #[test]
    fn mapped_appends_leave_faulting_in_ahead_to_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.store");
        let store = Store::open(&path).unwrap();
        let capacity = 16 << 20;
        store.map_for_appends(capacity).unwrap();
        store.map_for_reads(capacity).unwrap();
        store.append(&[1u8; 1000]).unwrap();
        // Faulting in a chunk ahead on the writer's path holds every other
        // appender up for as long (milliseconds when the machine is busy).
        assert!(
            resident_pages(&path, capacity as usize) <= 1,
            "an append faults in only what it writes, not {} pages",
            resident_pages(&path, capacity as usize)
        );
        assert!(store.wants_work_ahead());
        store.work_ahead();
        assert!(
            resident_pages(&path, capacity as usize) as u64 >= PREFAULT_AHEAD / PAGE,
            "the background faults in ahead of the data"
        );
        assert!(!store.wants_work_ahead(), "until the writer uses some of it up");
        store.append(&vec![2u8; PREFAULT_CHUNK as usize]).unwrap();
        assert!(store.wants_work_ahead());
        store.work_ahead();
        assert!(resident_pages(&path, capacity as usize) as u64 >= (PREFAULT_AHEAD + PREFAULT_CHUNK) / PAGE);
        assert_eq!(
            store.read_at(0, 1000).unwrap(),
            vec![1u8; 1000],
            "the data is untouched"
        );
    }

    #[test]
    fn pages_are_faulted_in_ahead_only_where_the_file_is_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.store");
        let store = Store::open(&path).unwrap();
        let capacity = 64 << 20;
        store.map_for_appends(capacity).unwrap();
        store.map_for_reads(capacity).unwrap();
        let len = || std::fs::metadata(&path).unwrap().len();
        store.append(&vec![1u8; 3 << 20]).unwrap();
        assert_eq!(len(), ALLOCATE_AHEAD, "the first chunk holds the data");
        let resident_past =
            |at: u64| resident_pages(&path, capacity as usize) as u64 - resident_pages(&path, at as usize) as u64;
        {
            // The writer is busy: the background does not wait to allocate...
            let _writing = store.map();
            store.work_ahead();
        }
        assert_eq!(len(), ALLOCATE_AHEAD);
        // ...and faults in nothing past the end of what is allocated.
        assert_eq!(
            resident_past(ALLOCATE_AHEAD),
            0,
            "pages past the allocated end faulted in"
        );
        assert!(resident_pages(&path, ALLOCATE_AHEAD as usize) as u64 >= ALLOCATE_AHEAD / PAGE - 1);
        store.work_ahead();
        assert_eq!(len(), 2 * ALLOCATE_AHEAD, "the background allocates the next chunk");
        assert!(resident_past(ALLOCATE_AHEAD) >= ((3 << 20) + PREFAULT_AHEAD - ALLOCATE_AHEAD) / PAGE);
        assert_eq!(resident_past(2 * ALLOCATE_AHEAD), 0);
        // The writer does not depend on it: far past it, it allocates itself.
        store.append(&vec![2u8; 10 << 20]).unwrap();
        assert_eq!(len(), allocation_for((13 << 20) as u64, capacity));
        assert_eq!(store.read_at((13 << 20) - 1, 1).unwrap(), vec![2u8]);
    }

    #[test]
    fn truncate_and_reopen_keep_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.store");
        let store = Store::open(&path).unwrap();
        store.append(b"0123456789").unwrap();
        store.cut_to(4).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.size(), 4);
        assert_eq!(store.read_at(0, 4).unwrap(), b"0123");
    }
}
