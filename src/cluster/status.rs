//! The cluster as one node sees it: `GET /cluster`, and what formation
//! asks of the seeds.

use openraft::RaftMetrics;
use openraft::async_runtime::WatchReceiver;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::node::Cluster;
use super::reconcile::LEARNER_STUCK;
use super::types::{NodeId, TypeConfig};

/// One member in `GET /cluster`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub url: String,
    pub voter: bool,
    /// The last offset the leader knows the member holds (leader only;
    /// this node's own last offset for itself).
    pub match_offset: Option<u64>,
    /// Whether the leader heard from it within the leader lease
    /// (`Cluster::reachable`; leader only, `null` elsewhere).
    pub reachable: Option<bool>,
    /// What the leader sees wrong with it: `voter unreachable`, or
    /// `learner for N s` once a learner waits past `LEARNER_STUCK` (leader
    /// only; `null` elsewhere and when nothing is).
    pub problem: Option<String>,
    /// The member's `--max-record-bytes` as it said when it was added
    /// (null: added by a node that predates it).
    pub max_record_bytes: Option<u64>,
    /// Where peers reach the member when it serves them on a port of its
    /// own (`--peer-listen`); null: at `url`.
    #[serde(default)]
    pub peer_url: Option<String>,
    /// Replicas of named logs the catalogue places on the member.
    #[serde(default)]
    pub replicas: usize,
    /// Of the named logs' groups this node holds, how many the member
    /// leads as this node knows (a log with no replica here is not counted).
    #[serde(default)]
    pub leads: usize,
}

/// `GET /cluster`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub url: String,
    /// Where peers reach this node when it serves them on a port of its own
    /// (`--peer-listen`); null: at `url` (and from nodes that predate it).
    #[serde(default)]
    pub peer_url: Option<String>,
    /// Whether this node belongs to a formed cluster (has a membership).
    pub initialized: bool,
    pub term: u64,
    /// The leader this node is in touch with (see `contact`): null while
    /// an election runs, and on a node that has not heard from its leader
    /// (a leader: from a majority) within the lease.
    pub leader_id: Option<NodeId>,
    pub leader_url: Option<String>,
    /// Milliseconds since this node last heard from its leader (a leader:
    /// since a majority last acknowledged it); null if it never has.
    pub leader_contact_ms: Option<u64>,
    /// The last committed offset this node knows of.
    pub commit_offset: Option<u64>,
    /// This node's `--max-record-bytes`: members that disagree take or
    /// refuse the same record depending on who leads (absent from nodes
    /// that predate it).
    #[serde(default)]
    pub max_record_bytes: Option<u64>,
    /// This node's seed list (`--peers`): formation names the seeds whose
    /// list is not its own (empty from nodes that predate it).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Set while the cluster has removed this node: why, and how to add it
    /// again (see `removal`).
    #[serde(default)]
    pub removed: Option<String>,
    pub members: Vec<MemberStatus>,
}

/// On the leader: the last entry peer `id` is known to hold.
pub(super) fn matched(metrics: &RaftMetrics<TypeConfig>, id: NodeId) -> Option<u64> {
    let replication = metrics.replication.as_ref()?;
    replication.get(&id).cloned().flatten().map(|l| l.index)
}

