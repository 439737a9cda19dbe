//! The log: segments in base-offset order, the last one active.
//!
//! One writer at a time (a `Writer`: the writer lock held, see `writer`)
//! assigns dense offsets, encodes frames into one buffer and writes it with
//! one call (`appending`). With
//! `Durability::Always`, and for async appenders whatever the durability,
//! appenders do not write themselves: they encode their batch and submit
//! it, and the committer (`committer`) writes every submitted batch at once
//! (`combining`) and, with `Always`, syncs. Any number of readers
//! (a `Reader`, see `reading`) find their segment under a short read lock
//! and then read without locks; they see `bounds`, raised only after a record is fully
//! written (and, with `Durability::Always`, synced). Cuts, purges and
//! resets (`cutting`) are ordered so that a crash or an error between any
//! two of their steps leaves a log that opens (`opening`). How far the
//! log is known to be on disk is `synced`. The data
//! directory holds the segment files and a `LOCK` file held by the process
//! that has the log open.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;

use tokio::sync::watch;

pub use super::clock::now_ms;
use super::config::{Durability, LogConfig};
use super::error::{LogError, Result};
use super::fsops;
use super::segment::Segment;

mod appending;
mod aside;
pub use appending::{PendingAppend, PendingSync};
mod background;
mod bounds;
mod by_time;
mod combining;
mod committer;
mod cutting;
mod opening;
mod reading;
mod synced;
mod writer;

use background::spawn_background;
use bounds::Bounds;
pub(crate) use committer::describe_metrics;
use committer::{Committer, spawn_committer};
use opening::{CreatedDirs, check_room, lock_directory, open_segments};
use writer::{SegmentList, WriterLock};

/// A handle on an open log; clones share it. When the last handle goes,
/// the background thread is stopped and joined, so that the log (and the
/// directory's lock) is gone by the time the drop returns: the thread
/// holds the log while it works a round, and a reopen straight after the
/// drop must not find the directory locked.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    /// False for the background threads' own short-lived handles, which
    /// must neither keep the log open nor close it.
    counted: bool,
}

impl Clone for Log {
    fn clone(&self) -> Log {
        if self.counted {
            self.shared.handles.fetch_add(1, Ordering::Relaxed);
        }
        Log {
            shared: self.shared.clone(),
            counted: self.counted,
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if self.counted && self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.closed.store(true, Ordering::Release);
            self.shared.committer.stop();
            self.join_background();
        }
    }
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    config: LogConfig,
    _lock: File,
    writer: WriterLock,
    segments: SegmentList,
    bounds: Bounds,
    committer: Arc<Committer>,
    /// How far the log is known to be on disk (see `synced`).
    synced: synced::Synced,
    /// Written since the interval syncer last synced.
    dirty: AtomicBool,
    closed: AtomicBool,
    /// Set when a sync fails (what was written may not be on disk, and
    /// Linux may not report the loss twice, so no later append is trusted),
    /// when a cut or a reset fails half-way, or when the committer dies.
    failed: OnceLock<String>,
    /// The committer and (without `Durability::Always`) the background
    /// thread (`background`), joined by `close` and by the last handle's drop.
    background: Mutex<Vec<JoinHandle<()>>>,
    /// Handles given out (`Log`s that are `counted`).
    handles: AtomicUsize,
    /// The newest timestamp written (of a user record, at open), which
    /// no later record's goes below (see `Writer::note_stamp`).
    newest_stamp: AtomicU64,
    /// Retention as it is now: the config's at open, changed at run time
    /// for a named log (`set_retention`).
    retention: RwLock<Retention>,
    /// Told of every read that met a corrupt frame (`on_corrupt_read`).
    corrupt_reads: OnceLock<CorruptReadHook>,
}

/// A caller's hook on corrupt reads (`Log::on_corrupt_read`).
struct CorruptReadHook(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for CorruptReadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CorruptReadHook")
    }
}

/// What retention keeps (see `LogConfig::retention_bytes` and `retention_ms`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub bytes: Option<u64>,
    pub ms: Option<u64>,
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

/// Runs `f`, which blocks, telling a multi-threaded tokio runtime first so
/// that it moves the worker's other tasks elsewhere.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.committer.stop();
    }
}

