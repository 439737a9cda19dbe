//! The log: segments in base-offset order, the last one active.
//!
//! One writer at a time (the `writer` mutex) assigns dense offsets, encodes
//! frames into one buffer and writes it with one call. With
//! `Durability::Always` appenders do not write themselves: they encode their
//! batch and submit it, and the committer writes every submitted batch at
//! once and syncs (`group_commit`, `combining`). Any number of readers
//! find their segment under a short read lock and then read without locks.
//! Readers see offsets below `visible`, which is raised only after a record
//! is fully written (and, with `Durability::Always`, synced). The data
//! directory holds the segment files and a `LOCK` file held by the process
//! that has the log open.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::{oneshot, watch};

use super::config::{Durability, LogConfig};
use super::error::{LogError, Result};
use super::group_commit::{Ack, GroupCommit, Submitted};
use super::record::{
    FLAG_BATCH_CONTINUES, FrameError, Frames, MAX_STORED_FRAME, Payload, Record, RecordRef, encode_frame,
    encode_unstamped, frame_len,
};
use super::segment::{Chunk, Segment};
use super::snapshot::SnapshotReader;

mod background;
mod combining;
mod cutting;
mod opening;

use background::{spawn_committer, spawn_interval_sync};
use opening::{lock_directory, open_segments};

/// A handle on an open log; clones share it.
#[derive(Clone, Debug)]
pub struct Log {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    config: LogConfig,
    _lock: File,
    writer: Mutex<Writer>,
    segments: RwLock<Vec<Arc<Segment>>>,
    visible: AtomicU64,
    lowest: AtomicU64,
    group: Arc<GroupCommit>,
    appended: watch::Sender<u64>,
    dirty: AtomicBool,
    closed: AtomicBool,
    /// Set when a sync fails (what was written may not be on disk, and
    /// Linux may not report the loss twice, so no later append is trusted),
    /// when a cut or a reset fails half-way, or when the committer dies.
    failed: std::sync::OnceLock<String>,
    /// Bumped before every cut or reset changes anything: a reader whose
    /// read failed while it moved knows to look again.
    cuts: AtomicU64,
    /// Metric handle, looked up once: a registry lookup per sync shows in profiles.
    fsync_seconds: metrics::Histogram,
    /// Appenders whose records are written and wait for a sync, oldest first.
    durable_waiters: Mutex<VecDeque<Waiter>>,
    /// The committer or interval-sync thread, joined by `close`: it holds
    /// the log while it works, and a reopen must not find the directory
    /// still locked.
    background: Mutex<Option<JoinHandle<()>>>,
}

/// Records `[first, next)` are written; `ack` hears once they are durable.
#[derive(Debug)]
struct Waiter {
    next: u64,
    first: u64,
    ack: oneshot::Sender<Ack>,
}

/// Where one replicated frame lies in its buffer.
struct Span {
    start: usize,
    end: usize,
    timestamp_ms: u64,
}

/// Checks every replicated frame (checksum, and dense offsets from
/// `expected`) and says where each lies.
fn replicated_spans(frames: &[u8], expected: u64) -> Result<Vec<Span>> {
    Frames::new(frames, Some(expected), MAX_STORED_FRAME)
        .map(|frame| match frame {
            Ok((at, view)) => Ok(Span {
                start: at,
                end: at + view.frame_len,
                timestamp_ms: view.timestamp_ms,
            }),
            Err((_, FrameError::WrongOffset { expected, found })) => Err(LogError::OffsetMismatch { expected, found }),
            Err((at, e)) => Err(LogError::Corrupt {
                file: PathBuf::from("<replicated frames>"),
                position: at as u64,
                offset: None,
                reason: e.to_string(),
            }),
        })
        .collect()
}

/// Whether a write may start a new segment (see `append_batch_async`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Roll {
    Allow,
    Refuse,
}

/// Runs `f`, which blocks, telling a multi-threaded tokio runtime first so
/// that it moves the worker's other tasks elsewhere.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Every record of a batch but the last says that the batch goes on.
fn batch_flags(i: usize, len: usize) -> u8 {
    if i + 1 < len { FLAG_BATCH_CONTINUES } else { 0 }
}

#[derive(Debug)]
struct Writer {
    /// The offset the next record gets.
    next: u64,
    /// Timestamps never go backwards, even if the clock does.
    last_timestamp: u64,
    /// Totals since open, for metrics: counted under this lock rather than
    /// in shared atomics that every append would pull across cores.
    appended: Appended,
    buf: Vec<u8>,
}

