//! The log's background threads: the group-commit committer
//! (`Durability::Always`) and the periodic sync (`Durability::Interval`).
//! Both hold the log weakly, so dropping the last handle ends them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::super::error::Result;
use super::super::group_commit::GroupCommit;
use super::{Log, Shared};

/// The `Durability::Always` committer: writes the batches submitted since
/// its last round, syncs whatever was written, then publishes it (see
/// `group_commit`).
pub(super) fn spawn_committer(shared: Weak<Shared>, group: Arc<GroupCommit>) -> Result<JoinHandle<()>> {
    let handle = std::thread::Builder::new()
        .name("distlog-commit".into())
        .spawn(move || {
            while let Some(submitted) = group.next_work() {
                let Some(shared) = shared.upgrade() else { return };
                let log = Log { shared };
                if !submitted.is_empty() {
                    log.write_submitted(submitted);
                }
                if !group.unsynced() {
                    continue;
                }
                let job = group.job();
                let outcome = log.sync_written();
                if let Err(e) = &outcome {
                    log.fail_writer(e);
                }
                group.finish_job(job, &outcome, |upto| {
                    log.publish(upto);
                    log.release_waiters(upto, true);
                });
            }
        })?;
    Ok(handle)
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.group.stop();
    }
}

/// The `Durability::Interval` syncer. It sleeps by parking, so that `close`
/// can wake it (`unpark`) and join it at once.
pub(super) fn spawn_interval_sync(shared: Weak<Shared>, every: Duration) -> Result<JoinHandle<()>> {
    let handle = std::thread::Builder::new().name("distlog-sync".into()).spawn(move || {
        loop {
            std::thread::park_timeout(every);
            let Some(shared) = shared.upgrade() else { return };
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            if shared.dirty.swap(false, Ordering::AcqRel) {
                let log = Log { shared };
                if let Err(e) = log.sync() {
                    log.fail_writer(&e);
                }
            }
        }
    })?;
    Ok(handle)
}
