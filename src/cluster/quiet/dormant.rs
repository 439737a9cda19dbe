//! A named group's start is dormant: it opens with its tick off and waits
//! for a leader before it stands itself. It wakes when it hears a leader's
//! entries or a candidate's vote (`rpc.rs`), becomes a quiet follower when
//! it hears a leader, or stands at a time set by its node's place in the
//! log's placement (`dormant_for`: the preferred leader first, the others
//! `DORMANT_STEP` apart, spread over `DORMANT_SPREAD`), at most one wake
//! every `WAKE_EVERY` a node. A node that starts with 1,000 groups then
//! has each elected by one candidate, not 1,000 elections of three
//! candidates each at once, which starved two cores and went on timing out.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};

use super::{Cluster, Quiet, Step, TypeConfig, lock};
use crate::cluster::types::LogId;

/// How long a group started here waits, per place after the first in its
/// log's placement, before it stands for election unheard.
const DORMANT_STEP: Duration = Duration::from_secs(10);
/// Its spread within a place.
const DORMANT_SPREAD: Duration = Duration::from_millis(1000);
/// How long a group started here waits before `dormant_for` says more.
const DORMANT_FIRST: Duration = Duration::from_secs(3);
/// At most one dormant group a node wakes this often.
const WAKE_EVERY: Duration = Duration::from_millis(20);

/// A dormant group's time to stand, and whether it is its node's wake
/// slot (taken once, `Quiet::wake_slot`) or the time to take one.
#[derive(Clone, Copy, Debug)]
pub(in crate::cluster) struct Dormant {
    at: Instant,
    slotted: bool,
    /// This node's place in the log's placement, once `dormant_for` said.
    place: Option<usize>,
}

impl Dormant {
    /// What a dormant group is at `now` (None: it wakes). Its slot is taken
    /// once (`slot`): a group that asked again at its slot would go behind
    /// every group that asked since, and under load none would wake.
    fn next(self, now: Instant, slot: impl FnOnce(Instant) -> Instant) -> Option<Dormant> {
        if now < self.at {
            return Some(self);
        }
        if self.slotted {
            return None;
        }
        let at = slot(self.at);
        (at > now).then_some(Dormant {
            at,
            slotted: true,
            place: self.place,
        })
    }
}

impl Dormant {
    /// This wait moved to `at` if that is sooner. Never once it holds its
    /// node's wake slot: a slot given up is not given back (`wake_slot`
    /// only moves on), and the candidate behind asks again at each of its
    /// election timeouts; each such ask would send the group to the back
    /// of its node's queue again, which at a restart of many groups grows
    /// faster than it drains.
    fn brought_forward_to(self, at: Instant) -> Option<Dormant> {
        (!self.slotted && at < self.at).then_some(Dormant {
            at,
            slotted: false,
            place: self.place,
        })
    }
}

impl Quiet {
    /// A named group as it starts: tick off (openraft's config), dormant.
    pub(in crate::cluster) fn dormant_at_start() -> Quiet {
        let quiet = Quiet::default();
        quiet.on.store(true, Ordering::Release);
        *lock(&quiet.dormant) = Some(Dormant {
            at: Instant::now() + DORMANT_FIRST,
            slotted: false,
            place: None,
        });
        quiet
    }

    /// On group 0: the time a dormant group due at `due` may wake, taken.
    fn wake_slot(&self, due: Instant) -> Instant {
        let mut next = lock(&self.next_wake);
        let slot = next.map_or(due, |n| n.max(due));
        *next = Some(slot + WAKE_EVERY);
        slot
    }
}

impl Cluster {
    /// A dormant group: stays so until due, then takes its node's next
    /// wake; one that hears a leader is a quiet follower. None: not
    /// dormant.
    pub(super) fn dormant_step(&self, metrics: &RaftMetrics<TypeConfig>, now: Instant) -> Option<Step> {
        let quiet = &self.inner.quiet;
        let mut dormant = lock(&quiet.dormant);
        let due = (*dormant)?;
        if !quiet.is_on() {
            *dormant = None;
            return None;
        }
        let following = matches!(metrics.state, ServerState::Follower | ServerState::Learner)
            && metrics.current_leader.is_some_and(|l| l != self.inner.id);
        if following && self.inner.contact.since().is_some_and(|s| s < self.leader_lease()) {
            *dormant = None;
            return Some(Step::Stay);
        }
        let group0 = self.inner.parent.as_ref().and_then(std::sync::Weak::upgrade);
        *dormant = due.next(now, |at| group0.as_ref().map_or(at, |g| g.quiet.wake_slot(at)));
        Some(if dormant.is_none() {
            Step::Wake("dormant")
        } else {
            Step::Stay
        })
    }

