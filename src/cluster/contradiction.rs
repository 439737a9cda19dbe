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
//! has others, and a snapshot there trips an assertion of release builds
//! too). Such an append or snapshot, from an elected leader among this
//! node's voters whose vote is not below this node's, is refused before openraft sees it, and the node repairs
//! itself as a storage fault: a synced plan moves its whole log aside with
//! every file of `raft/` (`quarantine`: kept under
//! `<data dir>/quarantine/<ms>/`, nothing deleted; the snapshot and tables
//! may hold the contradicted entries too), and the process stops (exit
//! status 1, for its supervisor to start it again); the next start carries
//! the plan out as an empty data directory's, takes a new id and catches up
//! from the leader.
//!
//! A stop half done is one of the plan's states: before the plan is synced
//! the node is as it was (the next append finds the contradiction again);
//! after it, a start carries it out whatever happened in between.

use std::cmp::Ordering;

use openraft::async_runtime::WatchReceiver;
use openraft::raft::AppendEntriesRequest;

use super::error::ClusterError;
use super::node::Cluster;
use super::quarantine;
use super::types::{LogId, TypeConfig, Vote};

/// Whose appends `first_contradiction` looks at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Senders {
    /// An elected leader among this node's voters (a contradiction is this node's fault).
    VotersOnly,
    /// Anyone whose vote openraft would take (a contradiction is a forgery).
    Any,
}

/// An append's log ids in index order: its `prev_log_id`, then its entries'.
fn log_ids(request: &AppendEntriesRequest<TypeConfig>) -> impl Iterator<Item = &LogId> {
    request
        .prev_log_id
        .iter()
        .chain(request.entries.iter().map(|e| &e.log_id))
}

impl Cluster {
    /// The first log id of `request` (its `prev_log_id`, then its entries)
    /// at an index this node holds as committed that is not the entry this
    /// node holds there, with this node's committed id; None when there is
    /// none, or when the request's vote is below this node's (openraft
    /// refuses it then: a deposed leader's uncommitted entries are no
    /// contradiction).
    pub(super) fn contradicted_commit(&self, request: &AppendEntriesRequest<TypeConfig>) -> Option<(LogId, LogId)> {
        self.first_contradiction(&request.vote, log_ids(request), Senders::VotersOnly)
    }

    /// As `contradicted_commit`, from any sender whose vote openraft would take (not below this
    /// node's): an append no leader of this cluster can send (every leader's log holds every
    /// committed entry), which is refused before openraft sees it. openraft takes a committed
    /// index as matching whatever it is told: a release build would take the forged prefix for
    /// its own, and a debug build's core stops on an assertion. `contradicted_commit` is asked
    /// first: from an elected leader among the voters it is this node's committed entries that
    /// are wrong.
    pub(super) fn forged_contradiction(&self, request: &AppendEntriesRequest<TypeConfig>) -> Option<(LogId, LogId)> {
        self.first_contradiction(&request.vote, log_ids(request), Senders::Any)
    }

    /// As `contradicted_commit`, for a snapshot a leader sends: its last
    /// log id at or below this node's commit is an entry this node holds.
    pub(super) fn contradicted_by_snapshot(&self, vote: &Vote, last: Option<&LogId>) -> Option<(LogId, LogId)> {
        self.first_contradiction(vote, last.into_iter(), Senders::VotersOnly)
    }

    /// Among `ids` (in index order) sent under `vote`, the first at an
    /// index this node holds as committed whose entry there is another;
    /// with the committed id.
    fn first_contradiction<'a>(
        &self,
        vote: &Vote,
        ids: impl Iterator<Item = &'a LogId>,
        senders: Senders,
    ) -> Option<(LogId, LogId)> {
        // The store's mark before the metrics: read after them, it could
        // cover a later leader's entries than the vote they show.
        let stored_commit = self.store().committed();
        let (ours, committed, applied, from_a_voter) = {
            let metrics = self.raft().metrics();
            let metrics = metrics.borrow_watched();
            let leader = vote.leader_id.voted_for;
            let voter = metrics.membership_config.membership().voter_ids().any(|v| v == leader);
            (metrics.vote, metrics.local_committed, metrics.last_applied, voter)
        };
        // Only an elected leader among this node's voters, whose vote is
        // not below this node's (the metrics' or the saved one, which may be
        // ahead of them): anyone else's append is openraft's to refuse, and
        // must not make a healthy member move its log aside.
        let not_below = matches!(vote.partial_cmp(&ours), Some(Ordering::Greater | Ordering::Equal));
        if !not_below || vote.leader_id.term < self.store().vote_term() {
            return None;
        }
        if senders == Senders::VotersOnly && (!vote.committed || !from_a_voter) {
            return None;
        }
        // What openraft holds as committed here: its core's local commit,
        // or before the core first reports (just after a start, when a
        // returning node meets the leader) what it starts from: the store's
        // committed mark and what the state machine applied.
        let committed = [committed, applied, stored_commit].into_iter().flatten().max()?;
        // Only an entry held there and another counts: one the log no longer
        // holds (purged, or a snapshot's reset racing this look) is taken as
        // matching, as openraft takes a purged one.
        ids.take_while(|id| id.index <= committed.index)
            .find(|id| self.store().id_at(id.index).is_some_and(|ours| ours != **id))
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
