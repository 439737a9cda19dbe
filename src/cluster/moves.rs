//! Moving a named log's replica off a node: `DELETE /cluster/members/{id}`
//! drains the node this way before it is removed (`drain`), and group 0's
//! leader does it to a member it has not reached for
//! `--replica-timeout-ms` (`drive_moves`), which drops its replicas when it
//! comes back; and it moves replicas from the voter holding the most to the
//! one holding the fewest while they differ by two or more (a node that
//! joined takes its share, `Catalogue::balancing_move`, two logs at a time).
//! A drained or lost replica goes to the reachable voter holding the fewest
//! that never held one of the log (`Catalogue::place_move`). Three parties, each step
//! idempotent and driven from state that survives a crash, so that a
//! leader change or a restart at any point only resumes it:
//!
//! 1. Group 0's leader proposes `move {name, group, from, to}` (the
//!    catalogue, `catalogue::CatalogueChange::Move`): `to` takes `from`'s
//!    place in the log's nodes, `from` is marked leaving and keeps serving
//!    its replica. `to`'s node opens an empty replica, which waits for the
//!    group's leader (it never initializes a group: `PlacedLog::initializer`).
//! 2. The group's leader, at each pass of its node's catalogue follower,
//!    makes the group's voters the catalogue's nodes (`follow_placement`):
//!    `to` is added as a learner, let catch up, and one joint change
//!    replaces the voters. A leader that is leaving hands leadership to a
//!    voter that stays first, which goes on. The log stays writable: the
//!    old majority and the new one overlap, and learners do not vote.
//! 3. Group 0's leader asks the log's replicas for their committed group
//!    membership (`GET /raft/{group}/membership`, answered by
//!    `group_membership`); once one shows the catalogue's nodes as the
//!    voters and `from` gone, it proposes `moved`, after which `from` is a
//!    former holder: its node closes and removes its replica, and the log
//!    is never placed on it again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::catalogue::{CatalogueChange, PlacedLog, Refusal};
use super::error::ClusterError;
use super::node::Cluster;
use super::types::NodeId;

/// A replica's committed view of its group's membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembership {
    pub group: u64,
    pub node_id: NodeId,
    /// The voters, when the committed membership is not a joint one.
    pub voters: Option<BTreeSet<NodeId>>,
    /// Every node of it, voters and learners.
    pub nodes: BTreeSet<NodeId>,
}

impl GroupMembership {
    /// Whether the group is exactly `placed`'s nodes, `from` gone.
    fn settled(&self, placed: &PlacedLog, from: NodeId) -> bool {
        let wanted: BTreeSet<NodeId> = placed.nodes.iter().copied().collect();
        self.group == placed.group && self.voters.as_ref() == Some(&wanted) && !self.nodes.contains(&from)
    }
}

/// How long a peer's membership answer is waited for.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a drain looks again while its replicas move.
const DRAIN_LOOK_EVERY: Duration = Duration::from_millis(500);
/// The task of `finish_moves` in `Moving` (group ids of named logs start at 1).
const FINISHING: u64 = 0;

/// The task moving the replicas of nodes down past `--replica-timeout-ms`.
const REPLACING: u64 = u64::MAX;
/// The task proposing a move for balance.
const BALANCING: u64 = u64::MAX - 1;
/// How long a drain's mark on its node lasts unless the drain looks again
/// (a client that gave up on a `202` does not keep new replicas off the node).
pub(super) const DRAIN_MARK_LASTS: Duration = Duration::from_secs(120);
/// How long a new replica is waited for before the pass gives up (the
/// next pass tries again, with the catalogue as it is then).
const MOVE_CATCH_UP_WAIT: Duration = Duration::from_secs(120);
/// How long a removed node's hand-over of a group it leads may take.
const YIELD_WAIT: Duration = Duration::from_secs(5);
/// How many groups a removed node hands over in one pass at most.
const YIELDS_A_PASS: usize = 32;
/// How many candidate logs one balancing pass asks about at most.
const BALANCE_TRIES: usize = 8;

