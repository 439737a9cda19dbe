//! The writer role as a type. One writer at a time changes the log: it
//! assigns offsets, writes frames into the active segment, rolls, and cuts,
//! purges or resets. A `Writer` is the writer lock held, and what is valid
//! only under that lock is a method of `Writer` (in `appending`,
//! `combining`, `cutting`), so that the compiler checks what a comment on
//! each method used to say: there is no way to call them, or to change the
//! list of segments, without holding the lock.
//!
//! The list of segments (`SegmentList`) is read by anyone (readers find
//! their segment under a short read lock) and changed only through a
//! `Writer` (`push_segment`, `pop_segment`, ...). Nothing here is on disk.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::super::error::{LogError, Result};
use super::super::segment::Segment;
use super::{Appended, Log};

/// What the writer keeps between appends.
#[derive(Debug)]
pub(super) struct WriterState {
    /// The offset the next record gets.
    pub(super) next: u64,
    /// Timestamps never go backwards, even if the clock does (see
    /// `Writer::note_stamp`).
    last_timestamp: u64,
    /// Totals since open, for metrics: counted under this lock rather than
    /// in shared atomics that every append would pull across cores.
    pub(super) appended: Appended,
    pub(super) buf: Vec<u8>,
}

/// The writer lock; only `Log::lock_writer` and `Log::lock_writer_unchecked`
/// take it.
#[derive(Debug)]
pub(super) struct WriterLock(Mutex<WriterState>);

impl WriterLock {
    pub(super) fn new(next: u64, last_timestamp: u64) -> WriterLock {
        WriterLock(Mutex::new(WriterState {
            next,
            last_timestamp,
            appended: Appended::default(),
            buf: Vec::new(),
        }))
    }

    /// Returns once no writer holds the lock: a cut or a reset holds it
    /// from start to end, and taking it makes what it did visible here.
    pub(super) fn wait(&self) {
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// The writer lock, held. Its state reads and writes through `Deref`.
pub(super) struct Writer<'a> {
    log: &'a Log,
    state: MutexGuard<'a, WriterState>,
}

impl Deref for Writer<'_> {
    type Target = WriterState;

    fn deref(&self) -> &WriterState {
        &self.state
    }
}

impl DerefMut for Writer<'_> {
    fn deref_mut(&mut self) -> &mut WriterState {
        &mut self.state
    }
}

/// The segments in base order, the last one active.
#[derive(Debug)]
pub(super) struct SegmentList(RwLock<Vec<Arc<Segment>>>);

impl SegmentList {
    pub(super) fn new(segments: Vec<Arc<Segment>>) -> SegmentList {
        SegmentList(RwLock::new(segments))
    }

    /// The segments as they are; hold the guard briefly (the writer waits
    /// for it to change the list).
    pub(super) fn read(&self) -> RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Private: only a `Writer` changes the list.
    fn write(&self) -> RwLockWriteGuard<'_, Vec<Arc<Segment>>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Log {
    /// The writer, for a change. A writer that panicked while it held the
    /// lock may have left `next` and the segments apart: that is fatal for
    /// writes, as a failed sync is.
    pub(super) fn lock_writer(&self) -> Result<Writer<'_>> {
        self.check_writable()?;
        match self.shared.writer.0.lock() {
            Ok(state) => {
                // `close` may have run while this waited: it syncs only what
                // was written before it took the lock.
                self.check_writable()?;
                Ok(Writer { log: self, state })
            }
            Err(_) => {
                self.fail_writer("a writer panicked while it held the writer lock");
                Err(self.writer_failed())
            }
        }
    }

    /// The writer lock whatever the log's state (closed, failed): for
    /// `close`, and for readers that must wait for a cut or see no append
    /// half-done. It must not write.
    pub(super) fn lock_writer_unchecked(&self) -> Writer<'_> {
        let state = self.shared.writer.0.lock().unwrap_or_else(PoisonError::into_inner);
        Writer { log: self, state }
    }

    pub(super) fn writer_failed(&self) -> LogError {
        match self.shared.failed.get() {
            Some(why) => LogError::WriterFailed(why.clone()),
            None => LogError::Closed,
        }
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if let Some(why) = self.shared.failed.get() {
            return Err(LogError::WriterFailed(why.clone()));
        }
        Ok(())
    }

    /// Refuses every later append, and every appender still waiting, until
    /// a restart; reads go on. `why` is what appenders and `/readyz` are told.
    pub(super) fn fail_writer(&self, why: &str) {
        if self.shared.failed.set(why.to_string()).is_ok() {
            tracing::error!(reason = why, "refusing appends until restart (reads go on)");
        }
        self.shared.committer.fail();
    }
}

impl<'a> Writer<'a> {
    /// The log this writer writes.
    pub(super) fn log(&self) -> &'a Log {
        self.log
    }

    fn segments(&self) -> RwLockWriteGuard<'a, Vec<Arc<Segment>>> {
        self.log.shared.segments.write()
    }

    /// A new active segment (a roll).
    pub(super) fn push_segment(&self, segment: Arc<Segment>) {
        self.segments().push(segment);
    }

    /// The newest segment leaves the list, once its files are gone.
    pub(super) fn pop_segment(&self) {
        self.segments().pop();
    }

    /// The oldest segment leaves the list, once its files are gone, and
    /// readers start at what is left (`gone_to` if nothing is).
    pub(super) fn remove_oldest_segment(&self, gone_to: u64) {
        let mut segments = self.segments();
        if !segments.is_empty() {
            segments.remove(0);
        }
        let lowest = segments.first().map_or(gone_to, |s| s.base());
        self.log.shared.bounds.set_lowest(lowest);
    }

    /// `segments` take the list's place (a reset onto a new base).
    pub(super) fn replace_segments(&self, segments: Vec<Arc<Segment>>) {
        *self.segments() = segments;
    }

    /// The log is closed: every segment is let go (files are cut back to
    /// their data once the last reader lets go).
    pub(super) fn clear_segments(&self) {
        self.segments().clear();
    }

    /// The stamp the next records get: the clock's time, or the newest
    /// stamp written so far if the clock is behind it.
    pub(super) fn next_stamp(&mut self) -> u64 {
        let stamp = self.log.shared.config.clock.now_ms().max(self.last_timestamp);
        self.note_stamp(stamp);
        stamp
    }

    /// Records stamped `stamp` are written: no later one is stamped
    /// earlier, and `Log::newest_stamp` says so without the writer lock.
    pub(super) fn note_stamp(&mut self, stamp: u64) {
        self.last_timestamp = self.last_timestamp.max(stamp);
        self.log.shared.newest_stamp.fetch_max(stamp, Ordering::Release);
    }

    /// Sets the next offset from the segments, whatever a cut or a reset
    /// left of them (`empty` when none is left).
    pub(super) fn follow_segments(&mut self, empty: u64) {
        let next = self.log.read_segments().last().map_or(empty, |s| s.next_offset());
        self.next = next;
    }
}
