//! A standalone node's guarded appends: those with producer headers or an
//! expected last offset (a member's are decided by its state machine, see
//! `cluster::tables`).
//!
//! A producer's appends are decided one at a time: it holds its turn from
//! the table's check, through the append, to noting it in the table
//! (`log::producers`), so a retry cannot pass the check while its first
//! try is still being written; other producers do not wait for it. The
//! turns are kept under the table's one lock: a producer with an append
//! under way is busy, and its next appends queue in the order they came
//! and are handed the turn one by one (a client keeps several in flight,
//! in sequence order: woken all at once, they would be decided in any
//! order and refused as gaps). Busy producers are known by a keyed hash
//! of their id: two ids with the same hash only make one wait for the
//! other. An expected last offset is held
//! by the log's one writer as it places the batch (`Log::append_batch_at`),
//! so no other append comes in between. Appends without a guard take no
//! lock and never wait for a guarded one.
//!
//! An append handed to the log is written whatever becomes of the request
//! (a client that hangs up drops it): a `Claim` dropped with its append
//! pending waits for it in a task of its own and notes it in the table
//! then, and its producer stays busy until it has, so that the retry of a
//! client that gave up is answered as a duplicate, not appended again.
//!
//! The first record of every producer's append carries its guard in its
//! frame (`log::Guard`), and `open` rebuilds the table from the log's
//! frames. Before retention deletes segments, `save` writes the table as
//! it stands, with the offset it covers, to `<data dir>/producers/table`
//! (a `cluster::Durable` document: checksummed, replaced atomically), and
//! `open` starts from that and reads only the frames after it: deleting a
//! producer's records does not make the log forget the producer. `save`
//! holds new guarded appends back and waits until none is in flight (told
//! by `released`), so that the table holds every guarded append below the
//! log's end.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use crate::cluster::Durable;
use crate::log::producers::{Producers, Refusal};
use crate::log::{Frames, Guard, Log, LogError, MAX_STORED_FRAME, Payload, PendingAppend, ProducerStamp};

/// Where the table is saved, under the data directory, and its document.
const DIR: &str = "producers";
const TABLE: &str = "table";

/// The table as saved: it holds every guarded append below `covered`.
#[derive(Serialize, Deserialize)]
struct Saved {
    covered: u64,
    producers: Producers,
}

/// Bytes of frames read at a time while the table is rebuilt.
const REBUILD_CHUNK: u64 = 4 << 20;

/// What an append came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Appended from this offset on.
    Created { first: u64 },
    /// A retry of an append already in the log at these offsets: nothing appended.
    Duplicate { first: u64, last: u64 },
}

/// See the module doc.
#[derive(Debug)]
pub struct GuardedAppends {
    shared: Arc<Shared>,
    /// Where `save` writes (none: an in-memory table, for tests).
    saved: Option<Durable>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Told when a claim ends or a save is done, if a save or an append
    /// held back by one waits.
    released: Notify,
    /// Keys the hashes busy producers are known by (the ids are the
    /// clients' choice: SipHash with a random key).
    ids: RandomState,
}

#[derive(Debug)]
struct State {
    table: Producers,
    /// The producers whose turn is taken (an append checked and under way,
    /// or one holding the turn until a save ends), by hashed id, each with
    /// its appends waiting for the turn, in the order they came.
    busy: HashMap<u64, VecDeque<oneshot::Sender<()>>, BuildHasherDefault<Hashed>>,
    /// Guarded appends between their check and their end.
    in_flight: usize,
    /// Saves under way: new guarded appends wait.
    saving: usize,
    /// Saves and appends waiting for `released`.
    waiting: usize,
}

/// The hasher of `State::busy`, whose keys are keyed hashes already.
#[derive(Debug, Default)]
struct Hashed(u64);

impl Hasher for Hashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Default for GuardedAppends {
    fn default() -> Self {
        GuardedAppends::with(Producers::default(), None)
    }
}

/// Why a guarded append was not appended (a duplicate is not an error).
#[derive(Debug)]
pub enum GuardedError {
    Refused(Refusal),
    Log(LogError),
}

