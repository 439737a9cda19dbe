//! The committer: owns group commit (`group_commit`), the queue of
//! appenders whose records are written and wait for a sync, and the thread
//! that writes submitted batches (`combining`), syncs them and acknowledges
//! them. Every log has one: with `Durability::Always` every append goes
//! through it; otherwise async appends do (acknowledged once written, never
//! waiting for the writer lock on a runtime's thread), while blocking ones
//! write for themselves. The thread holds the log weakly, so dropping the
//! last handle ends it; `close` joins it.
//!
//! If the thread dies (a panic), every waiting and later durable append
//! would wait forever: the writer is failed instead, so that they are
//! refused at once and `/readyz` says why.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::super::error::{LogError, Result};
use super::super::group_commit::{Ack, GroupCommit, Submitted};
use super::{Log, Shared, lock};

/// Records `[first, next)` are written; `ack` hears once they are durable.
#[derive(Debug)]
struct Waiter {
    next: u64,
    first: u64,
    ack: oneshot::Sender<Ack>,
}

/// Appenders whose records are written and wait for a sync, oldest first
/// (queued under the writer lock, so in offset order).
#[derive(Debug, Default)]
struct Waiters {
    queue: VecDeque<Waiter>,
    /// Set once the log failed: nothing queued later would ever be told.
    refusing: bool,
}

/// The metric of sync durations.
const FSYNC_SECONDS: &str = "distlog_fsync_duration_seconds";

/// HELP text for the metric this module records.
pub(crate) fn describe_metrics() {
    metrics::describe_histogram!(
        FSYNC_SECONDS,
        metrics::Unit::Seconds,
        "Time one fsync of the log's files took (one sync covers every append committed with it)."
    );
}

#[derive(Debug)]
pub(super) struct Committer {
    group: GroupCommit,
    waiters: Mutex<Waiters>,
    /// Metric handle, looked up once: a registry lookup per sync shows in profiles.
    fsync_seconds: metrics::Histogram,
}

impl Committer {
    pub(super) fn new(next: u64) -> Self {
        Committer {
            group: GroupCommit::new(next),
            waiters: Mutex::new(Waiters::default()),
            fsync_seconds: metrics::histogram!(FSYNC_SECONDS),
        }
    }

    /// Hands a batch to the committer thread (dropped at once if it stopped or failed).
    pub(super) fn submit(&self, batch: Submitted) {
        self.group.submit(batch);
    }

    /// Records below `next` are written and wait for a sync.
    pub(super) fn note_written(&self, next: u64) {
        self.group.note_written(next);
    }

    /// Each `ack` hears once its records `[first, next)` are durable; one
    /// lock for a whole round's batches.
    pub(super) fn wait_for_sync(&self, batches: impl IntoIterator<Item = (u64, u64, oneshot::Sender<Ack>)>) {
        let mut waiters = lock(&self.waiters);
        let batches = batches
            .into_iter()
            .map(|(first, next, ack)| Waiter { next, first, ack });
        if waiters.refusing {
            // Written after the log failed (a writer that got past its check
            // before): told at once rather than never.
            batches.for_each(|waiter| drop(waiter.ack.send(Err(None))));
        } else {
            waiters.queue.extend(batches);
        }
    }

    /// Tells appenders whose records are below `upto` how it went
    /// (`false`: a sync failed or the log stopped; `upto` is then all).
    pub(super) fn release(&self, upto: u64, durable: bool) {
        let mut waiters = lock(&self.waiters);
        while waiters.queue.front().is_some_and(|waiter| waiter.next <= upto) {
            if let Some(waiter) = waiters.queue.pop_front() {
                let _ = waiter.ack.send(if durable { Ok(waiter.first) } else { Err(None) });
            }
        }
    }

    /// The tail was cut (or the log reset) at `next`; `publish` runs while
    /// no sync can publish past it.
    pub(super) fn reset(&self, next: u64, publish: impl FnOnce()) {
        self.group.reset(next, publish);
    }

    /// No append is taken or acknowledged any more; everyone waiting hears it.
    pub(super) fn fail(&self) {
        self.group.fail();
        lock(&self.waiters).refusing = true;
        self.release(u64::MAX, false);
    }

    /// Ends the thread; batches not yet written are dropped.
    pub(super) fn stop(&self) {
        self.group.stop();
    }

    /// Times one sync for the fsync histogram.
    pub(super) fn timed_sync(&self, sync: impl FnOnce() -> Result<()>) -> Result<()> {
        let started = Instant::now();
        let synced = sync();
        self.fsync_seconds.record(started.elapsed().as_secs_f64());
        synced
    }
}

/// Starts the committer thread. It holds the log only while it works a
/// round, so that dropping the last handle drops the log (and stops it).
pub(super) fn spawn_committer(shared: Weak<Shared>, committer: Arc<Committer>) -> Result<JoinHandle<()>> {
    let handle = std::thread::Builder::new()
        .name("distlog-commit".into())
        .spawn(move || {
            let worked = std::panic::catch_unwind(AssertUnwindSafe(|| commit_rounds(&shared, &committer)));
            if let Err(panic) = worked {
                let why = panic_message(panic.as_ref());
                match shared.upgrade() {
                    Some(shared) => Log::uncounted(shared).fail_writer(&format!("the group-commit thread died: {why}")),
                    None => committer.fail(),
                }
            }
        })?;
    Ok(handle)
}

/// The committer's rounds, until the log stops, fails or goes away.
fn commit_rounds(shared: &Weak<Shared>, committer: &Committer) {
    while let Some(submitted) = committer.group.next_work() {
        let Some(shared) = shared.upgrade() else { return };
        let log = Log::uncounted(shared);
        if !submitted.is_empty() {
            log.write_submitted(submitted);
        }
        if !committer.group.unsynced() {
            continue;
        }
        let job = committer.group.job();
        let outcome = log.sync_written();
        match &outcome {
            // Closed meanwhile: nothing failed.
            Err(LogError::Closed) => return,
            Err(e) => log.fail_writer(&format!("a sync failed: {e}")),
            Ok(_) => {}
        }
        committer.group.finish_job(job, &outcome, |upto| {
            log.publish(upto);
            committer.release(upto, true);
        });
    }
}

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}
