//! Whether this node is in touch with its leader (check-quorum, as seen
//! from outside). Raft alone keeps naming a leader that cannot reach a
//! majority, and a follower keeps naming a leader it no longer hears; both
//! would answer `/readyz` 200 and send writers to a leader that cannot
//! commit for as long as a partition lasts. Here a node names a leader only
//! while it hears from it within the lease:
//! - the leader counts the last time a majority acknowledged it
//!   (openraft's `last_quorum_acked`, or for a quiet group the answers to
//!   its pulses, `quiet.rs`; a lone voter is its own majority);
//! - any other node counts the last append-entries or snapshot it took
//!   from a leader, or pulse naming the group it follows quietly
//!   (`LeaderContact`, set by the peer RPC handlers).
//!
//! The limit is twice the longest election timeout (openraft's own leader
//! lease, past which a leader's proposals are refused, is one) plus a
//! heartbeat: a quorum's acknowledgements are stamped when their requests
//! were sent and wait on the followers' disks, so one slow fsync must not
//! make a healthy leader say it has no majority.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::{Instant as _, RaftMetrics};

use super::node::Cluster;
use super::types::{NodeId, TypeConfig};

/// When this node last took an append-entries or a snapshot from a leader,
/// and the commit indexes leaders told it of, as they rose.
#[derive(Debug, Default)]
pub(super) struct LeaderContact(Mutex<Heard>);

/// How old the leader commit a node's readiness is judged against is (see
/// `LeaderContact::settled_commit`).
const SETTLED: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Heard {
    at: Option<Instant>,
    /// The highest commit the leader of the highest term heard told this
    /// node of, with that term: a later leader starts again (after a power
    /// cut of a majority with write caching, a commit may go back).
    highest: Option<(u64, u64)>,
    /// `(when, leader commit)`, rising; at most one sample older than
    /// `SETTLED` is kept.
    commits: std::collections::VecDeque<(Instant, u64)>,
}

impl LeaderContact {
    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A leader's message was taken; it says its commit reached `leader_commit`.
    pub(super) fn heard_from(&self, leader_commit: Option<u64>) {
        let mut heard = self.heard();
        let now = Instant::now();
        // After a silence (a partition, a full disk, leading) what was heard
        // before says nothing of how far behind this node is now: the first
        // commit heard again is the one to reach.
        if heard.at.is_none_or(|at| at.elapsed() >= SETTLED) {
            heard.commits.clear();
        }
        heard.at = Some(now);
        // One sample every SETTLED/64 at most: memory bounded by time, not
        // a count that would shorten the window under load. A commit heard
        // before the next is due raises the latest sample instead.
        let due = heard.commits.back().is_none_or(|(at, _)| at.elapsed() >= SETTLED / 64);
        if let Some(commit) = leader_commit.filter(|c| heard.commits.back().is_none_or(|(_, last)| c > last)) {
            match heard.commits.back_mut() {
                Some((_, latest)) if !due => *latest = commit,
                _ => heard.commits.push_back((now, commit)),
            }
        }
        while heard.commits.get(1).is_some_and(|(at, _)| at.elapsed() >= SETTLED) {
            heard.commits.pop_front();
        }
    }

    /// The leader of `term` said its commit reached `commit`, in a request
    /// or in the header stamped when it was sent (`network::COMMIT_HEADER`).
    /// Only reads past this node's end use it, not readiness.
    pub(super) fn heard_commit(&self, term: u64, commit: u64) {
        let mut heard = self.heard();
        heard.highest = match heard.highest {
            Some((t, c)) if t > term || (t == term && c >= commit) => Some((t, c)),
            _ => Some((term, commit)),
        };
    }

    /// The highest commit the leader of `term` told this node of (none
    /// from an earlier term's leader: a deposed one's says nothing now).
    pub(super) fn highest_commit(&self, term: u64) -> Option<u64> {
        self.heard()
            .highest
            .filter(|(t, _)| *t == term)
            .map(|(_, commit)| commit)
    }

