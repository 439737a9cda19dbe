//! A standalone node's guarded appends: those with producer headers or an
//! expected last offset (a member's are decided by its state machine, see
//! `cluster::tables`).
//!
//! A producer's appends are decided one at a time: it is marked busy from
//! the table's check, through the append, to noting it in the table
//! (`log::producers`), so a retry cannot pass the check while its first
//! try is still being written; other producers do not wait for it. The
//! mark and the check are made under the table's one lock, and a producer
//! found busy waits for a `released` notice and looks again. Busy
//! producers are known by a keyed hash of their id: two ids with the same
//! hash only make one wait for the other. An expected last offset is held
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
//! holds new guarded appends back and waits until none is in flight, so
//! that the table holds every guarded append below the log's end.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

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
    /// Told when a claim ends or a save is done, if someone waits.
    released: Notify,
    /// Keys the hashes busy producers are known by (client-chosen ids).
    ids: foldhash::quality::RandomState,
}

#[derive(Debug)]
struct State {
    table: Producers,
    /// The hashed ids of the producers with an append under way.
    busy: HashSet<u64, foldhash::fast::RandomState>,
    /// Guarded appends between their check and their end.
    in_flight: usize,
    /// Saves under way: new guarded appends wait.
    saving: usize,
    /// Appends or saves waiting for `released`.
    waiting: usize,
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
            busy: HashSet::default(),
            in_flight: 0,
            saving: 0,
            waiting: 0,
        };
        GuardedAppends {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                released: Notify::new(),
                ids: foldhash::quality::RandomState::default(),
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
        let now = log.config().clock.now_ms();
        let mut claim = match self.claim(log, guard, now).await {
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

    /// Waits for the producer's turn (and for any save), then checks the
    /// table: a claim to append, or the answer without appending.
    async fn claim<'a>(&'a self, log: &'a Log, guard: &'a Guard, now: u64) -> Result<Claim<'a>, Early> {
        let producer = guard
            .producer
            .as_ref()
            .map(|p| (p, self.shared.ids.hash_one(p.id.as_str())));
        let mut waiting = Waiting::new(&self.shared);
        loop {
            let wait = {
                let mut state = self.shared.state();
                let busy = producer.is_some_and(|(_, hash)| state.busy.contains(&hash));
                if state.saving == 0 && !busy {
                    if let Some((p, hash)) = producer {
                        match state.table.check(p, now, &log.config().producers) {
                            None => {}
                            Some(Refusal::Duplicate { first, last }) => return Err(Early::Duplicate { first, last }),
                            Some(why) => return Err(Early::Refused(why)),
                        }
                        state.busy.insert(hash);
                    }
                    state.in_flight += 1;
                    return Ok(Claim {
                        shared: &self.shared,
                        log,
                        producer,
                        now,
                        pending: None,
                        ended: false,
                    });
                }
                state.waiting += 1;
                self.shared.released.notified()
            };
            waiting.wait(wait).await;
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
            let was_busy = state.busy.remove(&hash);
            debug_assert!(was_busy, "a claim's producer is busy until it ends");
        }
        debug_assert!(state.in_flight > 0, "every claim is counted");
        state.in_flight = state.in_flight.saturating_sub(1);
        self.tell(state);
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
        let Some(mut pending) = self.pending.take() else {
            self.shared.end(self.producer, None, self.now, self.log);
            return;
        };
        let (shared, log, now) = (self.shared.clone(), self.log.clone(), self.now);
        let producer = self.producer.map(|(p, hash)| (p.clone(), hash));
        let finish = async move {
            let first = log.submitted_outcome(&mut pending).await.ok();
            shared.end(producer.as_ref().map(|(p, hash)| (p, *hash)), first, now, &log);
        };
        // Without a runtime (dropped as the process ends) nobody is left
        // to retry, and the table is rebuilt from the log at the next start.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(finish);
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
        let Ok(first) = appends.claim(&log, &p0, 1).await else {
            panic!("p's first append may go ahead")
        };
        let mut second = Box::pin(appends.claim(&log, &p1, 1));
        assert!(
            futures_util::poll!(&mut second).is_pending(),
            "p's second append waits for its first"
        );
        let Ok(other) = appends.claim(&log, &q0, 1).await else {
            panic!("q does not wait for p")
        };
        other.end(None);
        first.end(Some(0));
        let Ok(second) = second.await else {
            panic!("p's second append goes ahead after its first, recorded at 0")
        };
        let mut given_up = Box::pin(appends.claim(&log, &p1, 1));
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
    async fn a_save_waits_for_the_appends_in_flight_and_holds_new_ones_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let appends = GuardedAppends::open(&log).unwrap();
        let p = stamp("p", 0);
        let Ok(first) = appends.claim(&log, &p, 1).await else {
            panic!("p's first append may go ahead")
        };
        let mut save = Box::pin(appends.save(&log));
        assert!(
            futures_util::poll!(&mut save).is_pending(),
            "the save waits for p's append"
        );
        let q = stamp("q", 0);
        let mut held = Box::pin(appends.claim(&log, &q, 1));
        assert!(futures_util::poll!(&mut held).is_pending(), "q waits for the save");
        first.end(None);
        save.await.unwrap();
        assert!(held.await.is_ok(), "q goes ahead once the save is done");
    }
}
