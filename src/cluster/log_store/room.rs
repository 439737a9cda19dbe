//! A full disk under the Raft log. openraft takes any error of its log
//! storage as fatal: an append that met ENOSPC stopped the node's Raft core
//! until a restart, and retention, which runs through Raft, could then free
//! nothing. A standalone log resumes once space is freed; so does this: an
//! append that meets a full disk waits and tries again (its steps are made
//! so that a second try finishes what the first began), and while it waits
//! the node says so (`/readyz` 503, `distlog_raft_disk_full` 1, one WARN
//! line). Raft waits with it (this node acknowledges nothing meanwhile), so
//! the others go on without it, and it catches up once there is room.
//!
//! Retention cannot free space meanwhile: openraft awaits the append in
//! its core (`RaftCore::run_append_entries` awaits `RaftLogStorage::append`
//! inside `run_command`, 0.10.0-alpha.37), and the snapshot and the purge
//! that would delete whole segments are commands of that same core, run
//! after it. So the store keeps a reserve (`reserve`): an append that
//! meets a full disk while retention could delete whole segments gives
//! back `reserve.appends` and goes on, the core gets out, and retention is
//! woken at once (`retention_wanted`) to snapshot and purge. The small
//! documents a snapshot and a purge write give back `reserve.marks` when
//! they meet a full disk (`with_room`), then wait like an append. A purge
//! (and each retention check) makes the reserve again once there is room
//! for it and as much again. Without retention that could free space,
//! appends wait as before and keep the reserve: an operator must free
//! space. The hold on new entries after the release is in memory: a start
//! that finds the appends' reserve gone and no room to make it, while
//! retention could free space, sets it again (a restart before the purge).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::LogStore;
use super::reserve::Reserve;
use crate::log::{LogConfig, now_ms};

/// How often a waiting append tries again.
const TRY_AGAIN: Duration = Duration::from_millis(250);

pub const DISK_FULL: &str = "distlog_raft_disk_full";
pub const DISK_RESERVE: &str = "distlog_raft_disk_reserve_bytes";

/// The node's stores (group 0's and each named replica's) share these
/// gauges: what they hold in reserve together, and how many wait for room
/// (each one setting its own value over the others' made the gauges say
/// whichever store spoke last).
static RESERVED: Mutex<u64> = Mutex::new(0);
static WAITING_FOR_ROOM: Mutex<u64> = Mutex::new(0);

/// Adds `delta` (wrapping: a subtraction) to a shared gauge's total and
/// publishes it, under its lock: two stores' changes set the gauge in the
/// order they made them.
fn add_to_gauge(total: &Mutex<u64>, delta: u64, gauge: &'static str, as_flag: bool) {
    let mut total = total.lock().unwrap_or_else(PoisonError::into_inner);
    *total = total.wrapping_add(delta);
    let value = match as_flag {
        true => u64::from(*total > 0) as f64,
        false => *total as f64,
    };
    metrics::gauge!(gauge).set(value);
}

/// `reserve.appends` holds this and a new segment's index file: two of
/// the log's allocation chunks (an append allocates up to 8 MiB past its
/// data, see `log::segment::store`).
const APPEND_ROOM: u64 = 8 << 20;
/// `reserve.marks`: documents of a few KiB, and a tables document that
/// may hold many producers.
const MARK_ROOM: u64 = 1 << 20;

/// The reserve and who waits for its use.
#[derive(Debug)]
pub(super) struct Room {
    appends: Reserve,
    marks: Reserve,
    /// Held while the reserve is made or given back (a purge and a
    /// retention check may make it at once).
    changing: Mutex<()>,
    /// Notified when a full disk gave back the reserve: retention runs now.
    retention_wanted: Notify,
    /// When a full disk gave back `reserve.appends` for retention, until
    /// the next purge: new entries must not take the room it needs.
    /// Milliseconds after `opened` (a monotonic clock: a stepped wall
    /// clock must not stretch the hold) of that release plus one, 0 for
    /// none: read on every write and every peer append, so an atomic
    /// rather than a lock.
    released_for_retention: AtomicU64,
    opened: Instant,
    /// What this room last added to `RESERVED`.
    published: AtomicU64,
}

impl Drop for Room {
    fn drop(&mut self) {
        let published = self.published.swap(0, Ordering::AcqRel);
        add_to_gauge(&RESERVED, published.wrapping_neg(), DISK_RESERVE, false);
    }
}

/// How long new entries are refused after the appends' reserve went to
/// retention and no purge came (a retention that failed must not stop the
/// node for good).
const HOLD_FOR_PURGE: Duration = Duration::from_secs(30);

impl Room {
    /// The reserve in `dir` for a log of `config`, made if there is room
    /// (a start never fails for it).
    pub(super) fn open(dir: &Path, config: &LogConfig) -> Room {
        let room = Room {
            appends: Reserve::new(dir.join("reserve.appends"), APPEND_ROOM + config.index_file_bytes()),
            marks: Reserve::new(dir.join("reserve.marks"), MARK_ROOM),
            changing: Mutex::new(()),
            retention_wanted: Notify::new(),
            released_for_retention: AtomicU64::new(0),
            opened: Instant::now(),
            published: AtomicU64::new(0),
        };
        room.make();
        room
    }

