//! Forming and growing the cluster from the seed list (`--peers`), the
//! same on every node: when `--bootstrap-expect` seeds (every seed by
//! default; a majority at least), the lowest among them, answer that they
//! are uninitialized and have the same seed list, the lowest seed
//! initializes the cluster with them as voters. Only the lowest seed ever
//! initializes, so two groups of seeds never form two clusters; seeds with
//! another list are named, to writers and in the log. A node outside the membership (new, or wiped and back under a
//! new id) joins through any seed that belongs to a cluster
//! (`POST /cluster/join`): it is added as a learner and promoted to voter
//! once caught up, and a stale member with the same URL is removed.
//! Formation ends only when this node is a voter and no other member has
//! its URL: a join that stopped halfway (the joiner or the leader restarted,
//! a lost answer) is asked again until it is finished, and the leader's
//! reconciler finishes it too. Restarted voters skip all this: their log
//! holds the membership, unless the peer URL it records for them is not
//! the one they now have (`--peer-listen` turned on or off, or moved): they
//! ask the leader to record the new one, as a join asked again does.
//!
//! Seeds may be given as the nodes' URLs or their peer URLs (`GET /cluster`
//! answers on both ports and names both): a seed is this node, or the lowest
//! seed, when it is either of a node's URLs. The seed lists themselves are
//! compared as written, so every node must be given the same list.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::ClusterError;
use super::node::{Cluster, ClusterConfig};
use super::status::ClusterStatus;
use super::types::{Member, NodeId};

/// `POST /cluster/join`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub url: String,
    /// The joining node's id; looked up at `url` when missing.
    #[serde(default)]
    pub id: Option<NodeId>,
    /// The joining node's `--max-record-bytes`, compared with the leader's.
    #[serde(default)]
    pub max_record_bytes: Option<u64>,
    /// Where peers reach the joining node, when it serves them on a port of
    /// its own (`--peer-listen`); looked up at `url` with the id.
    #[serde(default)]
    pub peer_url: Option<String>,
}

const RETRY: Duration = Duration::from_millis(300);
/// How often a node that is still waiting says so at WARN.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// How long a learner waits for its join to finish before asking again.
const REJOIN_AFTER: Duration = Duration::from_secs(3);

/// Runs until this node is a voter with no other member at its URL. Until
/// it is a member, what it waits for is kept (`Cluster::not_formed`:
/// writers' `no_leader` and `/readyz` say it); all along it is logged: at
/// INFO at once, at WARN every `WARN_EVERY`.
pub async fn form(cluster: Cluster) {
    let started = Instant::now();
    let mut said: Option<Instant> = None;
    let mut member_since: Option<Instant> = None;
    let mut noted = BTreeSet::new();
    loop {
        // A removed node rejoins only when asked (`removal` says so).
        if cluster.removed().is_some() {
            cluster.set_forming(None);
            return;
        }
        if cluster.is_settled() {
            cluster.set_forming(None);
            if said.is_some() {
                tracing::info!(after = ?started.elapsed(), "this node is a voter in the cluster");
            }
            return;
        }
        // Named by a committed membership and no longer: removed, which
        // `removal` is finding out; never a new node that joins.
        if cluster.was_named() && !cluster.is_member() {
            cluster.set_forming(Some(
                "this node is no longer in its membership: finding out whether the cluster removed it".into(),
            ));
            tokio::time::sleep(RETRY).await;
            continue;
        }
        let step = match cluster.is_member() {
            false => formation_step(&cluster, &mut noted).await,
            true => {
                let since = *member_since.get_or_insert_with(Instant::now);
                rejoin_step(&cluster, since).await
            }
        };
        if let Err(why) = step {
            match said {
                None => tracing::info!(%why, "the cluster is not formed yet"),
                Some(at) if at.elapsed() < WARN_EVERY => {}
                Some(_) => tracing::warn!(%why, waited = ?started.elapsed(), "the cluster is not formed yet"),
            }
            if said.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                said = Some(Instant::now());
            }
            cluster.set_forming(Some(why));
        }
        tokio::time::sleep(RETRY).await;
    }
}

