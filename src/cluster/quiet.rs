//! Quiet groups: a named log's group with no traffic stops its Raft timer,
//! and one pulse a pair of nodes stands for every quiet group's heartbeats.
//!
//! openraft ticks every group on every node 50 times a second (a tick
//! every `heartbeat * 13/64`), and a leader heartbeats its followers 10
//! times a second: 1,000 idle logs kept three nodes on two cores busy. A
//! tick only drives timeouts (a follower's election, a leader's
//! heartbeat), so turning it off (`runtime_config().tick(false)`, which
//! parks openraft's timer task) changes no decision Raft makes: a wrong
//! quiet costs a slower failover, a wrong wake an election at most.
//!
//! - **A follower** whose group saw no new entry, commit, term or leader for
//!   `FOLLOWER_IDLE` while it hears its leader turns its tick off: it then
//!   never stands for election on its own. It wakes (tick on) on an append
//!   carrying entries, a vote, a snapshot or a hand-over, and when it has
//!   not heard its leader for the lease (`contact.rs`) and a little more
//!   (`unheard_after`), and then elects as any follower does.
//! - **A leader** whose group saw nothing change for `LEADER_IDLE` (longer
//!   than a follower's, so that its followers went quiet first), every
//!   voter holding all it has and committed, no learner and no joint
//!   membership, offers to go quiet: it names the group in its pulses
//!   (`pulses`) while it still heartbeats, and turns its tick off (no more
//!   heartbeats) only once every voter answered that it follows the group
//!   quietly under it, in that term. A voter that does not (an older node
//!   without the route, one that woke, one the pulse does not reach) keeps
//!   the group heartbeating: the offer is withdrawn, or a quiet group woken.
//!   A quiet leader is in touch while a majority (itself one) answers its
//!   pulses (`pulse_silence`, `contact.rs`); a follower counts the pulse as
//!   its leader's heartbeat.
//! - Before it proposes anything (a write, a membership change, a
//!   hand-over) a leader whose openraft lease is lapsing wakes
//!   (`wake_to_propose`): tick on, one heartbeat, and a wait for a
//!   majority's answer, because openraft refuses proposals once its last
//!   acknowledged heartbeat is older than its lease.
//! - A quiet node refuses pre-votes while it is in touch with its leader
//!   (or, leading, with a majority), which openraft's own lease did while
//!   heartbeats came ten times a second: a node back from a partition does
//!   not depose a healthy quiet leader.
//! - **A start is dormant** (`dormant`): a named group opens with its tick
//!   off and waits for a leader before it stands itself.
//!
//! Group 0 never goes quiet: its heartbeats are how the planner sees which
//! nodes are up, and it is one group. One task on group 0 (`run`) looks at
//! every named group this node holds every `PASS` and sends the pulses.

mod dormant;
mod pulses;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::{Instant as _, RaftMetrics};

use super::node::Cluster;
use super::types::{NodeId, TypeConfig};

pub use pulses::{QUIET_PATH, QuietAnswer, QuietPulse};

/// How long a follower's group sees nothing change before it goes quiet.
const FOLLOWER_IDLE: Duration = Duration::from_secs(1);
/// How long a leader's group sees nothing change before it offers to go
/// quiet (its voters answer for themselves: this only gives them the time).
const LEADER_IDLE: Duration = Duration::from_secs(2);
/// How long an offer waits for every voter's answer before it is withdrawn.
const OFFER_WAIT: Duration = Duration::from_secs(2);
/// How often the groups are looked at and the pulses sent.
const PASS: Duration = Duration::from_millis(250);
/// A lease renewal that ended this lately stands for the writes that waited for it.
const RENEWED_LATELY: Duration = Duration::from_millis(100);
/// Groups a node leads quietly (or offers to) at most: bounds a pulse.
const MAX_QUIET_LED: usize = 20_000;
/// Quiet groups on this node; wakes.
pub const QUIET_GROUPS: &str = "distlog_raft_quiet_groups";
pub const WAKES: &str = "distlog_raft_wakes_total";
/// Dormant groups brought forward to stand (`dormant::stand_if_ahead_of`).
pub const STOOD_FOR_BEHIND: &str = "distlog_raft_dormant_brought_forward_total";

