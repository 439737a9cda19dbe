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
    /// Past the commit this node heard, but it heard its leader again only
    /// lately (after a start or a silence), and what it heard may be older
    /// than the leader's commit: only the leader can tell.
    Unsettled,
}

impl Cluster {
    /// Whether `offset`, which this node does not show, is committed.
    pub fn beyond_view(&self, offset: u64) -> Beyond {
        let metrics = self.raft().metrics();
        let metrics = metrics.borrow_watched();
        let Some(leader) = self.leader_in_touch(&metrics) else {
            return Beyond::Unknown;
        };
        match metrics.cluster_committed {
            Some(committed) if committed.index >= offset => Beyond::Committed,
            _ if leader != self.inner.id && self.inner.contact.unsettled() => Beyond::Unsettled,
            _ => Beyond::Uncommitted,
        }
    }
}