impl Cluster {
    /// Whether the current membership names this node.
    pub fn is_member(&self) -> bool {
        self.members().contains_key(&self.id())
    }

    /// Whether this node is a voter, recorded with its peer URL as it is
    /// now, and no other member has its URL: where formation ends.
    fn is_settled(&self) -> bool {
        let members = self.members();
        members
            .get(&self.id())
            .is_some_and(|(me, voter)| *voter && me.peer_url == self.inner.config.peer_url)
            && !members
                .iter()
                .any(|(id, (m, _))| *id != self.id() && m.url == self.url())
    }

    /// While this node is in no cluster: what it waits for.
    pub fn not_formed(&self) -> Option<String> {
        if self.is_member() {
            return None;
        }
        let forming = self
            .inner
            .forming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        forming.as_ref().map(|why| format!("cluster not formed: {why}"))
    }

    pub(super) fn set_forming(&self, why: Option<String>) {
        *self
            .inner
            .forming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = why;
    }

    /// Why no leader is known: formation's wait when this node is in no
    /// cluster yet, else an election or an unreachable majority.
    pub fn no_leader(&self) -> ClusterError {
        match self.not_formed() {
            Some(why) => ClusterError::NotFormed(why),
            None => ClusterError::NoLeader,
        }
    }

    /// GET `url`/cluster, through the routes.
    pub async fn peer_status(&self, url: &str) -> Result<ClusterStatus, String> {
        status_of(&self.inner.config, url).await
    }

    fn inner_routes(&self) -> super::network::Routes {
        super::network::Routes::new(self.inner.config.routes.clone())
    }
}

/// GET `url`/cluster with the peer client of `config`, through its routes.
pub(super) async fn status_of(config: &ClusterConfig, url: &str) -> Result<ClusterStatus, String> {
    peer_get(config, url, "/cluster", Duration::from_secs(2)).await
}

/// GET `url``path` with the peer client of `config`, through its routes,
/// waiting up to `timeout`; its JSON answer, or why not (naming `url`).
pub(super) async fn peer_get<T: serde::de::DeserializeOwned>(
    config: &ClusterConfig,
    url: &str,
    path: &str,
    timeout: Duration,
) -> Result<T, String> {
    let target = format!(
        "{}{path}",
        super::network::Routes::new(config.routes.clone()).resolve(url)
    );
    let response = config
        .client
        .get(&target)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: answered {}", response.status()));
    }
    response.json().await.map_err(|e| format!("{url}: {e}"))
}