/// A group's quiet state on this node (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Quiet {
    /// The tick is off.
    on: AtomicBool,
    /// Counts wakes: going quiet is given up if one came since it was decided.
    wakes: AtomicU64,
    /// Held while the tick is turned off or on, with `on`.
    turning: Mutex<()>,
    /// One lease renewal at a time (`wake_to_propose`), and when the last
    /// one ended: those that waited for it do not each try again.
    renewing: tokio::sync::Mutex<Option<Instant>>,
    /// What the last pass saw, and since when it is so.
    seen: Mutex<Option<(Look, Instant)>>,
    /// On a leader: its offer to go quiet.
    offer: Mutex<Option<Offer>>,
    /// On a leader: when each voter's answer to a pulse last named the
    /// group (stamped when the pulse was sent).
    acks: Mutex<BTreeMap<NodeId, Instant>>,
    /// See `dormant`.
    dormant: Mutex<Option<dormant::Dormant>>,
    /// On group 0: when the next dormant group of this node may wake.
    next_wake: Mutex<Option<Instant>>,
    /// The group's Raft core stopped (`metrics::count_leader_changes`): its
    /// last metrics may still say it leads, and no pulse may say so for it.
    core_gone: AtomicBool,
}

/// A leader's offer to go quiet: since when, in which term, and the wakes
/// counted when it was made.
#[derive(Clone, Copy, Debug)]
struct Offer {
    at: Instant,
    term: u64,
    wakes: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Quiet {
    pub(super) fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Acquire)
    }

    pub(super) fn core_stopped(&self) {
        self.core_gone.store(true, Ordering::Release);
        *lock(&self.offer) = None;
    }

    fn core_gone(&self) -> bool {
        self.core_gone.load(Ordering::Acquire)
    }
}

/// What changes in a group that is not idle.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Look {
    state: ServerState,
    term: u64,
    leader: Option<NodeId>,
    last_log: Option<u64>,
    committed: Option<u64>,
    applied: Option<u64>,
    /// A leader's voters' matched indexes, by node.
    matched: Vec<(NodeId, Option<u64>)>,
}

impl Look {
    fn of(metrics: &RaftMetrics<TypeConfig>) -> Look {
        Look {
            state: metrics.state,
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log: metrics.last_log_index,
            committed: metrics.local_committed.map(|c| c.index),
            applied: metrics.last_applied.map(|a| a.index),
            matched: metrics
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(n, m)| (*n, m.map(|m| m.index))).collect())
                .unwrap_or_default(),
        }
    }
}

/// Looks at this node's named groups and sends the pulses every `PASS`
/// until group 0 stops; then wakes them (nothing would wake them after).
pub(super) async fn run(cluster: Cluster) {
    describe_metrics();
    let pulsing = pulses::Pulsing::default();
    loop {
        tokio::time::sleep(PASS).await;
        if cluster.raft().metrics().borrow_watched().running_state.is_err() {
            break;
        }
        let groups = cluster.groups_held();
        let mut led = groups.iter().filter(|g| g.quietly_led_term().is_some()).count();
        for group in &groups {
            group.quiet_pass(&mut led);
        }
        let quiet = groups.iter().filter(|g| g.inner.quiet.is_on()).count();
        metrics::gauge!(QUIET_GROUPS).set(quiet as f64);
        pulses::send(&cluster, &groups, &pulsing);
    }
    for group in cluster.groups_held() {
        group.wake("cluster group stopped");
    }
}

