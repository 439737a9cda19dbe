//! A cluster node: opens the Raft side of the log, checks it, starts
//! openraft, and answers what the HTTP layer asks (writes, status,
//! membership, peer RPCs).
//!
//! Files in `<data dir>/raft/` (see `durable`): `node-id` (generated once
//! per data directory: a wiped node comes back under a new id), `vote`,
//! `committed`, `purged`, `terms`, `state`, `snapshot`, `flushed`.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::{Config, Raft, SnapshotPolicy};

use super::durable::Durable;
use super::error::ClusterError;
use super::log_store::LogStore;
use super::network::{Network, Routes};
use super::repair;
use super::state_machine::{StateMachine, Visibility};
use super::types::{Member, NodeId, TypeConfig, UserRecord};
use bytes::Bytes;

use crate::log::attributes::CONTROL;
use crate::log::{Log, MAX_STORED_FRAME, Payload, encode_frame, split_frames};
use crate::telemetry::{self, EntryTrace};

pub type RaftNode = Raft<TypeConfig, StateMachine>;

const NODE_ID: &str = "node-id";

/// How a node joins and runs a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The seed list, the same on every node.
    pub peers: Vec<String>,
    /// How peers and clients reach this node.
    pub advertise_url: String,
    /// `advertised URL -> URL to connect to` (fault tests' proxies).
    pub routes: HashMap<String, String>,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// The client peers are reached with (TLS roots, identity, token).
    pub client: reqwest::Client,
}

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "{0} holds a standalone log (records, and no raft/ directory): a cluster node's log is its Raft log and must start empty. Start it without --peers, or give --data-dir a new directory"
    )]
    StandaloneLog(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad Raft settings: {0}")]
    Config(String),
    #[error("openraft failed to start: {0}")]
    Raft(String),
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
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster(node {} at {})", self.inner.id, self.inner.url)
    }
}

/// A random node id that is not 0, from the system's generator.
fn new_node_id() -> std::io::Result<NodeId> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    loop {
        let mut bytes = [0u8; 8];
        rng.fill(&mut bytes)
            .map_err(|_| std::io::Error::other("no random numbers for a node id"))?;
        // Ids stay below 2^53 so that JSON clients read them exactly.
        let id = u64::from_le_bytes(bytes) >> 11;
        if id != 0 {
            return Ok(id);
        }
    }
}

fn raft_config(config: &ClusterConfig) -> Result<Config, StartError> {
    let config = Config {
        cluster_name: "distlog".to_string(),
        heartbeat_interval: config.heartbeat.as_millis() as u64,
        election_timeout_min: config.election_timeout.0.as_millis() as u64,
        election_timeout_max: config.election_timeout.1.as_millis() as u64,
        // The log is the user's data: Raft never snapshots or purges on its
        // own; retention asks it to (see the design note).
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        purge_batch_size: 1,
        // A node whose log came back short must not resume leading.
        enable_leader_restore: Some(false),
        allow_log_reversion: Some(false),
        max_payload_entries: 4096,
        ..Config::default()
    };
    config.validate().map_err(|e| StartError::Config(e.to_string()))
}

