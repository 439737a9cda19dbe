//! A running cluster node (`Cluster`, started by `start`): answers what the
//! HTTP layer asks (writes, membership, peer RPCs); `status` and
//! `formation` add to it from above.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use openraft::errors::{ClientWriteError, RaftError};

use super::contact::LeaderContact;
use super::error::ClusterError;
use super::log_store::LogStore;
use super::reconcile::LearnersSeen;
use super::state_machine::{StateMachine, Visibility};
use super::types::{Applied, Member, NodeId, TypeConfig, UserRecord};
use bytes::Bytes;

use crate::log::attributes::CONTROL;
use crate::log::{MAX_STORED_FRAME, Payload, encode_frame, split_frames};
use crate::telemetry::{self, EntryTrace};

pub type RaftNode = Raft<TypeConfig, StateMachine>;

/// How a node joins and runs a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The seed list, the same on every node.
    pub peers: Vec<String>,
    /// How clients (and, without `peer_url`, peers) reach this node.
    pub advertise_url: String,
    /// How peers reach this node when it serves them on a port of their
    /// own (`--peer-listen`): Raft's messages and membership changes go
    /// there; the membership records it beside `advertise_url`.
    pub peer_url: Option<String>,
    /// `advertised URL -> URL to connect to` (fault tests' proxies).
    pub routes: HashMap<String, String>,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Longest a write waits to commit before its outcome is called unknown.
    pub write_timeout: Duration,
    /// Entries this node may be behind its leader's commit and be ready.
    pub ready_lag: u64,
    /// A member unreachable from group 0's leader this long has its
    /// replicas of named logs moved elsewhere (`moves`).
    pub replica_timeout: Duration,
    /// How many seeds, the lowest among them, must answer uninitialized
    /// and with the same seed list before a new cluster forms.
    pub bootstrap_expect: usize,
    /// A node removed before it started asks the leader to add it again.
    pub rejoin: bool,
    /// The client peers are reached with (TLS roots, identity, token).
    pub client: reqwest::Client,
    /// A follower sends a client's write on to the leader (`--forward-writes`)
    /// rather than redirecting the client there.
    pub forward_writes: bool,
    /// Append-entries requests in flight to each follower at most
    /// (`pipeline`; 1: one at a time).
    pub append_window: usize,
    /// The node's batchers of named groups' heartbeats (`pulse`), one a
    /// target, shared by every group the config is given to.
    pub pulses: super::pulse::Pulses,
}

/// A running cluster node; clones share it.
#[derive(Clone)]
pub struct Cluster {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub id: NodeId,
    pub url: String,
    pub raft: RaftNode,
    pub store: LogStore,
    pub visibility: Visibility,
    pub config: ClusterConfig,
    /// While this node is in no cluster: what formation waits for.
    pub forming: std::sync::Mutex<Option<String>>,
    /// Set while the cluster has removed this node (`removal`).
    pub removal: std::sync::Mutex<Option<super::removal::Removal>>,
    /// Held across a removal's mark or undo (state, file, election switch).
    pub removal_steps: std::sync::Mutex<()>,
    /// Whether a committed membership named this node since it started.
    pub named: std::sync::atomic::AtomicBool,
    /// `raft/`, where the removal is kept.
    pub durable: super::durable::Durable,
    /// When a leader's append-entries or snapshot last arrived.
    pub contact: LeaderContact,
    /// On the leader: when each learner was first seen (`reconcile`).
    pub learners: LearnersSeen,
    /// Held while the voter set is changed (`reconcile`): one at a time.
    pub changing: tokio::sync::Mutex<()>,
    /// On group 0's leader: the nodes a drain is moving replicas off, and
    /// when the drain last asked (no new replica goes there meanwhile; in
    /// memory, a drain asked again of a new leader marks them again; a mark
    /// no drain renews lapses, `moves::DRAIN_MARK_LASTS`).
    pub draining: std::sync::Mutex<std::collections::BTreeMap<NodeId, std::time::Instant>>,
    /// The joint membership the reconciler saw, and since when.
    pub joint_seen: std::sync::Mutex<Option<(Option<super::types::LogId>, std::time::Instant)>>,
    /// The stamp this node last gave records it proposed; held while a
    /// write is stamped and handed to the Raft core (see `Cluster::commit`).
    pub last_stamp: tokio::sync::Mutex<u64>,
    /// A leader's append-entries carrying entries, being handled here.
    pub appends_in_flight: super::metrics::InFlight,
    /// Hands a leader's pipelined append-entries to the Raft core in order.
    pub gate: super::gate::Gate<openraft::raft::AppendEntriesRequest<TypeConfig>, super::rpc::GateAnswer>,
    /// Why this node asks to be started again, once it does (`contradiction`).
    pub restart_for: std::sync::OnceLock<String>,
    pub restart_asked: tokio::sync::Notify,
    /// The Raft group this is: 0 the cluster group, else a named log's.
    pub group: u64,
    /// On group 0: the named logs' groups this node holds (`group`).
    pub groups: super::group::Groups,
    /// In a named log's group: the cluster group, whose membership says who
    /// a peer is (the group's own may be empty before it is initialized).
    pub parent: Option<std::sync::Weak<Inner>>,
    /// Times this group's leader changed or was lost, as this node saw it
    /// (`metrics::count_leader_changes`; `distlog_log_leader_changes_total`).
    pub leader_changes: std::sync::atomic::AtomicU64,
    /// Where this group's peers are reached now (`network::PeerBook`): kept
    /// from group 0's membership, for named groups too (`start::keep_peer_book`).
    pub book: super::network::PeerBook,
    /// Whether this named group's Raft timer is off for want of traffic (`quiet`).
    pub quiet: super::quiet::Quiet,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster(node {} at {})", self.inner.id, self.inner.url)
    }
}