/// One look at the seeds: Ok when it did something (joined, initialized),
/// else what the cluster's formation waits for. `noted`: what was already
/// said at WARN once (a seed's other limits or other seed list).
async fn formation_step(cluster: &Cluster, noted: &mut BTreeSet<String>) -> Result<(), String> {
    let seeds = &cluster.inner.config.peers;
    let mut statuses = Vec::new();
    let mut unanswered = Vec::new();
    for seed in seeds {
        if cluster.is_own_url(seed) {
            statuses.push(cluster.status());
            continue;
        }
        match cluster.peer_status(seed).await {
            Ok(status) => statuses.push(status),
            Err(e) => unanswered.push((seed.trim_end_matches('/'), e)),
        }
    }
    warn_of_other_limits(cluster, &statuses, noted);
    // A removed member still says it is initialized but refuses joins
    // (503 removed): a seed in touch with a leader is asked first, then the
    // others in turn, so that one removed seed does not keep every new node out.
    let mut formed: Vec<&ClusterStatus> = statuses
        .iter()
        .filter(|s| s.initialized && s.node_id != cluster.id() && s.removed.is_none())
        .collect();
    formed.sort_by_key(|s| s.leader_url.is_none());
    // A seed that lists this node already: the cluster was formed with it
    // (or a join of it is under way) and the membership is on its way here
    // with the log. A join asked now would be one more membership change
    // for the leader to make, for nothing.
    if formed.iter().any(|s| s.members.iter().any(|m| m.id == cluster.id())) {
        return Err("this node is in the cluster's membership: waiting for it to arrive from the leader".into());
    }
    if !formed.is_empty() {
        let mut joined = Err(String::new());
        for seed in formed {
            cluster.set_forming(Some(format!("joining through {}: catching up as a learner", seed.url)));
            joined = join_through(cluster, seed.peer_url.as_ref().unwrap_or(&seed.url)).await;
            if joined.is_ok() {
                break;
            }
        }
        joined?;
        // The leader has us; the membership reaches this node with its log.
        let _ = cluster
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.membership_config.get_node(&cluster.id()).is_some(),
                "the membership arrives",
            )
            .await;
        return Ok(());
    }
    // A seed that is initialized (only a removed one is left here) says a
    // cluster exists: it never counts towards forming another.
    if let Some(removed) = statuses.iter().find(|s| s.initialized && s.node_id != cluster.id()) {
        return Err(format!(
            "seed {} belongs to a cluster but was removed from it, and no other seed answers as a member: waiting for one to join through",
            removed.url
        ));
    }
    let ours = seed_list(seeds);
    let (agreeing, disagreeing): (Vec<&ClusterStatus>, Vec<&ClusterStatus>) = statuses
        .iter()
        .partition(|s| s.peers.is_empty() || seed_list(&s.peers) == ours);
    let answers_at = |s: &ClusterStatus, url: &str| s.url == url || s.peer_url.as_deref() == Some(url);
    let mut waits = Vec::new();
    if !unanswered.is_empty() {
        let urls: Vec<&str> = unanswered.iter().map(|(url, _)| *url).collect();
        let errors: Vec<&str> = unanswered.iter().map(|(_, e)| e.as_str()).collect();
        tracing::debug!(?errors, "seeds not answering");
        waits.push(format!("waiting for {} to answer", urls.join(", ")));
    }
    for other in &disagreeing {
        let why = format!(
            "seed {} has another seed list (--peers {}) than this node ({})",
            other.url,
            seed_list(&other.peers).join(","),
            ours.join(",")
        );
        if noted.insert(why.clone()) {
            tracing::warn!(seed = %other.url, "{why}: the seeds must have the same --peers");
        }
        waits.push(why);
    }
    let lowest = ours.first().map(String::as_str).unwrap_or("?");
    let expect = cluster.inner.config.bootstrap_expect;
    if agreeing.len() < expect || !agreeing.iter().any(|s| answers_at(s, lowest)) {
        return Err(format!(
            "{}; a new cluster forms once {expect} of the {} seeds, the lowest ({lowest}) among them, answer uninitialized with the same --peers (--bootstrap-expect)",
            waits.join("; "),
            ours.len()
        ));
    }
    if !cluster.is_own_url(lowest) {
        return Err(format!(
            "{} seeds agree; waiting for the lowest seed URL, {lowest}, to initialize the cluster",
            agreeing.len()
        ));
    }
    let members: BTreeMap<NodeId, Member> = agreeing
        .iter()
        .map(|s| {
            let member = Member {
                url: s.url.clone(),
                max_record_bytes: s.max_record_bytes,
                peer_url: s.peer_url.clone(),
            };
            (s.node_id, member)
        })
        .collect();
    tracing::info!(?members, "enough seeds agree: initializing the cluster");
    match cluster.raft().initialize(members).await {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("initializing the cluster: {e}")),
    }
}

/// A seed list as formation compares them: sorted, without trailing slashes.
fn seed_list(seeds: &[String]) -> Vec<String> {
    let mut list: Vec<String> = seeds.iter().map(|s| s.trim_end_matches('/').to_string()).collect();
    list.sort();
    list.dedup();
    list
}