fn describe_metrics() {
    metrics::describe_gauge!(
        QUIET_GROUPS,
        "Named logs' Raft groups whose timer is off on this node for want of traffic, led or followed (docs/named-logs.md)."
    );
    metrics::describe_counter!(
        WAKES,
        "Times a quiet group's timer was turned on again, by reason (a proposal, entries, a vote, a hand-over, unheard, ...)."
    );
    metrics::describe_counter!(
        STOOD_FOR_BEHIND,
        "Dormant named groups brought forward to stand for election: they refused a candidate whose log is behind theirs."
    );
}

/// What a pass does with one group.
enum Step {
    Stay,
    /// A follower turns its tick off.
    GoQuiet,
    /// A leader names the group in its pulses.
    Offer(u64),
    Withdraw,
    Wake(&'static str),
}

impl Cluster {
    /// One look at this (named) group. `led`: the groups this node leads
    /// quietly or offers to, counted up as offers are made.
    fn quiet_pass(&self, led: &mut usize) {
        let wakes = self.inner.quiet.wakes();
        let step = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow_watched();
            self.quiet_step(&metrics, Instant::now())
        };
        let quiet = &self.inner.quiet;
        match step {
            Step::Stay => {}
            Step::GoQuiet => self.turn_quiet(wakes),
            Step::Offer(_) if *led >= MAX_QUIET_LED => {}
            Step::Offer(term) => {
                *led += 1;
                lock(&quiet.acks).clear();
                *lock(&quiet.offer) = Some(Offer {
                    at: Instant::now(),
                    term,
                    wakes,
                });
            }
            Step::Withdraw => self.withdraw_offer(),
            Step::Wake(why) => self.wake(why),
        }
    }

    fn quiet_step(&self, metrics: &RaftMetrics<TypeConfig>, now: Instant) -> Step {
        let look = Look::of(metrics);
        let quiet = &self.inner.quiet;
        if let Some(step) = self.dormant_step(metrics, now) {
            *lock(&quiet.seen) = Some((look, now));
            return step;
        }
        let unchanged_for = {
            let mut seen = lock(&quiet.seen);
            match seen.as_ref() {
                Some((was, since)) if *was == look => now.saturating_duration_since(*since),
                _ => {
                    *seen = Some((look.clone(), now));
                    Duration::ZERO
                }
            }
        };
        let leading = metrics.current_leader == Some(self.inner.id) && metrics.state == ServerState::Leader;
        let silence = self.leader_silence(metrics);
        let in_touch = silence.is_some_and(|s| s < self.leader_lease());
        if quiet.is_on() {
            return if unchanged_for == Duration::ZERO {
                // Entries, a new term or leader: not idle any more.
                Step::Wake("changed")
            } else if leading && !in_touch {
                // No majority answers its pulses (a partition, a stopped peer).
                Step::Wake("unanswered")
            } else if !leading && silence.is_none_or(|s| s >= self.unheard_after()) {
                Step::Wake("unheard")
            } else {
                Step::Stay
            };
        }
        if let Some(offer) = *lock(&quiet.offer) {
            let stale = unchanged_for == Duration::ZERO || offer.at.elapsed() >= OFFER_WAIT;
            return if stale || !leading { Step::Withdraw } else { Step::Stay };
        }
        if metrics.running_state.is_err() || self.node_removed() || !in_touch {
            return Step::Stay;
        }
        if leading {
            if unchanged_for < LEADER_IDLE || !self.leader_may_go_quiet(metrics) {
                return Step::Stay;
            }
            let alone = metrics
                .membership_config
                .membership()
                .voter_ids()
                .all(|v| v == self.inner.id);
            // A lone voter has nobody to ask.
            return if alone {
                Step::GoQuiet
            } else {
                Step::Offer(metrics.current_term)
            };
        }
        let following = matches!(metrics.state, ServerState::Follower | ServerState::Learner)
            && metrics.current_leader.is_some_and(|l| l != self.inner.id);
        let settled = look.last_log == look.committed && look.applied == look.committed;
        if following && unchanged_for >= FOLLOWER_IDLE && settled {
            return Step::GoQuiet;
        }
        Step::Stay
    }

