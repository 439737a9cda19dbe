//! Finishing joins, whoever started them. A join is several steps (add a
//! learner, let it catch up, make it a voter in place of any stale member
//! at its URL), and a crash, a leader change or a lost connection can stop
//! it after any of them: a 3-voter cluster that replaced a disk would then
//! stay {A, B, X dead} + learner Y, one failure away from losing writes.
//!
//! So the last step is one idempotent call (`promote_in_place`: a single
//! joint change that adds the learner as a voter and removes every other
//! member at its URL), and the leader runs `reconcile` every
//! `RECONCILE_EVERY`, one change a pass:
//! - a joint membership left by a change that stopped halfway (standing for
//!   `JOINT_GRACE`) is finished;
//! - a learner that has caught up is promoted in place;
//! - of two voters at one URL, the unreachable one gives way to the other.
//!
//! Each pass also says what is still wrong: learners waiting longer than
//! `LEARNER_STUCK` and unreachable voters, in `/cluster` (`problem`) and in
//! `/metrics`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, RaftMetrics};

use super::error::ClusterError;
use super::node::Cluster;
use super::status::matched;
use super::types::{Member, NodeId, TypeConfig};

pub(super) const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How long a committed joint membership stands before the reconciler
/// finishes it: openraft's own second step follows at once, and finishing
/// it under that step would make the change that began it answer an error.
const JOINT_GRACE: Duration = Duration::from_secs(3);
/// How long a change waits for another in flight.
const CHANGE_WAIT: Duration = Duration::from_secs(10);
/// How long a join waits for its learner to catch up (the joiner's own
/// request waits as long).
const CATCH_UP_WAIT: Duration = Duration::from_secs(600);
/// A learner this much behind the leader's last entry has caught up: what
/// openraft's own blocking `add_learner` waits for.
const CAUGHT_UP_LAG: u64 = 5000;
/// A learner waiting longer than this is shown as a problem.
pub(super) const LEARNER_STUCK: Duration = Duration::from_secs(30);

pub const LEARNERS_STUCK: &str = "distlog_raft_learners_stuck";
pub const VOTERS_UNREACHABLE: &str = "distlog_raft_voters_unreachable";

/// When the leader first saw each current learner.
pub(super) type LearnersSeen = std::sync::Mutex<HashMap<NodeId, Instant>>;

/// The leader's reconciler; ends with the node.
pub(super) async fn run(cluster: Cluster) {
    loop {
        tokio::time::sleep(RECONCILE_EVERY).await;
        if cluster.raft().metrics().borrow_watched().running_state.is_err() {
            return;
        }
        if let Err(e) = cluster.reconcile().await {
            tracing::warn!(error = %e, "reconciling the membership");
        }
    }
}

impl Cluster {
    /// Makes `id` a voter in place of every other member at its URL, in one
    /// joint change; nothing when it already is and none is left. Changes
    /// of the voter set take turns (`Inner::changing`) and each is computed
    /// from the membership as it is when it goes: a set computed before
    /// another change landed would undo that change (two joins at once).
    pub(super) async fn promote_in_place(&self, id: NodeId) -> Result<(), ClusterError> {
        let _turn = self.inner.changing.lock().await;
        let url = match self.members().get(&id) {
            Some((member, _)) => member.url.clone(),
            None => return Err(ClusterError::NoSuchMember(id)),
        };
        self.change(|members| {
            let twins = at_url(members, &url, id);
            let voters: BTreeSet<NodeId> = members.iter().filter(|(_, (_, v))| *v).map(|(i, _)| *i).collect();
            let target: BTreeSet<NodeId> = voters.difference(&twins).copied().chain([id]).collect();
            (target != voters && members.contains_key(&id)).then(|| {
                tracing::info!(node_id = id, %url, replaced = ?twins, "making a member a voter in place of the members at its URL");
                ChangeMembers::ReplaceAllVoters(target)
            })
        })
        .await?;
        self.change(|members| {
            let left = at_url(members, &url, id);
            (!left.is_empty()).then(|| {
                tracing::info!(node_id = id, removed = ?left, "removing learners at the same URL");
                ChangeMembers::RemoveNodes(left)
            })
        })
        .await
    }

