//! The `Durability::Interval` syncer: a thread that syncs what was written
//! at most every interval. It holds the log weakly, so dropping the last
//! handle ends it; it sleeps by parking, so that `close` can wake it
//! (`unpark`) and join it at once.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use super::super::error::{LogError, Result};
use super::{Log, Shared};

pub(super) fn spawn_interval_sync(shared: Weak<Shared>, every: Duration) -> Result<JoinHandle<()>> {
    let handle = std::thread::Builder::new().name("distlog-sync".into()).spawn(move || {
        loop {
            std::thread::park_timeout(every);
            let Some(shared) = shared.upgrade() else { return };
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            if shared.dirty.swap(false, Ordering::AcqRel) {
                let log = Log::uncounted(shared);
                match log.sync() {
                    // Closed meanwhile: nothing failed.
                    Ok(()) | Err(LogError::Closed) => {}
                    Err(e) => log.fail_writer(&format!("a sync failed: {e}")),
                }
            }
        }
    })?;
    Ok(handle)
}
