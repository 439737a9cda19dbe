//! Membership changes the HTTP layer asks for: join (learner first, voter
//! once caught up, replacing a stale member at the same URL; finished by
//! `reconcile` when it stops halfway), removal, and
//! handing leadership to another node. All run on the leader; elsewhere
//! they answer `NotLeader` with where the leader is.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};

use super::error::ClusterError;
use super::failpoint;
use super::formation::JoinRequest;
use super::node::Cluster;
use super::types::{Member, NodeId, TypeConfig};

impl Cluster {
    pub(super) fn change_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ClusterError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_node {
                Some(node) => ClusterError::NotLeader {
                    leader_url: Some(node.url),
                },
                None => ClusterError::NoLeader,
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ClusterError::BadRequest(e.to_string()),
            RaftError::APIError(e) => ClusterError::OutcomeUnknown(e.to_string()),
            RaftError::Fatal(f) => ClusterError::Stopped(f.to_string()),
        }
    }

    /// Adds the node at `request.url` as a learner, waits for it to catch
    /// up, then makes it a voter in place of any member at the same URL (one
    /// joint change). Idempotent: a join asked again, after any step, goes
    /// on from where the last one stopped (see `reconcile`).
    pub async fn join(&self, request: JoinRequest) -> Result<(), ClusterError> {
        self.must_lead()?;
        let (id, url, peer_url) = self.joiner(&request).await?;
        if let Some(theirs) = request.max_record_bytes.filter(|t| *t != self.max_record_bytes()) {
            tracing::warn!(
                node_id = id, %url, theirs, ours = self.max_record_bytes(),
                "a joining node's --max-record-bytes is not the leader's: a record between the two is taken or refused depending on who leads"
            );
        }
        let wanted = Member {
            url: url.clone(),
            max_record_bytes: request.max_record_bytes,
            peer_url,
        };
        match self.members().get(&id) {
            Some((member, _)) if member.url != url => {
                return Err(ClusterError::BadRequest(format!(
                    "node {id} is a member at {}, not at {url}",
                    member.url
                )));
            }
            Some((member, _)) => {
                if member.peer_url != wanted.peer_url {
                    self.record_peer_url(id, wanted).await?;
                }
                self.wait_caught_up(id).await?
            }
            None => {
                tracing::info!(node_id = id, %url, peer_url = ?wanted.peer_url, "adding a learner");
                self.wake_to_propose().await;
                self.raft()
                    .add_learner(id, wanted, true)
                    .await
                    .map_err(|e| self.change_error(e))?;
                // openraft's blocking add returns once the learner is within
                // `replication_lag_threshold` (5,000) entries, which a young
                // log is with nothing replicated: a node that never answered
                // was made a voter. Ours asks that it hold something.
                self.wait_caught_up(id).await?
            }
        }
        failpoint::hit(failpoint::JOIN_AFTER_LEARNER)
            .await
            .map_err(ClusterError::OutcomeUnknown)?;
        self.promote_in_place(id).await
    }

    /// Who asks to join: its id, URL and peer URL. Without an id, the node
    /// is asked at `request.url`, which may be either of its URLs (an
    /// operator's `distlog cluster add` names one).
    async fn joiner(&self, request: &JoinRequest) -> Result<(NodeId, String, Option<String>), ClusterError> {
        let http = |url: &str| -> Result<String, ClusterError> {
            let url = url.trim_end_matches('/');
            match url.starts_with("http://") || url.starts_with("https://") {
                true => Ok(url.to_string()),
                false => Err(ClusterError::BadRequest(format!("not an http(s) URL: {url}"))),
            }
        };
        let url = http(&request.url)?;
        let peer_url = request.peer_url.as_deref().map(http).transpose()?;
        if let Some(id) = request.id {
            return Ok((id, url, peer_url));
        }
        let status = self
            .peer_status(&url)
            .await
            .map_err(|e| ClusterError::BadRequest(format!("cannot ask {url} for its id: {e}")))?;
        let peer_url = peer_url.or(status.peer_url.clone());
        // Named by its peer URL: recorded at its own.
        let url = match peer_url.as_deref() == Some(url.as_str()) {
            true => http(&status.url)?,
            false => url,
        };
        Ok((status.node_id, url, peer_url))
    }

    /// Records member `id` as `member` (its peer URL changed: it was
    /// restarted with `--peer-listen` turned on, off, or moved). Raft's
    /// messages to it go to the new URL from then on.
    async fn record_peer_url(&self, id: NodeId, member: Member) -> Result<(), ClusterError> {
        let _turn = self.inner.changing.lock().await;
        tracing::info!(node_id = id, peer_url = ?member.peer_url, "recording a member's new peer URL");
        self.change(|members| {
            let stale = members.get(&id).is_some_and(|(m, _)| m.peer_url != member.peer_url);
            stale.then(|| ChangeMembers::SetNodes([(id, member.clone())].into()))
        })
        .await
    }

    /// Removes member `id` (voter or learner) from the cluster.
    pub async fn remove(&self, id: NodeId) -> Result<(), ClusterError> {
        self.must_lead()?;
        // The voter set changes one at a time (see `reconcile`).
        let _turn = self.inner.changing.lock().await;
        self.wake_to_propose().await;
        let members = self.members();
        let Some((_, voter)) = members.get(&id) else {
            return Err(ClusterError::NoSuchMember(id));
        };
        if *voter {
            if members.values().filter(|(_, voter)| *voter).count() <= 1 {
                return Err(ClusterError::BadRequest("cannot remove the last voter".into()));
            }
            self.raft()
                .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                .await
                .map_err(|e| self.change_error(e))?;
        }
        let nodes: BTreeSet<NodeId> = [id].into();
        if self.members().contains_key(&id) {
            self.raft()
                .change_membership(ChangeMembers::RemoveNodes(nodes), false)
                .await
                .map_err(|e| self.change_error(e))?;
        }
        Ok(())
    }

    /// On the way down: a leader hands leadership to its most caught-up
    /// voter first, so that the others need not wait an election timeout,
    /// then waits until the writes it held are answered. Gives up quietly
    /// after `within`.
    pub async fn step_down(&self, within: Duration) {
        let until = tokio::time::Instant::now() + within;
        if self.leader().is_none_or(|(leader, _)| leader != self.id()) {
            return;
        }
        let status = self.status();
        let best = status
            .members
            .iter()
            .filter(|m| m.voter && m.id != self.id() && m.reachable == Some(true))
            .max_by_key(|m| m.match_offset)
            .map(|m| m.id);
        let Some(next) = best else { return };
        let term = self.raft().metrics().borrow_watched().current_term;
        tracing::info!(to = next, "shutting down: handing leadership over");
        match tokio::time::timeout_at(until, self.transfer_leadership(next)).await {
            Ok(Ok(())) => {
                tracing::info!(to = next, "leadership handed over");
                self.answer_held_writes(term, until).await;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not hand leadership over"),
            Err(_) => tracing::warn!(?within, "leadership handover timed out"),
        }
    }

    /// After a hand-over: the writes this node appended as leader in `term`
    /// (openraft takes none once the hand-over begins) and had not answered
    /// are committed by its successor, which took over only once it held
    /// them, and their clients are answered when this node applies them, on
    /// the successor's word. That word comes after the one that named the
    /// successor, so a stop that closed the listener on the latter left
    /// those clients waiting for their own timeout. Waits until `until`.
    async fn answer_held_writes(&self, term: u64, until: tokio::time::Instant) {
        let store = self.store();
        let Some(last) = store.next_index().checked_sub(1) else {
            return;
        };
        let held = store
            .terms()
            .last_of_each_term(store.first_index(), last)
            .into_iter()
            .find_map(|(t, end)| (t == term).then_some(end));
        let Some(held) = held else { return };
        let within = until.saturating_duration_since(tokio::time::Instant::now());
        let answered = self
            .raft()
            .wait(Some(within))
            .metrics(
                |m| m.last_applied.as_ref().is_some_and(|applied| applied.index >= held),
                "the writes held at the hand-over are answered",
            )
            .await;
        if answered.is_err() {
            tracing::warn!(
                ?within,
                held,
                "writes held at the hand-over were not all answered in time"
            );
        }
    }

    /// Hands leadership to voter `id` and waits until it leads.
    pub async fn transfer_leadership(&self, id: NodeId) -> Result<(), ClusterError> {
        self.must_lead()?;
        self.wake_to_propose().await;
        let members: BTreeMap<NodeId, (Member, bool)> = self.members();
        match members.get(&id) {
            Some((_, true)) => {}
            Some((_, false)) => return Err(ClusterError::BadRequest(format!("node {id} is a learner, not a voter"))),
            None => return Err(ClusterError::NoSuchMember(id)),
        }
        if id == self.id() {
            return Ok(());
        }
        self.raft()
            .trigger()
            .transfer_leader(id)
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))?;
        let deadline = self.election_timeout() * 10;
        let waited = self
            .raft()
            .wait(Some(deadline.max(Duration::from_secs(3))))
            .metrics(|m| m.current_leader == Some(id), "the new leader takes over")
            .await;
        waited.map(|_| ()).map_err(|e| ClusterError::Timeout(e.to_string()))
    }
}
