//! The Raft transport, server side: what a node does with a peer's
//! request (the HTTP routes are in `api::cluster`). Each request names its
//! target node; a node that is not it refuses (see `network`). Each names
//! its sender, held to the message and the caller's certificate
//! (`sender`), and is held to Raft's rules (`validate`) before openraft
//! sees it.

use bytes::Bytes;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;

use super::codec::decode_append;
use super::error::ClusterError;
use super::gate::Submit;
use super::gate::{GateError, Position};
use super::network::SnapshotBody;
use super::node::Cluster;
use super::node::RaftNode;
use super::sender::{self, Caller};
use super::types::{NodeId, TypeConfig, Vote};
use super::validate;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use openraft::errors::Fatal;
use openraft::raft::StreamAppendResult;

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

    /// Refuses a request whose sender is not `inside`, the node the
    /// message speaks for, as this node's membership records it.
    fn check_sender(&self, caller: &Caller<'_>, inside: &Vote) -> Result<(), ClusterError> {
        let inside: NodeId = inside.leader_id.voted_for;
        // A named log's group knows its peers by the cluster group's
        // membership: its own is empty until initialized, and a check
        // against no record would take any sender's word.
        let member = match self.inner.parent.as_ref().map(std::sync::Weak::upgrade) {
            Some(Some(parent)) => (Cluster { inner: parent }).member(inside),
            Some(None) => None,
            None => self.member(inside),
        };
        sender::check(caller, inside, member.as_ref())
    }

    /// While this node's disk is full its Raft core waits inside an append:
    /// a peer's append is refused at once (507), not queued behind it (each
    /// retry would hold a few MiB until there is room).
    /// A request of a pipelined stream (`position`) goes through the
    /// reorder gate (`gate`) to the Raft core; one without, straight to it.
    /// `sent_commit`: the sender's commit when it sent the request
    /// (`network::COMMIT_HEADER`), newer than the request's own.
    pub async fn handle_append(
        &self,
        caller: Caller<'_>,
        body: Bytes,
        position: Option<Position>,
        sent_commit: Option<u64>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, ClusterError> {
        if self.store().disk_full() {
            return Err(ClusterError::DiskFull);
        }
        let request = decode_append(body).map_err(|e| ClusterError::BadRpc(e.to_string()))?;
        self.handle_decoded_append(caller, request, position, sent_commit).await
    }

    /// A named group's heartbeat from a batch (`pulse`): an append-entries without entries,
    /// handled as `handle_append` would; one carrying entries is refused (a batch is for
    /// heartbeats only: entries go alone, with their own checks and limits).
    pub async fn handle_heartbeat(
        &self,
        caller: Caller<'_>,
        body: Bytes,
    ) -> Result<AppendEntriesResponse<TypeConfig>, ClusterError> {
        if self.inner.group == 0 {
            return Err(ClusterError::BadRpc(
                "the cluster group's heartbeats are not batched".into(),
            ));
        }
        if self.store().disk_full() {
            return Err(ClusterError::DiskFull);
        }
        let request = decode_append(body).map_err(|e| ClusterError::BadRpc(e.to_string()))?;
        if !request.entries.is_empty() {
            return Err(ClusterError::BadRpc(format!(
                "a batched heartbeat carries {} entries",
                request.entries.len()
            )));
        }
        self.handle_decoded_append(caller, request, None, None).await
    }

    async fn handle_decoded_append(
        &self,
        caller: Caller<'_>,
        request: AppendEntriesRequest<TypeConfig>,
        position: Option<Position>,
        sent_commit: Option<u64>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, ClusterError> {
        self.check_sender(&caller, &request.vote)?;
        validate::append(&request).map_err(ClusterError::BadRpc)?;
        if let Some((theirs, ours)) = self.contradicted_commit(&request) {
            return Err(self.repair_contradicted(theirs, ours));
        }
        if let Some((theirs, ours)) = self.forged_contradiction(&request) {
            let from = request.vote.leader_id.voted_for;
            // Loud: a forgery, or (with write caching) committed entries a power cut took from
            // the majority while this node does not count the new leader among its voters, which
            // nothing repairs by itself (docs/operations.md: move the data directory aside).
            tracing::error!(from, %theirs, %ours,
                "refused an append that contradicts this node's committed entries from a node that is not an elected \
                 leader among its voters");
            return Err(ClusterError::BadRpc(format!(
                "an append from node {from} holds {theirs} where this node committed up to {ours}: no leader of \
                 this cluster sends that; refused"
            )));
        }
        let leader_commit = request.leader_commit.map(|c| c.index);
        let term = request.vote.leader_id.term;
        // A stamp past the request's own, and within what an index can be.
        let sent_commit =
            sent_commit.filter(|c| leader_commit.is_none_or(|l| *c >= l) && *c <= super::validate::MAX_INDEX);
        let carries_entries = !request.entries.is_empty();
        // Heartbeats go on (the core is free); entries wait for retention's
        // purge after the disk reserve went to it (`LogStore::refuses_new_entries`).
        if carries_entries && self.store().refuses_new_entries() {
            return Err(ClusterError::DiskFull);
        }
        let _in_flight = carries_entries.then(|| self.inner.appends_in_flight.enter());
        let started = std::time::Instant::now();
        let answer = match position {
            Some(at) => self.append_in_order(at, request).await?,
            None => self
                .raft()
                .append_entries(request)
                .await
                .map_err(|e| ClusterError::Stopped(e.to_string()))?,
        };
        if carries_entries {
            super::stages::record(super::stages::PEER_APPEND, started);
        }
        if !matches!(answer, AppendEntriesResponse::HigherVote(_)) {
            self.inner.contact.heard_from(leader_commit);
            if let Some(commit) = sent_commit.or(leader_commit) {
                self.inner.contact.heard_commit(term, commit);
            }
        }
        if carries_entries {
            // After the append: it renewed the lease, so the first tick does not elect.
            self.wake("entries");
        }
        Ok(answer)
    }

    async fn append_in_order(
        &self,
        at: Position,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, ClusterError> {
        let sender = request.vote.leader_id.voted_for;
        let last = request.entries.last().map(|e| e.log_id).or(request.prev_log_id);
        let answer = self.inner.gate.pass(sender, at, request).await.map_err(|e| match e {
            e @ (GateError::Stale { .. } | GateError::TooFarAhead { .. }) => ClusterError::BadRpc(e.to_string()),
            e @ (GateError::Gap { .. } | GateError::Ended { .. } | GateError::Busy { .. }) => {
                ClusterError::Timeout(e.to_string())
            }
        })?;
        match answer.map_err(|fatal| ClusterError::Stopped(fatal.to_string()))? {
            Ok(matching) if matching == last => Ok(AppendEntriesResponse::Success),
            Ok(matching) => Ok(AppendEntriesResponse::PartialSuccess(matching)),
            Err(StreamAppendError::Conflict(_)) => Ok(AppendEntriesResponse::Conflict),
            Err(StreamAppendError::HigherVote(vote)) => Ok(AppendEntriesResponse::HigherVote(vote)),
        }
    }

    pub async fn handle_vote(
        &self,
        caller: Caller<'_>,
        request: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, ClusterError> {
        self.check_sender(&caller, &request.vote)?;
        validate::vote(&request).map_err(ClusterError::BadRpc)?;
        // A candidate stands: this node may have to stand too.
        self.wake("vote");
        self.raft()
            .vote(request)
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))
    }

    /// A pre-vote: whether this node would vote for the candidate; it
    /// changes nothing here.
    pub async fn handle_pre_vote(
        &self,
        caller: Caller<'_>,
        request: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, ClusterError> {
        self.check_sender(&caller, &request.vote)?;
        validate::vote(&request).map_err(ClusterError::BadRpc)?;
        let theirs = request.last_log_id;
        let mut answer = self
            .raft()
            .pre_vote(request)
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))?;
        if answer.vote_granted && self.refuses_pre_vote() {
            answer.vote_granted = false;
        }
        if !answer.vote_granted {
            self.stand_if_ahead_of(theirs.as_ref(), answer.last_log_id.as_ref());
        }
        Ok(answer)
    }

    pub async fn handle_snapshot(
        &self,
        caller: Caller<'_>,
        body: SnapshotBody,
    ) -> Result<SnapshotResponse<TypeConfig>, ClusterError> {
        self.check_sender(&caller, &body.vote)?;
        validate::snapshot(&body.vote, &body.meta).map_err(ClusterError::BadRpc)?;
        if let Some((theirs, ours)) = self.contradicted_by_snapshot(&body.vote, body.meta.last_log_id.as_ref()) {
            return Err(self.repair_contradicted(theirs, ours));
        }
        let snapshot = Snapshot {
            meta: body.meta,
            snapshot: body.tables,
        };
        let leader = body.vote;
        self.wake("snapshot");
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
        caller: Caller<'_>,
        request: TransferLeaderRequest<TypeConfig>,
    ) -> Result<TransferLeaderResponse<TypeConfig>, ClusterError> {
        self.check_sender(&caller, request.from_leader())?;
        validate::transfer(&request).map_err(ClusterError::BadRpc)?;
        // The leader hands over: whoever does not win must elect as usual.
        self.wake("hand-over");
        if *request.to_node_id() == self.id() {
            self.take_over(request);
            return Ok(Ok(()));
        }
        self.raft()
            .handle_transfer_leader(request)
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))
    }
}

