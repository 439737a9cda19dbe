//! Group commit for `Durability::Always`. Appenders encode their batches
//! and `submit` them; one committer thread takes everything submitted, writes
//! it with one call (writer combining: no appender takes the writer lock or
//! makes a system call), syncs everything written since its last sync with
//! one fdatasync, publishes it, and tells exactly the appenders it covers
//! (each waits on its own oneshot, so a sync wakes no one else). Writers that
//! write for themselves (replication) say so with `note_written`. Under load
//! each round therefore acknowledges every batch that arrived while the
//! previous one ran.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::error::{LogError, Result};

/// What an appender is told: its first offset once durable, or the error
/// that kept its batch from being written (`None`: the log failed or
/// closed; the log says which).
pub type Ack = std::result::Result<u64, Option<LogError>>;

/// A batch waiting for the committer to write it.
#[derive(Debug)]
pub struct Submitted {
    /// Frames from `record::encode_unstamped`, in order.
    pub frames: Vec<u8>,
    pub count: u32,
    /// Written only if it would start at this offset (a conditional
    /// append); else refused with `LogError::NotNext`.
    pub expect_next: Option<u64>,
    pub ack: oneshot::Sender<Ack>,
}

#[derive(Debug)]
pub struct GroupCommit {
    state: Mutex<State>,
    /// The committer waits here for written records.
    work: Condvar,
}

#[derive(Debug)]
struct State {
    /// Every offset below this has been written.
    written: u64,
    /// Every offset below this is on disk.
    synced: u64,
    /// Bumped when the log's tail is cut, so a sync that started before the
    /// cut does not vouch for records written after it.
    generation: u64,
    failed: bool,
    stopped: bool,
    /// Batches for the committer to write, oldest first.
    submitted: Vec<Submitted>,
    /// The committer is asleep and needs a notification once `want`
    /// batches are submitted (saves a futex wake per append while it is
    /// busy or gathering).
    idle: bool,
    want: usize,
    /// How many batches the last round wrote.
    last_round: usize,
}

/// The longest a round waits for the appenders of the previous round to
/// come back: with a fixed set of appenders, each waiting for its last
/// batch, a round that starts before they have all resubmitted syncs a
/// fraction of them and the rest pay for another whole sync.
const GATHER: Duration = Duration::from_micros(50);

/// A sync the committer is to run.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    generation: u64,
}