/// Seeds whose `--max-record-bytes` is not this node's are named, once
/// each (the same record would be taken or refused depending on who leads).
fn warn_of_other_limits(cluster: &Cluster, statuses: &[ClusterStatus], noted: &mut BTreeSet<String>) {
    let ours = cluster.max_record_bytes();
    for status in statuses {
        if let Some(theirs) = status.max_record_bytes.filter(|theirs| *theirs != ours)
            && noted.insert(format!("{} --max-record-bytes {theirs}", status.url))
        {
            tracing::warn!(
                seed = %status.url, theirs, ours,
                "members disagree on --max-record-bytes: a record between the two is taken or refused depending on who leads"
            );
        }
    }
}

/// A member that is not settled (a learner, or a voter with a stale twin
/// at its URL): after `REJOIN_AFTER`, asks the leader to finish the join.
async fn rejoin_step(cluster: &Cluster, member_since: Instant) -> Result<(), String> {
    let role = match cluster.members().get(&cluster.id()) {
        Some((me, true)) if me.peer_url != cluster.inner.config.peer_url => "a voter recorded with another peer URL",
        Some((_, true)) => "a voter, with a stale member at its URL",
        _ => "a learner",
    };
    let waiting = format!("joined as {role}: waiting for the join to finish");
    if member_since.elapsed() < REJOIN_AFTER {
        return Err(waiting);
    }
    // A voter whose peer URL changed may lead (its votes are answered on
    // the connections it opens): it records itself.
    if cluster.leader().is_some_and(|(id, _)| id == cluster.id()) {
        tracing::info!("{waiting}: this node leads; finishing it here");
        return cluster
            .join(own_join_request(cluster))
            .await
            .map_err(|e| format!("{waiting}; {e}"));
    }
    // Else it may hear no leader (they send to its old URL): it asks the
    // members and seeds who leads.
    let leader_url = match cluster.leader_peer_url() {
        Some(url) => url,
        None => match cluster.in_touch_leader().await {
            Some(leader) => leader.peer_url.unwrap_or(leader.url),
            None => return Err(format!("{waiting}; no leader is known to ask")),
        },
    };
    tracing::info!(via = %leader_url, "{waiting}: asking the leader to finish it");
    join_through(cluster, &leader_url)
        .await
        .map_err(|e| format!("{waiting}; {e}"))
}

/// The join this node asks for: itself, as it is now.
fn own_join_request(cluster: &Cluster) -> JoinRequest {
    JoinRequest {
        url: cluster.url().to_string(),
        id: Some(cluster.id()),
        max_record_bytes: Some(cluster.max_record_bytes()),
        peer_url: cluster.inner.config.peer_url.clone(),
    }
}

/// Asks `via` (and the leader it points to) to add this node.
pub(super) async fn join_through(cluster: &Cluster, via: &str) -> Result<(), String> {
    let mut target = via.trim_end_matches('/').to_string();
    let request = own_join_request(cluster);
    for _ in 0..4 {
        let url = format!("{}/cluster/join", cluster.inner_routes().resolve(&target));
        let response = cluster
            .inner
            .config
            .client
            .post(&url)
            .json(&request)
            // Joining waits for this node to catch up as a learner.
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| format!("join via {target}: {e}"))?;
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.strip_suffix("/cluster/join"))
                .map(str::to_string);
            target = location.ok_or_else(|| format!("join via {target}: a redirect without a leader"))?;
            continue;
        }
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            // Asked at a client port: the node says where peers reach it.
            if status == reqwest::StatusCode::NOT_FOUND
                && let Some(peer_url) = super::network::peer_port_elsewhere(&body)
                && peer_url.trim_end_matches('/') != target
                && super::network::same_host(&target, &peer_url)
            {
                target = peer_url.trim_end_matches('/').to_string();
                continue;
            }
            return Err(format!("join via {target}: {status}: {body}"));
        }
        tracing::info!(via = %target, "joined the cluster");
        return Ok(());
    }
    Err(format!("join via {via}: too many redirects"))
}
