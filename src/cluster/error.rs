//! What cluster operations can fail with; `api::error` maps each to one
//! HTTP status.

use super::types::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This node is not the leader; the leader's URL if it is known.
    #[error("this node is not the leader")]
    NotLeader { leader_url: Option<String> },
    /// No leader is known (an election is under way, or no quorum).
    #[error("no leader is known: an election is under way or a majority is unreachable")]
    NoLeader,
    /// No leader because this node is not in a cluster yet: what formation
    /// waits for (a seed that does not answer, the lowest seed, a join).
    #[error("{0}")]
    NotFormed(String),
    /// The cluster removed this node: it serves nothing until it is added
    /// again (`removal`); why, and how to add it.
    #[error("{0}")]
    Removed(String),
    /// The write may or may not commit: the leader changed or stopped
    /// after the entry was proposed. Retrying may write it twice.
    #[error("the outcome of the write is unknown: {0}")]
    OutcomeUnknown(String),
    #[error("no member has id {0}")]
    NoSuchMember(NodeId),
    #[error("{0}")]
    BadRequest(String),
    /// A peer RPC meant for another node (a wiped node back under a new id).
    #[error("this is node {ours}, not node {asked}")]
    WrongNode { ours: NodeId, asked: String },
    #[error("bad Raft request: {0}")]
    BadRpc(String),
    /// A peer RPC whose sender is not who it says (see `sender`).
    #[error("peer identity mismatch: {0}")]
    PeerIdentityMismatch(String),
    /// The Raft core stopped (a storage failure); the node must restart.
    #[error("the Raft core stopped: {0}")]
    Stopped(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// A node's replicas cannot move elsewhere (a drain): why.
    #[error("{0}")]
    CannotMove(String),
    /// This node's disk is full: its Raft appends wait for room.
    #[error("the disk is full: this node's Raft appends wait for space")]
    DiskFull,
}
