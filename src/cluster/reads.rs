//! Reads past what a member shows its readers: whether the cluster has
//! committed them. A member that is catching up (back from an outage, a
//! new or wiped node) must not tell a reader that a committed offset does
//! not exist; `api::catch_up` waits for it briefly or sends the reader to
//! the leader.

use openraft::async_runtime::WatchReceiver;

use super::node::Cluster;

/// What this member knows of an offset it does not show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beyond {
    /// Not committed as far as the leader this node is in touch with says
    /// (a true "not yet").
    Uncommitted,
    /// Committed in the cluster; this node has not applied it yet.
    Committed,
    /// This node is in touch with no leader: it cannot tell.
    Unknown,
}

impl Cluster {
    /// The highest offset this node knows the cluster committed: openraft's
    /// is what the requests it took said when they were built; a request
    /// sent late says more in its header (`COMMIT_HEADER`).
    pub fn known_commit(&self) -> Option<u64> {
        let metrics = self.raft().metrics();
        let metrics = metrics.borrow_watched();
        self.commit_known(&metrics)
    }

    fn commit_known(&self, metrics: &openraft::RaftMetrics<super::types::TypeConfig>) -> Option<u64> {
        // A leader's own is the cluster's; what an earlier term's leader
        // said (even to this node, before it led) says nothing now.
        let heard = match metrics.current_leader == Some(self.inner.id) {
            true => None,
            false => self.inner.contact.highest_commit(metrics.current_term),
        };
        metrics.cluster_committed.map(|c| c.index).max(heard)
    }

    /// Whether `offset`, which this node does not show, is committed.
    pub fn beyond_view(&self, offset: u64) -> Beyond {
        let metrics = self.raft().metrics();
        let metrics = metrics.borrow_watched();
        if self.leader_in_touch(&metrics).is_none() {
            return Beyond::Unknown;
        }
        match self.commit_known(&metrics) {
            Some(committed) if committed >= offset => Beyond::Committed,
            _ => Beyond::Uncommitted,
        }
    }
}
