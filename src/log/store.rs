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

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use memmap2::{Advice, Mmap, MmapMut, MmapOptions};

use super::fsops;

/// Mapped appends allocate the file this much at a time: an allocation
/// reaches one to two of these past the append that made it, and appends
/// then fill that, so 0 to 8 MiB are allocated past the data. One
/// `fallocate` every few MiB, usually by the background thread
/// (`allocate_for_the_writer`), else by the writer itself.
const ALLOCATE_AHEAD: u64 = 4 << 20;
/// The pages of an active store are faulted in this far ahead of its
/// writer, by the log's background thread (see `prefault_ahead`)...
const PREFAULT_AHEAD: u64 = 4 << 20;
/// ...which is asked to once the writer has used up this much of it, and
/// faults in this much at a time (while it holds readers' lock shared).
const PREFAULT_CHUNK: u64 = 1 << 20;
/// Pages: writeback is started only for whole ones (see `start_writeback`).
const PAGE: u64 = 4096;
/// Positioned appends write zeros this far ahead (see `zero_ahead`).
const ZERO_CHUNK: u64 = 1 << 20;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
/// Writeback of appended data is started once this much built up (see
/// `start_writeback`).
const WRITEBACK_CHUNK: u64 = 8 << 20;
/// The most of the append map `zap_below` drops under the writer's map lock.
const ZAP_PIECE: u64 = 1 << 20;