impl GuardedAppends {
    fn with(table: Producers, saved: Option<Durable>) -> GuardedAppends {
        let state = State {
            table,
            busy: HashMap::default(),
            in_flight: 0,
            saving: 0,
            waiting: 0,
        };
        GuardedAppends {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                released: Notify::new(),
                ids: RandomState::new(),
            }),
            saved,
        }
    }

    /// Rebuilds the producers table: the one last saved, then the guards
    /// of `log`'s frames after what it covers.
    pub fn open(log: &Log) -> Result<GuardedAppends, LogError> {
        let durable = Durable::open(log.dir().join(DIR))?;
        let (lowest, end) = (log.lowest_offset(), log.next_offset());
        let (table, from) = match durable.read::<Saved>(TABLE)? {
            // A log cut or reset below what was saved: the saved table
            // would hold appends the log no longer has.
            Some(saved) if saved.covered <= end => (saved.producers, saved.covered.max(lowest)),
            _ => (Producers::default(), lowest),
        };
        let table = Self::replay(log, table, from, end)?;
        if !table.is_empty() {
            tracing::info!(producers = table.len(), "idempotent producers rebuilt from the log");
        }
        Ok(GuardedAppends::with(table, Some(durable)))
    }

    /// Saves the table as it stands (see the module doc); a no-op for an
    /// in-memory one.
    pub async fn save(&self, log: &Log) -> io::Result<()> {
        let Some(durable) = self.saved.clone() else {
            return Ok(());
        };
        let saved = {
            let mut holding = Saving::start(&self.shared);
            loop {
                let wait = {
                    let mut state = self.shared.state();
                    if state.in_flight == 0 {
                        break Saved {
                            covered: log.next_offset(),
                            producers: state.table.clone(),
                        };
                    }
                    state.waiting += 1;
                    self.shared.released.notified()
                };
                holding.wait(wait).await;
            }
        };
        tokio::task::spawn_blocking(move || durable.write(TABLE, &saved, true))
            .await
            .map_err(io::Error::other)?
    }

    /// `table` with the guards of `log`'s frames `[from, end)` noted.
    fn replay(log: &Log, mut table: Producers, from: u64, end: u64) -> Result<Producers, LogError> {
        let limits = log.config().producers;
        let mut at = from;
        while at < end {
            let (frames, count) = log.read_frames(at, u32::MAX, REBUILD_CHUNK)?;
            if count == 0 {
                break;
            }
            for frame in Frames::new(&frames, Some(at), MAX_STORED_FRAME) {
                let (_, view) = frame.map_err(|(position, e)| LogError::Corrupt {
                    file: log.dir().to_path_buf(),
                    position: position as u64,
                    offset: None,
                    reason: e.to_string(),
                })?;
                if view.guard.is_empty() {
                    continue;
                }
                let guard = Guard::decode(view.guard).map_err(|reason| LogError::Corrupt {
                    file: log.dir().to_path_buf(),
                    position: 0,
                    offset: Some(view.offset),
                    reason,
                })?;
                if let Some(p) = guard.producer {
                    table.record(&p, view.offset, view.timestamp_ms, &limits);
                }
            }
            at += u64::from(count);
        }
        Ok(table)
    }

    /// Appends `payloads` (the first carrying `guard` encoded) if `guard`
    /// allows it.
    pub async fn append(&self, log: &Log, payloads: &[Payload<'_>], guard: &Guard) -> Result<Appended, GuardedError> {
        let mut claim = match self.claim(log, guard).await {
            Ok(claim) => claim,
            Err(Early::Duplicate { first, last }) => return Ok(Appended::Duplicate { first, last }),
            Err(Early::Refused(why)) => return Err(GuardedError::Refused(why)),
        };
        let expect_next = guard
            .expected_last
            .map(|last| u64::try_from(last.saturating_add(1)).unwrap_or(0));
        let pending = claim
            .pending
            .insert(log.submit_batch(payloads, expect_next).map_err(GuardedError::Log)?);
        let appended = log.submitted_outcome(pending).await;
        claim.pending = None;
        claim.end(appended.as_ref().ok().copied());
        match appended {
            Ok(first) => Ok(Appended::Created { first }),
            Err(LogError::NotNext { next, .. }) => Err(GuardedError::Refused(Refusal::OffsetMismatch {
                last: next.checked_sub(1),
            })),
            Err(e) => Err(GuardedError::Log(e)),
        }
    }

    /// Waits for the producer's turn, then for any save, then checks the
    /// table: a claim to append, or the answer without appending. The turn
    /// comes first, in the order the producer's appends came, and is held
    /// while a save holds the check back: appends that waited for a save
    /// together were decided in whatever order they woke, and a producer
    /// with several in flight had later ones refused as sequence gaps.
    async fn claim<'a>(&'a self, log: &'a Log, guard: &'a Guard) -> Result<Claim<'a>, Early> {
        let producer = guard
            .producer
            .as_ref()
            .map(|p| (p, self.shared.ids.hash_one(p.id.as_str())));
        let held = match producer {
            Some((_, hash)) => Some(self.take_turn(hash).await),
            None => None,
        };
        let mut waiting = Waiting::new(&self.shared);
        loop {
            let notified = {
                let mut state = self.shared.state();
                if state.saving == 0 {
                    // The check (and the claim after it) owns the turn now.
                    if let Some(turn) = held {
                        turn.hand_on();
                    }
                    return self.decide(state, log, producer);
                }
                state.waiting += 1;
                self.shared.released.notified()
            };
            // A save waits only for claims in flight (decided), so one that
            // holds a turn here never holds the save up.
            waiting.wait(notified).await;
        }
    }

    /// The producer's turn: at once if it is free, else once the appends
    /// of the producer that came before have had theirs.
    async fn take_turn(&self, hash: u64) -> HeldTurn<'_> {
        loop {
            let turn = {
                let mut state = self.shared.state();
                match state.busy.entry(hash) {
                    Entry::Vacant(free) => {
                        free.insert(VecDeque::new());
                        return HeldTurn::new(&self.shared, hash);
                    }
                    Entry::Occupied(mut queue) => {
                        let (handed, turn) = oneshot::channel();
                        queue.get_mut().push_back(handed);
                        Turn {
                            shared: &self.shared,
                            hash,
                            turn: Some(turn),
                        }
                    }
                }
            };
            if turn.taken().await {
                return HeldTurn::new(&self.shared, hash);
            }
        }
    }

    /// Checks a claim that holds its producer's turn (if it has a
    /// producer) against the table, at the clock's time now.
    fn decide<'a>(
        &'a self,
        mut state: MutexGuard<'_, State>,
        log: &'a Log,
        producer: Option<(&'a ProducerStamp, u64)>,
    ) -> Result<Claim<'a>, Early> {
        let now = log.config().clock.now_ms();
        if let Some((p, hash)) = producer {
            debug_assert!(state.busy.contains_key(&hash), "the claim holds its producer's turn");
            if let Some(refusal) = state.table.check(p, now, &log.config().producers) {
                state.pass_turn(hash);
                return Err(match refusal {
                    Refusal::Duplicate { first, last } => Early::Duplicate { first, last },
                    why => Early::Refused(why),
                });
            }
        }
        state.in_flight += 1;
        Ok(Claim {
            shared: &self.shared,
            log,
            producer,
            now,
            pending: None,
            ended: false,
        })
    }
}

