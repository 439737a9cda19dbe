//! A member the cluster removed (`DELETE /cluster/members/{id}`): it finds
//! out, says so, stops campaigning, and serves nothing until it is added
//! again.
//!
//! Finding out. openraft stops replicating to a node once a membership
//! without it is in the leader's log, so a removed node mostly never sees
//! the entry that removes it: it would keep its old membership, a frozen
//! log and, once its leader falls silent, call elections forever. So it
//! looks for itself:
//! - a committed membership that named it is followed by one that does
//!   not: it did see the removal (`follow_membership`, at every change of
//!   openraft's metrics, so that a removal right after it became a member
//!   is not missed; formation then does not join again on its own);
//! - or its committed membership names it, yet no leader reached it within
//!   the lease (`watch`, every `LOOK_EVERY`): it asks the members and seeds
//!   it knows for `/cluster`, and a leader in touch with its majority whose
//!   members do not name it settles it. A committed membership can only be
//!   replaced by a later one, which every later leader holds: that
//!   leader's word is final.
//!
//! Then: ERROR once and WARN every `WARN_EVERY`; no elections (openraft's
//! runtime `elect(false)`: a node that kept campaigning would come back
//! with an inflated term and depose the leader when added again); `503
//! removed` on `/readyz` and the client routes; and a `removed` file in
//! `raft/`, so that a restarted node says the same instead of joining
//! again on its own. Added again (`POST /cluster/join` on the leader with
//! this node's URL), a leader reaches it with a membership that names it,
//! and all of this is undone. With `--rejoin`, a node removed before it
//! started (the `removed` file, or found out before any leader reached it
//! in this run) asks the leader itself (`rejoin`): a StatefulSet scaled
//! down and up again keeps the pod's volume.

use std::sync::PoisonError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::node::Cluster;
use super::status::ClusterStatus;
use super::types::NodeId;

/// The file in `raft/` that keeps a removal across restarts.
pub(super) const REMOVED_FILE: &str = "removed";
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// How often a removed node says so again, at WARN.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Why and when this node was removed (the `removed` file).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Removal {
    pub why: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The id the cluster removed (absent in files from before it was
    /// kept): a start under another id (a repaired or copied directory)
    /// is not removed, whatever a crash left behind.
    #[serde(default)]
    pub node_id: Option<NodeId>,
    /// Not kept: whether it came before this run (see `removed_before_start`).
    #[serde(skip)]
    pub before_start: bool,
}

