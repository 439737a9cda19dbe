//! Group commit for `Durability::Always`. Appenders write their frames and
//! say so (`note_written`); one committer thread syncs everything written
//! since its last sync with one fdatasync and publishes it, and the log then
//! tells exactly the appenders it covers (each waits on its own oneshot, so
//! a sync wakes no one else). Under load each sync therefore acknowledges
//! every record that arrived while the previous one ran.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::error::Result;

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
}

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
        self.work.notify_one();
    }

    /// The committer's wait for work; `None` once stopped or failed.
    pub fn next_job(&self) -> Option<Job> {
        let mut state = self.lock();
        while state.written <= state.synced && !state.stopped && !state.failed {
            state = self.work.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        (!state.stopped && !state.failed).then_some(Job {
            generation: state.generation,
        })
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
            Err(_) => state.failed = true,
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

    /// Ends the committer.
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        self.work.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn one_sync_covers_everything_written_before_it() {
        let group = GroupCommit::new(0);
        for next in 1..=100 {
            group.note_written(next);
        }
        let job = group.next_job().unwrap();
        let published = AtomicU64::new(0);
        group.finish_job(job, &Ok(100), |upto| published.store(upto, Ordering::SeqCst));
        assert_eq!(published.load(Ordering::SeqCst), 100);
        group.stop();
        assert!(group.next_job().is_none(), "nothing left to sync, and stopped");
    }

    #[test]
    fn a_failed_sync_publishes_nothing_and_stops_the_committer() {
        let group = GroupCommit::new(0);
        group.note_written(1);
        let job = group.next_job().unwrap();
        group.finish_job(job, &Err(std::io::Error::other("disk gone").into()), |_| {
            panic!("a failed sync must not publish")
        });
        group.note_written(2);
        assert!(group.next_job().is_none(), "the committer stops after a failure");
    }

    #[test]
    fn a_sync_from_before_a_cut_vouches_for_nothing_after_it() {
        let group = GroupCommit::new(0);
        group.note_written(10);
        let job = group.next_job().unwrap();
        group.reset(5, || {});
        group.finish_job(job, &Ok(10), |_| panic!("must not publish across a cut"));
        group.note_written(6);
        assert!(group.next_job().is_some(), "offset 5 still needs a sync");
    }
}