/// A producer's turn held by an append not checked yet (it waits for a
/// save to end): dropped so, it hands the turn on.
struct HeldTurn<'a> {
    shared: &'a Shared,
    hash: u64,
    held: bool,
}

impl<'a> HeldTurn<'a> {
    fn new(shared: &'a Shared, hash: u64) -> HeldTurn<'a> {
        HeldTurn {
            shared,
            hash,
            held: true,
        }
    }

    /// The turn goes to the check (`decide`), which passes it on.
    fn hand_on(mut self) {
        self.held = false;
    }
}

impl Drop for HeldTurn<'_> {
    fn drop(&mut self) {
        if self.held {
            self.shared.state().pass_turn(self.hash);
        }
    }
}

/// A guarded append that may not go ahead.
enum Early {
    Duplicate { first: u64, last: u64 },
    Refused(Refusal),
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells whoever waits that a claim or a save ended (the lock released).
    fn tell(&self, state: MutexGuard<'_, State>) {
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.released.notify_waiters();
        }
    }

    /// Ends a claim: notes its append in the table if it was made, and
    /// frees its producer.
    fn end(&self, producer: Option<(&ProducerStamp, u64)>, first: Option<u64>, now: u64, log: &Log) {
        let mut state = self.state();
        if let Some((p, hash)) = producer {
            if let Some(first) = first {
                state.table.record(p, first, now, &log.config().producers);
            }
            state.pass_turn(hash);
        }
        debug_assert!(state.in_flight > 0, "every claim is counted");
        state.in_flight = state.in_flight.saturating_sub(1);
        self.tell(state);
    }
}

