//! The pulse: one request a pass from a node to each other member, for
//! every group it leads quietly or offers to (`POST /raft/quiet`, a peer
//! route, the `cluster` action).
//!
//! Wire format, JSON: the request `{"led": [[group, term], ..]}` (the
//! groups of which the receiver is a voter, at most `MAX_PULSE_GROUPS`),
//! the answer `{"following": [[group, term], ..]}`: those of them the
//! receiver follows quietly under the sender in that term, each of which
//! it counts as its leader's heartbeat. The sender counts each named in
//! the answer as that voter's acknowledgement, stamped when the pulse was
//! sent (as openraft stamps heartbeats' answers); a voter's answer that
//! leaves a group out withdraws the offer or wakes the group, and a pulse
//! not answered withdraws the offers it carried.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::RaftMetrics;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::{Cluster, NodeId, TypeConfig, lock};
use crate::cluster::error::ClusterError;
use crate::cluster::network::{Routes, TARGET_HEADER};
use crate::cluster::sender::{self, Caller, SENDER_HEADER};

/// How long a pulse waits for its answer: well within the lease, so that
/// one lost pulse is followed by the next in time.
pub(super) const PULSE_TIMEOUT: Duration = Duration::from_millis(400);
/// Groups one pulse may name (a pulse of them stays well under the peer
/// routes' 1 MiB body limit).
const MAX_PULSE_GROUPS: usize = 30_000;
/// Where pulses go.
pub const QUIET_PATH: &str = "/raft/quiet";

/// A pulse: the named groups its sender leads quietly (or offers to), with
/// their terms.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct QuietPulse {
    pub led: Vec<(u64, u64)>,
}

/// A pulse's answer: the groups of it the receiver follows quietly under
/// the sender, with the terms the pulse named.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct QuietAnswer {
    pub following: Vec<(u64, u64)>,
}

/// The peers a pulse is on its way to (one at a time a peer).
#[derive(Clone, Debug, Default)]
pub(super) struct Pulsing(Arc<Mutex<BTreeSet<NodeId>>>);

/// A peer's place in `Pulsing`, given back when dropped.
struct InFlight(Pulsing, NodeId);

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&(self.0).0).remove(&self.1);
    }
}

impl Pulsing {
    fn take(&self, peer: NodeId) -> Option<InFlight> {
        lock(&self.0).insert(peer).then(|| InFlight(self.clone(), peer))
    }
}

/// Sends each other member of group 0 its pulse: the groups among `groups`
/// this node leads quietly or offers to, of which it is a voter.
pub(super) fn send(cluster: &Cluster, groups: &[Cluster], pulsing: &Pulsing) {
    let mut by_peer: BTreeMap<NodeId, Vec<(u64, u64, Cluster)>> = BTreeMap::new();
    for group in groups {
        let Some(term) = group.quietly_led_term() else {
            continue;
        };
        for voter in group.voters().into_iter().filter(|v| *v != cluster.id()) {
            let list = by_peer.entry(voter).or_default();
            if list.len() < MAX_PULSE_GROUPS {
                list.push((group.inner.group, term, group.clone()));
            }
        }
    }
    for (peer, led) in by_peer {
        let Some(base) = cluster.member_peer_url(peer) else {
            // Not a member of group 0: it cannot answer; its offers lapse.
            continue;
        };
        let Some(in_flight) = pulsing.take(peer) else {
            continue;
        };
        let body = QuietPulse {
            led: led.iter().map(|(group, term, _)| (*group, *term)).collect(),
        };
        let Ok(body) = serde_json::to_vec(&body) else {
            continue;
        };
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let sent = Instant::now();
            match cluster.post_pulse(peer, &base, body).await {
                Ok(answer) => {
                    let following: BTreeSet<(u64, u64)> = answer.following.into_iter().collect();
                    for (group, term, cluster) in &led {
                        cluster.pulse_answered(peer, following.contains(&(*group, *term)), sent);
                    }
                }
                Err((e, refused)) => {
                    tracing::debug!(peer, error = %e, "a quiet pulse went unanswered");
                    for (_, _, cluster) in &led {
                        cluster.withdraw_offer();
                        // A peer that refuses pulses (an older version, a
                        // membership it does not share) does not follow
                        // quietly: heartbeat it. A lost or late one is
                        // left to the lease (acknowledgements age).
                        if refused {
                            cluster.wake("pulse refused");
                        }
                    }
                }
            }
        });
    }
}