    /// Milliseconds since the room was opened.
    fn millis(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Makes what is missing of the reserve, if there is room.
    fn make(&self) {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        for reserve in [&self.marks, &self.appends] {
            match reserve.make() {
                // One found whole (a restart of a node of many logs) is not said.
                Ok(true) => tracing::info!(bytes = reserve.held_bytes(), "the disk reserve is made"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not make the disk reserve"),
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let held = self.appends.held_bytes() + self.marks.held_bytes();
        let before = self.published.swap(held, Ordering::AcqRel);
        add_to_gauge(&RESERVED, held.wrapping_sub(before), DISK_RESERVE, false);
    }

    /// Gives back `reserve`; whether it held anything.
    fn release(&self, reserve: &Reserve, why: &str, error: &io::Error) -> bool {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = reserve.held_bytes();
        let released = reserve.release().unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not give back the disk reserve");
            false
        });
        if released {
            tracing::warn!(%error, bytes, "the disk is full: the disk reserve is given back {why}");
            self.publish();
        }
        released
    }
}

pub(super) fn is_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

impl LogStore {
    /// Notified when a full disk gave back the disk reserve: retention
    /// should run at once.
    pub fn retention_wanted(&self) -> &Notify {
        &self.shared.room.retention_wanted
    }

    /// Whether the whole disk reserve is held: then `make_reserve` has
    /// nothing to do (and a node of many logs need not send each log's
    /// check to a blocking thread to learn that).
    pub fn reserve_whole(&self) -> bool {
        let room = &self.shared.room;
        room.marks.is_held() && room.appends.is_held()
    }

    /// Makes the disk reserve again where it was given back, if there is
    /// room for it and as much again (after a purge, at each retention check).
    pub fn make_reserve(&self) {
        self.shared.room.make();
    }

    /// Whether retention's next purge would delete a whole segment: its
    /// point, held behind what is applied as `retention::purge_point`
    /// holds it (readers' end stands for applied: it is never past it),
    /// must reach past the oldest segment.
    fn retention_could_free(&self) -> bool {
        let log = &self.shared.log;
        let Ok(Some(keep_from)) = log.retention_point(now_ms()) else {
            return false;
        };
        let visible_end = log.next_offset();
        let Some(upto) = crate::cluster::retention::purge_point(keep_from, visible_end.checked_sub(1), visible_end)
        else {
            return false;
        };
        log.segment_bases()
            .get(1)
            .is_some_and(|end_of_oldest| *end_of_oldest <= upto + 1)
    }

    /// Runs a small write (a document a snapshot or a purge needs) that a
    /// full disk must not stop: the first full disk gives back the marks'
    /// reserve, then it waits like an append.
    pub(crate) fn with_room<T>(&self, mut step: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        let room = &self.shared.room;
        self.while_full(|| match step() {
            Err(e) if is_full(&e) && room.release(&room.marks, "for a snapshot's or a purge's record", &e) => step(),
            done => done,
        })
    }

    /// Whether an append waits for room on a full disk.
    pub fn disk_full(&self) -> bool {
        self.shared.disk_full.load(Ordering::Acquire)
    }

    /// Whether new entries (a client's write on a leader, a leader's
    /// entries on a follower) are refused for now: the disk is full, or
    /// the appends' reserve went to retention and its purge has not come
    /// (new entries would take the room the snapshot and purge need).
    pub fn refuses_new_entries(&self) -> bool {
        let room = &self.shared.room;
        let released = room.released_for_retention.load(Ordering::Acquire);
        self.disk_full() || (released != 0 && room.millis() + 1 - released < HOLD_FOR_PURGE.as_millis() as u64)
    }

    /// At open: the appends' reserve is gone and there is no room to make
    /// it again, while retention could free space. That is a restart
    /// between its release for retention and the purge (or a disk that
    /// filled while the node was down): the hold on new entries that the
    /// release set, in memory, is set again, and retention is woken, so
    /// that new entries do not take the room the snapshot and purge need.
    pub(super) fn hold_if_reserve_lacks_room(&self) {
        let room = &self.shared.room;
        if !room.appends.lacks_room() || !self.retention_could_free() {
            return;
        }
        tracing::warn!(
            "the disk reserve for appends is gone and the disk has no room for it: new entries wait for \
             retention's purge (at most {HOLD_FOR_PURGE:?})"
        );
        room.released_for_retention.store(room.millis() + 1, Ordering::Release);
        room.retention_wanted.notify_one();
    }

    /// A purge ran: new entries are taken again.
    pub(super) fn purged_for_room(&self) {
        self.shared.room.released_for_retention.store(0, Ordering::Release);
    }

    /// From now on nothing waits for room (the node is stopping: the Raft
    /// core must get out of a waiting append to shut down).
    pub fn stop_waiting(&self) {
        self.shared.stopping.store(true, Ordering::Release);
    }

    /// Runs `step` until it succeeds or fails for another reason than a
    /// full disk, or the node is stopping. A full disk gives back the
    /// appends' reserve once retention could then free space.
    pub(crate) fn while_full<T>(&self, mut step: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        let mut since: Option<Instant> = None;
        loop {
            match step() {
                Err(e) if is_full(&e) && self.give_room_to_retention(&e) => {}
                Err(e) if is_full(&e) && !self.shared.stopping.load(Ordering::Acquire) => {
                    if since.is_none() {
                        tracing::warn!(error = %e, "the disk is full: Raft appends wait for space (free some, or grow the volume)");
                        self.shared.disk_full.store(true, Ordering::Release);
                        add_to_gauge(&WAITING_FOR_ROOM, 1, DISK_FULL, true);
                        since = Some(Instant::now());
                    }
                    std::thread::sleep(TRY_AGAIN);
                }
                done => {
                    if let Some(at) = since {
                        tracing::info!(waited = ?at.elapsed(), "room on the disk again: Raft appends go on");
                        self.shared.disk_full.store(false, Ordering::Release);
                        add_to_gauge(&WAITING_FOR_ROOM, 1u64.wrapping_neg(), DISK_FULL, true);
                    }
                    return done;
                }
            }
        }
    }

    /// Gives back the appends' reserve if retention could delete whole
    /// segments, and wakes retention; whether it did.
    fn give_room_to_retention(&self, error: &io::Error) -> bool {
        let room = &self.shared.room;
        if room.appends.held_bytes() == 0 || !self.retention_could_free() {
            return false;
        }
        let released = room.release(&room.appends, "so that retention can snapshot and purge", error);
        if released {
            room.released_for_retention.store(room.millis() + 1, Ordering::Release);
            room.retention_wanted.notify_one();
        }
        released
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;
    use crate::cluster::durable::Durable;
    use crate::cluster::log_store::test_support::{small_segments, write_records_synced};
    use crate::log::Log;

    /// A review finding: `give_room_to_retention` gave back `reserve.appends`
    /// whenever `Log::retention_point` was Some, but `retention::purge_once`
    /// purges only `APPLY_MARGIN` (1000) entries behind what is applied
    /// (and nothing while applied < 1000). Here nothing is applied and the
    /// log holds 200 entries: no purge can follow, so the reserve stays.
    #[test]
    fn the_appends_reserve_is_kept_when_retention_cannot_purge() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LogConfig {
            retention_bytes: Some(1024),
            ..small_segments()
        };
        let log = Log::open(dir.path(), config).expect("log opens");
        let store = LogStore::open(log, Durable::open(dir.path().join("raft")).expect("raft dir")).expect("store");
        assert!(
            store.shared.room.appends.held_bytes() > 0,
            "a reserve at start (fallocate here?)"
        );
        write_records_synced(&store, 200);
        let point = store.log().retention_point(now_ms()).expect("point");
        eprintln!("retention point {point:?}, first index {}", store.first_index());
        let mut tries = 0;
        store
            .while_full(|| {
                tries += 1;
                match tries {
                    1 => Err(io::Error::new(io::ErrorKind::StorageFull, "full")),
                    _ => Ok(()),
                }
            })
            .expect("done");
        assert!(
            store.shared.room.appends.held_bytes() > 0,
            "reserve.appends was given back though retention (applied < {} entries) can purge nothing",
            1000
        );
    }

    /// The third review (issue 19 item 15): a restart between the release
    /// of `reserve.appends` for retention and the purge lost the hold on
    /// new entries (it is in memory), so they could take the room the
    /// snapshot and purge need. At open, a reserve that finds no room,
    /// with retention able to free space, holds new entries again and
    /// wakes retention.
    #[test]
    fn a_restart_before_the_purge_holds_new_entries_again() {
        use crate::log::fsops::{self, Step};
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LogConfig {
            retention_bytes: Some(4096),
            ..small_segments()
        };
        let raft = dir.path().join("raft");
        {
            let log = Log::open(dir.path(), config.clone()).expect("log opens");
            let store = LogStore::open(log, Durable::open(raft.clone()).expect("raft dir")).expect("store");
            assert!(!store.refuses_new_entries(), "a healthy start holds nothing");
            write_records_synced(&store, 1500);
            assert!(store.retention_could_free(), "retention could free whole segments");
            store.log().close().expect("close");
        }
        // The reserve was given back for retention, then the process died
        // before the purge; the disk is still full.
        std::fs::remove_file(raft.join("reserve.appends")).expect("the reserve was there");
        let appends = raft.join("reserve.appends");
        let _full = fsops::watch(
            &raft,
            Arc::new(move |step: &Step<'_>| match step {
                Step::Allocate(path, _) if *path == appends.as_path() => {
                    Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"))
                }
                _ => Ok(()),
            }),
        );
        let log = Log::open(dir.path(), config).expect("log opens");
        let store = LogStore::open(log, Durable::open(raft).expect("raft dir")).expect("store");
        assert!(
            store.refuses_new_entries(),
            "new entries are taken though the reserve for retention is gone and the disk is full"
        );
    }
}