impl Cluster {
    pub fn status(&self) -> ClusterStatus {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let is_leader = metrics.current_leader == Some(self.inner.id);
        let leader_id = self.leader_in_touch(&metrics);
        let leader_contact_ms = self
            .leader_silence(&metrics)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (replicas, leads) = self.group_counts();
        let members = self
            .members()
            .into_iter()
            .map(|(id, (member, voter))| {
                let match_offset = match id == self.inner.id {
                    true => metrics.last_log_index,
                    false => matched(&metrics, id),
                };
                let reachable = match (id == self.inner.id, is_leader) {
                    (true, _) => Some(true),
                    (false, true) => Some(self.reachable(&metrics, id)),
                    (false, false) => None,
                };
                let problem = match (voter, reachable, self.learner_for(id)) {
                    (true, Some(false), _) => Some("voter unreachable".to_string()),
                    (false, _, Some(waited)) if is_leader && waited > LEARNER_STUCK => {
                        Some(format!("learner for {} s", waited.as_secs()))
                    }
                    _ => None,
                };
                MemberStatus {
                    id,
                    max_record_bytes: member.max_record_bytes,
                    peer_url: member.peer_url,
                    url: member.url,
                    voter,
                    match_offset,
                    reachable,
                    problem,
                    replicas: replicas.get(&id).copied().unwrap_or_default(),
                    leads: leads.get(&id).copied().unwrap_or_default(),
                }
            })
            .collect::<Vec<_>>();
        ClusterStatus {
            node_id: self.inner.id,
            url: self.inner.url.clone(),
            peer_url: self.inner.config.peer_url.clone(),
            initialized: !members.is_empty(),
            term: metrics.current_term,
            leader_id,
            leader_url: leader_id.and_then(|id| self.member_url(id)),
            leader_contact_ms,
            commit_offset: metrics.local_committed.map(|c| c.index),
            max_record_bytes: Some(self.max_record_bytes()),
            peers: self.inner.config.peers.clone(),
            removed: self.removed(),
            members,
        }
    }

    /// Per node: the named logs' replicas the catalogue places on it, and
    /// the groups held here that it leads.
    fn group_counts(
        &self,
    ) -> (
        std::collections::BTreeMap<NodeId, usize>,
        std::collections::BTreeMap<NodeId, usize>,
    ) {
        let mut replicas = std::collections::BTreeMap::new();
        for placed in self.catalogue().logs.values() {
            for node in &placed.nodes {
                *replicas.entry(*node).or_default() += 1;
            }
        }
        let mut leads = std::collections::BTreeMap::new();
        for leader in self.groups_held().iter().filter_map(|group| group.current_leader()) {
            *leads.entry(leader).or_default() += 1;
        }
        (replicas, leads)
    }

    /// Whether this node is in touch with a leader and serves committed
    /// reads (`/readyz`); else why not.
    pub fn ready(&self) -> Result<(), String> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        if let Err(fatal) = &metrics.running_state {
            return Err(format!("the Raft core stopped: {fatal}"));
        }
        if self.store().disk_full() {
            return Err("the disk is full: this node's Raft appends wait for space".into());
        }
        if self.leader_in_touch(&metrics).is_none() {
            let lease = self.leader_lease().as_millis();
            return Err(match (metrics.current_leader, self.leader_silence(&metrics)) {
                (None, _) => "no leader is known: an election is under way or a majority is unreachable".into(),
                (Some(id), _) if id == self.inner.id => {
                    format!("this leader has not heard from a majority within its lease ({lease} ms)")
                }
                (Some(id), Some(silence)) => format!(
                    "no word from leader {id} for {} ms (lease {lease} ms)",
                    silence.as_millis()
                ),
                (Some(id), None) => format!("no word from leader {id} yet"),
            });
        }
        let Some(applied) = metrics.last_applied.map(|a| a.index) else {
            return Err("this node has applied nothing yet".into());
        };
        let leading = metrics.current_leader == Some(self.inner.id);
        if let Some(commit) = self.inner.contact.settled_commit().filter(|_| !leading) {
            let lag = commit.saturating_sub(applied);
            if lag > self.inner.config.ready_lag {
                return Err(format!(
                    "catching up: applied up to offset {applied}, the leader's commit is {commit} ({lag} behind; ready within {} entries, --ready-lag)",
                    self.inner.config.ready_lag
                ));
            }
        }
        Ok(())
    }

    pub fn max_record_bytes(&self) -> u64 {
        self.store().log().config().max_record_bytes
    }

    /// How long peers wait for one another at most.
    pub fn election_timeout(&self) -> Duration {
        self.inner.config.election_timeout.1
    }
}
