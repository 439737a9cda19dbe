//! What every handler shares: the log, the limits, the node's mode, its
//! consumer positions and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::error::ApiError;
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
    /// The named log this state serves (`None`: the default log).
    pub log_name: Option<String>,
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
            log_name: None,
        }))
    }

    /// The state `named`'s routes are served with: its log, mode and
    /// positions, the node's limits; its shutdown signal turns true when
    /// the log is deleted or the node stops (`NamedLog::gone`).
    pub(super) fn for_log(&self, named: &NamedLog) -> AppState {
        AppState(Arc::new(Shared {
            log: named.log.clone(),
            limits: self.limits.clone(),
            mode: named.mode.clone(),
            consumers: named.consumers.clone(),
            shutdown: named.gone(),
            catalog: self.catalog.clone(),
            log_name: Some(named.name.to_string()),
        }))
    }

    /// The answer to a write refused because this state's signal turned
    /// (`shutting_down`): a named log deleted while the request was on its
    /// way is not found (a client must not wait for it to come back, as
    /// for a node that is stopping); otherwise the node is shutting down.
    pub fn stopping(&self) -> ApiError {
        match &self.log_name {
            Some(name) if self.catalog.get(name).is_none() => ApiError::LogNotFound { name: name.clone() },
            _ => ApiError::ShuttingDown,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Durability, LogConfig};
    use crate::logs::{CatalogConfig, LogName, Requested};

    /// A schemathesis run (two workers) saw `503 shutting_down` for a named
    /// log's consumer that another request deleted meanwhile: the request's
    /// state was made before the delete, and the log's stop signal (deleted,
    /// or the node stopping) read as the node stopping. A deleted log's
    /// refusal is `404 log_not_found`; a stopping node's stays 503.
    #[tokio::test]
    async fn a_request_on_a_log_deleted_meanwhile_is_not_found_not_a_stopping_node() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LogConfig {
            durability: Durability::Never,
            ..LogConfig::default()
        };
        let catalog = Catalog::open(CatalogConfig {
            dir: dir.path().join("logs"),
            base: config.clone(),
            max_logs: 10,
            retention_check: Duration::from_secs(60),
            auto_create: false,
        })
        .await
        .expect("catalogue");
        let mode = Mode::Standalone(Default::default());
        let log = Log::open(dir.path(), config).expect("default log");
        let consumers = Consumers::open(&mode, dir.path()).expect("positions");
        let (_stop, shutdown) = watch::channel(false);
        let node = AppState::new(log, Limits::default(), mode, consumers, shutdown, catalog.clone());
        for name in ["deleted", "kept"] {
            let name = LogName::parse(name).expect("a name");
            catalog.create(name, &Requested::default()).await.expect("created");
        }
        let deleted = node.for_log(&catalog.get("deleted").expect("the log"));
        let kept = node.for_log(&catalog.get("kept").expect("the log"));

        catalog.delete("deleted").await.expect("deleted");
        assert!(deleted.shutting_down(), "the deleted log's requests stop");
        assert!(
            matches!(deleted.stopping(), ApiError::LogNotFound { .. }),
            "{:?}",
            deleted.stopping()
        );

        catalog.stop_serving();
        assert!(kept.shutting_down(), "the node stops serving its logs");
        assert!(
            matches!(kept.stopping(), ApiError::ShuttingDown),
            "{:?}",
            kept.stopping()
        );
        catalog.close().await;
    }
}
