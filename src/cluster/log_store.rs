//! Our segmented log as openraft's log storage: entry `i` is the frame at
//! offset `i` (see `codec`), its term in the term file (`terms`), and the
//! vote, the committed id and the purged id in small durable documents
//! (`durable`) in `<data dir>/raft/`.
//!
//! Contract with openraft (see `docs/openraft-0.10-notes.md`):
//! - `append` returns once the entries are written (openraft then sends
//!   them to the followers: `broadcast_submitted_on_append`), and
//!   `io_completed` is called once they are synced (`flushing`), in order,
//!   never ahead of the disk: the leader's sync runs while its followers
//!   write theirs. An error stops the Raft core for good, so only real
//!   disk failures are reported.
//! - Readers of the Raft log read up to the written end
//!   (`Log::read_frames_written`); HTTP readers see only what the state
//!   machine made visible (`Log::set_visible_cap`).
//! - The committed id is stored twice before each apply, each without a
//!   sync: as `min(committed, last entry synced)` (`committed.mark`, which
//!   a power cut never leaves past the disk: see `repair`) and as
//!   `min(committed, last entry)` (`seen.mark`). A process restarted in the
//!   same boot (kill -9 included) takes the second, as far as its log
//!   holds it (`restore_seen_committed`), and re-applies up to it at once,
//!   so its readers never see less than before; after a power cut only the
//!   first counts, it may lag, and the leader brings it back.
//! - A purge records the purged id durably before it deletes segments, so
//!   a crash in between reopens with entries hidden below `purged + 1`.

mod flushing;
mod quick;
mod raft;
mod reserve;
mod room;

pub use room::{DISK_FULL, DISK_RESERVE};

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::codec::{decode_entries, encode_entries};
use super::durable::Durable;
use super::last_run::LastRun;
use super::marks::MarkFile;
use super::recent::Recent;
use super::terms::Terms;
use super::types::{Entry, LogId, Vote, log_id, term_of};
use crate::log::{EncodedBatch, Log, LogError, PendingSync};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed.mark";
const PURGED: &str = "purged";
const TERMS: &str = "terms";
/// The last entry of the sealed segments a start has checked frame by
/// frame (see `repair`).
const VERIFIED: &str = "verified";
const FLUSHED: &str = "flushed.mark";
/// The committed id as this node saw it, not capped to its last sync.
const SEEN: &str = "seen.mark";

/// Frame bytes one append-entries request carries at most (one entry
/// always goes, however large: an empty answer would stall replication).
pub const APPEND_BUDGET_BYTES: u64 = 4 * 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An engine error for openraft; a full disk stays one (see `room`).
fn io_error(e: LogError) -> io::Error {
    match e.is_disk_full() {
        true => io::Error::new(io::ErrorKind::StorageFull, e.to_string()),
        false => io::Error::other(e.to_string()),
    }
}

/// Runs blocking log work off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("log task failed: {e}")))?
}

/// The committed index as openraft last gave it to this store, for the
/// peer client to stamp on the appends it sends (`network::COMMIT_HEADER`):
/// a request openraft built earlier carries the commit of then.
#[derive(Clone, Debug, Default)]
pub struct CommitNow(Arc<AtomicU64>);

impl CommitNow {
    /// The index, if openraft gave one (stored as index + 1, 0 for none).
    pub fn get(&self) -> Option<u64> {
        self.0.load(Ordering::Acquire).checked_sub(1)
    }

    fn set(&self, committed: Option<LogId>) {
        self.0.store(committed.map_or(0, |c| c.index + 1), Ordering::Release);
    }
}

/// A mark's file and its value.
#[derive(Debug)]
struct Mark {
    file: MarkFile,
    value: Option<LogId>,
}

impl Mark {
    fn open(durable: &Durable, name: &str) -> io::Result<Mark> {
        let (file, value) = MarkFile::open(&durable.dir().join(name))?;
        Ok(Mark { file, value })
    }

    fn set(&mut self, value: Option<LogId>) -> io::Result<()> {
        self.file.write(value)?;
        self.value = value;
        Ok(())
    }

