//! What every handler shares: the log, the limits, the node's role and the
//! shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::log::Log;
use crate::log::attributes::CONTROL;
use crate::replication::FollowerStatus;

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 16 * 1024 * 1024,
            max_batch_records: 10_000,
            max_range_records: 10_000,
            max_range_bytes: 4 * 1024 * 1024,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Whether this node takes writes or copies another node's log.
#[derive(Clone, Debug)]
pub enum Role {
    Leader,
    Follower(Arc<FollowerStatus>),
}

/// Cloned for every request, so one pointer.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub log: Log,
    pub limits: Limits,
    pub role: Role,
    /// Set on a cluster node: writes go through Raft, and readers skip
    /// control records and aborted batches.
    pub cluster: Option<Cluster>,
    /// Turns true when the server starts shutting down: long polls and
    /// event streams end, `/readyz` says no.
    pub shutdown: watch::Receiver<bool>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(log: Log, limits: Limits, role: Role, shutdown: watch::Receiver<bool>) -> Self {
        AppState(Arc::new(Shared {
            log,
            limits,
            role,
            cluster: None,
            shutdown,
        }))
    }

    /// The state of a cluster node.
    pub fn clustered(log: Log, limits: Limits, cluster: Cluster, shutdown: watch::Receiver<bool>) -> Self {
        AppState(Arc::new(Shared {
            log,
            limits,
            role: Role::Leader,
            cluster: Some(cluster),
            shutdown,
        }))
    }

    /// Whether readers skip the record at `offset` with `attributes`: a
    /// cluster's control entry (on a cluster member or a replica of one) or
    /// a record of an aborted batch.
    pub fn hidden(&self, offset: u64, attributes: u8) -> bool {
        attributes & CONTROL != 0 || self.cluster.as_ref().is_some_and(|c| c.aborted(offset))
    }

    /// Only a version number is read: `borrow` would take the channel's
    /// lock on every append. The signal starts false and only ever turns
    /// true (see `Server`), so any change means shutting down.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.has_changed().unwrap_or(true)
    }
}