impl State {
    /// Hands a busy producer's turn to the next of its appends still
    /// waiting, or frees it.
    fn pass_turn(&mut self, hash: u64) {
        let Some(queue) = self.busy.get_mut(&hash) else {
            debug_assert!(false, "the turn passed is held");
            return;
        };
        while let Some(next) = queue.pop_front() {
            if next.send(()).is_ok() {
                return;
            }
        }
        self.busy.remove(&hash);
    }
}

/// An append waiting for its producer's turn. Dropped once the turn was
/// handed to it but before it saw so, it hands the turn on.
struct Turn<'a> {
    shared: &'a Shared,
    hash: u64,
    turn: Option<oneshot::Receiver<()>>,
}

impl Turn<'_> {
    /// Whether the turn came (else the append queues again).
    async fn taken(mut self) -> bool {
        let taken = match self.turn.as_mut() {
            Some(turn) => turn.await.is_ok(),
            None => false,
        };
        self.turn = None;
        debug_assert!(taken, "a waiting append is handed the turn or dropped");
        taken
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some(mut turn) = self.turn.take() else {
            return;
        };
        // Closed first: a turn handed over after this fails to send and
        // goes to the next waiter; one handed over before is seen here.
        // (Looked at while open, a send landing between the look and the
        // drop would be lost with the channel, and the producer with it.)
        turn.close();
        if turn.try_recv().is_ok() {
            self.shared.state().pass_turn(self.hash);
        }
    }
}

/// A guarded append that passed its check, counted in `in_flight` and its
/// producer busy until `end` (or its drop) notes what it came to.
struct Claim<'a> {
    shared: &'a Arc<Shared>,
    log: &'a Log,
    producer: Option<(&'a ProducerStamp, u64)>,
    now: u64,
    /// The append handed to the log, not yet answered.
    pending: Option<PendingAppend>,
    ended: bool,
}

impl Claim<'_> {
    /// The claim's end, its append made from `first` (or not made).
    fn end(mut self, first: Option<u64>) {
        debug_assert!(self.pending.is_none(), "the append was answered");
        self.shared.end(self.producer, first, self.now, self.log);
        self.ended = true;
    }
}

impl Drop for Claim<'_> {
    /// A claim dropped before its end (the request dropped): an append
    /// already handed to the log is waited for elsewhere and then noted,
    /// so that its producer's retry finds it (see the module doc).
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Some(pending) = self.pending.take() else {
            self.shared.end(self.producer, None, self.now, self.log);
            return;
        };
        let finish = Finish {
            shared: self.shared.clone(),
            log: self.log.clone(),
            producer: self.producer.map(|(p, hash)| (p.clone(), hash)),
            now: self.now,
            pending: Some(pending),
            ended: false,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(finish.wait());
            }
            Err(_) => finish.wait_blocking(),
        }
    }
}

/// The end of a claim whose request was dropped with its append pending:
/// waits for the append's outcome and notes it. Dropped unfinished (its
/// task dropped as the runtime stops), it frees the producer without
/// noting the append: nobody is left to retry here, and the next start
/// rebuilds the table from the log.
struct Finish {
    shared: Arc<Shared>,
    log: Log,
    producer: Option<(ProducerStamp, u64)>,
    now: u64,
    pending: Option<PendingAppend>,
    ended: bool,
}

impl Finish {
    async fn wait(mut self) {
        let first = match self.pending.as_mut() {
            Some(pending) => self.log.submitted_outcome(pending).await.ok(),
            None => None,
        };
        self.end(first);
    }

    /// `wait` outside any runtime.
    fn wait_blocking(mut self) {
        let first = self
            .pending
            .take()
            .and_then(|pending| self.log.submitted_outcome_blocking(pending).ok());
        self.end(first);
    }

    fn end(&mut self, first: Option<u64>) {
        let producer = self.producer.as_ref().map(|(p, hash)| (p, *hash));
        self.shared.end(producer, first, self.now, &self.log);
        self.ended = true;
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.ended {
            self.end(None);
        }
    }
}

/// Counts a claim or save among those waiting for `released` while it
/// waits, uncounted again if it is dropped waiting.
struct Waiting<'a> {
    shared: &'a Shared,
    counted: bool,
}

impl<'a> Waiting<'a> {
    fn new(shared: &'a Shared) -> Waiting<'a> {
        Waiting { shared, counted: false }
    }

    /// Waits for `notified`, made (and counted in `waiting`) under the
    /// state's lock before it was released, so no notice is missed.
    async fn wait(&mut self, notified: tokio::sync::futures::Notified<'_>) {
        self.counted = true;
        notified.await;
        self.shared.state().waiting -= 1;
        self.counted = false;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.shared.state().waiting -= 1;
        }
    }
}

