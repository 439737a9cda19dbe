//! Group commit for `Durability::Always`: appenders that wrote records wait
//! until a sync covers them, and whoever finds no sync running runs one for
//! everyone written so far. With 64 writers, one fdatasync acknowledges many
//! records instead of one.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::error::Result;

#[derive(Debug)]
pub struct GroupCommit {
    state: Mutex<State>,
    synced_cv: Condvar,
}

#[derive(Debug)]
struct State {
    /// Every offset below this is on disk.
    synced: u64,
    syncing: bool,
    /// Bumped when the log's tail is cut, so a sync that started before the
    /// cut does not vouch for records written after it.
    generation: u64,
}

impl GroupCommit {
    pub fn new(synced: u64) -> Self {
        GroupCommit {
            state: Mutex::new(State {
                synced,
                syncing: false,
                generation: 0,
            }),
            synced_cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once every offset below `target` is durable. `sync` makes
    /// durable everything written so far and says up to which offset;
    /// `publish` is called with that offset while no cut can interleave.
    pub fn wait_durable(&self, target: u64, sync: impl Fn() -> Result<u64>, publish: impl Fn(u64)) -> Result<()> {
        let mut state = self.lock();
        loop {
            if state.synced >= target {
                return Ok(());
            }
            if state.syncing {
                state = self.synced_cv.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.syncing = true;
            let generation = state.generation;
            drop(state);
            let outcome = sync();
            state = self.lock();
            state.syncing = false;
            if let Ok(upto) = outcome
                && state.generation == generation
                && upto > state.synced
            {
                state.synced = upto;
                publish(upto);
            }
            self.synced_cv.notify_all();
            outcome?;
        }
    }

    /// The tail was cut (or the log restarted) at `next`: nothing at or past
    /// it is durable any more. `publish` runs under the same lock.
    pub fn reset(&self, next: u64, publish: impl FnOnce()) {
        let mut state = self.lock();
        state.generation += 1;
        state.synced = next;
        publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn concurrent_waiters_share_syncs() {
        let group = Arc::new(GroupCommit::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (group, written, syncs) = (group.clone(), written.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let target = written.fetch_add(1, Ordering::SeqCst) + 1;
                        group
                            .wait_durable(
                                target,
                                || {
                                    syncs.fetch_add(1, Ordering::SeqCst);
                                    std::thread::sleep(std::time::Duration::from_micros(200));
                                    Ok(written.load(Ordering::SeqCst))
                                },
                                |_| {},
                            )
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(syncs < 800, "800 appends should share syncs, ran {syncs}");
    }

    #[test]
    fn a_failed_sync_is_reported_and_not_published() {
        let group = GroupCommit::new(0);
        let published = AtomicU64::new(0);
        let err = group.wait_durable(
            1,
            || Err(std::io::Error::other("disk gone").into()),
            |upto| published.store(upto, Ordering::SeqCst),
        );
        assert!(err.is_err());
        assert_eq!(published.load(Ordering::SeqCst), 0);
    }
}
