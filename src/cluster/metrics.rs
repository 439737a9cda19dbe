//! The cluster's Prometheus series, refreshed from openraft's metrics
//! whenever they change (and the append-entries latency, timed by the
//! sender in `network`).

use std::collections::BTreeMap;

use openraft::RaftMetrics;
use openraft::async_runtime::WatchReceiver;
use openraft::type_config::alias::WatchReceiverOf;

use super::types::{NodeId, TypeConfig};

pub const TERM: &str = "distlog_raft_term";
pub const IS_LEADER: &str = "distlog_raft_is_leader";
pub const LEADER_CHANGES: &str = "distlog_raft_leader_changes_total";
pub const COMMIT_OFFSET: &str = "distlog_raft_commit_offset";
pub const PEER_MATCH: &str = "distlog_raft_peer_match_offset";
pub const PEER_LAG: &str = "distlog_raft_peer_lag_records";
pub const APPEND_DURATION: &str = "distlog_raft_append_entries_duration_seconds";
pub const MEMBERS: &str = "distlog_raft_members";
pub const VOTERS: &str = "distlog_raft_voters";
pub const PEER_APPENDS_IN_FLIGHT_MAX: &str = "distlog_raft_peer_appends_in_flight_max";

pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(TERM, "This node's current Raft term.");
    describe_gauge!(IS_LEADER, "1 while this node is the cluster's leader, else 0.");
    describe_counter!(
        LEADER_CHANGES,
        "Times the leader this node knows of changed (to another node or to none)."
    );
    describe_gauge!(COMMIT_OFFSET, "The last committed offset this node knows of.");
    describe_gauge!(
        PEER_MATCH,
        "On the leader: the last offset each peer is known to hold (labels peer: its node id, peer_url: its advertised URL)."
    );
    describe_gauge!(
        PEER_LAG,
        "On the leader: records each peer is behind the leader's log (labels peer, peer_url)."
    );
    describe_gauge!(
        super::reconcile::LEARNERS_STUCK,
        "On the leader: learners waiting over 30 s to be made voters (a join that cannot finish)."
    );
    describe_gauge!(
        super::reconcile::VOTERS_UNREACHABLE,
        "On the leader: voters that did not answer within the leader lease."
    );
    describe_gauge!(
        super::log_store::DISK_FULL,
        "1 while this node's Raft appends wait for room on a full disk, else 0."
    );
    describe_gauge!(
        super::log_store::DISK_RESERVE,
        "Bytes this node holds in reserve on its disk for a snapshot and a purge to run when the disk fills (0 while given back)."
    );
    describe_histogram!(
        super::stages::STAGE_SECONDS,
        Unit::Seconds,
        "The commit path's steps as this node sees them (label stage: the leader's milestones of a write from its proposal, queued, written, sent, acknowledged, applied, commit; and log_write, log_sync, append_rpc, peer_append; see docs/cluster-design.md)."
    );
    describe_histogram!(
        APPEND_DURATION,
        Unit::Seconds,
        "Append-entries requests to each peer, from sending to the answer, heartbeats included (labels peer, peer_url)."
    );
    describe_gauge!(
        MEMBERS,
        "Nodes in the cluster's membership as this node knows it (voters and learners)."
    );
    describe_gauge!(
        VOTERS,
        "Voting members in the cluster's membership as this node knows it."
    );
    describe_gauge!(
        PEER_APPENDS_IN_FLIGHT_MAX,
        "On a follower: the most append-entries requests carrying entries it has handled at once since it started (above 1 when the leader pipelines)."
    );
    describe_gauge!(
        super::peer_health::PEER_UP,
        "1 if the peer answered this node's last Raft request, 0 if not (labels peer, peer_url); only peers this node sends to."
    );
}

/// Whether the leader seen moved from `before` to `now` in a way that counts as a change: another
/// leader, or none (the first leader a node sees after it starts is not a change).
fn leader_changed(before: Option<NodeId>, now: Option<NodeId>) -> bool {
    before != now && (before.is_some() || now.is_none())
}