impl Cluster {
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Times this group's leader changed or was lost since this node started it.
    pub fn leader_changes(&self) -> u64 {
        self.inner.leader_changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn raft(&self) -> &RaftNode {
        &self.inner.raft
    }

    pub fn store(&self) -> &LogStore {
        &self.inner.store
    }

    /// Whether a follower forwards writes to the leader (`--forward-writes`).
    pub fn forwards_writes(&self) -> bool {
        self.inner.config.forward_writes
    }

    /// The client peers are reached with, and where a peer advertised at
    /// `url` is reached (`--peer-route`, else `url`): a forwarded write
    /// goes the way the Raft RPCs go, with their TLS roots, identity and
    /// token.
    pub fn peer_client(&self, url: &str) -> (&reqwest::Client, String) {
        let url = url.trim_end_matches('/');
        let to = self.inner.config.routes.get(url).cloned();
        (&self.inner.config.client, to.unwrap_or_else(|| url.to_string()))
    }

    /// Longest a write waits to commit (`--write-timeout-ms`).
    /// Whether this node pipelines append-entries (`--append-window` above
    /// 1): as a leader it keeps several in flight to a follower that gates
    /// them, and as a follower it gates the pipelined requests it gets. Off
    /// (the default), it sends and takes one at a time, as before pipelining.
    pub fn pipelines(&self) -> bool {
        self.inner.config.append_window > 1
    }

    pub fn write_timeout(&self) -> Duration {
        self.inner.config.write_timeout
    }

    /// Whether `offset` is hidden from readers (see `state_machine`).
    pub fn aborted(&self, offset: u64) -> bool {
        self.inner.visibility.aborted(offset)
    }

    /// Frames `[from, from + count)` as `--follow` replicas get them: the
    /// records of aborted batches carry the control attribute, so that a
    /// replica, which has no state machine, hides them as every member
    /// does. Other frames go as they are stored.
    pub fn frames_for_replicas(&self, frames: Bytes, from: u64, count: u32) -> Result<Bytes, String> {
        if count == 0 || !self.inner.visibility.any_aborted(from, from + u64::from(count)) {
            return Ok(frames);
        }
        let records = split_frames(frames, from, MAX_STORED_FRAME)
            .map_err(|(at, offset, e)| format!("frame at byte {at} (offset {offset}): {e}"))?;
        let mut out = Vec::new();
        for r in records {
            let attributes = match self.aborted(r.offset) {
                true => r.attributes | CONTROL,
                false => r.attributes,
            };
            // Cluster frames carry no log flags (see `codec`).
            encode_frame(
                &mut out,
                r.offset,
                r.timestamp_ms,
                0,
                Payload::with(attributes, &r.value),
            );
        }
        Ok(Bytes::from(out))
    }

    /// Where peers reach this node: its peer URL, else its URL.
    pub fn peer_url(&self) -> &str {
        self.inner.config.peer_url.as_deref().unwrap_or(&self.inner.url)
    }

    /// Whether `url` names this node, at its URL or its peer URL (seeds may
    /// be given as either).
    pub(super) fn is_own_url(&self, url: &str) -> bool {
        let url = url.trim_end_matches('/');
        url == self.url() || url == self.peer_url()
    }

    /// The URL of member `id` in the current membership.
    pub fn member_url(&self, id: NodeId) -> Option<String> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.membership_config.get_node(&id).map(|m| m.url.clone())
    }

