//! Work on an active store ahead of its writer, and behind it: allocating
//! the file a chunk ahead of mapped appends (`allocate_ahead`, and the
//! background thread's `allocate_for_the_writer`), writing zeros ahead of
//! positioned appends (`zero_ahead`), faulting the append map's pages in
//! ahead (`prefault_ahead`), and starting writeback of what is written
//! (`start_writeback`, `zap_below`). The background thread does what it can
//! (`work_ahead`); the writer never depends on it. Nothing here changes a
//! byte readers may read: the file only grows, and zeros go past `size`.
//! The store's own format and locking are in `store`.

use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use memmap2::{Advice, MmapMut};

use super::{Store, fsops};

/// Mapped appends allocate the file this much at a time: an allocation
/// reaches one to two of these past the append that made it, and appends
/// then fill that, so 0 to 8 MiB are allocated past the data. One
/// `fallocate` every few MiB, usually by the background thread
/// (`allocate_for_the_writer`), else by the writer itself.
pub(super) const ALLOCATE_AHEAD: u64 = 4 << 20;
/// The pages of an active store are faulted in this far ahead of its
/// writer, by the log's background thread (see `prefault_ahead`)...
pub(super) const PREFAULT_AHEAD: u64 = 4 << 20;
/// ...which is asked to once the writer has used up this much of it, and
/// faults in this much at a time (while it holds readers' lock shared).
pub(super) const PREFAULT_CHUNK: u64 = 1 << 20;
/// Pages: writeback is started only for whole ones (see `start_writeback`).
pub(super) const PAGE: u64 = 4096;
/// Positioned appends write zeros up to this far ahead (see `zero_ahead`)...
pub(super) const ZERO_CHUNK: u64 = 1 << 20;
/// ...and a store opened (or made) starts at this much (see `zero_chunk`).
pub(super) const FIRST_ZERO_CHUNK: u64 = 16 << 10;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
/// Writeback of appended data is started once this much built up (see
/// `start_writeback`).
const WRITEBACK_CHUNK: u64 = 8 << 20;
/// The most of the append map `zap_below` drops under the writer's map lock.
const ZAP_PIECE: u64 = 1 << 20;

/// Where `zero_ahead` writes zeros after an append that ends at `end`:
/// past what is zeroed, up to a chunk beyond `end`, within `limit`. Never
/// under the append itself: zeros there would only be copied into the page
/// cache to be overwritten at once (twice the copying for an append that
/// passes the zeros, as a large batch does), and would not spare its sync
/// the metadata commit, which the append's growing of the file costs anyway.
pub(super) fn zeros_ahead_of(end: u64, zeroed: u64, limit: u64, chunk: u64) -> Range<u64> {
    debug_assert!(chunk.is_power_of_two() && chunk <= ZERO_CHUNK);
    let to = (end.div_ceil(chunk) * chunk + chunk).min(limit);
    zeroed.max(end)..to
}

/// How far ahead to zero for a store that took `appended` bytes since it
/// opened: as much as it took, from `FIRST_ZERO_CHUNK` up to `ZERO_CHUNK`.
/// A replica reopened at a restart may take one blank entry from its new
/// leader and nothing more for hours: a whole chunk was 2 MiB written to
/// the page cache and flushed to disk for it (2 GB at each restart of a node
/// holding 1,000 named logs). A store that keeps taking appends reaches the
/// whole chunk within its first MiB, a handful of smaller zero writes later.
pub(super) fn zero_chunk(appended: u64) -> u64 {
    appended
        .checked_next_power_of_two()
        .unwrap_or(ZERO_CHUNK)
        .clamp(FIRST_ZERO_CHUNK, ZERO_CHUNK)
}

/// How far to allocate a mapped store for data ending at `end`: a chunk
/// past the chunk `end` falls in, but never past the map.
pub(super) fn allocation_for(end: u64, capacity: u64) -> u64 {
    end.div_ceil(ALLOCATE_AHEAD)
        .saturating_add(1)
        .saturating_mul(ALLOCATE_AHEAD)
        .min(capacity)
}

impl Store {
    /// Allocates the file ahead of a mapped append that would end at `end`,
    /// unless the background thread already has (`allocate_for_the_writer`):
    /// the writer never depends on it. Returns false (and drops the map:
    /// appends go on as positioned writes) where the filesystem stopped
    /// allocating ahead.
    pub(super) fn allocate_ahead(&self, mapped: &mut Option<MmapMut>, end: u64) -> io::Result<bool> {
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
    pub(in super::super) fn zero_ahead_up_to(&self, capacity: u64) {
        self.zero_limit.store(capacity, Ordering::Relaxed);
    }

    /// Writes zeros past `end` a chunk at a time. Best effort: if it fails
    /// (a full disk), appends go on without it.
    ///
    pub(super) fn zero_ahead(&self, end: u64) {
        let limit = self.zero_limit.load(Ordering::Relaxed);
        let zeroed = self.zeroed_to.load(Ordering::Relaxed);
        if limit == 0 || end <= zeroed {
            return;
        }
        let chunk = zero_chunk(end.saturating_sub(self.opened_size.load(Ordering::Relaxed)));
        let Range { start: mut at, end: to } = zeros_ahead_of(end, zeroed, limit, chunk);
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

    /// Whether the log's background thread has work here: pages to fault
    /// in ahead of the writer, or writeback to start (`work_ahead`).
    pub(in super::super) fn wants_work_ahead(&self) -> bool {
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
    pub(in super::super) fn work_ahead(&self) {
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
}
