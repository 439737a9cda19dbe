//! A full disk under the Raft log. openraft takes any error of its log
//! storage as fatal: an append that met ENOSPC stopped the node's Raft core
//! until a restart, and retention, which runs through Raft, could then free
//! nothing. A standalone log resumes once space is freed; so does this: an
//! append that meets a full disk waits and tries again (its steps are made
//! so that a second try finishes what the first began), and while it waits
//! the node says so (`/readyz` 503, `distlog_raft_disk_full` 1, one WARN
//! line). Raft waits with it (this node acknowledges nothing meanwhile), so
//! the others go on without it, and it catches up once there is room.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::LogStore;

/// How often a waiting append tries again.
const TRY_AGAIN: Duration = Duration::from_millis(250);

pub const DISK_FULL: &str = "distlog_raft_disk_full";

fn is_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

impl LogStore {
    /// Whether an append waits for room on a full disk.
    pub fn disk_full(&self) -> bool {
        self.shared.disk_full.load(Ordering::Acquire)
    }

    /// From now on nothing waits for room (the node is stopping: the Raft
    /// core must get out of a waiting append to shut down).
    pub fn stop_waiting(&self) {
        self.shared.stopping.store(true, Ordering::Release);
    }

    /// Runs `step` until it succeeds or fails for another reason than a
    /// full disk, or the node is stopping.
    pub(crate) fn while_full<T>(&self, mut step: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        let mut since: Option<Instant> = None;
        loop {
            match step() {
                Err(e) if is_full(&e) && !self.shared.stopping.load(Ordering::Acquire) => {
                    if since.is_none() {
                        tracing::warn!(error = %e, "the disk is full: Raft appends wait for space (free some, or grow the volume)");
                        self.shared.disk_full.store(true, Ordering::Release);
                        metrics::gauge!(DISK_FULL).set(1.0);
                        since = Some(Instant::now());
                    }
                    std::thread::sleep(TRY_AGAIN);
                }
                done => {
                    if let Some(at) = since {
                        tracing::info!(waited = ?at.elapsed(), "room on the disk again: Raft appends go on");
                        self.shared.disk_full.store(false, Ordering::Release);
                        metrics::gauge!(DISK_FULL).set(0.0);
                    }
                    return done;
                }
            }
        }
    }
}