/// A save under way: new guarded appends wait until it is dropped.
struct Saving<'a> {
    shared: &'a Shared,
    waiting: Waiting<'a>,
}

impl<'a> Saving<'a> {
    fn start(shared: &'a Shared) -> Saving<'a> {
        shared.state().saving += 1;
        Saving {
            shared,
            waiting: Waiting::new(shared),
        }
    }

    async fn wait(&mut self, notified: tokio::sync::futures::Notified<'_>) {
        self.waiting.wait(notified).await;
    }
}

impl Drop for Saving<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        state.saving -= 1;
        self.shared.tell(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;

    /// Producer `id`'s append of sequence `seq` (one record, "x").
    async fn append_as(appends: &GuardedAppends, log: &Log, id: &str, seq: u64) -> Result<Appended, GuardedError> {
        let guard = stamp(id, seq);
        let encoded = guard.encode();
        let payload = Payload {
            attributes: 0,
            value: b"x",
            guard: &encoded,
        };
        appends.append(log, &[payload], &guard).await
    }

    fn stamp(id: &str, seq: u64) -> Guard {
        Guard {
            producer: Some(ProducerStamp {
                id: id.to_string(),
                epoch: 0,
                seq,
                count: 1,
            }),
            expected_last: None,
        }
    }

    #[tokio::test]
    async fn a_producers_claims_are_one_at_a_time_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let appends = GuardedAppends::default();
        let (p0, p1, q0) = (stamp("p", 0), stamp("p", 1), stamp("q", 0));
        let Ok(first) = appends.claim(&log, &p0).await else {
            panic!("p's first append may go ahead")
        };
        let mut second = Box::pin(appends.claim(&log, &p1));
        assert!(
            futures_util::poll!(&mut second).is_pending(),
            "p's second append waits for its first"
        );
        let Ok(other) = appends.claim(&log, &q0).await else {
            panic!("q does not wait for p")
        };
        other.end(None);
        first.end(Some(0));
        let Ok(second) = second.await else {
            panic!("p's second append goes ahead after its first, recorded at 0")
        };
        let mut given_up = Box::pin(appends.claim(&log, &p1));
        assert!(futures_util::poll!(&mut given_up).is_pending());
        drop(given_up);
        drop(second);
        let state = appends.shared.state();
        assert!(
            state.busy.is_empty() && state.in_flight == 0 && state.waiting == 0,
            "nothing is left behind, a wait given up included: {state:?}"
        );
    }