impl Cluster {
    /// A hand-over to this node goes on in a task of its own, answered at
    /// once: openraft makes the target wait (up to the shortest election
    /// timeout) until its log holds the leader's last entry, longer than the
    /// leader waits for an answer (3/4 of it), and a leader that gives up
    /// closes the connection, which dropped this handler and the hand-over
    /// with it. The leader has stopped taking writes and sending heartbeats
    /// by then, so every write waited for an election timeout. The leader
    /// only logs the answer.
    fn take_over(&self, request: TransferLeaderRequest<TypeConfig>) {
        let this = self.clone();
        let from = request.from_leader().leader_id.voted_for;
        tokio::spawn(async move {
            match this.raft().handle_transfer_leader(request).await {
                Ok(Ok(())) => tracing::info!(from, "hand-over taken: this node stands for leader"),
                Ok(Err(e)) => tracing::info!(from, error = %e, "hand-over not taken"),
                Err(e) => tracing::warn!(from, error = %e, "hand-over: the Raft core stopped"),
            }
        });
    }
}

/// What a follower's reorder gate feeds: its Raft core, in order.
pub(super) struct RaftSubmit(pub RaftNode);

pub(super) type GateAnswer = Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>>;

impl Submit<AppendEntriesRequest<TypeConfig>, GateAnswer> for RaftSubmit {
    fn open(&self, requests: BoxStream<'static, AppendEntriesRequest<TypeConfig>>) -> BoxStream<'static, GateAnswer> {
        self.0.stream_append(requests).boxed()
    }
}
