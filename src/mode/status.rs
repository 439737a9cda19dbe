//! `/status` and `/readyz` as this node's mode answers them.
//!
//! `/status` (`NodeStatus`): the log's bounds and size, the role
//! (`leader` for a standalone node, `cluster_follower` for a member that
//! does not lead, `follower` for a replica), whether appends are taken, the
//! leader's URL, and the mode's own part (`cluster`, or the replica's
//! replication fields). `/readyz` (`readiness`): the log takes appends, and
//! a member is not removed, knows a leader and has applied what it serves.

use serde::Serialize;

use super::Mode;
use crate::log::Log;

/// The `/status` body (field names are the API's; see `openapi.yaml`).
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub lowest_offset: u64,
    pub next_offset: u64,
    pub segments: usize,
    pub size_bytes: u64,
    /// This node's retention (`--retention-bytes`, `--retention-ms`); `None`
    /// keeps everything.
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub role: &'static str,
    /// False once a storage failure refuses appends (and on a member that
    /// does not lead); `storage_error` then says why, when it is storage.
    pub writable: bool,
    pub leader: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSummary>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaSummary>,
}

/// A member's view of its cluster.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterSummary {
    pub node_id: u64,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub commit_offset: Option<u64>,
    pub members: usize,
    /// Set while the cluster has removed this node (its `members` is the
    /// membership it last knew).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
}

/// A replica's view of its leader, as its follower task last saw it.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaSummary {
    pub leader_next_offset: Option<u64>,
    pub lag: Option<u64>,
    pub replication_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_error: Option<String>,
}

/// Why `/readyz` says no: its `status` and `code` fields and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    pub status: &'static str,
    pub code: &'static str,
    pub error: String,
}

impl Mode {
    pub fn status(&self, log: &Log) -> NodeStatus {
        let stats = log.stats();
        let storage_error = log.failure();
        let mut status = NodeStatus {
            lowest_offset: stats.lowest_offset,
            next_offset: stats.next_offset,
            segments: stats.segments,
            size_bytes: stats.size_bytes,
            retention_bytes: log.retention().bytes,
            retention_ms: log.retention().ms,
            role: "leader",
            writable: storage_error.is_none(),
            leader: None,
            storage_error,
            cluster: None,
            replica: None,
        };
        match self {
            Mode::Standalone(_) => {}
            Mode::Replica(follower) => {
                let seen = follower.snapshot(stats.next_offset);
                status.role = "follower";
                status.leader = Some(follower.leader.clone());
                status.replica = Some(ReplicaSummary {
                    leader_next_offset: seen.leader_next_offset,
                    lag: seen.lag,
                    replication_state: seen.state,
                    replication_error: seen.error,
                });
            }
            Mode::Member(cluster) => {
                let view = cluster.status();
                let leading = view.leader_id == Some(view.node_id);
                status.role = if leading { "leader" } else { "cluster_follower" };
                status.writable &= leading;
                status.leader = view.leader_url;
                status.cluster = Some(ClusterSummary {
                    node_id: view.node_id,
                    term: view.term,
                    leader_id: view.leader_id,
                    commit_offset: view.commit_offset,
                    members: view.members.len(),
                    removed: view.removed,
                });
            }
        }
        status
    }

    /// `/readyz`: whether this node serves what it should. The HTTP layer
    /// adds its own reason (shutting down) before asking.
    pub fn readiness(&self, log: &Log) -> Result<(), NotReady> {
        if let Some(why) = log.failure() {
            return Err(NotReady {
                status: "storage_failed",
                code: "storage_unavailable",
                error: why,
            });
        }
        if let Mode::Member(cluster) = self
            && let Some(why) = cluster.removed()
        {
            return Err(NotReady {
                status: "removed",
                code: "removed",
                error: why,
            });
        }
        if let Mode::Member(cluster) = self
            && let Some(why) = cluster.not_formed()
        {
            return Err(NotReady {
                status: "no_leader",
                code: "no_leader",
                error: why,
            });
        }
        if let Mode::Member(cluster) = self
            && let Err(why) = cluster.ready()
        {
            return Err(NotReady {
                status: "no_leader",
                code: "no_leader",
                error: why,
            });
        }
        Ok(())
    }
}