impl Cluster {
    /// This group's voters, as its membership stands.
    fn voters(&self) -> Vec<NodeId> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.membership_config.membership().voter_ids().collect()
    }

    /// On a leader: `peer`'s answer to a pulse sent at `sent` named this
    /// group (an acknowledgement; an offer every voter acknowledged turns
    /// the tick off) or left it out (a voter not quiet: the offer is
    /// withdrawn, or the quiet group woken).
    fn pulse_answered(&self, peer: NodeId, follows: bool, sent: Instant) {
        let quiet = &self.inner.quiet;
        let offer = *lock(&quiet.offer);
        if !follows {
            if self.voters().contains(&peer) {
                if offer.is_some() {
                    self.withdraw_offer();
                } else {
                    self.wake("a voter not quiet");
                }
            }
            return;
        }
        {
            let mut acks = lock(&quiet.acks);
            let ack = acks.entry(peer).or_insert(sent);
            *ack = (*ack).max(sent);
        }
        let Some(offer) = offer else {
            return;
        };
        let acks = lock(&quiet.acks).clone();
        let me = self.inner.id;
        let all = self
            .voters()
            .iter()
            .all(|v| *v == me || acks.get(v).is_some_and(|at| *at >= offer.at));
        if all {
            self.turn_quiet(offer.wakes);
        }
    }

    /// On a leader: how long since `peer` last answered a pulse naming
    /// this group (None: not since its last offer).
    pub(in crate::cluster) fn pulse_answer_age(&self, peer: NodeId) -> Option<Duration> {
        lock(&self.inner.quiet.acks).get(&peer).map(Instant::elapsed)
    }

    /// On a leader: how long since a majority of the voters (this node one
    /// of them) last answered a pulse naming this group (None: no majority
    /// since its last offer).
    pub(in crate::cluster) fn pulse_silence(&self, metrics: &RaftMetrics<TypeConfig>) -> Option<Duration> {
        if self.inner.group == 0 {
            // Never quiet; and asked on every write of the default log (`must_lead`).
            return None;
        }
        let acks = lock(&self.inner.quiet.acks);
        if acks.is_empty() {
            return None;
        }
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let others = voters
            .iter()
            .filter(|v| **v != self.inner.id)
            .map(|v| acks.get(v).map(Instant::elapsed))
            .collect();
        majority_silence(voters.len(), others)
    }

    /// A pulse from the node the request names as its sender to this
    /// node's group 0: the groups named that this node follows quietly
    /// under it in that term, each counted as its leader's heartbeat.
    pub fn take_quiet_pulse(&self, caller: Caller<'_>, pulse: QuietPulse) -> Result<QuietAnswer, ClusterError> {
        let sender: NodeId = caller
            .named
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| ClusterError::BadRpc(format!("a quiet pulse names no sender ({SENDER_HEADER})")))?;
        let member = self.member(sender);
        sender::check(&caller, sender, member.as_ref())?;
        if member.is_none() {
            return Err(ClusterError::BadRpc(format!("node {sender} is not a member")));
        }
        if pulse.led.len() > MAX_PULSE_GROUPS {
            return Err(ClusterError::BadRpc(format!(
                "a quiet pulse names {} groups, more than {MAX_PULSE_GROUPS}",
                pulse.led.len()
            )));
        }
        let mut following = Vec::new();
        for (group, term) in pulse.led {
            let Some(held) = (group > 0).then(|| self.group(group)).flatten() else {
                continue;
            };
            if held.quietly_follows(sender, term) {
                held.inner.contact.heard_from(None);
                following.push((group, term));
            }
        }
        Ok(QuietAnswer { following })
    }

    /// Whether this group is quiet here, under `leader` in `term`, and
    /// heard it within the lease (a group just started has not: its
    /// leader heartbeats it first).
    fn quietly_follows(&self, leader: NodeId, term: u64) -> bool {
        let quiet = &self.inner.quiet;
        if !quiet.is_on() || lock(&quiet.dormant).is_some() || quiet.core_gone() {
            return false;
        }
        if self.inner.contact.since().is_none_or(|s| s >= self.leader_lease()) {
            return false;
        }
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.current_leader == Some(leader)
            && metrics.current_term == term
            && matches!(metrics.state, ServerState::Follower | ServerState::Learner)
    }

    /// The peer's answer, or why not and whether it answered with a refusal
    /// (an error status) rather than not at all.
    async fn post_pulse(&self, peer: NodeId, base: &str, body: Vec<u8>) -> Result<QuietAnswer, (String, bool)> {
        let routes = Routes::new(self.inner.config.routes.clone());
        let url = format!("{}{QUIET_PATH}", routes.resolve(base.trim_end_matches('/')));
        let response = self
            .inner
            .config
            .client
            .post(&url)
            .header(TARGET_HEADER, peer.to_string())
            .header(SENDER_HEADER, self.id().to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(PULSE_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(|e| (format!("{url}: {e}"), false))?;
        if !response.status().is_success() {
            return Err((format!("{url}: answered {}", response.status()), true));
        }
        let body = response.bytes().await.map_err(|e| (format!("{url}: {e}"), false))?;
        if body.len() > crate::cluster::pulse_body_limit() {
            return Err((format!("{url}: an answer of {} bytes", body.len()), true));
        }
        serde_json::from_slice(&body).map_err(|e| (format!("{url}: {e}"), true))
    }
}

/// How long since a majority of `voters` voters answered, this node (not
/// among `others`) always one of them: the silence of the freshest
/// `majority - 1` of the others' answers (None: not that many answered).
fn majority_silence(voters: usize, mut others: Vec<Option<Duration>>) -> Option<Duration> {
    let needed = (voters / 2 + 1).saturating_sub(1);
    if needed == 0 {
        return Some(Duration::ZERO);
    }
    // Never answered sorts last.
    others.sort_by_key(|silence| silence.unwrap_or(Duration::MAX));
    others.get(needed - 1).copied().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn a_majority_is_counted_with_this_node_and_the_freshest_others() {
        assert_eq!(majority_silence(1, vec![]), Some(Duration::ZERO), "a lone voter");
        assert_eq!(majority_silence(3, vec![ms(900), ms(100)]), ms(100), "one other of 3");
        assert_eq!(majority_silence(3, vec![None, ms(400)]), ms(400));
        assert_eq!(majority_silence(3, vec![None, None]), None, "nobody answered");
        assert_eq!(
            majority_silence(5, vec![ms(10), None, ms(300), ms(20)]),
            ms(20),
            "two others of 5"
        );
        assert_eq!(majority_silence(5, vec![ms(10), None, None, None]), None);
        assert_eq!(majority_silence(2, vec![ms(50)]), ms(50), "both of 2");
    }
}