    pub(super) fn since(&self) -> Option<Duration> {
        self.heard().at.map(|at| at.elapsed())
    }

    /// The leader's commit as it was `SETTLED` ago (the latest heard, within
    /// `SETTLED` of a silence): a healthy follower under load always trails
    /// the latest by what is in flight, and must not flap unready for it,
    /// while one back from an outage is behind what the leader commits now.
    /// Not the first commit heard after a silence: a request the leader
    /// built while this node was down (one that waited out a replication
    /// back-off) carries the commit of then.
    pub(super) fn settled_commit(&self) -> Option<u64> {
        let heard = self.heard();
        match heard.commits.front() {
            Some((at, commit)) if at.elapsed() >= SETTLED => Some(*commit),
            _ => heard.commits.back().map(|(_, commit)| *commit),
        }
    }
}

impl Cluster {
    /// How long past a leader's last sign of life this node stops naming it.
    pub fn leader_lease(&self) -> Duration {
        self.inner.config.election_timeout.1 * 2 + self.inner.config.heartbeat
    }

    /// How long since this node last heard from its leader (for a leader:
    /// from a majority); None when it never has.
    pub(super) fn leader_silence(&self, metrics: &RaftMetrics<TypeConfig>) -> Option<Duration> {
        if metrics.current_leader != Some(self.inner.id) {
            return self.inner.contact.since();
        }
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        if voters == [self.inner.id] {
            return Some(Duration::ZERO);
        }
        let heartbeats = metrics
            .last_quorum_acked
            .as_ref()
            .map(|acked| acked.into_inner().elapsed());
        // A quiet group's leader sends no heartbeats: the pulses' answers stand for them.
        match (heartbeats, self.pulse_silence(metrics)) {
            (Some(h), Some(p)) => Some(h.min(p)),
            (h, p) => h.or(p),
        }
    }

    /// Raft's current leader while this node is in touch with it (see the
    /// module doc), else None.
    pub(super) fn leader_in_touch(&self, metrics: &RaftMetrics<TypeConfig>) -> Option<NodeId> {
        let leader = metrics.current_leader?;
        let silence = self.leader_silence(metrics)?;
        (silence <= self.leader_lease()).then_some(leader)
    }

    /// The leader this node is in touch with, from its latest metrics.
    pub(super) fn current_leader(&self) -> Option<NodeId> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        self.leader_in_touch(&metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::LeaderContact;

    /// A request a leader built before this node came back (one that slept
    /// in a replication back-off while the node was down) carries the commit
    /// of then: right after a silence the latest commit heard is the one to
    /// reach, not the first, or a node back from an outage answers ready
    /// thousands of entries short of the leader.
    /// The commit reads past a node's end are judged by: the highest the
    /// latest leader said; a leader of a later term starts it again.
    #[test]
    fn the_commit_known_is_the_latest_leaders_highest() {
        let contact = LeaderContact::default();
        assert_eq!(contact.highest_commit(3), None);
        contact.heard_commit(3, 7_001);
        contact.heard_commit(3, 16_001);
        contact.heard_commit(3, 9_000);
        assert_eq!(contact.highest_commit(3), Some(16_001), "an older request's commit");
        contact.heard_commit(2, 20_000);
        assert_eq!(contact.highest_commit(3), Some(16_001), "a deposed leader's");
        assert_eq!(contact.highest_commit(4), None, "a term whose leader said nothing yet");
        contact.heard_commit(4, 15_990);
        assert_eq!(contact.highest_commit(4), Some(15_990), "a later leader's, lower");
    }

    #[test]
    fn right_after_a_silence_the_latest_commit_heard_is_the_one_to_reach() {
        let contact = LeaderContact::default();
        assert_eq!(contact.settled_commit(), None);
        contact.heard_from(Some(20_010));
        contact.heard_from(Some(24_001));
        assert_eq!(contact.settled_commit(), Some(24_001));
        // A heartbeat without a commit changes nothing.
        contact.heard_from(None);
        assert_eq!(contact.settled_commit(), Some(24_001));
    }
}