    /// Where peers reach member `id` (its peer URL, else its URL).
    pub fn member_peer_url(&self, id: NodeId) -> Option<String> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .get_node(&id)
            .map(|m| m.peer_base().to_string())
    }

    /// The leader as this node knows it: id and URL.
    pub fn leader(&self) -> Option<(NodeId, Option<String>)> {
        self.current_leader().map(|id| (id, self.member_url(id)))
    }

    /// Where peers reach the leader this node knows (its peer URL): a
    /// membership change refused here is sent there.
    pub fn leader_peer_url(&self) -> Option<String> {
        self.current_leader().and_then(|id| self.member_peer_url(id))
    }

    /// Ok when this node leads; else where writers should go, or why no
    /// leader is known. Asked before a write or a membership change is
    /// proposed (Raft refuses one if leadership moves in between).
    pub fn must_lead(&self) -> Result<(), ClusterError> {
        if let Some(why) = self.removed() {
            return Err(ClusterError::Removed(why));
        }
        match self.leader() {
            Some((leader, _)) if leader == self.inner.id => Ok(()),
            Some((_, url)) => Err(ClusterError::NotLeader { leader_url: url }),
            None => Err(self.no_leader()),
        }
    }

    /// Appends records as one batch; returns the first one's offset once
    /// all are committed and visible, or why the state machine refused the
    /// batch as it applied it (its first record's guard). A batch of more
    /// than one record is shown whole or never (see `state_machine`).
    /// With traces on, the wait is the span `raft.commit`, and the first
    /// record carries it to the append-entries that replicate it.
    pub async fn write(&self, mut records: Vec<UserRecord>) -> Result<Applied, ClusterError> {
        self.must_lead()?;
        self.wake_to_propose().await;
        if telemetry::enabled() {
            let span = tracing::info_span!("raft.commit", records = records.len());
            if let Some(first) = records.first_mut() {
                first.trace = EntryTrace::of(&span);
            }
            return telemetry::in_span(span, self.commit_in_time(records)).await;
        }
        self.commit_in_time(records).await
    }

    /// Commits within the write timeout. A leader cut off from the majority
    /// still takes writes (it does not know yet), and they would wait as
    /// long as the partition lasts; past the timeout the client is told the
    /// outcome is unknown: the entries were proposed and may yet commit.
    async fn commit_in_time(&self, records: Vec<UserRecord>) -> Result<Applied, ClusterError> {
        let limit = self.inner.config.write_timeout;
        match tokio::time::timeout(limit, self.commit(records)).await {
            Ok(answer) => answer,
            Err(_) => Err(ClusterError::OutcomeUnknown(format!(
                "not committed within {} ms (--write-timeout-ms): a majority may be unreachable; the write may still commit",
                limit.as_millis()
            ))),
        }
    }

    /// Stamps the records and hands them to the Raft core under one lock
    /// (`Inner::last_stamp`), then waits for them to commit. The core gives
    /// entries their indexes in the order it receives them (one channel,
    /// read in order), so stamps never go backwards in log order; and a
    /// stamp is never below the newest one in this node's log, which holds
    /// every committed entry once this node leads, so a new leader whose
    /// clock is behind goes on from its predecessors' stamps. Stamped once
    /// here, the frames are the same bytes on every node.
    async fn commit(&self, mut records: Vec<UserRecord>) -> Result<Applied, ClusterError> {
        use futures_util::StreamExt;
        let count = records.len();
        // Refused before anything is proposed: a full disk, or room given
        // to retention that new entries must not take (see `log_store::room`).
        if self.inner.store.refuses_new_entries() {
            return Err(ClusterError::DiskFull);
        }
        let started = std::time::Instant::now();
        let mut answers = {
            let mut last_stamp = self.inner.last_stamp.lock().await;
            let log = self.inner.store.log();
            let stamp = log.config().clock.now_ms().max(*last_stamp).max(log.newest_stamp());
            *last_stamp = stamp;
            for record in &mut records {
                record.timestamp_ms = stamp;
            }
            // One write's milestones (`stages`), on its first record only:
            // a batch is one write.
            if let Some(first) = records.first_mut() {
                first.proposed_at = Some(started);
            }
            self.inner
                .raft
                .client_write_many(records)
                .await
                .map_err(|e| ClusterError::Stopped(e.to_string()))?
        };
        let mut first = None;
        let mut last = None;
        let mut seen = 0;
        while let Some(answer) = answers.next().await {
            match answer {
                Ok(Ok(written)) => {
                    last = last.max(Some(written.response.offset));
                    first.get_or_insert(written.response);
                    seen += 1;
                }
                Ok(Err(e)) => return Err(self.write_error(RaftError::APIError(e))),
                // Entries may have been replicated before the core stopped.
                Err(fatal) => return Err(ClusterError::OutcomeUnknown(format!("the Raft core stopped: {fatal}"))),
            }
        }
        if let Some(last) = last {
            self.shown_to_readers(last).await;
        }
        super::stages::record(super::stages::COMMIT, started);
        match first {
            Some(first) if seen == count => Ok(first),
            _ => Err(ClusterError::OutcomeUnknown("the batch was not answered whole".into())),
        }
    }

    /// Waits until this node's readers see `offset`. A majority may commit
    /// an entry before this node's own sync of it is done (it sends entries
    /// while it syncs them), and readers see only what is synced here: a
    /// writer told its offset must find it on this node at once.
    async fn shown_to_readers(&self, offset: u64) {
        let log = self.inner.store.log();
        // Mostly true already: no watch (and its lock) on every write.
        if log.next_offset() > offset {
            return;
        }
        let mut shown = log.subscribe();
        while *shown.borrow_and_update() <= offset {
            if shown.changed().await.is_err() {
                return;
            }
        }
    }

    fn write_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ClusterError {
        match e {
            // Refused before anything was appended: safe to send elsewhere.
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_node {
                Some(node) if f.leader_id != Some(self.inner.id) => ClusterError::NotLeader {
                    leader_url: Some(node.url),
                },
                _ => ClusterError::NoLeader,
            },
            RaftError::APIError(e) => ClusterError::OutcomeUnknown(e.to_string()),
            // The entry may have been replicated before the core stopped.
            RaftError::Fatal(f) => ClusterError::OutcomeUnknown(format!("the Raft core stopped: {f}")),
        }
    }

    /// Voters and learners of the current membership: id -> (member, voter).
    /// Member `id` as the latest membership records it.
    pub fn member(&self, id: NodeId) -> Option<Member> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.membership_config.get_node(&id).cloned()
    }

    /// The members' client URLs, by id.
    pub fn member_urls(&self) -> Vec<String> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.membership_config.nodes().map(|(_, m)| m.url.clone()).collect()
    }

    pub fn members(&self) -> BTreeMap<NodeId, (Member, bool)> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        let voters: BTreeSet<NodeId> = metrics.membership_config.voter_ids().collect();
        metrics
            .membership_config
            .nodes()
            .map(|(id, m)| (*id, (m.clone(), voters.contains(id))))
            .collect()
    }

    pub async fn shutdown(&self) {
        self.inner.store.stop_waiting();
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not shut down cleanly");
        }
    }

    /// After the log's last sync at a graceful stop: nothing this run wrote
    /// is unsynced, so a reboot before the next start (a planned one syncs
    /// anyway) tears nothing, and a bad frame then is rot.
    pub fn record_clean_exit(&self) {
        if let Err(e) = super::last_run::record(&self.inner.durable, &super::last_run::LastRun::now(false)) {
            tracing::warn!(error = %e, "could not record the clean stop in raft/last_run");
        }
    }
}