    /// How long a quiet follower goes unheard before it wakes: the lease,
    /// two passes (a pulse late by one), and a spread a group (its
    /// followers do not all stand at once when a leader's node dies).
    fn unheard_after(&self) -> Duration {
        let longest = self.inner.config.election_timeout.1.as_millis() as u64;
        self.leader_lease() + PASS * 2 + Duration::from_millis(stand_spread(self.inner.group, self.inner.id, longest))
    }

    /// Whether group 0 has removed this node (a named group's own removal
    /// mark is never set).
    fn node_removed(&self) -> bool {
        match self.inner.parent.as_ref().and_then(std::sync::Weak::upgrade) {
            Some(group0) => (Cluster { inner: group0 }).removed().is_some(),
            None => self.removed().is_some(),
        }
    }

    /// A leader offers to go quiet only when nothing is under way: all
    /// committed and applied, every voter holding all of it, one plain
    /// membership without learners.
    fn leader_may_go_quiet(&self, metrics: &RaftMetrics<TypeConfig>) -> bool {
        let membership = metrics.membership_config.membership();
        let last = metrics.last_log_index;
        let all_done =
            last == metrics.local_committed.map(|c| c.index) && last == metrics.last_applied.map(|a| a.index);
        let plain = membership.get_joint_config().len() == 1 && membership.learner_ids().next().is_none();
        let replication = metrics.replication.as_ref();
        let all_hold = membership.voter_ids().all(|voter| {
            voter == self.inner.id
                || replication
                    .and_then(|r| r.get(&voter))
                    .is_some_and(|m| m.map(|m| m.index) == last)
        });
        all_done && plain && all_hold
    }

    /// The term this node leads the group in, quietly or offering to.
    fn quietly_led_term(&self) -> Option<u64> {
        let quiet = &self.inner.quiet;
        let offered = lock(&quiet.offer).map(|o| o.term);
        if (!quiet.is_on() && offered.is_none()) || quiet.core_gone() {
            return None;
        }
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        let leading = metrics.current_leader == Some(self.inner.id) && metrics.state == ServerState::Leader;
        let term = metrics.current_term;
        (leading && offered.is_none_or(|t| t == term)).then_some(term)
    }

    /// Turns the tick off, unless a wake came since `wakes` was read.
    fn turn_quiet(&self, wakes: u64) {
        let quiet = &self.inner.quiet;
        let _turning = lock(&quiet.turning);
        *lock(&quiet.offer) = None;
        if quiet.wakes() != wakes || quiet.is_on() {
            return;
        }
        self.inner.raft.runtime_config().tick(false);
        quiet.on.store(true, Ordering::Release);
        tracing::debug!(group = self.inner.group, "quiet");
    }

    fn withdraw_offer(&self) {
        if lock(&self.inner.quiet.offer).take().is_some() {
            // Idle for `LEADER_IDLE` again before the next offer.
            *lock(&self.inner.quiet.seen) = None;
        }
    }

    /// Turns this group's tick on again if it was off (a follower's wake:
    /// it elects as usual from now on; a leader's: it heartbeats again),
    /// and gives up any offer or dormancy.
    pub(super) fn wake(&self, why: &'static str) {
        if self.inner.group == 0 {
            // Never quiet; and this is on every append of the default log's followers.
            return;
        }
        let quiet = &self.inner.quiet;
        let _turning = lock(&quiet.turning);
        quiet.wakes.fetch_add(1, Ordering::AcqRel);
        *lock(&quiet.seen) = None;
        *lock(&quiet.offer) = None;
        *lock(&quiet.dormant) = None;
        if quiet.on.swap(false, Ordering::AcqRel) {
            self.inner.raft.runtime_config().tick(true);
            metrics::counter!(WAKES, "reason" => why).increment(1);
            tracing::debug!(group = self.inner.group, why, "woke");
        }
    }