    fn set_synced(&mut self, value: Option<LogId>) -> io::Result<()> {
        self.file.write_synced(value)?;
        self.value = value;
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    log: Log,
    durable: Durable,
    terms: Mutex<Terms>,
    vote: Mutex<Option<Vote>>,
    purged: Mutex<Option<LogId>>,
    committed: Mutex<Mark>,
    /// The committed id as seen, capped to the log's written end only.
    seen: Mutex<Mark>,
    /// Its last write failed (said once until one succeeds).
    seen_unwritten: AtomicBool,
    /// The committed index as openraft gave it, uncapped.
    commit_now: CommitNow,
    /// The last entry made durable, as recorded after each append (see
    /// `repair`).
    flushed: Mutex<Mark>,
    /// The newest entries, as appended (see `recent`).
    recent: Mutex<Recent>,
    /// Odd while a truncation runs, bumped at its start and end: a read
    /// that saw it move took its terms and its frames from different logs.
    truncations: AtomicU64,
    /// The term table in memory is ahead of its file (a write failed).
    terms_unsaved: AtomicBool,
    /// An append waits for room on a full disk (see `room`).
    disk_full: AtomicBool,
    /// The node is stopping: nothing waits for room any more.
    stopping: AtomicBool,
    /// The disk reserve (see `room`).
    room: room::Room,
    /// Written appends waiting for their sync, in order (see `flushing`).
    flusher: flushing::Flusher,
}

/// The log storage and, cloned, its readers.
#[derive(Clone, Debug)]
pub struct LogStore {
    shared: Arc<Shared>,
}

impl LogStore {
    /// Opens the Raft side of `log` from the documents in `durable`, and
    /// starts writing the committed id behind.
    pub fn open(log: Log, durable: Durable) -> io::Result<LogStore> {
        let terms = match durable.read::<Terms>(TERMS)? {
            Some(t) => Terms::from_runs(t.runs().to_vec()).map_err(io::Error::other)?,
            None => Terms::default(),
        };
        let vote = durable.read::<Vote>(VOTE)?;
        let purged = durable.read::<Option<LogId>>(PURGED)?.flatten();
        let committed = Mark::open(&durable, COMMITTED)?;
        let flushed = Mark::open(&durable, FLUSHED)?;
        let seen = Mark::open(&durable, SEEN)?;
        // A corrupt frame met by any read (replication, apply, a client's):
        // the Raft core or the reader fails on it, and the next start must
        // scan every frame to find and repair it, not skip it as checked.
        let forget = durable.clone();
        log.on_corrupt_read(move || {
            if let Err(e) = forget.remove(VERIFIED) {
                tracing::error!(error = %e, "could not forget the checked-segments mark after a corrupt read");
            }
        });
        let room = room::Room::open(durable.dir(), log.config());
        let mut started = None;
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let flusher = flushing::Flusher::start(weak.clone());
            let (flusher, outcome) = match flusher {
                Ok(flusher) => (flusher, Ok(())),
                Err(e) => (flushing::Flusher::stopped(), Err(e)),
            };
            started = Some(outcome);
            Shared {
                log,
                durable,
                terms: Mutex::new(terms),
                vote: Mutex::new(vote),
                purged: Mutex::new(purged),
                committed: Mutex::new(committed),
                seen: Mutex::new(seen),
                seen_unwritten: AtomicBool::new(false),
                commit_now: CommitNow::default(),
                flushed: Mutex::new(flushed),
                recent: Mutex::new(Recent::default()),
                truncations: AtomicU64::new(0),
                terms_unsaved: AtomicBool::new(false),
                disk_full: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                room,
                flusher,
            }
        });
        started.unwrap_or(Ok(()))?;
        let store = LogStore { shared };
        store.hold_if_reserve_lacks_room();
        Ok(store)
    }

    pub fn log(&self) -> &Log {
        &self.shared.log
    }

    pub fn terms(&self) -> Terms {
        lock(&self.shared.terms).clone()
    }

    pub fn durable(&self) -> &Durable {
        &self.shared.durable
    }

    /// The first index the Raft log holds (entries below are purged).
    pub fn first_index(&self) -> u64 {
        let purged = lock(&self.shared.purged).map_or(0, |p| p.index + 1);
        self.shared.log.lowest_offset().max(purged)
    }

    /// Where the written entries end.
    pub fn next_index(&self) -> u64 {
        self.shared.log.written_offset()
    }

    /// The id of the entry at `index`, if the log holds it.
    pub fn id_at(&self, index: u64) -> Option<LogId> {
        if index < self.first_index() || index >= self.next_index() {
            return None;
        }
        self.terms().term_at(index).map(|term| log_id(term, index))
    }

    /// Whether the log holds exactly the entry `id`.
    pub fn holds(&self, id: &LogId) -> bool {
        self.id_at(id.index).is_some_and(|ours| ours == *id)
    }

    /// The last entry the log holds, if any.
    pub fn last_id(&self) -> Option<LogId> {
        self.next_index().checked_sub(1).and_then(|i| self.id_at(i))
    }

    /// The last entry purged (retention, or a snapshot installed).
    pub fn purged(&self) -> Option<LogId> {
        *lock(&self.shared.purged)
    }

    /// The committed id as persisted: never past the last entry held.
    pub fn committed(&self) -> Option<LogId> {
        lock(&self.shared.committed).value
    }

    /// Records `seen` as the committed id seen (not capped to the last
    /// sync), if it is newer and says more than `committed` (the mark as
    /// capped): with `--fsync always` it rarely does, and costs nothing.
    ///
    /// Best effort: it only spares a restarted node's readers a step back,
    /// and a failed write (a full disk) must not stop the Raft core.
    pub(super) fn note_seen_committed(&self, seen: Option<LogId>, committed: Option<LogId>) {
        if seen <= committed {
            return;
        }
        let mut mark = lock(&self.shared.seen);
        // One the log no longer holds (a reboot took it, and its lowering
        // did not happen) is replaced, or it would never be again.
        if seen <= mark.value && mark.value.is_some_and(|held| self.holds(&held)) {
            return;
        }
        match mark.set(seen) {
            Ok(()) => self.shared.seen_unwritten.store(false, Ordering::Relaxed),
            Err(e) if !self.shared.seen_unwritten.swap(true, Ordering::Relaxed) => {
                tracing::warn!(error = %e, "could not record the committed id seen (raft/seen.mark); trying again at each commit");
            }
            Err(_) => {}
        }
    }

    /// At a start in the boot of the previous run (a process crash or a
    /// stop since, not a power cut): the committed id that run saw becomes
    /// the committed mark, if the log holds its entry, so that the start
    /// re-applies all of it and readers see no less than before. The log's
    /// open synced what it holds, so the mark still trails the disk.
    ///
    /// After a reboot the mark seen goes down to the committed one: it may
    /// name entries the reboot took, and an entry written back later at
    /// its index must not be vouched for by a mark from before.
    pub fn restore_seen_committed(&self, previous: Option<&LastRun>) -> io::Result<()> {
        if !previous.is_some_and(LastRun::in_this_boot) {
            let committed = self.committed();
            let mut seen = lock(&self.shared.seen);
            if seen.value > committed
                && let Err(e) = seen.set(committed)
            {
                // Then the next commit seen replaces it (`note_seen_committed`).
                tracing::warn!(error = %e, "could not lower raft/seen.mark after a reboot");
            }
            return Ok(());
        }
        let Some(seen) = lock(&self.shared.seen).value.filter(|seen| self.holds(seen)) else {
            return Ok(());
        };
        // The open synced the log, so this is `seen`; but a sync that
        // failed in the previous run may have lost pages the kernel then
        // took for clean: the mark never goes past what this run synced.
        let Some(raised) = self.cap_to_synced(seen) else {
            return Ok(());
        };
        let mut committed = lock(&self.shared.committed);
        if Some(raised) > committed.value
            && let Err(e) = committed.set(Some(raised))
        {
            // Best effort: it only spares readers a step back.
            tracing::warn!(error = %e, "could not raise raft/committed.mark to the committed id seen");
        }
        Ok(())
    }

    /// The committed index as openraft last gave it (see `CommitNow`).
    pub fn commit_now(&self) -> CommitNow {
        self.shared.commit_now.clone()
    }

    /// The last entry this node recorded as durable.
    pub fn flushed(&self) -> Option<LogId> {
        lock(&self.shared.flushed).value
    }

    /// The log was reset under the store (a snapshot installed): forget
    /// the cached entries.
    pub fn forget_recent(&self) {
        lock(&self.shared.recent).clear();
    }

    /// Before the log is reset past its end (a snapshot installed): the
    /// marks name nothing, synced, so that a crash inside the reset (the
    /// newest segments gone, the oldest still there) does not look like a
    /// log that lost what it had recorded. The snapshot, written before,
    /// holds what they named; appends raise them again.
    fn forget_marks(&self) -> io::Result<()> {
        for mark in [&self.shared.committed, &self.shared.seen, &self.shared.flushed] {
            lock(mark).set_synced(None)?;
        }
        Ok(())
    }

    /// The term of the vote saved in `durable` (0 before any), read
    /// before the log opens (see `quarantine`).
    pub fn saved_vote_term(durable: &Durable) -> io::Result<u64> {
        Ok(durable.read::<Vote>(VOTE)?.map_or(0, |vote| vote.leader_id.term))
    }

    /// The term of this node's saved vote (0 before any).
    pub fn vote_term(&self) -> u64 {
        lock(&self.shared.vote).map_or(0, |vote| vote.leader_id.term)
    }

    /// The last entry a start's checksum scan covered and that needs no
    /// scan again while the log holds it (see `repair`). An unreadable mark
    /// (written without a sync: a power cut may leave it empty) is none.
    pub fn verified(&self) -> Option<LogId> {
        self.shared.durable.read::<LogId>(VERIFIED).ok().flatten()
    }

    /// Records `last` as checked; without a sync (a lost mark costs one
    /// more full scan).
    pub fn remember_verified(&self, last: LogId) -> io::Result<()> {
        self.shared.durable.write(VERIFIED, &last, false)
    }

    /// Frames from `index` on change (a cut, a truncation, a reset) or were
    /// found corrupt: a mark at or past it goes, durably, so that the next
    /// start scans them again even if an entry like the marked one is
    /// written back at its index.
    /// A mark that cannot be read (a transient error) goes too: kept, it
    /// could vouch for frames rewritten under it.
    fn forget_verified_from(&self, index: u64) -> io::Result<()> {
        match self.shared.durable.read::<LogId>(VERIFIED) {
            Ok(None) => Ok(()),
            Ok(Some(v)) if v.index < index => Ok(()),
            _ => self.shared.durable.remove(VERIFIED),
        }
    }

    /// Forgets the mark when the log no longer holds its entry (the log
    /// came back shorter, or was cut): entries written back later with
    /// the same term must not bring it back into force over frames no
    /// start has checked.
    pub fn forget_verified_unless_held(&self) -> io::Result<()> {
        match self.verified() {
            Some(v) if !self.holds(&v) => self.shared.durable.remove(VERIFIED),
            _ => Ok(()),
        }
    }

    /// Starts the log over, empty, at `base` (a snapshot this log does not
    /// reach was installed). The one owner of this step, in a crash-safe
    /// order: appends before it synced (openraft reads completions as one
    /// watermark); the marks down first, so that a crash before the reset
    /// is not taken for a lost tail at the next start (the snapshot already
    /// holds what they named); then the log; then the cached entries and
    /// the term runs, which describe nothing any more (a crash before they
    /// go leaves runs the next append drops: `note_terms`).
    pub fn reset_to(&self, base: u64) -> io::Result<()> {
        self.wait_for_syncs();
        self.forget_marks()?;
        self.forget_verified_from(0)?;
        self.shared.log.reset(base).map_err(io_error)?;
        lock(&self.shared.recent).clear();
        let mut terms = lock(&self.shared.terms);
        if terms.forget_from(0) {
            self.shared.durable.write(TERMS, &*terms, true)?;
        }
        debug_assert_eq!(self.first_index(), base, "the log starts at the reset");
        debug_assert_eq!(self.next_index(), base, "and holds nothing");
        Ok(())
    }

    /// After a storage fault: keeps the entries before `offset` (a corrupt
    /// frame), then lowers the marks to what is left (`repair`).
    pub fn keep_before(&self, offset: u64) -> io::Result<()> {
        let log = &self.shared.log;
        self.forget_verified_from(offset)?;
        match offset > log.lowest_offset() {
            true => log.cut_after(offset - 1).map_err(io_error)?,
            false => log.reset(offset).map_err(io_error)?,
        }
        lock(&self.shared.recent).truncate_from(offset);
        self.forget_marks_past_log()
    }

    /// After a storage fault: the marks say no more than the log holds. A
    /// mark the log does not back comes down to the purged id, the one
    /// entry known committed and durable whatever the log holds now: the
    /// last entry held may be one nobody committed or this node never
    /// acknowledged (a log restored from an older copy holds entries of a
    /// term that lost), and a committed mark on it would apply them.
    pub fn forget_marks_past_log(&self) -> io::Result<()> {
        let purged = *lock(&self.shared.purged);
        for mark in [&self.shared.committed, &self.shared.seen, &self.shared.flushed] {
            let mut mark = lock(mark);
            let sound = mark
                .value
                .is_none_or(|m| m.index < self.first_index() || self.holds(&m));
            if !sound {
                mark.set_synced(purged)?;
            }
        }
        Ok(())
    }

    /// `id`, or the last entry on disk if `id` is past it: the marks trail
    /// what the log has synced, not what it has written (see `repair`).
    pub(super) fn cap_to_synced(&self, id: LogId) -> Option<LogId> {
        let synced = self.shared.log.synced_offset();
        match synced.checked_sub(1) {
            Some(last) if last < id.index => self.id_at(last),
            Some(_) => Some(id),
            None => None,
        }
    }

    /// `id`, or the last entry held if `id` is past it.
    fn cap_to_log(&self, id: LogId) -> Option<LogId> {
        match self.last_id() {
            Some(last) if last.index < id.index => Some(last),
            Some(_) => Some(id),
            None => None,
        }
    }

    /// Notes the terms of entries about to be written, durably first.
    fn note_terms(&self, entries: &[Entry]) -> io::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut terms = lock(&self.shared.terms);
        let log = &self.shared.log;
        // A log that holds no entry (new, or reset past a snapshot or a
        // purge) needs no run: the old ones would describe entries that are
        // gone, whose terms may be above the ones to come.
        let mut changed = match log.written_offset() == log.lowest_offset() {
            true => terms.forget_from(0),
            false => terms.forget_from(first.log_id.index),
        };
        for e in entries {
            changed |= terms.note(term_of(&e.log_id), e.log_id.index);
        }
        // A write that failed (a full disk) is made again by the next call,
        // which finds nothing new in memory.
        if changed || self.shared.terms_unsaved.load(Ordering::Acquire) {
            self.shared.terms_unsaved.store(true, Ordering::Release);
            self.shared.durable.write(TERMS, &*terms, true)?;
            self.shared.terms_unsaved.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Writes dense entries from index `first` at the log's end (terms
    /// first); returns the last one's id and the sync that makes them
    /// durable (the flushed mark is raised once it is done: `flushing`).
    pub(super) fn write_entries(
        &self,
        first: u64,
        entries: Vec<Entry>,
    ) -> io::Result<(Option<LogId>, Option<PendingSync>)> {
        check_dense(first, &entries)?;
        let batch = encode(first, &entries);
        self.store_encoded(first, entries, batch, false)
    }

    /// `write_entries` for entries already checked and encoded; `appending`:
    /// an earlier try began writing them (see `store_batch`). A full disk
    /// waits for room (see `room`): each step may run again.
    fn store_encoded(
        &self,
        first: u64,
        entries: Vec<Entry>,
        batch: EncodedBatch,
        mut appending: bool,
    ) -> io::Result<(Option<LogId>, Option<PendingSync>)> {
        let started = std::time::Instant::now();
        let pending = self.while_full(|| self.store_batch(first, &entries, &batch, &mut appending))?;
        super::stages::record(super::stages::LOG_WRITE, started);
        Ok(self.keep_written(entries, batch, pending))
    }

    /// The written entries go to the recent cache, with their frames.
    fn keep_written(
        &self,
        mut entries: Vec<Entry>,
        batch: EncodedBatch,
        pending: Option<PendingSync>,
    ) -> (Option<LogId>, Option<PendingSync>) {
        super::stages::reached(super::stages::WRITTEN, &entries);
        let last = entries.last().map(|e| e.log_id);
        attach_frames(&mut entries, batch);
        lock(&self.shared.recent).push(&entries);
        (last, pending)
    }

    /// Blocks until every append written so far is synced (or failed):
    /// what a vote, a truncation, a purge or a reset does first (see
    /// `flushing`).
    pub(crate) fn wait_for_syncs(&self) {
        self.shared.flusher.wait_for_syncs();
    }

    /// Blocks until every entry appended so far is on disk: what a
    /// snapshot waits for before it names applied entries (it is what a
    /// start goes back to when the log lost entries the tables name, so
    /// it must never name one a power cut can take). With `--fsync always`
    /// that is each append's own sync; with write caching nothing else
    /// syncs them, so this syncs the log (once a snapshot: rare).
    pub(crate) fn sync_appended(&self) -> io::Result<()> {
        self.wait_for_syncs();
        match self.shared.log.config().durability {
            crate::log::Durability::Always => Ok(()),
            // A failed sync fails the log's writer (`Log::sync`), a full disk's
            // too: after an fsync error nothing written since can be trusted,
            // so `with_room` around this does not retry it; a restart does.
            _ => self.shared.log.sync().map_err(io_error),
        }
    }

    /// Raises the flushed mark to `last` once its entry is synced: what
    /// this node may now acknowledge, as far as it is on disk (a small
    /// write in place, not synced; see `repair`). A truncation holds the
    /// mark's lock while it cuts, so an entry it took back is never named.
    fn raise_flushed(&self, last: LogId) -> io::Result<()> {
        let mut mark = lock(&self.shared.flushed);
        let flushed = self.cap_to_synced(last).filter(|id| self.holds(id));
        match flushed > mark.value {
            true => mark.set(flushed),
            false => Ok(()),
        }
    }

    /// The terms, then the frames of `batch` at the log's end; each step
    /// does nothing when an earlier try already did it. Returns the sync
    /// of what it wrote (`None`: an earlier try wrote, and synced, all).
    /// `appending`: an earlier try reached the append of this batch at the
    /// log's end (and may have written part of it).
    fn store_batch(
        &self,
        first: u64,
        entries: &[Entry],
        batch: &EncodedBatch,
        appending: &mut bool,
    ) -> io::Result<Option<PendingSync>> {
        self.note_terms(entries)?;
        let log = &self.shared.log;
        let next = log.written_offset();
        // An earlier try that met a full disk wrote the frames before `next`.
        if *appending && next > first && next <= batch.next_offset() {
            return match batch.tail_from(next) {
                Some(rest) => log
                    .append_encoded_unsynced(&rest)
                    .map(|(_, sync)| Some(sync))
                    .map_err(io_error),
                None => Ok(None),
            };
        }
        if first != next {
            // Only an empty log starts anywhere (a new store, or one reset
            // past a snapshot): openraft truncates before it overwrites, so
            // a gap or an overlap is a bug.
            if next != log.lowest_offset() {
                return Err(io::Error::other(format!(
                    "entries from index {first} do not follow the log's end at {next}"
                )));
            }
            log.reset(first).map_err(io_error)?;
            lock(&self.shared.recent).clear();
        }
        // Encoded here, or checked when they came from a peer or the disk:
        // no second pass over them.
        debug_assert_eq!(log.written_offset(), first);
        *appending = true;
        log.append_encoded_unsynced(batch)
            .map(|(_, sync)| Some(sync))
            .map_err(io_error)
    }

    /// Reads entries `[start, end)` that the log holds, at most about
    /// `max_bytes` of frames (one entry always).
    async fn read_entries(&self, start: u64, end: u64, max_bytes: u64) -> io::Result<Vec<Entry>> {
        let start = start.max(self.first_index());
        let end = end.min(self.next_index());
        if start >= end {
            return Ok(Vec::new());
        }
        if let Some(hit) = lock(&self.shared.recent).get(start, end, max_bytes) {
            return Ok(hit);
        }
        // Where the log ends, then the terms, then the frames up to that
        // end, and all three again if a truncation ran meanwhile: it
        // rewrites frames and terms, and the two from either side of it
        // would label old frames with new terms. (An append notes its terms
        // before it raises the end, so frames below an end read first
        // always have their terms in a table read after.)
        // A read that failed while a truncation moved the log (it cut below
        // `start`) is tried again too: the cut, not the read, was wrong.
        loop {
            let before = self.shared.truncations.load(Ordering::Acquire);
            if before % 2 == 1 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
            let start = start.max(self.first_index());
            let end = end.min(self.next_index());
            if start >= end {
                return Ok(Vec::new());
            }
            let terms = self.terms();
            let count = u32::try_from(end - start).unwrap_or(u32::MAX);
            let log = self.shared.log.clone();
            let read = blocking(move || log.read_frames_written(start, count, max_bytes).map_err(io_error)).await;
            if self.shared.truncations.load(Ordering::Acquire) == before {
                let (frames, _) = read?;
                return decode_entries(frames, start, &terms).map_err(io::Error::other);
            }
        }
    }

    /// Runs a truncation of the log and its terms, marked for readers (see
    /// `read_entries`): the counter is odd while it runs, even again after,
    /// whether it returns or panics.
    pub(super) fn truncating<T>(&self, truncate: impl FnOnce() -> T) -> T {
        struct Running<'a>(&'a AtomicU64);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.shared.truncations.fetch_add(1, Ordering::AcqRel);
        let _running = Running(&self.shared.truncations);
        truncate()
    }
}