/// What the catalogue follower's passes share about moves: the groups
/// whose placement a task of this node follows now (one task a group,
/// and `FINISHING`, `REPLACING`), and on group 0's leader since when each
/// member has been unreachable (in memory: a new leader starts the clock
/// again, which only delays a move).
#[derive(Clone, Debug, Default)]
pub struct Moving {
    tasks: Arc<Mutex<BTreeSet<u64>>>,
    down_since: Arc<Mutex<BTreeMap<NodeId, Instant>>>,
}

impl Moving {
    fn start(&self, task: u64) -> bool {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).insert(task)
    }

    fn end(&self, task: u64) {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).remove(&task);
    }

    /// The members unreachable for at least `timeout`, given who is
    /// unreachable now (None: this node does not lead group 0).
    fn down_for(&self, unreachable: Option<BTreeSet<NodeId>>, timeout: Duration) -> Vec<NodeId> {
        let mut since = self.down_since.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(unreachable) = unreachable else {
            since.clear();
            return Vec::new();
        };
        since.retain(|id, _| unreachable.contains(id));
        for id in unreachable {
            since.entry(id).or_insert_with(Instant::now);
        }
        since
            .iter()
            .filter(|(_, at)| at.elapsed() >= timeout)
            .map(|(id, _)| *id)
            .collect()
    }
}

impl Cluster {
    /// At each pass of the catalogue follower (called on group 0): the
    /// groups this node leads whose log has a replica leaving follow their
    /// placement, and group 0's leader records the moves that are done.
    /// Each in a task of its own; a pass never waits for one.
    pub fn drive_moves(&self, moving: &Moving) {
        debug_assert_eq!(self.inner.group, 0);
        // A removed node's catalogue is stale: its groups' leaders elsewhere move them.
        if self.removed().is_some() {
            return;
        }
        let catalogue = self.catalogue();
        let mut any = false;
        for placed in catalogue.logs.into_values().filter(|p| !p.leaving.is_empty()) {
            any = true;
            let Some(group) = self.group(placed.group) else {
                continue;
            };
            if group.current_leader() != Some(self.id()) || !moving.start(placed.group) {
                continue;
            }
            let (cluster, moving) = (self.clone(), moving.clone());
            tokio::spawn(async move {
                if let Err(e) = group.follow_placement(&cluster, &placed).await {
                    tracing::warn!(group = placed.group, error = %e, "moving a replica: trying again at the next pass");
                }
                moving.end(placed.group);
            });
        }
        if any && self.must_lead().is_ok() && moving.start(FINISHING) {
            let (cluster, moving) = (self.clone(), moving.clone());
            tokio::spawn(async move {
                cluster.finish_moves().await;
                moving.end(FINISHING);
            });
        }
        let unreachable = self.unreachable_members();
        {
            // A mark outlives neither the node's membership, nor this node's leadership, nor
            // the drains that renew it.
            let members = self.members();
            let leads = self.raft().metrics().borrow_watched().current_leader == Some(self.id());
            let mut draining = self.inner.draining.lock().unwrap_or_else(PoisonError::into_inner);
            draining.retain(|id, at| leads && members.contains_key(id) && at.elapsed() < DRAIN_MARK_LASTS);
        }
        // Balance only with every member in touch (the others' replicas are the timeout's) and
        // no drain under way.
        let quiet = unreachable.as_ref().is_some_and(BTreeSet::is_empty) && self.draining().is_empty();
        if quiet && moving.start(BALANCING) {
            let (cluster, moving) = (self.clone(), moving.clone());
            tokio::spawn(async move {
                cluster.balance().await;
                moving.end(BALANCING);
            });
        }
        let leading = unreachable.is_some();
        let down = moving.down_for(unreachable, self.inner.config.replica_timeout);
        let mut lost: BTreeSet<NodeId> = down
            .into_iter()
            .filter(|id| !self.logs_placed_on(*id).is_empty())
            .collect();
        if leading {
            lost.extend(self.placed_on_non_members());
        }
        if !lost.is_empty() && moving.start(REPLACING) {
            let (cluster, moving) = (self.clone(), moving.clone());
            tokio::spawn(async move {
                for id in lost {
                    tracing::warn!(node_id = id, timeout = ?cluster.inner.config.replica_timeout,
                        "a member unreachable past --replica-timeout-ms, or no longer a member: moving its replicas of named logs");
                    if let Err(e) = cluster.move_replicas_off(id, false).await {
                        tracing::warn!(node_id = id, error = %e, "could not move an unreachable member's replicas");
                    }
                }
                moving.end(REPLACING);
            });
        }
    }

