//! A member whose committed entries a leader's log contradicts.
//!
//! With `--fsync always` this cannot happen: a committed entry is durable on
//! a majority, and every leader's log holds it. With write caching
//! (`--fsync never|interval`) a power cut can take committed entries from a
//! majority (documented: acknowledged writes can be lost), and a member
//! that kept them (it was down or cut off meanwhile) comes back to a leader
//! whose log holds other entries, of a later term, at indexes it holds as
//! committed. openraft takes a committed entry as matching whatever the
//! leader says (a debug assertion stops the core of a debug build on every
//! start; a release build would serve its own records where the cluster
//! has others). Such an append is refused before openraft sees it, and the
//! node repairs itself as a storage fault: a synced plan moves its whole log
//! aside (`quarantine`: kept under `<data dir>/quarantine/<ms>/`, nothing
//! deleted), and the process stops (exit status 1, for its supervisor to
//! start it again); the next start carries the plan out, takes a new id and
//! catches up from the leader, as a node whose sealed segment rotted does.
//!
//! A stop half done is one of the plan's states: before the plan is synced
//! the node is as it was (the next append finds the contradiction again);
//! after it, a start carries it out whatever happened in between.

use openraft::async_runtime::WatchReceiver;
use openraft::raft::AppendEntriesRequest;

use super::error::ClusterError;
use super::node::Cluster;
use super::quarantine;
use super::types::{LogId, TypeConfig};

impl Cluster {
    /// The first log id of `request` (its `prev_log_id`, then its entries)
    /// at an index this node holds as committed and of a later term than
    /// its committed entry: the leader's log lacks this node's committed
    /// entries there. (A leader's entry at or below a committed index has a
    /// term at most the committed entry's, as every log is ordered by term.)
    pub(super) fn contradicted_commit(&self, request: &AppendEntriesRequest<TypeConfig>) -> Option<(LogId, LogId)> {
        // What the core checks a leader's log ids against (its local
        // commit); the metrics may trail it, never lead it.
        let committed = self.raft().metrics().borrow_watched().local_committed?;
        request
            .prev_log_id
            .iter()
            .chain(request.entries.iter().map(|e| &e.log_id))
            .take_while(|id| id.index <= committed.index)
            .find(|id| **id > committed)
            .map(|theirs| (*theirs, committed))
    }

    /// Plans this node's repair (see the module doc) and asks the process
    /// to stop; the refusal to answer the leader with.
    pub(super) fn repair_contradicted(&self, theirs: LogId, ours: LogId) -> ClusterError {
        let reason = format!(
            "the leader's log holds {theirs} where this node had committed up to {ours}: committed entries were \
             lost on a majority (a power cut with --fsync never or interval)"
        );
        if self.inner.restart_for.get().is_none() {
            match quarantine::plan_whole_log_aside(&self.inner.durable, self.store().log(), reason.clone()) {
                Ok(plan) => {
                    tracing::error!(%reason, to = %plan.dir.display(),
                        "STORAGE FAULT: this node's committed entries are not the cluster's. Its log will be moved aside \
                         and the node will catch up from the leader under a new id; stopping so that the next start does it");
                    let _ = self.inner.restart_for.set(reason.clone());
                    self.inner.restart_asked.notify_waiters();
                }
                Err(e) => tracing::error!(%reason, error = %e,
                    "STORAGE FAULT: this node's committed entries are not the cluster's, and planning its repair failed; \
                     it refuses the leader's appends until it is repaired (docs/operations.md)"),
            }
        }
        ClusterError::Stopped(format!("{reason}; this node stops to repair itself"))
    }

    /// Waits until this node asks to be started again (a repair planned for
    /// the next start); why.
    pub async fn restart_needed(&self) -> String {
        loop {
            let asked = self.inner.restart_asked.notified();
            if let Some(why) = self.inner.restart_for.get() {
                return why.clone();
            }
            asked.await;
        }
    }
}
