//! What every handler shares: the log, the limits, the node's mode, its
//! consumer positions and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use crate::log::Log;
use crate::logs::{Catalog, NamedLog};
use crate::mode::{Consumers, Mode};

/// Caps on everything a client controls.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest request body of any kind (at least 1).
    pub max_request_bytes: u64,
    /// Records in one NDJSON batch.
    pub max_batch_records: usize,
    /// Records one range read may ask for; `limit` above is capped to it.
    pub max_range_records: u32,
    /// Frame bytes one range answer gathers at most (one record always comes).
    pub max_range_bytes: u64,
    /// The longest a long poll may wait; `wait_ms` above is capped to it.
    pub max_wait: Duration,
    /// Named consumers whose positions are kept (`--max-consumers`).
    pub max_consumers: usize,
    /// Places for the writes a follower forwards to its leader at once
    /// (`--max-forwarded-writes`), shared by every log of the node.
    pub forwarded_writes: Arc<Semaphore>,
}

/// `--max-forwarded-writes` unless given.
pub const DEFAULT_MAX_FORWARDED_WRITES: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 16 * 1024 * 1024,
            max_batch_records: 10_000,
            max_range_records: 10_000,
            max_range_bytes: 4 * 1024 * 1024,
            max_wait: Duration::from_secs(30),
            max_consumers: crate::log::consumers::DEFAULT_MAX_CONSUMERS,
            forwarded_writes: Limits::forwarding_places(DEFAULT_MAX_FORWARDED_WRITES),
        }
    }
}

impl Limits {
    /// `max` places for forwarded writes (`forwarded_writes`).
    pub fn forwarding_places(max: usize) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)))
    }
}

/// Cloned for every request, so one pointer.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub log: Log,
    pub limits: Limits,
    /// Where appends go and what readers see (see `crate::mode`).
    pub mode: Mode,
    /// Named consumers' positions, where the mode keeps them.
    pub consumers: Consumers,
    /// Turns true when the server starts shutting down: long polls and
    /// event streams end, `/readyz` says no.
    pub shutdown: watch::Receiver<bool>,
    /// The node's named logs (see `crate::logs`).
    pub catalog: Catalog,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(
        log: Log,
        limits: Limits,
        mode: Mode,
        consumers: Consumers,
        shutdown: watch::Receiver<bool>,
        catalog: Catalog,
    ) -> Self {
        AppState(Arc::new(Shared {
            log,
            limits,
            mode,
            consumers,
            shutdown,
            catalog,
        }))
    }

    /// The state `named`'s routes are served with: its log, mode and
    /// positions, the node's limits; its shutdown signal turns true when
    /// the log is deleted or the node stops (`NamedLog::gone`).
    pub(super) fn for_log(&self, named: &NamedLog) -> AppState {
        AppState::new(
            named.log.clone(),
            self.limits.clone(),
            named.mode.clone(),
            named.consumers.clone(),
            named.gone(),
            self.catalog.clone(),
        )
    }

    /// Whether readers skip the record at `offset` (see `Mode::hidden`).
    pub fn hidden(&self, offset: u64, attributes: u8) -> bool {
        self.mode.hidden(offset, attributes)
    }

    /// Only a version number is read: `borrow` would take the channel's
    /// lock on every append. The signal starts false and only ever turns
    /// true (see `Server`), so any change means shutting down.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.has_changed().unwrap_or(true)
    }
}