/// The frames of dense `entries` from index `first`.
fn encode(first: u64, entries: &[Entry]) -> EncodedBatch {
    let mut batch = EncodedBatch::new(first);
    batch.reserve(entries.len() * 128, entries.len());
    encode_entries(&mut batch, entries);
    batch
}

/// Gives each user record its frame from `batch`, which holds the
/// entries' frames in order, and its value as a slice of that frame.
fn attach_frames(entries: &mut [Entry], batch: EncodedBatch) {
    debug_assert_eq!(entries.len(), batch.len(), "one frame an entry");
    for (entry, frame) in entries.iter_mut().zip(batch.into_frames()) {
        debug_assert_eq!(entry.log_id.index, frame.offset());
        match &mut entry.payload {
            openraft::EntryPayload::Normal(r) if frame.offset() == entry.log_id.index => {
                // The same bytes, from the frame: the cache then holds one
                // copy, not the client's body (or a peer's whole request)
                // beside the frame.
                r.value = frame.record().value.clone();
                r.frame = Some(frame);
            }
            _ => {}
        }
    }
}

/// Entries are stored at consecutive offsets from `first`, whatever their
/// indexes say: a gap would put an entry at another entry's offset, and
/// the term file out of step with the log. openraft promises dense
/// entries; this holds it to that before anything is written.
fn check_dense(first: u64, entries: &[Entry]) -> io::Result<()> {
    let misplaced = (first..).zip(entries).find(|(at, entry)| entry.log_id.index != *at);
    match misplaced {
        None => Ok(()),
        Some((at, entry)) => Err(io::Error::other(format!(
            "entries from index {first} are not dense: index {} where {at} belongs",
            entry.log_id.index
        ))),
    }
}