impl Cluster {
    /// Opens the Raft side of `log` in `data_dir` and starts the node;
    /// formation (initializing or joining) goes on in the background.
    pub async fn start(log: Log, data_dir: &Path, config: ClusterConfig) -> Result<Cluster, StartError> {
        let raft_dir = data_dir.join("raft");
        if !raft_dir.exists() && log.written_offset() > log.lowest_offset() {
            return Err(StartError::StandaloneLog(data_dir.display().to_string()));
        }
        let durable = Durable::open(raft_dir)?;
        let store = LogStore::open(log, durable.clone())?;
        let checked = store.clone();
        let fault = tokio::task::spawn_blocking(move || repair::check(&checked))
            .await
            .map_err(|e| StartError::Raft(e.to_string()))??;
        let id = match (durable.read::<NodeId>(NODE_ID)?, &fault) {
            (Some(id), None) => id,
            (old, fault) => {
                // The new id is on disk before anything is repaired: a crash
                // mid-repair must never bring the node back under the id
                // whose acknowledged entries it lost (the next start finds
                // the fault again, or a repaired log, under a new id).
                let id = new_node_id()?;
                durable.write(NODE_ID, &id, true)?;
                match fault {
                    Some(fault) => {
                        tracing::error!(
                            old_node_id = ?old,
                            new_node_id = id,
                            %fault,
                            "STORAGE FAULT: this node's log lost records it had made durable; it will not vote or lead on it. \
                             Keeping the sound prefix and joining again under a new id, to catch up from the other members"
                        );
                        let repaired = store.clone();
                        let fault = fault.clone();
                        tokio::task::spawn_blocking(move || repair::keep_sound_prefix(&repaired, &fault))
                            .await
                            .map_err(|e| StartError::Raft(e.to_string()))??;
                    }
                    None => tracing::info!(node_id = id, "new data directory: generated a node id"),
                }
                id
            }
        };
        let sm = StateMachine::open(store.clone(), durable)?;
        // A no-op unless the log lost applied entries (a repair, including
        // one a crash interrupted after the log was cut).
        let checked = sm.clone();
        tokio::task::spawn_blocking(move || checked.forget_applied_past_log())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))??;
        let visibility = sm.visibility();
        let network = Network {
            client: config.client.clone(),
            routes: Routes::new(config.routes.clone()),
        };
        let raft = Raft::new(id, Arc::new(raft_config(&config)?), network, store.clone(), sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                id,
                url: config.advertise_url.trim_end_matches('/').to_string(),
                raft,
                store,
                visibility,
                config,
            }),
        };
        tracing::info!(node_id = id, url = %cluster.inner.url, peers = ?cluster.inner.config.peers, "cluster node started");
        tokio::spawn(super::formation::form(cluster.clone()));
        tokio::spawn(super::metrics::publish(cluster.clone()));
        Ok(cluster)
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
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
                Payload {
                    attributes,
                    value: &r.value,
                },
            );
        }
        Ok(Bytes::from(out))
    }

    /// The URL of member `id` in the current membership.
    pub fn member_url(&self, id: NodeId) -> Option<String> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.membership_config.get_node(&id).map(|m| m.url.clone())
    }

    /// The leader as this node knows it: id and URL.
    pub fn leader(&self) -> Option<(NodeId, Option<String>)> {
        let leader = self.inner.raft.metrics().borrow_watched().current_leader;
        leader.map(|id| (id, self.member_url(id)))
    }

    /// Appends records as one batch; returns the first one's offset once
    /// all are committed and visible. A batch of more than one record is
    /// shown whole or never (see `state_machine`).
    /// With traces on, the wait is the span `raft.commit`, and the first
    /// record carries it to the append-entries that replicate it.
    pub async fn write(&self, mut records: Vec<UserRecord>) -> Result<u64, ClusterError> {
        match self.leader() {
            Some((leader, _)) if leader == self.inner.id => {}
            Some((_, url)) => return Err(ClusterError::NotLeader { leader_url: url }),
            None => return Err(ClusterError::NoLeader),
        }
        if telemetry::enabled() {
            let span = tracing::info_span!("raft.commit", records = records.len());
            if let Some(first) = records.first_mut() {
                first.trace = EntryTrace::of(&span);
            }
            return telemetry::in_span(span, self.commit(records)).await;
        }
        self.commit(records).await
    }

    async fn commit(&self, records: Vec<UserRecord>) -> Result<u64, ClusterError> {
        if records.len() == 1 {
            let record = records.into_iter().next().ok_or(ClusterError::NoLeader)?;
            return match self.inner.raft.client_write(record).await {
                Ok(response) => Ok(response.data),
                Err(e) => Err(self.write_error(e)),
            };
        }
        self.write_batch(records).await
    }

    async fn write_batch(&self, records: Vec<UserRecord>) -> Result<u64, ClusterError> {
        use futures_util::StreamExt;
        let count = records.len();
        let mut answers = self
            .inner
            .raft
            .client_write_many(records)
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))?;
        let mut first = None;
        let mut seen = 0;
        while let Some(answer) = answers.next().await {
            match answer {
                Ok(Ok(written)) => {
                    first.get_or_insert(written.response);
                    seen += 1;
                }
                Ok(Err(e)) => return Err(self.write_error(RaftError::APIError(e))),
                // Entries may have been replicated before the core stopped.
                Err(fatal) => return Err(ClusterError::OutcomeUnknown(format!("the Raft core stopped: {fatal}"))),
            }
        }
        match first {
            Some(first) if seen == count => Ok(first),
            _ => Err(ClusterError::OutcomeUnknown("the batch was not answered whole".into())),
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
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not shut down cleanly");
        }
    }
}