/// Counts a group's leader changes into its `Inner::leader_changes` until the group stops (its
/// metrics' sender goes) or is dropped.
pub(super) async fn count_leader_changes(
    inner: std::sync::Weak<super::node::Inner>,
    mut watch: WatchReceiverOf<TypeConfig, RaftMetrics<TypeConfig>>,
) {
    let mut last = None;
    loop {
        let now = watch.borrow_watched().current_leader;
        if now != last {
            let Some(inner) = inner.upgrade() else { return };
            if leader_changed(last, now) {
                inner.leader_changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            last = now;
        }
        if watch.changed().await.is_err() {
            // The Raft core is gone (stopped, or panicked while its
            // metrics still say leader): its quiet groups leave the pulses.
            if let Some(inner) = inner.upgrade() {
                inner.quiet.core_stopped();
            }
            return;
        }
    }
}

/// Refreshes the series of node `id` whenever openraft's metrics change;
/// ends with the node.
pub async fn publish(id: NodeId, mut watch: WatchReceiverOf<TypeConfig, RaftMetrics<TypeConfig>>) {
    let mut last_leader = None;
    let mut peers_shown: BTreeMap<u64, String> = BTreeMap::new();
    metrics::counter!(LEADER_CHANGES).increment(0);
    loop {
        let m = watch.borrow_watched().clone();
        metrics::gauge!(TERM).set(m.current_term as f64);
        let leading = m.current_leader == Some(id);
        metrics::gauge!(IS_LEADER).set(if leading { 1.0 } else { 0.0 });
        let membership = m.membership_config.membership();
        metrics::gauge!(MEMBERS).set(membership.nodes().count() as f64);
        metrics::gauge!(VOTERS).set(membership.voter_ids().count() as f64);
        let url_of = |peer: &NodeId| membership.get_node(peer).map(|m| m.url.clone()).unwrap_or_default();
        if m.current_leader != last_leader {
            if leader_changed(last_leader, m.current_leader) {
                metrics::counter!(LEADER_CHANGES).increment(1);
            }
            log_leader_change(id, m.current_term, m.current_leader.map(|l| (l, url_of(&l))));
            last_leader = m.current_leader;
        }
        if let Some(c) = m.local_committed {
            metrics::gauge!(COMMIT_OFFSET).set(c.index as f64);
        }
        let last = m.last_log_index.unwrap_or(0);
        if let Some(replication) = m.replication.as_ref().filter(|_| leading) {
            for (peer, matched) in replication {
                let url = url_of(peer);
                let labels = [("peer", peer.to_string()), ("peer_url", url.clone())];
                let matched = matched.map(|l| l.index);
                metrics::gauge!(PEER_MATCH, &labels).set(matched.map_or(-1.0, |i| i as f64));
                let lag = last.saturating_sub(matched.unwrap_or(0));
                metrics::gauge!(PEER_LAG, &labels).set(lag as f64);
                peers_shown.insert(*peer, url);
            }
        } else {
            // Not leading: the per-peer view is the leader's to give.
            for (peer, url) in std::mem::take(&mut peers_shown) {
                let labels = [("peer", peer.to_string()), ("peer_url", url)];
                metrics::gauge!(PEER_MATCH, &labels).set(-1.0);
                metrics::gauge!(PEER_LAG, &labels).set(0.0);
            }
        }
        if watch.changed().await.is_err() {
            return;
        }
    }
}

/// One INFO line per change of leader (openraft's own election lines are
/// at debug by default: see `cli::logging`).
fn log_leader_change(id: NodeId, term: u64, leader: Option<(NodeId, String)>) {
    match leader {
        Some((leader, _)) if leader == id => tracing::info!(term, "this node is now the leader (term {term})"),
        Some((leader, url)) => {
            tracing::info!(term, leader, leader_url = %url, "the leader is now {leader} ({url}), term {term}")
        }
        None => tracing::info!(term, "no leader known (term {term}): an election is due"),
    }
}

/// Append-entries requests carrying entries that this node is handling at
/// once, and the most it ever handled (`PEER_APPENDS_IN_FLIGHT_MAX`).
#[derive(Debug, Default)]
pub struct InFlight {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

/// One request being handled; counted out when dropped.
pub struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard<'_> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.now.fetch_add(1, Relaxed) + 1;
        if self.most.fetch_max(now, Relaxed) < now {
            metrics::gauge!(PEER_APPENDS_IN_FLIGHT_MAX).set(now as f64);
        }
        InFlightGuard(self)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::leader_changed;

    #[test]
    fn a_leader_change_is_a_new_leader_or_none_but_not_the_first_seen() {
        assert!(!leader_changed(None, Some(1)), "the first leader a node sees");
        assert!(!leader_changed(Some(1), Some(1)));
        assert!(leader_changed(Some(1), Some(2)));
        assert!(leader_changed(Some(1), None), "lost");
        assert!(!leader_changed(None, None));
    }
}