/// Test helpers shared by the cluster's storage tests.
#[cfg(test)]
pub(crate) mod test_support {
    use bytes::Bytes;
    use openraft::EntryPayload;

    use super::LogStore;
    use crate::cluster::types::{Entry, UserRecord, log_id};
    use crate::log::{Durability, LogConfig};

    /// Segments of 1 KiB (records up to 256 bytes), synced on every append.
    pub fn small_segments() -> LogConfig {
        LogConfig {
            durability: Durability::Always,
            max_segment_bytes: 1024,
            max_record_bytes: 256,
            ..LogConfig::default()
        }
    }

    /// Writes entries `0..count` of term 1, each a `{}` record, into an
    /// empty store, and waits for their sync.
    pub fn write_records_synced(store: &LogStore, count: u64) {
        write_more_records_synced(store, 0, count);
    }

    /// As `write_records_synced`, entries `from..from + count`, after the
    /// store's end at `from`.
    pub fn write_more_records_synced(store: &LogStore, from: u64, count: u64) {
        let entries: Vec<Entry> = (from..from + count)
            .map(|i| Entry {
                log_id: log_id(1, i),
                payload: EntryPayload::Normal(UserRecord::new(0, 1, Bytes::from_static(b"{}"))),
            })
            .collect();
        let (_, sync) = store.write_entries(from, entries).expect("written");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::EntryPayload;

    use super::*;
    use crate::cluster::repair;
    use crate::cluster::types::UserRecord;
    use crate::log::{Durability, LogConfig};

    fn entry(index: u64) -> Entry {
        entry_of(1, index)
    }

    fn entry_of(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(UserRecord::new(0, 1, Bytes::from_static(b"{}"))),
        }
    }