impl GroupCommit {
    pub fn new(synced: u64) -> Self {
        GroupCommit {
            state: Mutex::new(State {
                written: synced,
                synced,
                generation: 0,
                failed: false,
                stopped: false,
                submitted: Vec::new(),
                idle: false,
                want: 1,
                last_round: 0,
            }),
            work: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records below `next` are written: the committer has work.
    pub fn note_written(&self, next: u64) {
        let mut state = self.lock();
        state.written = state.written.max(next);
        self.wake(state);
    }

    /// Hands a batch to the committer. Once stopped or failed the batch is
    /// dropped at once, which its appender hears as `Ack` `None`.
    pub fn submit(&self, batch: Submitted) {
        let mut state = self.lock();
        if state.stopped || state.failed {
            return;
        }
        state.submitted.push(batch);
        self.wake(state);
    }

    fn wake(&self, mut state: MutexGuard<'_, State>) {
        if state.idle && (state.submitted.len() >= state.want || state.written > state.synced) {
            state.idle = false;
            self.work.notify_one();
        }
    }

    /// The committer's wait for work: the batches to write (maybe none, when
    /// others wrote records that need a sync); `None` once stopped or failed.
    pub fn next_work(&self) -> Option<Vec<Submitted>> {
        let mut state = self.lock();
        while state.written <= state.synced && state.submitted.is_empty() && !state.stopped && !state.failed {
            state.idle = true;
            state = self.work.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state = self.gather(state);
        state.idle = false;
        if state.stopped || state.failed {
            return None;
        }
        state.last_round = state.submitted.len();
        Some(std::mem::take(&mut state.submitted))
    }

    /// Waits up to `GATHER` for as many batches as the last round had.
    fn gather<'a>(&self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let want = state.last_round;
        if want < 2 || state.submitted.is_empty() || state.submitted.len() >= want {
            return state;
        }
        let deadline = Instant::now() + GATHER;
        state.want = want;
        while state.submitted.len() < want && !state.stopped && !state.failed {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state.idle = true;
            state = self
                .work
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.want = 1;
        state
    }

    /// A sync about to start, covering what is written now.
    pub fn job(&self) -> Job {
        Job {
            generation: self.lock().generation,
        }
    }

    /// Whether written records wait for a sync.
    pub fn unsynced(&self) -> bool {
        let state = self.lock();
        state.written > state.synced
    }

    /// Records a sync's outcome: `Ok(upto)` makes everything below `upto`
    /// durable and `publish`es it, unless the tail was cut meanwhile.
    pub fn finish_job(&self, job: Job, outcome: &Result<u64>, publish: impl FnOnce(u64)) {
        let mut state = self.lock();
        match outcome {
            Ok(upto) if job.generation == state.generation && *upto > state.synced => {
                state.synced = *upto;
                publish(*upto);
            }
            Ok(_) => {}
            Err(_) => {
                state.failed = true;
                state.submitted.clear();
            }
        }
    }

    /// The tail was cut (or the log restarted) at `next`: nothing at or past
    /// it is written or durable any more. `publish` runs under the same lock.
    pub fn reset(&self, next: u64, publish: impl FnOnce()) {
        let mut state = self.lock();
        state.generation += 1;
        state.synced = next;
        state.written = next;
        publish();
    }

    /// The log refuses appends from now on: batches not yet written are
    /// dropped (their appenders hear it), later ones refused, and the
    /// committer ends.
    pub fn fail(&self) {
        let mut state = self.lock();
        state.failed = true;
        state.submitted.clear();
        self.work.notify_all();
    }

    /// Ends the committer; batches not yet written are dropped (their
    /// appenders hear that the log closed).
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        state.submitted.clear();
        self.work.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    impl GroupCommit {
        /// What is submitted, without waiting.
        fn next_work_now(&self) -> usize {
            std::mem::take(&mut self.lock().submitted).len()
        }
    }

    #[test]
    fn one_sync_covers_everything_written_before_it() {
        let group = GroupCommit::new(0);
        for next in 1..=100 {
            group.note_written(next);
        }
        assert!(group.next_work().unwrap().is_empty());
        let job = group.job();
        let published = AtomicU64::new(0);
        group.finish_job(job, &Ok(100), |upto| published.store(upto, Ordering::SeqCst));
        assert_eq!(published.load(Ordering::SeqCst), 100);
        group.stop();
        assert!(group.next_work().is_none(), "nothing left to sync, and stopped");
    }

    #[test]
    fn a_failed_sync_publishes_nothing_and_stops_the_committer() {
        let group = GroupCommit::new(0);
        group.note_written(1);
        group.next_work().unwrap();
        let job = group.job();
        let (ack, told) = oneshot::channel();
        group.submit(Submitted {
            frames: Vec::new(),
            count: 1,
            expect_next: None,
            ack,
        });
        group.finish_job(job, &Err(std::io::Error::other("disk gone").into()), |_| {
            panic!("a failed sync must not publish")
        });
        group.note_written(2);
        assert!(group.next_work().is_none(), "the committer stops after a failure");
        assert!(
            told.blocking_recv().is_err(),
            "batches not written are dropped, not left waiting"
        );
    }

    #[test]
    fn a_sync_from_before_a_cut_vouches_for_nothing_after_it() {
        let group = GroupCommit::new(0);
        group.note_written(10);
        group.next_work().unwrap();
        let job = group.job();
        group.reset(5, || {});
        group.finish_job(job, &Ok(10), |_| panic!("must not publish across a cut"));
        group.note_written(6);
        assert!(group.unsynced(), "offset 5 still needs a sync");
        assert!(group.next_work().is_some());
    }

    fn batch() -> (Submitted, oneshot::Receiver<Ack>) {
        let (ack, told) = oneshot::channel();
        let batch = Submitted {
            frames: Vec::new(),
            count: 1,
            expect_next: None,
            ack,
        };
        (batch, told)
    }

    #[test]
    fn submitted_batches_come_out_in_order_and_a_stop_drops_the_rest() {
        let group = GroupCommit::new(0);
        let (first, _) = batch();
        let (second, _) = batch();
        group.submit(first);
        group.submit(second);
        assert_eq!(group.next_work().unwrap().len(), 2);
        let (late, told) = batch();
        group.submit(late);
        group.stop();
        assert!(
            told.blocking_recv().is_err(),
            "a stopped committer drops what it did not write"
        );
        let (after, told) = batch();
        group.submit(after);
        assert!(told.blocking_recv().is_err(), "and refuses new batches");
    }

    #[test]
    fn a_round_waits_briefly_for_as_many_batches_as_the_last_one() {
        let group = Arc::new(GroupCommit::new(0));
        for _ in 0..3 {
            group.submit(batch().0);
        }
        assert_eq!(group.next_work().unwrap().len(), 3);
        group.submit(batch().0);
        let late = {
            let group = group.clone();
            std::thread::spawn(move || {
                group.submit(batch().0);
                group.submit(batch().0);
            })
        };
        let round = group.next_work().unwrap().len();
        late.join().unwrap();
        let rest = group.next_work_now();
        assert_eq!(round + rest, 3, "no batch is lost or repeated");
        assert!(round >= 1);
        // Fewer than last time and nobody coming: the wait is bounded.
        group.submit(batch().0);
        let started = Instant::now();
        assert_eq!(group.next_work().unwrap().len(), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