    /// A membership change computed by `next` from the current members
    /// (None: nothing to do). One that meets another in flight (openraft's
    /// second step, or a change made elsewhere) waits, and is computed
    /// again from the membership that change left.
    pub(super) async fn change(
        &self,
        next: impl Fn(&BTreeMap<NodeId, (Member, bool)>) -> Option<ChangeMembers<NodeId, Member>>,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + CHANGE_WAIT;
        loop {
            let Some(changes) = next(&self.members()) else {
                return Ok(());
            };
            self.wake_to_propose().await;
            match self.raft().change_membership(changes, false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_) | ChangeMembershipError::UncommittedLeaderLog(_),
                ))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(self.change_error(e)),
            }
        }
    }

    /// Waits until learner `id` is within `CAUGHT_UP_LAG` of this leader's
    /// log (as a blocking `add_learner` does), at most `CATCH_UP_WAIT`.
    pub(super) async fn wait_caught_up(&self, id: NodeId) -> Result<(), ClusterError> {
        self.wait_within(id, CAUGHT_UP_LAG).await
    }

    /// Waits until learner `id` holds this leader's entries up to `index`
    /// (a move: close, since a log of one replica needs the new one's
    /// acknowledgements for every write while the change is joint), at most
    /// `within`.
    pub(super) async fn wait_matched(&self, id: NodeId, index: u64, within: Duration) -> Result<(), ClusterError> {
        self.raft()
            .wait(Some(within))
            .metrics(
                |m| {
                    let gone = m.membership_config.membership().get_node(&id).is_none();
                    m.replication.is_none() || gone || matched(m, id).is_some_and(|i| i >= index)
                },
                "the new replica catches up",
            )
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Timeout(e.to_string()))
    }

    /// Waits until learner `id` is within `lag` entries of this leader's
    /// log, at most `CATCH_UP_WAIT`.
    async fn wait_within(&self, id: NodeId, lag: u64) -> Result<(), ClusterError> {
        self.raft()
            .wait(Some(CATCH_UP_WAIT))
            .metrics(
                |m| {
                    let last = m.last_log_index.unwrap_or(0);
                    // No longer leading, or the learner was removed (a joiner
                    // back under a new id): the caller's next step says so.
                    let gone = m.membership_config.membership().get_node(&id).is_none();
                    m.replication.is_none() || gone || matched(m, id).is_some_and(|i| last.saturating_sub(i) <= lag)
                },
                "the learner catches up",
            )
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Timeout(e.to_string()))
    }

    /// One pass of the leader's reconciler (see the module doc).
    async fn reconcile(&self) -> Result<(), ClusterError> {
        let metrics = self.raft().metrics().borrow_watched().clone();
        let leading = self.leader_in_touch(&metrics) == Some(self.id());
        self.track_learners(&metrics, leading);
        // A change still in flight is openraft's to finish.
        if !leading || metrics.membership_config.log_id() != metrics.committed_membership_config.log_id() {
            return Ok(());
        }
        let joint_since = self.joint_since(&metrics);
        if joint_since.is_some_and(|since| since.elapsed() >= JOINT_GRACE) {
            let _turn = self.inner.changing.lock().await;
            return self
                .change(|_| {
                    let metrics = self.raft().metrics().borrow_watched().clone();
                    let joint = metrics.membership_config.membership().get_joint_config();
                    let goal = joint.last().filter(|_| joint.len() > 1)?;
                    tracing::warn!(?joint, "finishing a membership change that stopped halfway");
                    Some(ChangeMembers::ReplaceAllVoters(goal.clone()))
                })
                .await;
        }
        if let Some(id) = self.next_to_promote(&metrics) {
            tracing::info!(node_id = id, "finishing a join: the member is caught up and reachable");
            return self.promote_in_place(id).await;
        }
        Ok(())
    }

    /// Since when the current joint membership has stood (None: not joint).
    fn joint_since(&self, metrics: &RaftMetrics<TypeConfig>) -> Option<Instant> {
        let joint = metrics.membership_config.membership().get_joint_config().len() > 1;
        let id = *metrics.membership_config.log_id();
        let mut seen = self
            .inner
            .joint_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (joint, *seen) {
            (false, _) => *seen = None,
            (true, Some((seen_id, _))) if seen_id == id => {}
            (true, _) => *seen = Some((id, Instant::now())),
        }
        seen.map(|(_, since)| since)
    }

    /// A caught-up learner, or a reachable voter that shares its URL with an
    /// unreachable one: whom the next pass promotes in place.
    fn next_to_promote(&self, metrics: &RaftMetrics<TypeConfig>) -> Option<NodeId> {
        let members = self.members();
        let last = metrics.last_log_index.unwrap_or(0);
        let caught_up = |id: &NodeId| matched(metrics, *id).is_some_and(|m| last.saturating_sub(m) <= CAUGHT_UP_LAG);
        let learner = members
            .iter()
            .find(|(id, (_, voter))| !voter && caught_up(id) && self.reachable(metrics, **id));
        if let Some((id, _)) = learner {
            return Some(*id);
        }
        members.iter().find_map(|(id, (member, voter))| {
            let twins = at_url(&members, &member.url, *id);
            let gives_way = |t: &NodeId| !self.reachable(metrics, *t);
            (*voter && !twins.is_empty() && self.reachable(metrics, *id) && twins.iter().all(gives_way)).then_some(*id)
        })
    }

    /// On the leader: whether `id` answered within the lease.
    pub(super) fn reachable(&self, metrics: &RaftMetrics<TypeConfig>, id: NodeId) -> bool {
        if id == self.id() {
            return true;
        }
        let lease = self.leader_lease();
        // A quiet group's leader hears its followers through the pulses' answers.
        if self.pulse_answer_age(id).is_some_and(|age| age < lease) {
            return true;
        }
        metrics
            .heartbeat
            .as_ref()
            .and_then(|beats| beats.get(&id).cloned().flatten())
            .is_some_and(|at| openraft::Instant::elapsed(&at.into_inner()) < lease)
    }

    /// Keeps when each learner was first seen, and the two gauges.
    fn track_learners(&self, metrics: &RaftMetrics<TypeConfig>, leading: bool) {
        let members = self.members();
        let mut seen = self
            .inner
            .learners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|id, _| members.get(id).is_some_and(|(_, voter)| !voter));
        for (id, (_, voter)) in &members {
            if !voter {
                seen.entry(*id).or_insert_with(Instant::now);
            }
        }
        let stuck = seen.values().filter(|at| at.elapsed() > LEARNER_STUCK).count();
        let unreachable = members
            .iter()
            .filter(|(id, (_, voter))| *voter && !self.reachable(metrics, **id))
            .count();
        metrics::gauge!(LEARNERS_STUCK).set(if leading { stuck as f64 } else { 0.0 });
        metrics::gauge!(VOTERS_UNREACHABLE).set(if leading { unreachable as f64 } else { 0.0 });
    }

    /// How long the leader has seen `id` as a learner (leader only).
    pub(super) fn learner_for(&self, id: NodeId) -> Option<Duration> {
        let seen = self
            .inner
            .learners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.get(&id).map(Instant::elapsed)
    }
}

/// The members other than `id` whose URL is `url`.
fn at_url(members: &BTreeMap<NodeId, (Member, bool)>, url: &str, id: NodeId) -> BTreeSet<NodeId> {
    members
        .iter()
        .filter(|(other, (member, _))| **other != id && member.url == url)
        .map(|(other, _)| *other)
        .collect()
}