    fn store_in(dir: &std::path::Path, durability: Durability) -> LogStore {
        let config = LogConfig {
            durability,
            ..LogConfig::default()
        };
        let log = Log::open(dir, config).expect("log opens");
        let durable = Durable::open(dir.join("raft")).expect("raft dir");
        LogStore::open(log, durable).expect("store opens")
    }

    /// An append's sync may finish after a truncation took its entries
    /// back (appends return before their sync): the flushed mark must not
    /// then name an entry the log no longer holds, or the next start would
    /// take the node for one whose disk lost what it acknowledged.
    #[test]
    fn a_sync_finishing_after_a_truncation_does_not_mark_the_entries_it_took_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_in(dir.path(), Durability::Always);
        let (last, sync) = store
            .write_entries(0, vec![entry_of(1, 0), entry_of(1, 1), entry_of(1, 2)])
            .expect("written");
        let last = last.expect("a last entry");
        store.truncating(|| store.truncate_from(1)).expect("truncated");
        let (_, later) = store
            .write_entries(1, vec![entry_of(2, 1), entry_of(2, 2)])
            .expect("written again");
        // The cut told the first append's waiter that its records are gone
        // (`LogStore` itself waits for syncs before it cuts: `flushing`).
        drop(sync);
        if let Some(later) = later {
            later.wait_blocking().expect("synced");
        }
        store.raise_flushed(last).expect("mark written");
        assert_eq!(store.flushed(), None, "the mark names {last}, which was taken back");
        store.raise_flushed(log_id(2, 2)).expect("mark written");
        assert_eq!(store.flushed(), Some(log_id(2, 2)));
    }

    /// Flips one byte of the first frame's value in the segment based at `base`.
    fn rot_segment(dir: &std::path::Path, base: u64) {
        use std::os::unix::fs::FileExt;
        let path = dir.join(format!("{base:020}.store"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("store file");
        let mut byte = [0u8; 1];
        // Inside the first frame's value (`{}` after a header of tens of bytes).
        let at = file.metadata().expect("metadata").len().min(4096) / 2;
        file.read_exact_at(&mut byte, at).expect("read");
        file.write_all_at(&[byte[0] ^ 0x5a], at).expect("write");
    }

    /// A store on segments of 1 KiB.
    fn open_small_segments(dir: &std::path::Path) -> LogStore {
        let config = LogConfig {
            durability: Durability::Always,
            max_segment_bytes: 1024,
            max_record_bytes: 256,
            ..LogConfig::default()
        };
        let log = Log::open(dir, config).expect("log opens");
        LogStore::open(log, Durable::open(dir.join("raft")).expect("raft dir")).expect("store opens")
    }

    /// 200 entries over several sealed segments, checked once by a start;
    /// the store, and where its active segment begins.
    fn checked_sealed_segments(dir: &std::path::Path) -> (LogStore, u64) {
        let store = open_small_segments(dir);
        let (_, sync) = store.write_entries(0, (0..200).map(entry).collect()).expect("written");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
        let sealed_end = store.log().active_base();
        assert!(
            sealed_end > 100,
            "several sealed segments: the active one starts at {sealed_end}"
        );
        assert_eq!(repair::check(&store).expect("checked"), None);
        assert_eq!(store.verified(), Some(log_id(1, sealed_end - 1)));
        (store, sealed_end)
    }

    /// A corrupt frame met by a read (replication, apply) stops the Raft
    /// core; the restart must find it, not skip its segment as checked.
    #[test]
    fn a_corrupt_read_has_the_next_start_check_every_frame() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, sealed_end) = checked_sealed_segments(dir.path());
        rot_segment(dir.path(), 0);
        // Restarted: nothing cached, the frames are read from the segment.
        drop(store);
        let store = open_small_segments(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let read = runtime.block_on(store.read_entries(0, sealed_end, u64::MAX));
        assert!(read.is_err(), "the rotten frame was read as sound");
        assert_eq!(store.verified(), None, "the mark outlived a corrupt read");
        assert!(matches!(
            repair::check(&store).expect("checked"),
            Some(repair::Fault::Corrupt { .. })
        ));
    }

    /// The same for a client's read of the log, which goes to the log
    /// itself, not through the Raft log reader.
    #[test]
    fn a_corrupt_client_read_has_the_next_start_check_every_frame() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, sealed_end) = checked_sealed_segments(dir.path());
        rot_segment(dir.path(), 0);
        drop(store);
        let store = open_small_segments(dir.path());
        let read = store
            .log()
            .read_range(0, u32::try_from(sealed_end).unwrap_or(u32::MAX), u64::MAX);
        assert!(read.is_err(), "the rotten frame was read as sound");
        assert_eq!(store.verified(), None, "the mark outlived a corrupt read");
    }

    /// A start reads each sealed segment's frames once: later starts check
    /// the active segment and what was sealed since, until the last entry
    /// checked leaves the log.
    #[test]
    fn a_start_checks_each_sealed_segment_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = || open_small_segments(dir.path());
        let (store, sealed_end) = checked_sealed_segments(dir.path());

        // Rot in the first, checked segment: not read again at a start.
        rot_segment(dir.path(), 0);
        drop(store);
        let store = open();
        assert_eq!(
            repair::check(&store).expect("checked"),
            None,
            "a checked segment was read again"
        );

        // Rot in the active segment: read at every start.
        rot_segment(dir.path(), sealed_end);
        assert!(matches!(
            repair::check(&store).expect("checked"),
            Some(repair::Fault::Corrupt { .. })
        ));

        // A truncation at or below the mark forgets it, even when the same
        // entry is written back at its index: the whole log is read again.
        store
            .truncating(|| store.truncate_from(sealed_end - 1))
            .expect("truncated");
        let (_, sync) = store
            .write_entries(sealed_end - 1, vec![entry(sealed_end - 1)])
            .expect("written back");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
        assert!(
            matches!(repair::check(&store).expect("checked"), Some(repair::Fault::Corrupt { offset, .. }) if offset < sealed_end),
            "the rot in the first segment was not found after the truncation"
        );
    }

    /// The mark is written without a sync: a power cut may leave it empty.
    /// A start then reads every frame, and starts.
    #[test]
    fn an_unreadable_checked_mark_means_a_full_scan_not_a_failed_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_in(dir.path(), Durability::Always);
        let (_, sync) = store.write_entries(0, (0..5).map(entry).collect()).expect("written");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
        std::fs::write(dir.path().join("raft").join(VERIFIED), b"").expect("an empty mark");
        assert_eq!(store.verified(), None);
        assert_eq!(repair::check(&store).expect("a start checks the log"), None);
    }

    /// A log reset past its end (a snapshot installed) keeps no entry, and
    /// the entries after the snapshot may carry a lower term than the
    /// newest the old log held (entries keep the term they were first
    /// written in; the old log's newest were uncommitted). The terms of
    /// the old log must not make the runs descend: the node could not open.
    #[test]
    fn entries_after_a_reset_may_carry_a_lower_term_than_the_old_log_held() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_in(dir.path(), Durability::Always);
        let old: Vec<Entry> = (0..20).map(|i| entry_of(if i < 10 { 1 } else { 3 }, i)).collect();
        let (_, sync) = store.write_entries(0, old).expect("written");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
        store
            .log()
            .reset(100)
            .expect("reset past the end, as a crash inside `reset_to` may leave it");
        let (_, sync) = store
            .write_entries(100, (100..105).map(|i| entry_of(2, i)).collect())
            .expect("entries after the reset are written");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
        assert_eq!(store.id_at(100), Some(log_id(2, 100)));
        drop(store);
        let store = store_in(dir.path(), Durability::Always);
        assert_eq!(store.id_at(104), Some(log_id(2, 104)), "reopened");
    }

    /// Sets a mark's value directly, as a disk that lost entries leaves it.
    fn force_mark(mark: &Mutex<Mark>, value: LogId) {
        lock(mark).set(Some(value)).expect("mark written");
    }

    /// A start in the previous run's boot takes the committed id that run
    /// saw, which its sync-capped mark trailed (`--fsync interval`); a start
    /// after a reboot does not (what was unsynced may be gone) and forgets
    /// it, nor does one whose log no longer holds the entry seen.
    #[test]
    fn a_start_in_the_same_boot_restores_the_committed_id_seen() {
        let this_boot = LastRun::now(true);
        if !this_boot.in_this_boot() {
            eprintln!("no boot id on this machine: nothing to test");
            return;
        }
        let rebooted = LastRun {
            boot_id: Some("another boot".into()),
            ..this_boot.clone()
        };
        let interval = Durability::Interval(std::time::Duration::from_secs(60));
        let seen_ahead = |dir: &std::path::Path| {
            let store = store_in(dir, interval);
            store.write_entries(0, (0..10).map(entry).collect()).expect("written");
            force_mark(&store.shared.committed, log_id(1, 3));
            let capped = Some(log_id(1, 3));
            store.note_seen_committed(Some(log_id(1, 8)), capped);
            // An older one, and one the committed mark says, are not written.
            store.note_seen_committed(Some(log_id(1, 6)), capped);
            store.note_seen_committed(Some(log_id(1, 3)), capped);
            assert_eq!(lock(&store.shared.seen).value, Some(log_id(1, 8)));
        };

        let dir = tempfile::tempdir().expect("temp dir");
        seen_ahead(dir.path());
        let store = store_in(dir.path(), interval);
        store.restore_seen_committed(Some(&this_boot)).expect("restored");
        assert_eq!(store.committed(), Some(log_id(1, 8)), "in the same boot");
        drop(store);
        let store = store_in(dir.path(), interval);
        assert_eq!(store.committed(), Some(log_id(1, 8)), "the restored mark is recorded");
        // A log that lost the entry seen (a repair cut it) restores nothing.
        force_mark(&store.shared.committed, log_id(1, 3));
        store.keep_before(7).expect("cut");
        store.restore_seen_committed(Some(&this_boot)).expect("checked");
        assert!(store.committed() <= Some(log_id(1, 6)), "{:?}", store.committed());

        for (previous, what) in [
            (Some(&rebooted), "after a reboot"),
            (None, "with no previous run known"),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            seen_ahead(dir.path());
            let store = store_in(dir.path(), interval);
            store.restore_seen_committed(previous).expect("checked");
            assert_eq!(store.committed(), Some(log_id(1, 3)), "{what}");
            store.restore_seen_committed(Some(&this_boot)).expect("checked");
            assert_eq!(
                store.committed(),
                Some(log_id(1, 3)),
                "{what}: the mark seen is forgotten"
            );
        }
    }

    /// Issue 19 item 15: a mark the log no longer backs (past its end, or
    /// naming an entry it holds with another term) comes down to the purged
    /// id, the highest entry known committed and durable whatever the log
    /// now holds; not to the last entry held, which nothing says was
    /// committed or acknowledged (a log restored from an older copy holds
    /// entries of a term that lost).
    #[test]
    fn an_unsound_mark_comes_down_to_the_purged_id_not_to_the_last_entry_held() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_in(dir.path(), Durability::Always);
        let (_, sync) = store.write_entries(0, (0..10).map(entry).collect()).expect("written");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
        let purged = log_id(1, 2);
        store
            .shared
            .durable
            .write(PURGED, &Some(purged), true)
            .expect("purged id");
        *lock(&store.shared.purged) = Some(purged);

        force_mark(&store.shared.committed, log_id(1, 20));
        force_mark(&store.shared.flushed, log_id(2, 5));
        store.forget_marks_past_log().expect("marks lowered");
        assert_eq!(store.committed(), Some(purged), "a committed mark past the log's end");
        assert_eq!(
            store.flushed(),
            Some(purged),
            "a flushed mark the log holds with another term"
        );

        // Sound marks stay.
        force_mark(&store.shared.committed, log_id(1, 7));
        store.forget_marks_past_log().expect("marks checked");
        assert_eq!(store.committed(), Some(log_id(1, 7)));
    }

    /// Issue 19 item 15: a log whose first segments are gone (deleted by
    /// hand, or lost by the disk) starts past the entry after the purged
    /// one: the node would claim entries it cannot serve. A start takes it
    /// for a storage fault, and the repair leaves a log that starts where
    /// Raft expects it to.
    #[test]
    fn a_log_missing_segments_at_its_front_is_a_storage_fault() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, sealed_end) = checked_sealed_segments(dir.path());
        drop(store);
        let second = store_bases(dir.path())[1];
        for suffix in ["store", "index"] {
            std::fs::remove_file(dir.path().join(format!("{:020}.{suffix}", 0))).expect("segment 0 removed");
        }
        let store = open_small_segments(dir.path());
        assert_eq!(store.log().lowest_offset(), second, "the first segment is gone");
        let fault = repair::check(&store).expect("checked");
        assert!(
            matches!(fault, Some(repair::Fault::MissingFront { expected: 0, lowest }) if lowest == second),
            "{fault:?}"
        );
        let fault = fault.expect("a fault");
        repair::keep_sound_prefix(&store, &fault).expect("repaired");
        assert_eq!(repair::check(&store).expect("checked again"), None);
        assert_eq!(store.first_index(), 0);
        assert!(store.next_index() < sealed_end);
    }

    /// The bases of the segments in `dir`, in order.
    fn store_bases(dir: &std::path::Path) -> Vec<u64> {
        let mut bases: Vec<u64> = std::fs::read_dir(dir)
            .expect("read dir")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".store")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        bases
    }

    /// Corruption in a sealed segment where the engine checks it at open
    /// (its last record) refuses a member's log, and deletes nothing: a
    /// cut at open, tried this stop, deleted records before anything knew
    /// whether another node held them (a one-node cluster lost them for
    /// good). Every segment must still be there for an operator.
    #[test]
    fn a_corrupt_sealed_segment_refuses_the_open_and_deletes_nothing() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, sealed_end) = checked_sealed_segments(dir.path());
        drop(store);
        let bases = store_bases(dir.path());
        let (rotten, next) = (bases[1], bases[2]);
        assert!(next < sealed_end);
        // The last byte of the segment's last frame.
        let path = dir.path().join(format!("{rotten:020}.store"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("store file");
        let at = file.metadata().expect("metadata").len() - 1;
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at).expect("read");
        file.write_all_at(&[byte[0] ^ 0x5a], at).expect("write");
        drop(file);

        let config = LogConfig {
            durability: Durability::Always,
            max_segment_bytes: 1024,
            max_record_bytes: 256,
            ..LogConfig::default()
        };
        let opened = Log::open(dir.path(), config);
        assert!(matches!(opened, Err(LogError::Corrupt { .. })), "{:?}", opened.err());
        assert_eq!(store_bases(dir.path()), bases, "a refused open deletes no segment");
    }

    /// Item 15 (a review finding): the committed mark comes down to the
    /// purged id when the log does not back it (the last entry held may be
    /// of a term that lost); so must the applied id, which
    /// `forget_applied_past_log` lowers at the same start (to the
    /// snapshot's, here none).
    #[test]
    fn applied_is_not_lowered_onto_entries_of_a_term_that_lost() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_in(dir.path(), Durability::Always);
        // The restored log: term 1 up to 9, then term 2 entries 10..14 that
        // lost (the live cluster has term 3 there, applied up to 20).
        let entries: Vec<Entry> = (0..10)
            .map(|i| entry_of(1, i))
            .chain((10..15).map(|i| entry_of(2, i)))
            .collect();
        let (_, sync) = store.write_entries(0, entries).expect("written");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
        use crate::cluster::state_machine::StateMachine;
        use crate::cluster::tables::Tables;
        let tables = Tables {
            applied: Some(log_id(3, 20)),
            ..Tables::default()
        };
        store.durable().write("state", &tables, true).expect("tables");
        let sm = StateMachine::open(store.clone(), store.durable().clone()).expect("sm");
        sm.forget_applied_past_log().expect("lowered");
        let applied = sm.tables().applied;
        assert!(
            applied.is_none_or(|a| a.index < 10),
            "applied lowered onto the losing term's entries: {applied:?}; visible up to {}",
            store.log().next_offset()
        );
    }

    #[test]
    fn entries_with_a_gap_in_their_indexes_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_in(dir.path(), Durability::Never);
        let log = store.log().clone();
        store
            .write_entries(0, vec![entry(0), entry(1)])
            .expect("dense entries are written");
        let refused = store.write_entries(2, vec![entry(2), entry(4)]);
        assert!(refused.is_err(), "entries 2 and 4 were taken as 2 and 3");
        assert_eq!(log.written_offset(), 2, "nothing of the refused batch is written");
        store
            .write_entries(2, vec![entry(2), entry(3)])
            .expect("the log goes on");
        assert_eq!(log.written_offset(), 4);
    }
}