/// Runs while the node does: notices a committed membership that no
/// longer names this node, at once.
pub(super) async fn follow_membership(cluster: Cluster) {
    let mut metrics = cluster.raft().metrics();
    loop {
        let committed = metrics.borrow_watched().committed_membership_config.clone();
        if let Some(at) = committed.log_id().as_ref().map(|id| id.index) {
            let names_us = committed.membership().get_node(&cluster.id()).is_some();
            let named = &cluster.inner.named;
            match names_us {
                true => named.store(true, std::sync::atomic::Ordering::Relaxed),
                false if named.load(std::sync::atomic::Ordering::Relaxed) && cluster.removed().is_none() => {
                    cluster.mark_removed(format!("the membership committed at offset {at} does not name it"));
                }
                false => {}
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Runs while the node does: asks the leader when none reaches this
/// member, says again that it is removed, and notices an addition again.
pub(super) async fn watch(cluster: Cluster) {
    let mut said = cluster.removed().map(|_| Instant::now());
    let mut asked = false;
    loop {
        if cluster.inner.config.rejoin && !asked && cluster.removed().is_some() && cluster.removed_before_start() {
            asked = true;
            tokio::spawn(rejoin(cluster.clone()));
        }
        tokio::time::sleep(LOOK_EVERY).await;
        if cluster.raft().metrics().borrow_watched().running_state.is_err() {
            return;
        }
        match cluster.removed() {
            Some(_) if cluster.added_again() => {
                cluster.undo_removal();
                said = None;
            }
            Some(why) => {
                if said.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(%why, "this node was removed from the cluster and serves nothing");
                    said = Some(Instant::now());
                }
            }
            None => {
                if let Some(why) = cluster.find_removal().await {
                    cluster.mark_removed(why);
                    said = Some(Instant::now());
                }
            }
        }
    }
}

/// `--rejoin`: asks the leader in touch to add this node again, until it is.
async fn rejoin(cluster: Cluster) {
    while cluster.removed().is_some() {
        match cluster.in_touch_leader().await {
            Some(leader) => {
                let via = leader.peer_url.as_deref().unwrap_or(&leader.url);
                tracing::warn!(%via, "--rejoin: asking the leader to add this node again");
                if let Err(e) = super::formation::join_through(&cluster, via).await {
                    tracing::warn!(error = %e, "--rejoin: the leader did not add this node");
                }
            }
            None => tracing::debug!("--rejoin: no leader in touch to ask"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Cluster {
    /// Why this node serves nothing: the cluster removed it (see the module doc).
    pub fn removed(&self) -> Option<String> {
        // Cloned out: `how_to_add` takes the lock again.
        let removal = self
            .inner
            .removal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        removal.map(|r| {
            format!(
                "this node (id {}) was removed from the cluster: {}; {}",
                self.id(),
                r.why,
                self.how_to_add()
            )
        })
    }

    fn how_to_add(&self) -> String {
        if self.inner.config.rejoin && self.removed_before_start() {
            return "--rejoin: it asks the leader to add it again".to_string();
        }
        format!(
            "it does not rejoin on its own: to add it again, POST /cluster/join {{\"url\": \"{}\"}} to the leader (or start it on an empty data directory, as a new node)",
            self.url()
        )
    }

    /// At start: a removal the `removed` file keeps. Elections stay off.
    pub(super) fn recall_removal(&self) -> std::io::Result<()> {
        let Some(mut removal) = self.inner.durable.read::<Removal>(REMOVED_FILE)? else {
            return Ok(());
        };
        if removal.node_id.is_some_and(|id| id != self.inner.id) {
            tracing::info!(removed = ?removal.node_id, "a removal of this directory's former id does not apply to it");
            return self.inner.durable.remove(REMOVED_FILE);
        }
        removal.before_start = true;
        self.raft().runtime_config().elect(false);
        *self
            .inner
            .removal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(removal);
        let why = self.removed().unwrap_or_default();
        tracing::error!(%why, "REMOVED: this node starts removed from its cluster and does not campaign");
        Ok(())
    }

    fn mark_removed(&self, why: String) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let removal = Removal {
            why,
            at_ms,
            node_id: Some(self.inner.id),
            before_start: self.inner.contact.since().is_none(),
        };
        {
            // Marking and undoing run one at a time across the state, the
            // file and the election switch (they never interleave: no file
            // left behind, no removed node campaigning); `removal`, which
            // every request reads, is held only to look and to swap, never
            // across the file's fsync. Found once: two watchers may find it.
            let _step = self.inner.removal_steps.lock().unwrap_or_else(PoisonError::into_inner);
            if self.removal_state().is_some() {
                return;
            }
            self.raft().runtime_config().elect(false);
            if let Err(e) = self.inner.durable.write(REMOVED_FILE, &removal, true) {
                tracing::error!(error = %e, "could not keep the removal on disk: a restart will not know of it");
            }
            *self.removal_state() = Some(removal);
        }
        let why = self.removed().unwrap_or_default();
        tracing::error!(%why, "REMOVED: this node is no longer a member of its cluster; it stops campaigning and serves nothing");
    }

    fn removal_state(&self) -> std::sync::MutexGuard<'_, Option<Removal>> {
        self.inner.removal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the removal came before this run: kept on disk, or found
    /// before any leader reached this node.
    fn removed_before_start(&self) -> bool {
        let removal = self
            .inner
            .removal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        removal.as_ref().is_some_and(|r| r.before_start)
    }

    /// Removed, then reached by a leader whose membership names this node.
    fn added_again(&self) -> bool {
        let metrics = self.raft().metrics().borrow_watched().clone();
        self.is_member() && self.leader_in_touch(&metrics).is_some()
    }

    fn undo_removal(&self) {
        {
            let _step = self.inner.removal_steps.lock().unwrap_or_else(PoisonError::into_inner);
            // Looked at again under the lock: a removal committed since the
            // caller's check stays.
            if !self.is_member() {
                return;
            }
            if let Err(e) = self.inner.durable.remove(REMOVED_FILE) {
                tracing::error!(error = %e, "could not delete the removal on disk: a restart will say this node is removed");
            }
            *self.removal_state() = None;
            self.raft().runtime_config().elect(true);
        }
        tracing::info!("this node was added to the cluster again: it serves and may campaign again");
    }

    /// Whether a committed membership named this node since it started
    /// (see `follow_membership`): formation then never joins on its own.
    pub(super) fn was_named(&self) -> bool {
        self.inner.named.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A member out of touch with any leader: whether the leader removed
    /// it (module doc).
    async fn find_removal(&self) -> Option<String> {
        let metrics = self.raft().metrics().borrow_watched().clone();
        let committed = &metrics.committed_membership_config;
        let names_us = committed.membership().get_node(&self.id()).is_some();
        if !names_us || self.leader_in_touch(&metrics).is_some() {
            return None;
        }
        self.leader_without_us().await
    }

    /// Asks every member and seed this node knows for `/cluster`: a leader
    /// of its own cluster in touch with its majority whose members do not
    /// name this node.
    async fn leader_without_us(&self) -> Option<String> {
        let leader = self.in_touch_leader().await.filter(|s| leads_without(s, self.id()))?;
        let members: Vec<u64> = leader.members.iter().map(|m| m.id).collect();
        Some(format!(
            "the leader, node {} at {}, lists members {members:?} without it",
            leader.node_id, leader.url
        ))
    }

    /// The `/cluster` of a leader in touch with its majority, asked of
    /// every member and seed this node knows. Only a leader of this node's
    /// cluster counts (one that lists another of the members this node
    /// knows: ids are random 64-bit, so another cluster's never do) and of a
    /// term not behind this node's: checked for every answer, so that a
    /// foreign or stale one answering first does not hide the real leader.
    pub(super) async fn in_touch_leader(&self) -> Option<ClusterStatus> {
        let metrics = self.raft().metrics().borrow_watched().clone();
        let others: Vec<u64> = metrics
            .committed_membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != self.id())
            .collect();
        let mut urls: Vec<String> = self.members().into_values().map(|(m, _)| m.url).collect();
        urls.extend(
            self.inner
                .config
                .peers
                .iter()
                .map(|p| p.trim_end_matches('/').to_string()),
        );
        urls.sort();
        urls.dedup();
        urls.retain(|u| !self.is_own_url(u));
        let asks = urls.iter().map(|url| self.peer_status(url));
        let answers = futures_util::future::join_all(asks).await;
        answers.into_iter().flatten().find(|s| {
            s.initialized
                && s.leader_id == Some(s.node_id)
                && s.term >= metrics.current_term
                && (others.is_empty() || s.members.iter().any(|m| others.contains(&m.id)))
        })
    }
}

/// Whether `status` is a leader in touch with its majority whose members
/// do not include `id`.
fn leads_without(status: &ClusterStatus, id: u64) -> bool {
    status.leader_id == Some(status.node_id) && status.initialized && !status.members.iter().any(|m| m.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::status::MemberStatus;

    fn status(node_id: u64, leader_id: Option<u64>, members: &[u64]) -> ClusterStatus {
        ClusterStatus {
            node_id,
            url: format!("http://n{node_id}"),
            peer_url: None,
            initialized: !members.is_empty(),
            term: 3,
            leader_id,
            leader_url: None,
            leader_contact_ms: Some(0),
            commit_offset: Some(9),
            max_record_bytes: None,
            peers: Vec::new(),
            removed: None,
            members: members
                .iter()
                .map(|id| MemberStatus {
                    id: *id,
                    url: format!("http://n{id}"),
                    voter: true,
                    match_offset: None,
                    reachable: None,
                    problem: None,
                    max_record_bytes: None,
                    peer_url: None,
                    replicas: 0,
                    leads: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn only_a_leader_in_touch_that_does_not_list_the_node_removes_it() {
        assert!(leads_without(&status(1, Some(1), &[1, 2]), 3));
        assert!(!leads_without(&status(1, Some(1), &[1, 2, 3]), 3), "it lists the node");
        assert!(
            !leads_without(&status(2, Some(1), &[1, 2]), 3),
            "a follower's word is not final"
        );
        assert!(
            !leads_without(&status(1, None, &[1, 2]), 3),
            "a leader out of touch may be stale"
        );
        assert!(
            !leads_without(&status(1, None, &[]), 3),
            "an uninitialized node knows nothing"
        );
    }
}