impl Log {
    /// Opens the log in `dir` (created if missing), recovering the active
    /// segment's tail. Fails at once if another process has it open.
    /// A segment size the disk cannot hold is refused (`check_room`). A
    /// failed open removes what it created (the directory, its lock file, a
    /// new log's first segment), never what was there or what another open
    /// wrote (see `opening`).
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let created = CreatedDirs::before_creating(&dir);
        let opened = Self::open_created(dir.clone(), config);
        match opened {
            // Another open holds the directory: nothing here is ours to remove.
            Err(LogError::Locked(_)) | Ok(_) => {}
            Err(_) => created.remove(&dir),
        }
        opened
    }

    fn open_created(dir: PathBuf, config: LogConfig) -> Result<Log> {
        fsops::create_dir_all(&dir)?;
        let lock = lock_directory(&dir)?;
        // The log keeps a duplicate of the locked descriptor (a lock belongs
        // to the open file, so it is held while either is open), and this
        // one stays until what a failure created is removed.
        let opened = lock
            .file
            .try_clone()
            .map_err(|e| LogError::from(fsops::naming(&dir.join("LOCK"), e)))
            .and_then(|held| Self::open_locked(dir.clone(), config, held, !lock.fresh_log));
        if opened.is_err() {
            lock.remove_created(&dir);
        }
        opened
    }

    fn open_locked(dir: PathBuf, config: LogConfig, lock_file: File, existing_log: bool) -> Result<Log> {
        check_room(&dir, &config, existing_log)?;
        let segments = open_segments(&dir, &config)?;
        // What the active segment holds may be only in the page cache (a
        // process crash): synced now, it all counts as on disk (`synced`).
        if let Some(active) = segments.last() {
            active.sync_records()?;
        }
        let lowest = segments.first().map(|s| s.base()).unwrap_or(0);
        let next = segments.last().map(|s| s.next_offset()).unwrap_or(0);
        // Of a user record: a cluster's control frames are stamped 0.
        let last_timestamp = by_time::newest_user_stamp(&segments)?;
        let durability = config.durability;
        let retention = Retention {
            bytes: config.retention_bytes,
            ms: config.retention_ms,
        };
        let shared = Arc::new(Shared {
            dir,
            config,
            _lock: lock_file,
            writer: WriterLock::new(next, last_timestamp),
            segments: SegmentList::new(segments),
            bounds: Bounds::new(lowest, next),
            committer: Arc::new(Committer::new(next)),
            synced: synced::Synced::new(next),
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            failed: OnceLock::new(),
            background: Mutex::new(Vec::new()),
            handles: AtomicUsize::new(1),
            newest_stamp: AtomicU64::new(last_timestamp),
            corrupt_reads: OnceLock::new(),
            retention: RwLock::new(retention),
        });
        let committer = spawn_committer(Arc::downgrade(&shared), shared.committer.clone())?;
        lock(&shared.background).push(committer);
        let background = match durability {
            Durability::Interval(every) => Some(spawn_background(Arc::downgrade(&shared), Some(every))?),
            Durability::Never => Some(spawn_background(Arc::downgrade(&shared), None)?),
            Durability::Always => None,
        };
        lock(&shared.background).extend(background);
        Ok(Log { shared, counted: true })
    }

    /// A background thread's handle on the log it serves (see `Log`).
    fn uncounted(shared: Arc<Shared>) -> Log {
        Log { shared, counted: false }
    }

    /// Wakes and joins the background threads, unless called from one.
    fn join_background(&self) {
        let background = std::mem::take(&mut *lock(&self.shared.background));
        for thread in background {
            if thread.thread().id() != std::thread::current().id() {
                thread.thread().unpark();
                let _ = thread.join();
            }
        }
    }

    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// What retention keeps now.
    pub fn retention(&self) -> Retention {
        *self.shared.retention.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes what retention keeps from its next run on. Zero is refused
    /// as `LogConfig::validate` refuses it.
    pub fn set_retention(&self, retention: Retention) -> Result<()> {
        for (key, value) in [("retention_bytes", retention.bytes), ("retention_ms", retention.ms)] {
            if value == Some(0) {
                return Err(LogError::Config {
                    key,
                    allowed: "at least 1".into(),
                    value: "0".into(),
                });
            }
        }
        *self.shared.retention.write().unwrap_or_else(PoisonError::into_inner) = retention;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The oldest offset still held.
    pub fn lowest_offset(&self) -> u64 {
        self.shared.bounds.lowest()
    }

    /// The offset the next record will get; readers see everything below it.
    pub fn next_offset(&self) -> u64 {
        self.shared.bounds.next()
    }

    /// Every record below this is on disk: synced by this log (see
    /// `synced`). At most `written_offset`.
    pub fn synced_offset(&self) -> u64 {
        // Raised by the committer's sync before the written end is published.
        self.shared
            .synced
            .offset()
            .min(self.written_offset().max(self.lowest_offset()))
    }

    /// Where written records end, past any visibility cap and, with
    /// `Durability::Always`, before their sync: a cluster node's own Raft
    /// log reader reads up to here (see `read_frames_written`).
    pub fn written_offset(&self) -> u64 {
        self.shared.bounds.written()
    }

    /// From now on readers see no offset at or past `cap` (`u64::MAX`: no
    /// cap). A cluster node writes Raft entries before a majority has them
    /// and raises the cap as they commit, so that readers only ever see
    /// committed records.
    pub fn set_visible_cap(&self, cap: u64) {
        self.shared.bounds.set_cap(cap);
    }

    /// A receiver told the new `next_offset` whenever records become visible.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.bounds.subscribe()
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

    /// Has `f` called whenever a read meets a corrupt frame, whoever reads
    /// (a cluster node forgets which segments a start need not check
    /// again). One hook a log; a second is ignored.
    pub fn on_corrupt_read(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.shared.corrupt_reads.set(CorruptReadHook(Box::new(f)));
    }

    /// Passes `read` on, telling the hook of a corrupt frame.
    pub(super) fn noting_corruption<T>(&self, read: Result<T>) -> Result<T> {
        if let Err(LogError::Corrupt { .. }) = &read
            && let Some(hook) = self.shared.corrupt_reads.get()
        {
            (hook.0)();
        }
        read
    }

    /// The first offset of the active (newest) segment: every record below
    /// it lies in a sealed segment, which appends never touch again.
    pub fn active_base(&self) -> u64 {
        self.read_segments().last().map_or(self.lowest_offset(), |s| s.base())
    }

    /// The first offset of each segment, oldest first (the last one is the
    /// active segment's).
    pub fn segment_bases(&self) -> Vec<u64> {
        self.read_segments().iter().map(|s| s.base()).collect()
    }

    /// The newest timestamp a record was written with (0 for none): a
    /// cluster's leader stamps no record earlier, as the writer does not.
    pub fn newest_stamp(&self) -> u64 {
        self.shared.newest_stamp.load(Ordering::Acquire)
    }

    /// Why appends are refused until a restart, if they are.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.get().cloned()
    }

    fn publish(&self, next: u64) {
        self.shared.bounds.publish(next);
    }

    /// Syncs the active segment and says which offsets that covers (older
    /// segments were synced when they were sealed).
    fn sync_written(&self) -> Result<u64> {
        self.sync_active().map(|(upto, _)| upto)
    }

    /// `sync_written`, and the segment it synced.
    fn sync_active(&self) -> Result<(u64, Arc<Segment>)> {
        // A sync that fails once may succeed the next time without the data
        // being on disk: after a failure nothing more is vouched for.
        if let Some(why) = self.shared.failed.get() {
            return Err(LogError::WriterFailed(why.clone()));
        }
        let (upto, generation, active) = {
            let w = self.lock_writer_unchecked();
            (w.next, self.shared.synced.generation(), self.active()?)
        };
        self.shared.committer.timed_sync(|| active.sync_records())?;
        self.shared.synced.advance(upto, generation);
        Ok((upto, active))
    }

    /// Forces everything appended so far to disk. A failed sync fails the
    /// writer, as the committer's and a roll's do: Linux may not report the
    /// loss again, and a later sync that succeeds would vouch for records
    /// that never reached the disk.
    pub fn sync(&self) -> Result<()> {
        let (_, active) = match self.sync_active() {
            Ok(synced) => synced,
            Err(e @ (LogError::Closed | LogError::WriterFailed(_))) => return Err(e),
            Err(e) => {
                self.fail_writer(&format!("a sync failed: {e}"));
                return Err(e);
            }
        };
        // The index is rebuilt from the records at open: its flush failing
        // loses nothing the records do not hold.
        active.flush_index()
    }

    fn read_segments(&self) -> RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.shared.segments.read()
    }

    /// Whether `bytes` more in `records` records go into the active
    /// segment as a plain copy: no roll (a sync of the sealed segment, new
    /// files) and no growing of its file (allocating, zeroing ahead), so a
    /// caller may make the append where it must not block long.
    pub fn appends_in_place(&self, bytes: u64, records: u32) -> bool {
        self.active()
            .is_ok_and(|active| active.has_room_in_place(bytes, records, self.shared.config.max_segment_bytes))
    }

    fn active(&self) -> Result<Arc<Segment>> {
        let active = self.read_segments().last().cloned();
        active.ok_or_else(|| self.writer_failed())
    }

    /// Syncs and closes: the index files are cut back to their entries once
    /// the last reader lets go. Every later call fails with `Closed`.
    pub fn close(&self) -> Result<()> {
        {
            // First no more writes (the committer's included: `lock_writer`
            // looks again once it has the lock), so that the sync below
            // covers everything an appender was told is written.
            let _w = self.lock_writer_unchecked();
            self.shared.closed.store(true, Ordering::Release);
            self.shared.committer.stop();
        }
        let synced = self.sync_written().and_then(|upto| {
            self.active()?.flush_index()?;
            Ok(upto)
        });
        {
            let w = self.lock_writer_unchecked();
            // Appenders whose records that sync covered succeeded; the rest did not.
            if let Ok(upto) = synced {
                self.shared.committer.release(upto, true);
            }
            self.shared.committer.release(u64::MAX, false);
            w.clear_segments();
        }
        // Outside the writer lock: the committer may be waiting for it.
        self.join_background();
        synced.map(|_| ())
    }
}
