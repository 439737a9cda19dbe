//! The log's background threads: the group-commit committer
//! (`Durability::Always`) and the periodic sync (`Durability::Interval`).
//! Both hold the log weakly, so dropping the last handle ends them.

use std::panic::AssertUnwindSafe;
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
///
/// If the committer dies (a panic), every waiting and later durable append
/// would wait forever: the writer is failed instead, so that they are
/// refused at once and `/readyz` says why.
pub(super) fn spawn_committer(shared: Weak<Shared>, group: Arc<GroupCommit>) -> Result<JoinHandle<()>> {
    let handle = std::thread::Builder::new()
        .name("distlog-commit".into())
        .spawn(move || {
            let worked = std::panic::catch_unwind(AssertUnwindSafe(|| commit_rounds(&shared, &group)));
            if let Err(panic) = worked {
                let why = panic_message(panic.as_ref());
                match shared.upgrade() {
                    Some(shared) => Log { shared }.fail_writer(&format!("the group-commit thread died: {why}")),
                    None => group.fail(),
                }
            }
        })?;
    Ok(handle)
}

/// The committer's rounds, until the log stops, fails or goes away.
fn commit_rounds(shared: &Weak<Shared>, group: &GroupCommit) {
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
            log.fail_writer(&format!("a sync failed: {e}"));
        }
        group.finish_job(job, &outcome, |upto| {
            log.publish(upto);
            log.release_waiters(upto, true);
        });
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
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
                    log.fail_writer(&format!("a sync failed: {e}"));
                }
            }
        }
    })?;
    Ok(handle)
}
