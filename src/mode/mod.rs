//! What this node is for the log it serves, in one place: **standalone**
//! (it takes writes itself), a **replica** (it copies another node's log
//! over `/replication/frames` and is read-only), or a **member** of a Raft
//! cluster (writes go through Raft; readers see committed records only).
//!
//! `Mode` starts the parts a mode needs (`start`), takes an append and says
//! where it went (`append`), says whether an offset is shown to readers
//! (`hidden`), answers status and readiness (`status`), and keeps consumer
//! positions where the mode keeps them (`consumers`). The HTTP layer
//! reads bodies and maps `AppendError` once; it never asks which mode it is
//! in. Named logs will give each log a mode of its own.

mod append;
mod consumers;
mod guarded;
mod journal;
mod start;
mod status;

use std::sync::Arc;

use bytes::Bytes;

/// How far a member's start has got (see `cluster::StartProgress`).
pub use crate::cluster::{StartProgress, StartStep};
pub use append::AppendError;
pub use consumers::{Consumers, Outcome as ConsumerOutcome};
pub use guarded::{Appended, GuardedAppends};
pub use start::{Clients, ClusterSettings, ModeConfig, OwnUrls, StartError, open_member_log, start, start_standalone};
pub use status::{ClusterSummary, NodeStatus, NotReady, ReplicaSummary};

use crate::cluster::Cluster;
use crate::log::attributes::CONTROL;
use crate::replication::FollowerStatus;

/// See the module doc. Cloning is cheap (shared handles).
#[derive(Clone, Debug)]
pub enum Mode {
    /// Takes writes itself; decides guarded appends by its own table.
    Standalone(Arc<GuardedAppends>),
    /// A `--follow` replica; the status its follower task keeps.
    Replica(Arc<FollowerStatus>),
    /// A Raft cluster member (`--peers`).
    Member(Cluster),
}

impl Mode {
    /// The cluster this node belongs to, for the cluster's own routes.
    pub fn cluster(&self) -> Option<&Cluster> {
        match self {
            Mode::Member(cluster) => Some(cluster),
            _ => None,
        }
    }

    /// Whether readers skip the record at `offset` with `attributes`: a
    /// cluster's control entry (on a member, or on a replica of one) or a
    /// record of a batch the cluster aborted.
    pub fn hidden(&self, offset: u64, attributes: u8) -> bool {
        attributes & CONTROL != 0 || self.cluster().is_some_and(|c| c.aborted(offset))
    }

    /// Frames `[from, from + count)` as `--follow` replicas get them: on a
    /// member, aborted batches are marked as control records, because a
    /// replica has no state machine to know them by.
    pub fn frames_for_replicas(&self, frames: Bytes, from: u64, count: u32) -> Result<Bytes, String> {
        match self.cluster() {
            Some(cluster) => cluster.frames_for_replicas(frames, from, count),
            None => Ok(frames),
        }
    }

    /// Before the node stops serving: a leader hands its leadership on, so
    /// that the next one takes over at once rather than after an election
    /// timeout.
    pub async fn step_down(&self, within: std::time::Duration) {
        if let Mode::Member(cluster) = self {
            // Stopping: an append waiting for room on a full disk gives up
            // now, not after the grace period.
            cluster.store().stop_waiting();
            cluster.step_down(within).await;
        }
    }

    /// After the node stopped serving, before its log closes.
    pub async fn shutdown(&self) {
        if let Mode::Member(cluster) = self {
            cluster.shutdown().await;
        }
    }

    /// The log was synced and closed: a member records that this run left
    /// nothing unsynced (`cluster::last_run`).
    pub fn log_closed(&self) {
        if let Mode::Member(cluster) = self {
            cluster.record_clean_exit();
        }
    }
}