    /// Before a leader proposes: if its openraft lease is lapsing (a quiet
    /// or just woken group), wakes it, heartbeats, and waits (up to the
    /// longest election timeout) for a majority to answer, since openraft
    /// refuses a proposal once the last answered heartbeat is older than
    /// its lease. A no-op on group 0, on a follower, and on a busy leader.
    pub(super) async fn wake_to_propose(&self) {
        if self.inner.group == 0 || !self.lease_lapsing() {
            return;
        }
        let mut last = self.inner.quiet.renewing.lock().await;
        if !self.lease_lapsing() || last.is_some_and(|at| at.elapsed() < RENEWED_LATELY) {
            // Renewed, or tried by the one this waited for: a leader cut
            // off is refused by openraft at once, not after each waiter's try.
            return;
        }
        // First: a caller that gives up leaves the group awake, not half so.
        self.wake("propose");
        let asked = Instant::now();
        let _ = self.inner.raft.trigger().heartbeat().await;
        let id = self.inner.id;
        let answered = self
            .inner
            .raft
            .wait(Some(self.inner.config.election_timeout.1))
            .metrics(
                |m| {
                    m.current_leader != Some(id)
                        || m.last_quorum_acked
                            .as_ref()
                            .is_some_and(|acked| acked.into_inner().elapsed() < asked.elapsed())
                },
                "a majority answered the wake's heartbeat",
            )
            .await;
        if answered.is_err() {
            tracing::debug!(
                group = self.inner.group,
                "no majority answered a woken leader's heartbeat"
            );
        }
        *last = Some(Instant::now());
    }

    /// On a leader of more than itself: whether openraft's lease (the
    /// longest election timeout past the last heartbeat a majority
    /// answered) is within two heartbeats of lapsing, or the group is quiet.
    fn lease_lapsing(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        if metrics.current_leader != Some(self.inner.id) || metrics.state != ServerState::Leader {
            return false;
        }
        if metrics
            .membership_config
            .membership()
            .voter_ids()
            .all(|v| v == self.inner.id)
        {
            return false;
        }
        let config = &self.inner.config;
        let longest = config.election_timeout.1;
        let renew_after = longest.saturating_sub(config.heartbeat * 2).max(longest / 2);
        self.inner.quiet.is_on()
            || metrics
                .last_quorum_acked
                .as_ref()
                .is_none_or(|acked| acked.into_inner().elapsed() >= renew_after)
    }

    /// A pre-vote a quiet node would have granted is refused while it is
    /// in touch with its leader (see the module doc).
    pub(super) fn refuses_pre_vote(&self) -> bool {
        self.inner.quiet.is_on() && self.current_leader().is_some()
    }
}

/// A quiet follower's wait before it stands, past the lease, in [0, `longest_ms`).
fn stand_spread(group: u64, node: NodeId, longest_ms: u64) -> u64 {
    mix(group ^ node.rotate_left(32)) % longest_ms.max(1)
}

/// splitmix64's finalizer: spreads neighbouring group ids over the range.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per group, a quiet follower stands within the longest election
    /// timeout past the lease and two passes, and the groups of one leader
    /// do not all stand at the same moment.
    #[test]
    fn quiet_followers_stand_spread_over_an_election_timeout() {
        let spread = |group: u64, id: u64| stand_spread(group, id, 600);
        assert!((1..=1000).all(|g| spread(g, 1) < 600));
        let spreads: std::collections::BTreeSet<u64> = (1..=100).map(|g| spread(g, 2) / 50).collect();
        assert!(
            spreads.len() >= 10,
            "100 groups fall in {} of 12 slots of 50 ms",
            spreads.len()
        );
        assert_ne!(spread(7, 2), spread(7, 3), "two followers of one group stand apart");
    }
}