    #[tokio::test]
    async fn a_turn_handed_to_an_append_dropped_before_it_saw_it_goes_on_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let appends = GuardedAppends::default();
        let (p0, p1) = (stamp("p", 0), stamp("p", 1));
        let Ok(first) = appends.claim(&log, &p0).await else {
            panic!("p's first append may go ahead")
        };
        let mut handed = Box::pin(appends.claim(&log, &p1));
        assert!(futures_util::poll!(&mut handed).is_pending(), "waits for the turn");
        let mut next = Box::pin(appends.claim(&log, &p1));
        assert!(futures_util::poll!(&mut next).is_pending(), "queued behind it");
        first.end(Some(0));
        drop(handed);
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), next).await;
        let Ok(Ok(next)) = next else {
            panic!("the turn went on to the next append, which goes ahead at seq 1")
        };
        drop(next);
        assert!(
            appends.shared.state().busy.is_empty(),
            "and p is free once it is dropped"
        );
    }

    /// Review: a waiting append dropped on one thread while the turn is
    /// handed to it on another must not lose the turn (a send landing
    /// between its look at the channel and the channel's drop): the
    /// producer would wait for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_handed_while_its_waiting_append_is_dropped_is_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let appends = Arc::new(GuardedAppends::default());
        for round in 0..50_000u64 {
            let id = format!("p{round}");
            let (first_guard, waiting_guard) = (stamp(&id, 0), stamp(&id, 1));
            let Ok(first) = appends.claim(&log, &first_guard).await else {
                panic!("the first append may go ahead")
            };
            let mut waiting = Box::pin(appends.claim(&log, &waiting_guard));
            assert!(futures_util::poll!(&mut waiting).is_pending(), "queued for the turn");
            // The holder ends on another thread while this one drops the waiter.
            let ended = std::thread::scope(|scope| {
                let ending = scope.spawn(|| first.end(None));
                drop(waiting);
                ending.join().is_ok()
            });
            assert!(ended);
            let state = appends.shared.state();
            assert!(
                state.busy.is_empty(),
                "round {round}: the producer's turn was lost with nobody holding it: {:?}",
                state.busy.keys().collect::<Vec<_>>()
            );
        }
    }

    #[tokio::test]
    async fn a_save_waits_for_the_appends_in_flight_and_holds_new_ones_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let appends = GuardedAppends::open(&log).unwrap();
        let p = stamp("p", 0);
        let Ok(first) = appends.claim(&log, &p).await else {
            panic!("p's first append may go ahead")
        };
        let mut save = Box::pin(appends.save(&log));
        assert!(
            futures_util::poll!(&mut save).is_pending(),
            "the save waits for p's append"
        );
        let q = stamp("q", 0);
        let mut held = Box::pin(appends.claim(&log, &q));
        assert!(futures_util::poll!(&mut held).is_pending(), "q waits for the save");
        first.end(None);
        save.await.unwrap();
        assert!(held.await.is_ok(), "q goes ahead once the save is done");
    }

    /// The last session's open finding: appends held back by a save all
    /// waited for the same notice and were decided in whatever order they
    /// woke, so a producer with several in flight had later ones refused as
    /// sequence gaps at each save. Now the first takes its producer's turn
    /// and waits for the save holding it; the others queue behind it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_producers_appends_held_back_by_a_save_are_decided_in_the_order_they_came() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let appends = Arc::new(GuardedAppends::open(&log).unwrap());
        let mut refused = Vec::new();
        for round in 0..20u64 {
            let other = stamp(&format!("q{round}"), 0);
            let Ok(in_flight) = appends.claim(&log, &other).await else {
                panic!("q's append may go ahead")
            };
            let (l, a) = (log.clone(), appends.clone());
            let save = tokio::spawn(async move { a.save(&l).await });
            while appends.shared.state().saving == 0 {
                tokio::task::yield_now().await;
            }
            let id = format!("p{round}");
            let hash = appends.shared.ids.hash_one(id.as_str());
            let mut held = Vec::new();
            for seq in 0..5u64 {
                let (l, a, id) = (log.clone(), appends.clone(), id.clone());
                held.push(tokio::spawn(async move { (seq, append_as(&a, &l, &id, seq).await) }));
                // Held back (waiting for the save, the save itself counted
                // among the waiting, or queued for the turn) before the next
                // one comes.
                let held_back = || {
                    let state = appends.shared.state();
                    let queued = state.busy.get(&hash).map_or(0, VecDeque::len);
                    state.waiting.saturating_sub(1) + queued > seq as usize
                };
                while !held_back() {
                    tokio::task::yield_now().await;
                }
            }
            let at = log.append_batch_async(&[Payload::new(b"q")]).await.unwrap();
            in_flight.end(Some(at));
            save.await.unwrap().unwrap();
            for handle in held {
                let (seq, outcome) = handle.await.unwrap();
                match outcome {
                    Ok(Appended::Created { .. }) => {}
                    Err(GuardedError::Refused(why)) => refused.push((round, seq, why)),
                    other => panic!("seq {seq}: {other:?}"),
                }
            }
        }
        assert!(
            refused.is_empty(),
            "{} of 100 appends that came in order during a save were refused: {refused:?}",
            refused.len()
        );
    }

    /// An append that holds its producer's turn while a save holds it back,
    /// dropped (its client hung up), hands the turn to the next one.
    #[tokio::test]
    async fn a_turn_held_through_a_save_by_a_dropped_append_goes_on_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let appends = GuardedAppends::open(&log).unwrap();
        let other = stamp("q", 0);
        let Ok(in_flight) = appends.claim(&log, &other).await else {
            panic!("q's append may go ahead")
        };
        let mut save = Box::pin(appends.save(&log));
        assert!(futures_util::poll!(&mut save).is_pending(), "the save waits for q");
        let (first, second) = (stamp("p", 0), stamp("p", 1));
        let mut holding = Box::pin(appends.claim(&log, &first));
        assert!(
            futures_util::poll!(&mut holding).is_pending(),
            "p's first waits for the save"
        );
        let mut next = Box::pin(appends.claim(&log, &second));
        assert!(
            futures_util::poll!(&mut next).is_pending(),
            "p's second waits for the turn"
        );
        drop(holding);
        in_flight.end(None);
        save.await.unwrap();
        let Ok(claim) = next.await else {
            panic!("p's second had the turn handed on and went ahead")
        };
        claim.end(None);
        let state = appends.shared.state();
        assert!(state.busy.is_empty() && state.in_flight == 0 && state.waiting == 0);
    }

    /// A producer with requests in flight (the client keeps up to 5): the
    /// ones that wait for its busy first append, in the order they came,
    /// are decided in that order (the per-producer tokio Mutex this
    /// replaced was FIFO), so none is refused as a sequence gap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_producers_waiting_appends_are_decided_in_the_order_they_came() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let appends = Arc::new(GuardedAppends::default());
        let mut refused = Vec::new();
        for round in 0..20u64 {
            let (l, a) = (log.clone(), appends.clone());
            // On a worker thread, as a request's task is.
            let outcomes = tokio::spawn(async move {
                let id = format!("p{round}");
                let first_guard = stamp(&id, 0);
                let Ok(first) = a.claim(&l, &first_guard).await else {
                    panic!("p's first append may go ahead")
                };
                let mut later = Vec::new();
                for seq in 1..5u64 {
                    let (l2, a2, id2) = (l.clone(), a.clone(), id.clone());
                    later.push(tokio::spawn(async move { (seq, append_as(&a2, &l2, &id2, seq).await) }));
                    // Queued for the turn before the next one comes.
                    let hash = a.shared.ids.hash_one(id.as_str());
                    while a.shared.state().busy.get(&hash).map_or(0, VecDeque::len) < seq as usize {
                        tokio::task::yield_now().await;
                    }
                }
                let at = l.append_batch_async(&[Payload::new(b"first")]).await.unwrap();
                first.end(Some(at));
                let mut outcomes = Vec::new();
                for handle in later {
                    outcomes.push(handle.await.unwrap());
                }
                outcomes
            })
            .await
            .unwrap();
            for (seq, outcome) in outcomes {
                match outcome {
                    Ok(Appended::Created { .. }) => {}
                    Err(GuardedError::Refused(why)) => refused.push((seq, why)),
                    other => panic!("seq {seq}: {other:?}"),
                }
            }
        }
        assert!(
            refused.is_empty(),
            "{} of 80 appends that came in order were refused: {refused:?}",
            refused.len()
        );
    }

    /// Review of the turn-before-save change: many producers, 5 appends each in order, saves back to
    /// back (two saving loops), some requests dropped at random points.
    /// Rounds with nothing dropped are refused nothing; nothing is left
    /// behind; nothing deadlocks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_producers_saves_and_dropped_requests_leave_no_refusal_and_nothing_behind() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let appends = Arc::new(GuardedAppends::open(&log).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let saves = Arc::new(AtomicU64::new(0));
        let mut savers = Vec::new();
        for s in 0..2u64 {
            let (l, a, stop, saves) = (log.clone(), appends.clone(), stop.clone(), saves.clone());
            savers.push(tokio::spawn(async move {
                let mut x = 0x9e3779b97f4a7c15u64 ^ s;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Some saves are dropped part way.
                    if x.is_multiple_of(5) {
                        let _ = tokio::time::timeout(std::time::Duration::from_micros(x % 300), a.save(&l)).await;
                    } else {
                        a.save(&l).await.unwrap();
                        saves.fetch_add(1, Ordering::Relaxed);
                    }
                    for _ in 0..(x % 4) {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        let mut producers = Vec::new();
        for i in 0..8u64 {
            let (l, a) = (log.clone(), appends.clone());
            producers.push(tokio::spawn(async move {
                let mut x = 0x2545f4914f6cdd1du64.wrapping_mul(i + 1);
                let mut bad = Vec::new();
                for round in 0..1000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let dropping = x.is_multiple_of(4);
                    let id = format!("p{i}-{round}");
                    let mut handles = Vec::new();
                    for seq in 0..5u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let (l2, a2, id2) = (l.clone(), a.clone(), id.clone());
                        let cancel = dropping && x.is_multiple_of(3);
                        let micros = x % 500;
                        let fut = async move {
                            let append = append_as(&a2, &l2, &id2, seq);
                            if cancel {
                                tokio::time::timeout(std::time::Duration::from_micros(micros), append)
                                    .await
                                    .ok()
                            } else {
                                Some(append.await)
                            }
                        };
                        let mut fut = Box::pin(fut);
                        // Polled once here: it has its place in the producer's queue
                        // (or its turn) before the next one comes.
                        match futures_util::poll!(&mut fut) {
                            std::task::Poll::Ready(out) => handles.push(tokio::spawn(async move { (seq, out) })),
                            std::task::Poll::Pending => handles.push(tokio::spawn(async move { (seq, fut.await) })),
                        }
                    }
                    for h in handles {
                        let (seq, out) = h.await.unwrap();
                        match out {
                            None | Some(Ok(Appended::Created { .. })) => {}
                            Some(Ok(d)) => bad.push((round, seq, format!("{d:?}"), dropping)),
                            Some(Err(e)) => {
                                if !dropping {
                                    bad.push((round, seq, format!("{e:?}"), dropping));
                                }
                            }
                        }
                    }
                }
                bad
            }));
        }
        let all = async {
            let mut bad = Vec::new();
            for p in producers {
                bad.extend(p.await.unwrap());
            }
            stop.store(true, Ordering::Relaxed);
            for s in savers {
                s.await.unwrap();
            }
            bad
        };
        let bad = tokio::time::timeout(std::time::Duration::from_secs(120), all)
            .await
            .unwrap_or_else(|_| panic!("deadlock: {:?}", appends.shared.state()));
        // Dropped claims with appends pending end in tasks of their own.
        for _ in 0..1000 {
            if appends.shared.state().in_flight == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        eprintln!("saves: {}", saves.load(Ordering::Relaxed));
        let state = appends.shared.state();
        assert!(
            state.busy.is_empty() && state.in_flight == 0 && state.waiting == 0 && state.saving == 0,
            "left behind: busy {} in_flight {} waiting {} saving {}",
            state.busy.len(),
            state.in_flight,
            state.waiting,
            state.saving
        );
        assert!(
            bad.is_empty(),
            "{} refused in rounds with nothing dropped: {bad:?}",
            bad.len()
        );
    }

    /// Review of the turn-before-save change: a turn handed on during a save is held, not decided; the
    /// save is not held up by it; a second save begun meanwhile holds it
    /// too; a save dropped part way lets it go; counters end at zero.
    #[tokio::test]
    async fn a_turn_handed_during_overlapping_saves_is_held_and_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let appends = GuardedAppends::open(&log).unwrap();
        let (p0, p1, p2) = (stamp("p", 0), stamp("p", 1), stamp("p", 2));
        let Ok(a) = appends.claim(&log, &p0).await else {
            panic!()
        };
        let mut b = Box::pin(appends.claim(&log, &p1));
        assert!(futures_util::poll!(&mut b).is_pending());
        let mut c = Box::pin(appends.claim(&log, &p2));
        assert!(futures_util::poll!(&mut c).is_pending());
        let mut s1 = Box::pin(appends.save(&log));
        assert!(futures_util::poll!(&mut s1).is_pending(), "s1 waits for a");
        a.end(Some(log.append_batch_async(&[Payload::new(b"a")]).await.unwrap()));
        // b is handed the turn during s1: it waits, holding it.
        assert!(futures_util::poll!(&mut b).is_pending());
        assert_eq!(appends.shared.state().in_flight, 0);
        // a second save starts while b holds the turn waiting for s1
        let mut s2 = Box::pin(appends.save(&log));
        // s2 must not wait for b
        tokio::time::timeout(std::time::Duration::from_secs(10), &mut s2)
            .await
            .expect("s2 held up")
            .unwrap();
        assert!(futures_util::poll!(&mut b).is_pending(), "s1 still holds b back");
        assert!(futures_util::poll!(&mut c).is_pending());
        drop(s1); // dropped part way (it had no further await on the table)
        let Ok(b) = tokio::time::timeout(std::time::Duration::from_secs(10), b)
            .await
            .expect("b lost its wake-up")
        else {
            panic!("b refused")
        };
        assert!(futures_util::poll!(&mut c).is_pending(), "c waits for b");
        b.end(Some(log.append_batch_async(&[Payload::new(b"b")]).await.unwrap()));
        let Ok(c) = tokio::time::timeout(std::time::Duration::from_secs(10), c)
            .await
            .expect("c lost the turn")
        else {
            panic!("c refused")
        };
        c.end(None);
        let state = appends.shared.state();
        assert!(
            state.busy.is_empty() && state.in_flight == 0 && state.waiting == 0 && state.saving == 0,
            "{state:?}"
        );
    }
}