/// Records and frame bytes appended since the log was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    pub records: u64,
    pub bytes: u64,
}

impl Appended {
    fn add(&mut self, records: u32, bytes: u64) {
        self.records += u64::from(records);
        self.bytes += bytes;
    }
}

/// Sizes for `/status` and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogStats {
    pub lowest_offset: u64,
    pub next_offset: u64,
    pub segments: usize,
    pub size_bytes: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Log {
    /// Opens the log in `dir` (created if missing), recovering the active
    /// segment's tail. Fails at once if another process has it open.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let lock_file = lock_directory(&dir)?;
        let segments = open_segments(&dir, &config)?;
        let lowest = segments.first().map(|s| s.base()).unwrap_or(0);
        let next = segments.last().map(|s| s.next_offset()).unwrap_or(0);
        let last_timestamp = match segments.last() {
            Some(last) if next > last.base() => last.read(next - 1)?.timestamp_ms,
            _ => 0,
        };
        let durability = config.durability;
        let shared = Arc::new(Shared {
            dir,
            config,
            _lock: lock_file,
            writer: Mutex::new(Writer {
                next,
                last_timestamp,
                appended: Appended::default(),
                buf: Vec::new(),
            }),
            segments: RwLock::new(segments),
            visible: AtomicU64::new(next),
            lowest: AtomicU64::new(lowest),
            group: Arc::new(GroupCommit::new(next)),
            appended: watch::Sender::new(next),
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            failed: std::sync::OnceLock::new(),
            cuts: AtomicU64::new(0),
            fsync_seconds: metrics::histogram!("distlog_fsync_duration_seconds"),
            durable_waiters: Mutex::new(VecDeque::new()),
            background: Mutex::new(None),
        });
        match durability {
            Durability::Interval(every) => {
                *lock(&shared.background) = Some(spawn_interval_sync(Arc::downgrade(&shared), every)?);
            }
            Durability::Always => {
                *lock(&shared.background) = Some(spawn_committer(Arc::downgrade(&shared), shared.group.clone())?);
            }
            Durability::Never => {}
        }
        Ok(Log { shared })
    }

    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The oldest offset still held.
    pub fn lowest_offset(&self) -> u64 {
        self.shared.lowest.load(Ordering::Acquire)
    }

    /// The offset the next record will get; readers see everything below it.
    pub fn next_offset(&self) -> u64 {
        self.shared.visible.load(Ordering::Acquire)
    }

    /// A receiver told the new `next_offset` whenever records become visible.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let receiver = self.shared.appended.subscribe();
        // Appends skip the notification while nobody listens: catch up now.
        self.shared.appended.send_if_modified(|seen| {
            let now = self.shared.visible.load(Ordering::Acquire);
            let stale = *seen != now;
            *seen = now;
            stale
        });
        receiver
    }

    pub fn stats(&self) -> LogStats {
        let segments = self.read_segments();
        LogStats {
            lowest_offset: self.lowest_offset(),
            next_offset: self.next_offset(),
            segments: segments.len(),
            size_bytes: segments.iter().map(|s| s.size_bytes()).sum(),
        }
    }

    // ----- appends -------------------------------------------------------

    pub fn append(&self, value: &[u8]) -> Result<u64> {
        self.append_batch(&[Payload::new(value)])
    }

    /// Appends all records or none, returning the first one's offset. The
    /// batch lands in one segment, and recovery cuts a batch that did not
    /// reach the disk whole.
    pub fn append_batch(&self, payloads: &[Payload]) -> Result<u64> {
        if self.shared.config.durability != Durability::Always {
            return self
                .write_batch(payloads, Roll::Allow)?
                .map(|(first, _)| first)
                .ok_or(LogError::Closed);
        }
        let acked = self.submit(payloads)?;
        self.acked(acked.blocking_recv().ok())
    }

    /// `append_batch` for async callers: with `Durability::Always` the wait
    /// for the committer yields instead of blocking a thread.
    /// Without `Always`, a batch that needs a new segment is written with
    /// the runtime told that this thread blocks (the roll allocates, maps
    /// and syncs), so that the worker's other tasks move elsewhere.
    pub async fn append_batch_async(&self, payloads: &[Payload<'_>]) -> Result<u64> {
        if self.shared.config.durability != Durability::Always {
            return match self.write_batch(payloads, Roll::Refuse)? {
                Some((first, _)) => Ok(first),
                None => blocking(|| {
                    // Outside the writer lock: the roll's own sync then has
                    // little left to write while appenders wait for it.
                    if let Ok(full) = self.active() {
                        let _ = full.store().sync();
                    }
                    self.write_batch(payloads, Roll::Allow)
                })?
                .map(|(first, _)| first)
                .ok_or(LogError::Closed),
            };
        }
        let acked = self.submit(payloads)?;
        self.acked(acked.await.ok())
    }

    /// Checks and encodes a batch and hands it to the committer, which
    /// writes, syncs and then acknowledges it (see `group_commit`).
    fn submit(&self, payloads: &[Payload]) -> Result<oneshot::Receiver<Ack>> {
        let (count, bytes) = self.check_batch(payloads)?;
        self.check_writable()?;
        let mut frames = Vec::with_capacity(bytes as usize);
        for (i, payload) in payloads.iter().enumerate() {
            encode_unstamped(&mut frames, batch_flags(i, payloads.len()), *payload);
        }
        let (ack, acked) = oneshot::channel();
        self.shared.group.submit(Submitted { frames, count, ack });
        Ok(acked)
    }

    /// What the committer said of a batch (`None`: it went away).
    fn acked(&self, told: Option<Ack>) -> Result<u64> {
        match (told, self.shared.failed.get()) {
            (Some(Ok(first)), _) => Ok(first),
            (Some(Err(Some(error))), _) => Err(error),
            (_, Some(why)) => Err(LogError::WriterFailed(why.clone())),
            (_, None) => Err(LogError::Closed),
        }
    }

    /// A batch's record count and frame bytes, if the limits allow it.
    fn check_batch(&self, payloads: &[Payload]) -> Result<(u32, u64)> {
        let config = &self.shared.config;
        if payloads.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let mut bytes = 0u64;
        for p in payloads {
            if p.value.len() as u64 > config.max_record_bytes {
                return Err(LogError::TooLarge {
                    what: "record",
                    size: p.value.len() as u64,
                    max: config.max_record_bytes,
                });
            }
            bytes += frame_len(p.value.len()) as u64;
        }
        let count = u32::try_from(payloads.len()).unwrap_or(u32::MAX);
        if count > config.index_capacity() || bytes > config.max_segment_bytes {
            return Err(LogError::TooLarge {
                what: "batch",
                size: bytes,
                max: config.max_segment_bytes,
            });
        }
        Ok((count, bytes))
    }

    /// Writes a batch and makes it visible as the durability policy allows
    /// without waiting for a sync. Returns its first offset and the offset
    /// after it, or `None` if it needs a new segment and `roll` refuses one.
    fn write_batch(&self, payloads: &[Payload], roll: Roll) -> Result<Option<(u64, u64)>> {
        let (count, bytes) = self.check_batch(payloads)?;
        let mut w = self.lock_writer()?;
        if roll == Roll::Refuse && self.needs_roll(bytes, count)? {
            return Ok(None);
        }
        let first = w.next;
        let timestamp = now_ms().max(w.last_timestamp);
        w.last_timestamp = timestamp;
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        for (i, payload) in payloads.iter().enumerate() {
            encode_frame(
                &mut buf,
                first + i as u64,
                timestamp,
                batch_flags(i, payloads.len()),
                *payload,
            );
        }
        let written = self.write_frames(&mut w, &buf, count);
        w.buf = buf;
        written?;
        let next = w.next;
        self.finish_write(w, count, bytes, None);
        Ok(Some((first, next)))
    }

    /// Whether `bytes` in `count` frames would make the writer roll first.
    fn needs_roll(&self, bytes: u64, count: u32) -> Result<bool> {
        let active = self.active()?;
        Ok(!active.is_empty() && !active.has_room(bytes, count, self.shared.config.max_segment_bytes))
    }

    /// Appends frames made by another log (replication), keeping their
    /// offsets and timestamps. Every frame is checked, and the first must
    /// carry `next_offset`. Returns how many records were appended.
    pub fn append_frames(&self, frames: &[u8]) -> Result<u32> {
        let mut w = self.lock_writer()?;
        let spans = replicated_spans(frames, w.next)?;
        if let Some(newest) = spans.iter().map(|span| span.timestamp_ms).max() {
            w.last_timestamp = w.last_timestamp.max(newest);
        }
        // Write in pieces that fit the active segment, rolling between them.
        let piece = |from: usize, to: usize| {
            frames
                .get(from..to)
                .ok_or_else(|| LogError::Io(std::io::Error::other("a frame span outside its buffer")))
        };
        let mut piece_start = 0;
        let mut piece_count = 0u32;
        for (i, span) in spans.iter().enumerate() {
            let piece_bytes = (span.end - piece_start) as u64;
            let active = self.active()?;
            if piece_count > 0 && !active.has_room(piece_bytes, piece_count + 1, self.shared.config.max_segment_bytes) {
                self.write_frames(&mut w, piece(piece_start, span.start)?, piece_count)?;
                piece_start = span.start;
                piece_count = 0;
            }
            piece_count += 1;
            if i + 1 == spans.len() {
                self.write_frames(&mut w, piece(piece_start, span.end)?, piece_count)?;
            }
        }
        let count = spans.len() as u32;
        if count > 0 {
            if self.shared.config.durability == Durability::Always {
                let (ack, acked) = oneshot::channel();
                let first = w.next - u64::from(count);
                self.finish_write(w, count, frames.len() as u64, Some((first, ack)));
                self.acked(acked.blocking_recv().ok())?;
            } else {
                self.finish_write(w, count, frames.len() as u64, None);
            }
        }
        Ok(count)
    }

    /// The writer, for a change. A writer that panicked while it held the
    /// lock may have left `next` and the segments apart: that is fatal for
    /// writes, as a failed sync is.
    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        self.check_writable()?;
        match self.shared.writer.lock() {
            Ok(w) => Ok(w),
            Err(_) => {
                self.fail_writer("a writer panicked while it held the writer lock");
                Err(self.writer_failed())
            }
        }
    }

    fn writer_failed(&self) -> LogError {
        match self.shared.failed.get() {
            Some(why) => LogError::WriterFailed(why.clone()),
            None => LogError::Closed,
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if let Some(why) = self.shared.failed.get() {
            return Err(LogError::WriterFailed(why.clone()));
        }
        Ok(())
    }

    /// Writes `count` frames into the active segment, rolling first if they
    /// do not fit. An empty segment takes them whatever their size, so that a
    /// batch (checked against the limits before) is never split.
    fn write_frames(&self, w: &mut Writer, frames: &[u8], count: u32) -> Result<()> {
        let mut active = self.active()?;
        if !active.is_empty() && !active.has_room(frames.len() as u64, count, self.shared.config.max_segment_bytes) {
            active = self.roll(w)?;
        }
        active.append(frames, count)?;
        w.next += u64::from(count);
        debug_assert_eq!(w.next, active.next_offset(), "the writer and the active segment agree");
        Ok(())
    }

    /// Seals the active segment and starts the next. The sealed segment is
    /// synced first, whatever the durability: once the new segment's name
    /// is on disk, a sealed segment that lost its tail to a power cut would
    /// leave a gap that no open could get past.
    fn roll(&self, w: &Writer) -> Result<Arc<Segment>> {
        let old = self.active()?;
        if let Err(e) = old.sync() {
            // As with the committer's own syncs: Linux may not report the
            // loss again, so records written before the roll are not trusted.
            self.fail_writer(&format!("a sync failed: {e}"));
            return Err(e);
        }
        old.seal()?;
        let new = match Segment::create(&self.shared.dir, w.next, &self.shared.config) {
            Ok(new) => Arc::new(new),
            Err(e) => {
                // A new segment's file left behind would end the log at its
                // base on the next open, behind records appended meanwhile.
                if matches!(e, LogError::PartlyCreated { .. }) {
                    self.fail_writer(&e.to_string());
                }
                return Err(e);
            }
        };
        self.write_segments().push(new.clone());
        tracing::debug!(base = w.next, "rolled to a new segment");
        Ok(new)
    }

    /// Makes written records visible as the durability policy allows: at
    /// once, or (`Always`) once the committer has synced them.
    /// A `waiter` (the records' first offset and whom to tell) is told once
    /// the sync covers its records; it is queued under the writer lock, so
    /// the queue is in offset order.
    fn finish_write(
        &self,
        mut w: MutexGuard<'_, Writer>,
        count: u32,
        bytes: u64,
        waiter: Option<(u64, oneshot::Sender<Ack>)>,
    ) {
        w.appended.add(count, bytes);
        let next = w.next;
        match self.shared.config.durability {
            Durability::Always => {
                if let Some((first, ack)) = waiter {
                    lock(&self.shared.durable_waiters).push_back(Waiter { next, first, ack });
                }
                self.shared.group.note_written(next);
            }
            Durability::Interval(_) => {
                self.shared.dirty.store(true, Ordering::Release);
                self.publish(next);
            }
            Durability::Never => self.publish(next),
        }
        drop(w);
    }

    /// Records and bytes appended since open.
    pub fn appended(&self) -> Appended {
        lock(&self.shared.writer).appended
    }

    /// Refuses every later append, and every appender still waiting, until
    /// a restart; reads go on. `why` is what appenders and `/readyz` are told.
    fn fail_writer(&self, why: &str) {
        if self.shared.failed.set(why.to_string()).is_ok() {
            tracing::error!(reason = why, "refusing appends until restart (reads go on)");
        }
        self.shared.group.fail();
        self.release_waiters(u64::MAX, false);
    }

    /// Why appends are refused until a restart, if they are.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.get().cloned()
    }

    /// Tells async appenders whose records are below `upto` how it went
    /// (`false`: a sync failed or the log stopped; `upto` is then all).
    fn release_waiters(&self, upto: u64, durable: bool) {
        let mut waiters = lock(&self.shared.durable_waiters);
        while waiters.front().is_some_and(|waiter| waiter.next <= upto) {
            if let Some(waiter) = waiters.pop_front() {
                let _ = waiter.ack.send(if durable { Ok(waiter.first) } else { Err(None) });
            }
        }
    }

    fn publish(&self, next: u64) {
        let previous = self.shared.visible.fetch_max(next, Ordering::AcqRel);
        if next > previous && self.shared.appended.receiver_count() > 0 {
            self.shared.appended.send_replace(next);
        }
    }

    /// Syncs the active segment and says which offsets that covers (older
    /// segments were synced when they were sealed).
    fn sync_written(&self) -> Result<u64> {
        // A sync that fails once may succeed the next time without the data
        // being on disk: after a failure nothing more is vouched for.
        if let Some(why) = self.shared.failed.get() {
            return Err(LogError::WriterFailed(why.clone()));
        }
        let (upto, active) = {
            let w = lock(&self.shared.writer);
            (w.next, self.active()?)
        };
        let started = Instant::now();
        active.store().sync()?;
        self.shared.fsync_seconds.record(started.elapsed().as_secs_f64());
        Ok(upto)
    }

    /// Forces everything appended so far to disk.
    pub fn sync(&self) -> Result<()> {
        self.sync_written()?;
        self.active()?.index().flush()?;
        Ok(())
    }

    // ----- reads ---------------------------------------------------------

    fn out_of_range(&self, offset: u64) -> LogError {
        LogError::OutOfRange {
            offset,
            lowest: self.lowest_offset(),
            next: self.next_offset(),
        }
    }

    pub fn read(&self, offset: u64) -> Result<Record> {
        self.across_cuts(|| {
            if offset < self.lowest_offset() || offset >= self.next_offset() {
                return Err(self.out_of_range(offset));
            }
            let segment = self.segment_for(offset).ok_or_else(|| self.out_of_range(offset))?;
            segment.read(offset)
        })
    }

    /// Like `read`, but hands `f` the record where it lies when it can
    /// (see `Segment::read_with`): one copy fewer for a reader that
    /// only renders it.
    pub fn read_with<R>(&self, offset: u64, f: impl FnOnce(RecordRef<'_>) -> R) -> Result<R> {
        let mut f = Some(f);
        self.across_cuts(|| {
            if offset < self.lowest_offset() || offset >= self.next_offset() {
                return Err(self.out_of_range(offset));
            }
            let segment = self.segment_for(offset).ok_or_else(|| self.out_of_range(offset))?;
            // `f` runs at most once: a read that got as far as calling it succeeded.
            let f = f.take().ok_or(LogError::Closed)?;
            segment.read_with(offset, f)
        })
    }

    /// Runs a read again when it failed while a cut or a reset moved the
    /// records under it: a record cut away after the reader's range check
    /// is out of range, not corrupt, and one rewritten since reads anew.
    fn across_cuts<T>(&self, mut read: impl FnMut() -> Result<T>) -> Result<T> {
        const TRIES: usize = 8;
        let mut outcome = Err(LogError::Closed);
        for _ in 0..TRIES {
            let cuts = self.shared.cuts.load(Ordering::Acquire);
            outcome = read();
            if outcome.is_ok() || self.shared.cuts.load(Ordering::Acquire) == cuts {
                return outcome;
            }
        }
        outcome
    }

    /// Records from `from` on, oldest first, at most `max_records` and about
    /// `max_bytes` of frames (the first record comes whatever its size).
    /// `from == next_offset` gives nothing; outside [lowest, next] is an error.
    pub fn read_range(&self, from: u64, max_records: u32, max_bytes: u64) -> Result<Vec<Record>> {
        self.across_cuts(|| {
            let mut records = Vec::new();
            self.read_chunks(from, max_records, max_bytes, |chunk| records.extend(chunk.records))?;
            Ok(records)
        })
    }

    /// Like `read_range`, but the checked frames themselves, for replication.
    /// Returns the frames and how many records they hold.
    pub fn read_frames(&self, from: u64, max_records: u32, max_bytes: u64) -> Result<(Bytes, u32)> {
        self.across_cuts(|| {
            let mut frames = BytesMut::new();
            let mut count = 0;
            self.read_chunks(from, max_records, max_bytes, |chunk| {
                count += chunk.records.len() as u32;
                if frames.is_empty() {
                    frames = BytesMut::from(chunk.frames);
                } else {
                    frames.extend_from_slice(&chunk.frames);
                }
            })?;
            Ok((frames.freeze(), count))
        })
    }

    fn read_chunks(&self, from: u64, max_records: u32, max_bytes: u64, mut take: impl FnMut(Chunk)) -> Result<()> {
        let next = self.next_offset();
        if from < self.lowest_offset() || from > next {
            return Err(self.out_of_range(from));
        }
        let (mut cursor, mut records_left, mut bytes_left) = (from, max_records, max_bytes);
        while cursor < next && records_left > 0 {
            let Some(segment) = self.segment_for(cursor) else {
                return Err(self.out_of_range(cursor));
            };
            let first_chunk = cursor == from;
            let chunk = segment.read_chunk(cursor, next, records_left, bytes_left, first_chunk)?;
            let n = chunk.records.len() as u32;
            if n == 0 {
                break;
            }
            cursor += u64::from(n);
            records_left -= n;
            bytes_left = bytes_left.saturating_sub(chunk.frames.len() as u64);
            take(chunk);
        }
        Ok(())
    }

    fn read_segments(&self) -> RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.shared.segments.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_segments(&self) -> RwLockWriteGuard<'_, Vec<Arc<Segment>>> {
        self.shared.segments.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segments = self.read_segments();
        let i = segments.partition_point(|s| s.base() <= offset);
        i.checked_sub(1).and_then(|i| segments.get(i)).cloned()
    }

    fn active(&self) -> Result<Arc<Segment>> {
        let active = self.read_segments().last().cloned();
        active.ok_or_else(|| self.writer_failed())
    }

    /// Streams every store's bytes, oldest first, up to the records visible now.
    pub fn snapshot_reader(&self) -> Result<SnapshotReader> {
        let _w = self.lock_writer()?;
        let next = self.next_offset();
        let segments = self.read_segments().clone();
        let parts = segments
            .into_iter()
            .map(|segment| {
                let end = if next <= segment.base() {
                    0
                } else if next < segment.next_offset() {
                    let i = u32::try_from(next - segment.base()).unwrap_or(u32::MAX);
                    segment.index().position(i).unwrap_or(0)
                } else {
                    segment.size_bytes()
                };
                (segment, end)
            })
            .collect();
        Ok(SnapshotReader::new(parts))
    }

    /// Syncs and closes: the index files are cut back to their entries once
    /// the last reader lets go. Every later call fails with `Closed`.
    pub fn close(&self) -> Result<()> {
        let synced = self.sync_written().and_then(|upto| {
            self.active()?.index().flush()?;
            Ok(upto)
        });
        {
            let _w = lock(&self.shared.writer);
            self.shared.closed.store(true, Ordering::Release);
            self.shared.group.stop();
            // Appenders whose records that sync covered succeeded; the rest did not.
            if let Ok(upto) = synced {
                self.release_waiters(upto, true);
            }
            self.release_waiters(u64::MAX, false);
            self.write_segments().clear();
        }
        // Outside the writer lock: the committer may be waiting for it.
        let background = lock(&self.shared.background).take();
        if let Some(thread) = background.filter(|t| t.thread().id() != std::thread::current().id()) {
            thread.thread().unpark();
            let _ = thread.join();
        }
        synced.map(|_| ())
    }
}