    /// A pre-vote this node refused, its log (`ours`) past the candidate's
    /// (`theirs`): a dormant group is brought forward rather than waiting its
    /// turn. At a restart of every node the node a log prefers may hold less
    /// than the others (they went on while it was down); Raft refuses it,
    /// and the others, a place or more behind it, waited `DORMANT_STEP` each
    /// with the log unled.
    ///
    /// Not all at once: every replica ahead refused the candidate, and two
    /// that stood together would contest the election the dormant start is
    /// there to spare. The next in the placement stands first (at its wake
    /// slot), each after it one longest election timeout later, by when it
    /// has most likely heard the winner and follows. Standing early costs
    /// an election at most (see `quiet`).
    pub(in crate::cluster) fn stand_if_ahead_of(&self, theirs: Option<&LogId>, ours: Option<&LogId>) {
        if ours <= theirs {
            return;
        }
        let mut dormant = lock(&self.inner.quiet.dormant);
        let Some(due) = dormant.as_mut() else {
            return;
        };
        let behind_the_next = due.place.unwrap_or(1).saturating_sub(1).min(16) as u32;
        let at = Instant::now() + self.inner.config.election_timeout.1 * behind_the_next;
        if let Some(sooner) = due.brought_forward_to(at) {
            *due = sooner;
            metrics::counter!(super::STOOD_FOR_BEHIND).increment(1);
        }
    }

    /// A dormant group started here waits by this node's `place` in its
    /// log's placement (0: the preferred leader) before it stands unheard.
    pub fn dormant_for(&self, place: usize) {
        let spread = super::mix(self.inner.group) % DORMANT_SPREAD.as_millis() as u64;
        let wait = DORMANT_STEP * place.min(16) as u32 + Duration::from_millis(spread);
        if let Some(due) = lock(&self.inner.quiet.dormant).as_mut() {
            *due = Dormant {
                at: Instant::now() + wait,
                slotted: false,
                place: Some(place),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review: a group that holds its wake slot keeps it when a candidate
    /// behind asks again (and again); one waiting its turn is brought
    /// forward, never back.
    #[test]
    fn a_group_is_brought_forward_only_before_it_holds_a_slot() {
        let start = Instant::now();
        let waiting = Dormant {
            at: start + Duration::from_secs(10),
            slotted: false,
            place: Some(1),
        };
        let sooner = waiting.brought_forward_to(start).expect("brought forward");
        assert_eq!((sooner.at, sooner.slotted, sooner.place), (start, false, Some(1)));
        assert!(
            waiting.brought_forward_to(start + Duration::from_secs(11)).is_none(),
            "never later"
        );
        let slotted = Dormant {
            at: start + Duration::from_millis(500),
            slotted: true,
            place: Some(1),
        };
        assert!(slotted.brought_forward_to(start).is_none(), "its slot is kept");
    }

    /// Review: 300 groups due at once on a node, looked at every pass of
    /// 250 ms, all wake in turn, one every `WAKE_EVERY` (a group that asked again
    /// for a slot at its slot went behind the others, and none woke).
    #[test]
    fn hundreds_of_groups_due_at_once_all_wake_in_turn() {
        let group0 = Quiet::default();
        let start = Instant::now();
        let mut dormant: Vec<Option<Dormant>> = vec![
            Some(Dormant {
                at: start,
                slotted: false,
                place: None,
            });
            300
        ];
        let mut woke = Vec::new();
        for pass in 0..100u32 {
            let now = start + Duration::from_millis(250) * pass;
            for (i, d) in dormant.iter_mut().enumerate() {
                let Some(due) = *d else { continue };
                *d = due.next(now, |at| group0.wake_slot(at));
                if d.is_none() {
                    woke.push((i, now));
                }
            }
        }
        assert_eq!(woke.len(), 300, "every group woke within 25 s");
        let last = woke.iter().map(|(_, at)| *at).max().unwrap();
        assert!(
            last - start <= WAKE_EVERY * 300 + Duration::from_millis(250),
            "{:?}",
            last - start
        );
    }

    #[test]
    fn dormant_wakes_are_spaced_on_a_node() {
        let group0 = Quiet::default();
        let due = Instant::now();
        let slots: Vec<Instant> = (0..4).map(|_| group0.wake_slot(due)).collect();
        for pair in slots.windows(2) {
            assert_eq!(pair[1] - pair[0], WAKE_EVERY);
        }
        let later = due + Duration::from_secs(1);
        assert_eq!(group0.wake_slot(later), later, "a slot long free is taken at once");
    }
}
