//! The background thread of `Durability::Interval` and `Durability::Never`
//! logs. It does the work that would otherwise stall appenders: with
//! `Interval` it syncs what was written at most every interval, and for
//! both it faults in the active store's pages ahead of the writer and
//! starts their writeback when the writer asks (`nudge_background`:
//! `Store::work_ahead`), so that an appender never does either while the
//! others wait for the writer lock, or on an async runtime's worker.
//!
//! It holds the log weakly, so dropping the last handle ends it; it sleeps
//! by parking, so that `close` can wake it (`unpark`) and join it at once.

use std::panic::AssertUnwindSafe;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::super::config::Durability;
use super::super::error::{LogError, Result};
use super::committer::panic_message;
use super::{Log, Shared, lock};

/// Starts the thread; `interval` is how often it syncs (never if `None`).
pub(super) fn spawn_background(shared: Weak<Shared>, interval: Option<Duration>) -> Result<JoinHandle<()>> {
    let name = if interval.is_some() {
        "distlog-sync"
    } else {
        "distlog-ahead"
    };
    let handle = std::thread::Builder::new().name(name.into()).spawn(move || {
        // A panic here would silently stop interval syncs while appends are
        // still acknowledged: fail the writer instead, as the committer does.
        let worked = std::panic::catch_unwind(AssertUnwindSafe(|| work(&shared, interval)));
        if let Err(panic) = worked
            && let Some(shared) = shared.upgrade()
        {
            let why = panic_message(panic.as_ref());
            Log::uncounted(shared).fail_writer(&format!("the {name} thread died: {why}"));
        }
    })?;
    Ok(handle)
}

/// The thread's loop, until the log closes or goes away.
fn work(shared: &Weak<Shared>, interval: Option<Duration>) {
    let mut next_sync = interval.map(|every| Instant::now() + every);
    loop {
        match next_sync {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
        let Some(shared) = shared.upgrade() else { return };
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let log = Log::uncounted(shared);
        if let Ok(active) = log.active() {
            active.work_ahead();
        }
        if let (Some(at), Some(every)) = (next_sync, interval)
            && Instant::now() >= at
        {
            next_sync = Some(Instant::now() + every);
            if log.shared.dirty.swap(false, Ordering::AcqRel) {
                match log.sync() {
                    // Closed meanwhile: nothing failed.
                    Ok(()) | Err(LogError::Closed) => {}
                    Err(e) => log.fail_writer(&format!("a sync failed: {e}")),
                }
            }
        }
    }
}

impl Log {
    /// Wakes the background thread: the active store wants work done
    /// ahead of its writer. Not under the writer lock.
    pub(super) fn nudge_background(&self) {
        if self.shared.config.durability == Durability::Always {
            // No background thread: the committer alone would be woken.
            return;
        }
        // The committer, if it is among them, does not park: no harm done.
        for thread in lock(&self.shared.background).iter() {
            thread.thread().unpark();
        }
    }
}