    /// On a node the cluster removed: a named group it leads is handed to
    /// another voter, so that a leader that hears the catalogue's moves
    /// finishes them (a removed node hears no catalogue change: a group it
    /// went on leading would never move). A log with no other voter stays
    /// led here.
    pub fn yield_named_groups(&self) {
        if self.removed().is_none() {
            return;
        }
        // Elections stay on (a removed replica still votes and may be needed to elect one):
        // pre-vote keeps it from standing while a leader is in touch, and a group it wins
        // anyway is handed over at the next pass. At most `YIELDS_A_PASS` at once.
        // Only groups with another voter in touch: one that cannot be handed over (a log of
        // one replica) must not hold a place among the pass's hand-overs.
        let me = self.id();
        let led = self.groups_held().into_iter().filter(|g| {
            g.current_leader() == Some(me)
                && g.status()
                    .members
                    .iter()
                    .any(|m| m.voter && m.id != me && m.reachable == Some(true))
        });
        for group in led.take(YIELDS_A_PASS) {
            tokio::spawn(async move { group.step_down(YIELD_WAIT).await });
        }
    }

    /// On group 0's leader: one move towards even replica counts among the
    /// voters (a node that joined takes its share, and with it leaders).
    async fn balance(&self) {
        let catalogue = self.catalogue();
        let mut chosen = None;
        // Only a log whose group was founded: a move takes the founding from its first node.
        for change in catalogue
            .balancing_moves(&self.voter_ids())
            .into_iter()
            .take(BALANCE_TRIES)
        {
            let CatalogueChange::Move { name, .. } = &change else {
                continue;
            };
            if let Some(placed) = catalogue.logs.get(name)
                && self.group_founded(placed).await
            {
                chosen = Some(change);
                break;
            }
        }
        let Some(change) = chosen else {
            return;
        };
        tracing::info!(?change, "evening out replicas across the nodes");
        match self.change_catalogue(change).await {
            Ok(Ok(_)) => {}
            Ok(Err(refusal)) => tracing::debug!(%refusal, "a balancing move was refused"),
            Err(e) => tracing::warn!(error = %e, "could not propose a balancing move"),
        }
    }

    /// On group 0's leader, the members it has not heard from within the
    /// lease; None elsewhere.
    fn unreachable_members(&self) -> Option<BTreeSet<NodeId>> {
        let metrics = self.raft().metrics().borrow_watched().clone();
        if self.leader_in_touch(&metrics) != Some(self.id()) {
            return None;
        }
        let members = self.members().into_keys();
        Some(members.filter(|id| !self.reachable(&metrics, *id)).collect())
    }

    /// Nodes logs are placed on that are not members of the cluster (removed
    /// with `?force=true`, a removal that raced a create, an id given up for
    /// a new one): their replicas move at once.
    fn placed_on_non_members(&self) -> BTreeSet<NodeId> {
        let members = self.members();
        let catalogue = self.catalogue();
        let placed = catalogue.logs.values().flat_map(|p| p.nodes.iter().copied());
        placed.filter(|id| !members.contains_key(id)).collect()
    }

    /// The logs whose nodes include `id` (not counting where it is leaving).
    fn logs_placed_on(&self, id: NodeId) -> Vec<String> {
        let catalogue = self.catalogue();
        let placed = catalogue.logs.into_iter().filter(|(_, p)| p.nodes.contains(&id));
        placed.map(|(name, _)| name).collect()
    }

