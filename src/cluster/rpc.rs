//! The Raft transport, server side: what a node does with a peer's
//! request (the HTTP routes are in `api::cluster`). Each request names its
//! target node; a node that is not it refuses (see `network`). Every
//! request is held to Raft's rules (`validate`) before openraft sees it.

use bytes::Bytes;
use openraft::raft::{
    AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;

use super::codec::decode_append;
use super::error::ClusterError;
use super::network::SnapshotBody;
use super::node::Cluster;
use super::types::TypeConfig;
use super::validate;

impl Cluster {
    /// Refuses a request meant for another node.
    pub fn check_target(&self, target: Option<&str>) -> Result<(), ClusterError> {
        match target {
            Some(t) if t.parse::<u64>().ok() == Some(self.id()) => Ok(()),
            other => Err(ClusterError::WrongNode {
                ours: self.id(),
                asked: other.unwrap_or("(none)").to_string(),
            }),
        }
    }

    /// While this node's disk is full its Raft core waits inside an append:
    /// a peer's append is refused at once (507), not queued behind it (each
    /// retry would hold a few MiB until there is room).
    pub async fn handle_append(&self, body: Bytes) -> Result<AppendEntriesResponse<TypeConfig>, ClusterError> {
        if self.store().disk_full() {
            return Err(ClusterError::DiskFull);
        }
        let request = decode_append(body).map_err(|e| ClusterError::BadRpc(e.to_string()))?;
        validate::append(&request).map_err(ClusterError::BadRpc)?;
        let leader_commit = request.leader_commit.map(|c| c.index);
        let carries_entries = !request.entries.is_empty();
        let started = std::time::Instant::now();
        let answer = self
            .raft()
            .append_entries(request)
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))?;
        if carries_entries {
            super::stages::record(super::stages::PEER_APPEND, started);
        }
        if !matches!(answer, AppendEntriesResponse::HigherVote(_)) {
            self.inner.contact.heard_from(leader_commit);
        }
        Ok(answer)
    }

    pub async fn handle_vote(
        &self,
        request: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, ClusterError> {
        validate::vote(&request).map_err(ClusterError::BadRpc)?;
        self.raft()
            .vote(request)
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))
    }

    /// A pre-vote: whether this node would vote for the candidate; it
    /// changes nothing here.
    pub async fn handle_pre_vote(
        &self,
        request: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, ClusterError> {
        validate::vote(&request).map_err(ClusterError::BadRpc)?;
        self.raft()
            .pre_vote(request)
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))
    }

    pub async fn handle_snapshot(&self, body: SnapshotBody) -> Result<SnapshotResponse<TypeConfig>, ClusterError> {
        validate::snapshot(&body.vote, &body.meta).map_err(ClusterError::BadRpc)?;
        let snapshot = Snapshot {
            meta: body.meta,
            snapshot: body.tables,
        };
        let leader = body.vote;
        let answer = self
            .raft()
            .install_full_snapshot(leader, snapshot)
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))?;
        if answer.vote == leader {
            self.inner.contact.heard_from(None);
        }
        Ok(answer)
    }

    pub async fn handle_transfer(
        &self,
        request: TransferLeaderRequest<TypeConfig>,
    ) -> Result<TransferLeaderResponse<TypeConfig>, ClusterError> {
        validate::transfer(&request).map_err(ClusterError::BadRpc)?;
        self.raft()
            .handle_transfer_leader(request)
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))
    }
}