#[derive(Debug)]
pub struct Store {
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

/// Where `zero_ahead` writes zeros after an append that ends at `end`:
/// past what is zeroed, up to a chunk beyond `end`, within `limit`. Never
/// under the append itself: zeros there would only be copied into the page
/// cache to be overwritten at once (twice the copying for an append that
/// passes the zeros, as a large batch does), and would not spare its sync
/// the metadata commit, which the append's growing of the file costs anyway.
fn zeros_ahead_of(end: u64, zeroed: u64, limit: u64) -> Range<u64> {
    let to = (end.div_ceil(ZERO_CHUNK) * ZERO_CHUNK + ZERO_CHUNK).min(limit);
    zeroed.max(end)..to
}

impl Store {
    pub fn open(path: &Path) -> io::Result<Store> {
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
    pub fn map_for_appends(&self, capacity: u64) -> io::Result<()> {
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

    /// Allocates the file ahead of a mapped append that would end at `end`,
    /// unless the background thread already has (`allocate_for_the_writer`):
    /// the writer never depends on it. Returns false (and drops the map:
    /// appends go on as positioned writes) where the filesystem stopped
    /// allocating ahead.
    fn allocate_ahead(&self, mapped: &mut Option<MmapMut>, end: u64) -> io::Result<bool> {
        let Some(map) = mapped.as_ref() else {
            return Ok(false);
        };
        if end <= self.allocated_to.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let to = allocation_for(end, map.len() as u64);
        debug_assert!(to >= end, "appends that pass the map are positioned writes");
        self.allocate_to(mapped, to)
    }

    /// Extends the allocation of a mapped store to `to` (a no-op below what
    /// is allocated). Called under `mapped`'s lock with a map; see
    /// `allocate_ahead` for the answer.
    fn allocate_to(&self, mapped: &mut Option<MmapMut>, to: u64) -> io::Result<bool> {
        let allocated = self.allocated_to.load(Ordering::Relaxed);
        if to <= allocated {
            return Ok(true);
        }
        if fsops::allocate(&self.file, &self.path, allocated, to)? {
            // Released after the file reaches `to`: `prefault_ahead` trusts it.
            self.allocated_to.store(to, Ordering::Release);
            return Ok(true);
        }
        *mapped = None;
        self.allocated_to.store(0, Ordering::Release);
        Ok(false)
    }

    /// Allocates the next chunk before the writer needs it, once the data
    /// is within `PREFAULT_AHEAD` of the allocated end, so that the pages
    /// faulted in ahead (`prefault_ahead`) are allocated ones and the writer
    /// seldom calls `fallocate` itself. It never waits for the writer (it
    /// tries the lock), and a failure is left for the writer to meet and
    /// report, naming the file, to its appender: a full disk is ENOSPC
    /// there. It stays within 8 MiB of the data, as the writer would.
    fn allocate_for_the_writer(&self) {
        let Ok(mut mapped) = self.mapped.try_lock() else {
            return;
        };
        let Some(capacity) = mapped.as_ref().map(|map| map.len() as u64) else {
            return;
        };
        let size = self.size();
        if size.saturating_add(PREFAULT_AHEAD) <= self.allocated_to.load(Ordering::Relaxed) {
            return;
        }
        let _ = self.allocate_to(&mut mapped, allocation_for(size, capacity));
    }

    /// Makes positioned appends write zeros ahead of themselves, up to
    /// `capacity` bytes: an fdatasync after overwriting blocks that already
    /// hold data flushes only the data, while one after extending the file
    /// (or filling allocated-but-unwritten blocks) also commits metadata to
    /// the journal, measured at about twice the latency. Only the writer
    /// calls this.
    pub fn zero_ahead_up_to(&self, capacity: u64) {
        self.zero_limit.store(capacity, Ordering::Relaxed);
    }

    /// Writes zeros past `end` a chunk at a time. Best effort: if it fails
    /// (a full disk), appends go on without it.
    ///
    fn zero_ahead(&self, end: u64) {
        let limit = self.zero_limit.load(Ordering::Relaxed);
        let zeroed = self.zeroed_to.load(Ordering::Relaxed);
        if limit == 0 || end <= zeroed {
            return;
        }
        let Range { start: mut at, end: to } = zeros_ahead_of(end, zeroed, limit);
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            let zeros = ZEROS.get(..n).unwrap_or_default();
            if self.file.write_all_at(zeros, at).is_err() {
                self.zero_limit.store(0, Ordering::Relaxed);
                break;
            }
            at += n as u64;
        }
        self.zeroed_to.store(at, Ordering::Relaxed);
    }

    /// Lets readers copy from a map of the first `capacity` bytes. The map
    /// may run past the end of the file: readers stay below `size`.
    pub fn map_for_reads(&self, capacity: u64) -> io::Result<()> {
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
    pub fn seal(&self) -> io::Result<()> {
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

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Writes `bytes` at the end and returns where they start. Only the log's
    /// writer calls this. On failure the file is cut back so that no partial
    /// frame stays behind.
    pub fn append(&self, bytes: &[u8]) -> io::Result<u64> {
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

    /// Whether the log's background thread has work here: pages to fault
    /// in ahead of the writer, or writeback to start (`work_ahead`).
    pub fn wants_work_ahead(&self) -> bool {
        let size = self.size();
        let prefaulted = self.prefaulted_to.load(Ordering::Relaxed);
        // Only an append map is faulted in (and allocated) ahead.
        let mapped = self.allocated_to.load(Ordering::Relaxed) > 0;
        mapped && size + PREFAULT_AHEAD >= prefaulted + PREFAULT_CHUNK
            || size
                >= self
                    .writeback_from
                    .load(Ordering::Relaxed)
                    .saturating_add(WRITEBACK_CHUNK)
    }

    /// What an active store needs done off its writer's path, by the log's
    /// background thread: the pages ahead of the writer faulted in, and
    /// writeback started for what is written.
    pub fn work_ahead(&self) {
        self.allocate_for_the_writer();
        self.prefault_ahead();
        self.start_writeback();
    }

    /// Faults in the pages up to `PREFAULT_AHEAD` past the data, through the
    /// read map: the page cache then holds them (allocated and zeroed), and
    /// the writer's copy into its own map takes only a minor fault a page.
    /// Done on the writer's path, under the writer lock, this held every
    /// appender up for a millisecond a MiB, and for tens of milliseconds
    /// whenever the CPU was taken from it meanwhile. Best effort: where the
    /// map runs past the file, or the kernel has no MADV_POPULATE_READ, the
    /// copy faults pages in itself.
    fn prefault_ahead(&self) {
        let target = self.size() + PREFAULT_AHEAD;
        loop {
            let from = self.prefaulted_to.load(Ordering::Relaxed).max(self.size());
            if from >= target {
                return;
            }
            // A chunk at a time: a cut or a seal waits for this lock.
            let view = self.view_for_readers();
            // Read under the lock, which every shortening of the file holds:
            // the file reaches this much. Never past it: a page past the end
            // of the file, or in a hole the disk has no room for, is SIGBUS
            // (which the populating madvise turns into EFAULT).
            let allocated = self.allocated_to.load(Ordering::Acquire);
            let to = target.min(from + PREFAULT_CHUNK).min(allocated);
            if to <= from {
                return;
            }
            if let Some(map) = view.as_ref() {
                let mapped = (map.len() as u64).min(to).saturating_sub(from);
                if mapped > 0 {
                    let _ = map.advise_range(Advice::PopulateRead, from as usize, mapped as usize);
                }
            }
            drop(view);
            self.prefaulted_to.store(to, Ordering::Relaxed);
        }
    }

    /// Overwrites bytes already written, in place, while no reader copies
    /// any. Only the writer calls this.
    pub fn rewrite_at(&self, pos: u64, bytes: &[u8]) -> io::Result<()> {
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
    pub fn with_bytes<R>(&self, pos: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
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
    pub fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
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
    pub fn cut_to(&self, size: u64) -> io::Result<()> {
        let old = self.size();
        debug_assert!(size <= old, "a cut only shortens a store");
        // No reader may be copying bytes while the file shrinks.
        let _view = self.view_exclusive();
        let mut mapped = self.map();
        self.size.store(size, Ordering::Release);
        self.writeback_from.fetch_min(size, Ordering::Relaxed);
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

    /// Starts writing back the data appended since the last call, without
    /// waiting for it, once a chunk has built up (whole pages only: a page
    /// the writer is still filling would be write-protected under it). With `--fsync never` the
    /// kernel would otherwise keep a whole segment dirty until the sync
    /// that seals it, and every appender would wait for that one long
    /// flush; this way that sync finds little left to write. Best effort,
    /// and it promises nothing about durability.
    fn start_writeback(&self) {
        use std::os::fd::AsRawFd;
        let size = self.size() / PAGE * PAGE;
        let from = self.writeback_from.load(Ordering::Relaxed);
        if size < from.saturating_add(WRITEBACK_CHUNK)
            || self
                .writeback_from
                .compare_exchange(from, size, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(from), libc::off64_t::try_from(size - from)) else {
            return;
        };
        // SAFETY: a plain syscall on a descriptor this store owns.
        unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
        // What came before this chunk is done with: its page-table entries
        // go now, a chunk at a time, not all at once when the seal unmaps
        // the maps under the writer lock (some 25 ms for a full 256 MiB
        // segment, every appender waiting: the p99.9 of `--fsync never`).
        self.zap_below(from);
    }

    /// Drops both maps' page-table entries below `end` (whole pages the
    /// writer is done with). Their data stays in the page cache (a shared
    /// map hands its dirty bits to its pages); a reader or the writer that
    /// touches them again only takes a minor fault.
    fn zap_below(&self, end: u64) {
        use memmap2::UncheckedAdvice;
        let below = |len: usize| (end.min(len as u64) / PAGE * PAGE) as usize;
        {
            let view = self.view_for_readers();
            if let Some(map) = view.as_ref()
                && below(map.len()) > 0
            {
                // SAFETY: a shared map of a file: MADV_DONTNEED drops only
                // the mapping of its pages, never their contents.
                let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, 0, below(map.len())) };
            }
        }
        // The append map is the writer's: drop it a piece at a time, from
        // where the last call stopped, so that no append waits for more
        // than one piece (a whole chunk held the lock for ~0.25 ms).
        let mut at = self.zapped_to.load(Ordering::Relaxed).min(end) / PAGE * PAGE;
        loop {
            let mapped = self.map();
            let Some(map) = mapped.as_ref() else { return };
            let stop = below(map.len());
            if at >= stop as u64 {
                break;
            }
            let piece = (stop as u64 - at).min(ZAP_PIECE) as usize;
            // SAFETY: as above.
            let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, at as usize, piece) };
            at += piece as u64;
        }
        self.zapped_to.store(at, Ordering::Relaxed);
    }

    /// Forces written bytes to disk: fdatasync also writes back pages
    /// dirtied through the map.
    pub fn sync(&self) -> io::Result<()> {
        fsops::sync_data(&self.file, &self.path)
    }

    /// The file was removed: dropping the store only closes it.
    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }
}

/// How far to allocate a mapped store for data ending at `end`: a chunk
/// past the chunk `end` falls in, but never past the map.
fn allocation_for(end: u64, capacity: u64) -> u64 {
    end.div_ceil(ALLOCATE_AHEAD)
        .saturating_add(1)
        .saturating_mul(ALLOCATE_AHEAD)
        .min(capacity)
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
        assert_eq!(len(), 2 * ZERO_CHUNK, "zeros one chunk past the data");
        assert_eq!(store.read_at(0, 5).unwrap(), b"hello");
        store.cut_to(2).unwrap();
        assert_eq!(len(), 2, "a cut drops the zeros too");
        store.append(b"y!").unwrap();
        assert_eq!(len(), 2 * ZERO_CHUNK);
        store.seal().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hey!");
        store.append(b"?").unwrap();
        assert_eq!(len(), 5, "a sealed store zeroes nothing ahead");
    }

    #[test]
    fn zeros_go_ahead_of_the_data_never_under_it() {
        // An append of [ZERO_CHUNK * 3 / 2, end) that passes the zeros.
        let end = 4 * ZERO_CHUNK + 10;
        // Zeros under it would be copied into the page cache only
        // to be overwritten by the data at once: twice the copying for
        // appends that pass what is zeroed, as large batches do.
        let zeros = zeros_ahead_of(end, 2 * ZERO_CHUNK, 100 * ZERO_CHUNK);
        assert_eq!(zeros, end..6 * ZERO_CHUNK);
        assert_eq!(zeros_ahead_of(5, 0, 100 * ZERO_CHUNK), 5..2 * ZERO_CHUNK);
        assert!(zeros_ahead_of(5, 0, 3).is_empty(), "never past the limit");
        let within = zeros_ahead_of(5, 2 * ZERO_CHUNK, 100 * ZERO_CHUNK);
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