    /// On group 0's leader: moves every replica off node `id` (the first
    /// half of removing it), waiting up to `within`; answers the logs that
    /// still hold one there (none: done).
    pub async fn drain(&self, id: NodeId, within: Duration) -> Result<Vec<String>, ClusterError> {
        self.must_lead()?;
        let drained = self.drain_marked(id, within).await;
        if drained.is_err() {
            self.end_drain(id);
        }
        drained
    }

    /// Marks node `id` as being drained, from now (renewed at each look).
    fn mark_draining(&self, id: NodeId) {
        let mut marks = self.inner.draining.lock().unwrap_or_else(PoisonError::into_inner);
        marks.insert(id, Instant::now());
    }

    /// Unmarks node `id` (its removal is done or failed): new replicas may go there.
    pub fn end_drain(&self, id: NodeId) {
        self.inner
            .draining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    async fn drain_marked(&self, id: NodeId, within: Duration) -> Result<Vec<String>, ClusterError> {
        let deadline = Instant::now() + within;
        loop {
            self.mark_draining(id);
            let held = self.move_replicas_off(id, true).await?;
            if held.is_empty() || Instant::now() >= deadline {
                return Ok(held);
            }
            self.finish_moves().await;
            tokio::time::sleep(DRAIN_LOOK_EVERY).await;
        }
    }

    /// This replica's committed view of its group (any group, 0 included).
    pub fn group_membership(&self) -> GroupMembership {
        let metrics = self.raft().metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.committed_membership_config.membership();
        let joint = membership.get_joint_config();
        GroupMembership {
            group: self.inner.group,
            node_id: self.id(),
            voters: (joint.len() == 1).then(|| joint[0].clone()),
            nodes: membership.nodes().map(|(id, _)| *id).collect(),
        }
    }

    /// On a named group's leader: makes the group's voters `placed.nodes`
    /// (step 2 of the module doc). `cluster` is group 0, where the nodes'
    /// URLs are. Nothing when they are already.
    pub async fn follow_placement(&self, cluster: &Cluster, placed: &PlacedLog) -> Result<(), ClusterError> {
        debug_assert!(self.inner.group > 0, "group 0's membership is the operator's");
        self.must_lead()?;
        let wanted: BTreeSet<NodeId> = placed.nodes.iter().copied().collect();
        let everyone = cluster.members();
        for node in &wanted {
            if self.members().contains_key(node) {
                continue;
            }
            let (member, _) = everyone.get(node).ok_or(ClusterError::NoSuchMember(*node))?;
            tracing::info!(
                group = placed.group,
                node_id = node,
                "moving a replica: adding a learner"
            );
            self.wake_to_propose().await;
            self.raft()
                .add_learner(*node, member.clone(), false)
                .await
                .map_err(|e| self.change_error(e))?;
        }
        // Caught up to the leader's last entry as the wait begins: under steady writes a
        // learner trails by what is in flight, however close it is.
        let last = self.raft().metrics().borrow_watched().last_log_index.unwrap_or(0);
        for node in &wanted {
            if self.members().get(node).is_some_and(|(_, voter)| !voter) {
                self.wait_matched(*node, last, MOVE_CATCH_UP_WAIT).await?;
            }
        }
        let turn = self.inner.changing.lock().await;
        if !wanted.contains(&self.id()) {
            // A log of one replica has no voter that stays to hand over to:
            // the new one becomes a voter beside this one first.
            let mut with_me = wanted.clone();
            with_me.insert(self.id());
            self.change(|members| {
                let stays = members.iter().any(|(id, (_, voter))| *voter && wanted.contains(id));
                (!stays).then(|| ChangeMembers::ReplaceAllVoters(with_me.clone()))
            })
            .await?;
            drop(turn);
            return self.hand_over_to_a_stayer(&wanted).await;
        }
        self.change(|members| {
            let voters: BTreeSet<NodeId> = members.iter().filter(|(_, (_, v))| *v).map(|(id, _)| *id).collect();
            (voters != wanted).then(|| {
                tracing::info!(group = placed.group, from = ?voters, to = ?wanted, "moving a replica: replacing the voters");
                ChangeMembers::ReplaceAllVoters(wanted.clone())
            })
        })
        .await?;
        self.change(|members| {
            let extra: BTreeSet<NodeId> = members.keys().filter(|id| !wanted.contains(id)).copied().collect();
            (!extra.is_empty()).then_some(ChangeMembers::RemoveNodes(extra))
        })
        .await
    }

    /// A leader whose replica is leaving hands the group to a voter that
    /// stays (the most caught up), which finishes the move.
    async fn hand_over_to_a_stayer(&self, wanted: &BTreeSet<NodeId>) -> Result<(), ClusterError> {
        let status = self.status();
        let next = status
            .members
            .iter()
            .filter(|m| m.voter && wanted.contains(&m.id) && m.reachable == Some(true))
            .max_by_key(|m| m.match_offset)
            .map(|m| m.id)
            .ok_or_else(|| ClusterError::Timeout("no voter that stays is in touch to take the group over".into()))?;
        tracing::info!(
            group = self.inner.group,
            to = next,
            "moving this node's replica away: handing the group over"
        );
        self.transfer_leadership(next).await
    }

    /// On group 0's leader: proposes a move of every replica placed on
    /// `id`; answers the logs that still hold a replica there. Each move is
    /// planned on the catalogue as the ones before it leave it (so that a
    /// drain spreads its replicas). A log whose group was never founded
    /// (its first node never came to initialize it) is left where it is: a
    /// move would leave it no node to found it. `strict` (a drain): nothing
    /// is proposed when some log has nowhere to go; else those logs are
    /// skipped and the others move.
    pub async fn move_replicas_off(&self, id: NodeId, strict: bool) -> Result<Vec<String>, ClusterError> {
        self.must_lead()?;
        // Not onto a node that cannot take it now.
        let unreachable = self.unreachable_members().unwrap_or_default();
        let voters: BTreeSet<NodeId> = self
            .voter_ids()
            .into_iter()
            .filter(|v| *v != id && !unreachable.contains(v))
            .collect();
        let members: BTreeSet<NodeId> = self.members().into_keys().collect();
        let mut plan = self.catalogue();
        let mut moves = Vec::new();
        for (name, placed) in plan.logs.clone() {
            if !placed.nodes.contains(&id) {
                continue;
            }
            if !self.group_founded(&placed).await {
                tracing::warn!(log = %name, group = placed.group, node_id = id,
                    "not moving a replica of a log whose group no replica says was founded");
                continue;
            }
            let to = match plan.place_move(&name, id, &voters) {
                Ok(to) => to,
                Err(e) if strict => return Err(ClusterError::CannotMove(e.to_string())),
                Err(e) => {
                    tracing::warn!(log = %name, error = %e, "a replica has nowhere to move");
                    continue;
                }
            };
            let change = CatalogueChange::Move {
                name: name.clone(),
                group: placed.group,
                from: id,
                to,
            };
            // The plan's counts follow (a refusal here is the apply's own check).
            let _ = plan.apply(&change, &members);
            moves.push(change);
        }
        for change in moves {
            let CatalogueChange::Move { name, .. } = &change else {
                continue;
            };
            let name = name.clone();
            match self.change_catalogue(change).await? {
                Ok(_) | Err(Refusal::NotFound(_)) => {}
                // Another task moved it meanwhile (the timeout's, a drain asked twice).
                Err(_) if self.placed(&name).is_some_and(|p| !p.nodes.contains(&id)) => {}
                Err(refusal) if strict => return Err(ClusterError::CannotMove(refusal.to_string())),
                Err(refusal) => tracing::warn!(%refusal, "a move was refused"),
            }
        }
        Ok(self.logs_held_by(id))
    }

    /// Whether some replica of `placed` (here, or asked) holds a membership
    /// of its group: it was founded.
    async fn group_founded(&self, placed: &PlacedLog) -> bool {
        if self
            .group(placed.group)
            .is_some_and(|g| !g.group_membership().nodes.is_empty())
        {
            return true;
        }
        self.ask_replicas(placed, |answer| !answer.nodes.is_empty()).await
    }

    /// The logs with a replica on `id`, placed or leaving.
    pub fn logs_held_by(&self, id: NodeId) -> Vec<String> {
        let catalogue = self.catalogue();
        let held = catalogue.logs.into_iter().filter(|(_, placed)| placed.held_by(id));
        held.map(|(name, _)| name).collect()
    }

    /// On group 0's leader: proposes `moved` for every leaving replica its
    /// group no longer holds (step 3 of the module doc).
    pub async fn finish_moves(&self) {
        if self.must_lead().is_err() {
            return;
        }
        for (name, placed) in self.catalogue().logs {
            for from in placed.leaving.clone() {
                if !self.group_left(&placed, from).await {
                    continue;
                }
                let change = CatalogueChange::Moved {
                    name: name.clone(),
                    group: placed.group,
                    from,
                };
                match self.change_catalogue(change).await {
                    Ok(Ok(_)) => tracing::info!(log = %name, group = placed.group, from, "replica moved"),
                    Ok(Err(refusal)) => tracing::debug!(log = %name, %refusal, "a move's end was refused"),
                    Err(e) => tracing::warn!(log = %name, error = %e, "could not record a move's end"),
                }
            }
        }
    }

    /// Whether some replica of `placed` holds a committed membership of
    /// its nodes without `from`: here if this node holds one, else asked.
    async fn group_left(&self, placed: &PlacedLog, from: NodeId) -> bool {
        if let Some(group) = self.group(placed.group)
            && group.group_membership().settled(placed, from)
        {
            return true;
        }
        self.ask_replicas(placed, |answer| answer.settled(placed, from)).await
    }

    /// Whether one of the other nodes holding `placed` answers of its group
    /// what `shows` looks for (asked in turn, up to the first that does).
    async fn ask_replicas(&self, placed: &PlacedLog, shows: impl Fn(&GroupMembership) -> bool) -> bool {
        let members = self.members();
        let holders = placed.nodes.iter().chain(&placed.leaving).filter(|n| **n != self.id());
        for node in holders {
            let Some((member, _)) = members.get(node) else {
                continue;
            };
            let base = member.peer_url.as_deref().unwrap_or(&member.url);
            match self.ask_group_membership(base, placed.group).await {
                Ok(answer) if answer.node_id == *node && shows(&answer) => return true,
                Ok(_) => {}
                Err(e) => tracing::debug!(node_id = node, error = %e, "asking a replica for its group's membership"),
            }
        }
        false
    }

    async fn ask_group_membership(&self, base: &str, group: u64) -> Result<GroupMembership, String> {
        let path = format!("/raft/{group}/membership");
        super::formation::peer_get(&self.inner.config, base, &path, ASK_TIMEOUT).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(nodes: &[NodeId]) -> PlacedLog {
        PlacedLog {
            group: 4,
            settings: serde_json::json!({}),
            nodes: nodes.to_vec(),
            leaving: vec![1],
            former: vec![],
        }
    }

    #[test]
    fn a_move_is_done_when_the_committed_voters_are_the_nodes_and_the_old_one_is_gone() {
        let wanted = placed(&[4, 2, 3]);
        let seen = |voters: Option<&[NodeId]>, nodes: &[NodeId]| GroupMembership {
            group: 4,
            node_id: 2,
            voters: voters.map(|v| v.iter().copied().collect()),
            nodes: nodes.iter().copied().collect(),
        };
        assert!(seen(Some(&[2, 3, 4]), &[2, 3, 4]).settled(&wanted, 1));
        assert!(!seen(None, &[1, 2, 3, 4]).settled(&wanted, 1), "joint");
        assert!(
            !seen(Some(&[1, 2, 3]), &[1, 2, 3, 4]).settled(&wanted, 1),
            "learner added"
        );
        assert!(
            !seen(Some(&[2, 3, 4]), &[1, 2, 3, 4]).settled(&wanted, 1),
            "kept as a learner"
        );
        let mut other_group = seen(Some(&[2, 3, 4]), &[2, 3, 4]);
        other_group.group = 5;
        assert!(!other_group.settled(&wanted, 1));
    }
}
