//! Disks restored from an older copy: the leader's half of protocol-aware
//! recovery ("Protocol-Aware Recovery for Consensus-Based Storage", FAST '18).
//!
//! A node's own marks (`repair`) catch a log that lost what the node had
//! recorded. They cannot catch a whole data directory restored from a
//! backup or a volume snapshot at the same URL: the marks come back as old
//! as the log and agree with it. What the node acknowledged since is known
//! only to the leader that counted it: its Raft core's replication progress
//! for the node's id (`match_offset` in its `GET /cluster`, present only
//! on a node whose core leads, whether or not a majority still answers it:
//! once the restored node was part of the only majority, its leader has
//! lost that majority by the time the node is back). So before a node that
//! kept its id starts Raft (its routes do not answer yet, so the leader's
//! view cannot move), it asks every seed and every member they list, all
//! at once, and believes the leader with the highest term that is not
//! behind its own vote (a deposed leader's progress may predate a
//! truncation). A leader that had this node holding an entry past the end
//! of its log is a fault like a short log: the node takes a new id and
//! joins again (`repair`).
//!
//! Limits, said at WARN when they apply: only with `--fsync always` (with
//! write caching a log may come back shorter after a power cut by design);
//! only a leader elected before the node went down knows its progress; with
//! no leader in reach within `ASK_WITHIN` (a whole-cluster restart) nothing
//! is known and the node starts as before.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::formation::status_of;
use super::identity::same_url;
use super::node::ClusterConfig;
use super::repair::Fault;
use super::status::ClusterStatus;
use super::types::NodeId;

/// How long a start waits for the seeds and the members they name, at most.
const ASK_WITHIN: Duration = Duration::from_secs(3);
/// How long a start that needs a live leader (`live_leader`) waits for one.
const LEADER_WITHIN: Duration = Duration::from_secs(15);
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(500);

/// Asks around for the leader's view of node `id` (see the module doc); a
/// fault when that leader had it holding an entry at or past `log_end`
/// (the log's next index). `vote_term`: the term of the node's saved vote.
pub async fn check_with_leader(config: &ClusterConfig, id: NodeId, vote_term: u64, log_end: u64) -> Option<Fault> {
    let answers = ask_around(config).await;
    let leader = answers
        .into_iter()
        .filter(|s| s.node_id != id && s.term >= vote_term)
        .filter_map(|s| matched(&s, id).map(|m| (s, m)))
        .max_by_key(|(s, _)| s.term);
    let Some((leader, matched)) = leader else {
        tracing::warn!(
            "no leader that knows this node answered within {ASK_WITHIN:?}: starting without checking what it had \
             acknowledged (a data directory restored from a backup would not be caught now)"
        );
        return None;
    };
    (matched >= log_end).then(|| Fault::BehindLeader {
        leader: leader.url.clone(),
        matched,
        log_end,
    })
}

/// A leader in touch with a majority (its own `leader_id`: a leader names
/// itself only while a majority answers it within the lease), of a term not
/// behind `vote_term`, among the seeds and the members they list: by Raft's
/// leader completeness it holds every entry committed in the terms this
/// node has seen, so what this node holds alone past it was never
/// committed (see `quarantine`).
/// Only a leader whose members list `id` (this node's id: ids are random
/// 64-bit, so another cluster's leader at a seed's URL never does) counts.
///
/// Asked again until `LEADER_WITHIN` while members answer but none leads:
/// this node may have been the leader, killed or cut off by power with
/// the others, who elect one within an election timeout or two; refusing
/// the start at once would leave it to a supervisor's restart loop. With
/// no member to ask (a one-node cluster) it answers at once.
pub async fn live_leader(config: &ClusterConfig, vote_term: u64, id: NodeId) -> Option<ClusterStatus> {
    let deadline = Instant::now() + LEADER_WITHIN;
    loop {
        let answers = ask_around(config).await;
        let leader = answers
            .iter()
            .filter(|s| s.leader_id == Some(s.node_id) && s.node_id != id && s.term >= vote_term)
            .filter(|s| s.members.iter().any(|m| m.id == id))
            .max_by_key(|s| s.term);
        if let Some(leader) = leader {
            return Some(leader.clone());
        }
        if answers.is_empty() && !has_others_to_ask(config) || Instant::now() >= deadline {
            return None;
        }
        tracing::info!("no leader in touch with a majority answered yet: asking again");
        tokio::time::sleep(ASK_AGAIN_AFTER).await;
    }
}

/// Whether the seeds name anyone but this node.
fn has_others_to_ask(config: &ClusterConfig) -> bool {
    let own = [Some(&config.advertise_url), config.peer_url.as_ref()];
    config.peers.iter().any(|seed| {
        !own.iter()
            .flatten()
            .any(|own| same_url(seed.trim_end_matches('/'), own))
    })
}

/// The entry node `id` holds as `status`'s node knows it: only a node whose
/// Raft core leads tracks other members' progress.
fn matched(status: &ClusterStatus, id: NodeId) -> Option<u64> {
    status.members.iter().find(|m| m.id == id)?.match_offset
}

/// `GET /cluster` of every seed and of every member their answers list,
/// asked at once, as many as answer within `ASK_WITHIN`.
async fn ask_around(config: &ClusterConfig) -> Vec<ClusterStatus> {
    let config = Arc::new(config.clone());
    // This node's own URLs: it does not serve yet, and asking itself would
    // only wait.
    let own: Vec<String> = std::iter::once(config.advertise_url.clone())
        .chain(config.peer_url.clone())
        .collect();
    let deadline = Instant::now() + ASK_WITHIN;
    let mut asked: BTreeSet<String> = BTreeSet::new();
    let mut pending = JoinSet::new();
    let mut answers = Vec::new();
    let mut ask = |url: &str, pending: &mut JoinSet<_>| {
        let url = url.trim_end_matches('/').to_string();
        if own.iter().any(|own| same_url(&url, own)) || !asked.insert(url.clone()) {
            return;
        }
        let config = config.clone();
        pending.spawn(async move { status_of(&config, &url).await });
    };
    for seed in &config.peers {
        ask(seed, &mut pending);
    }
    loop {
        let next = tokio::select! {
            next = pending.join_next() => next,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let Some(joined) = next else { break };
        let Ok(Ok(status)) = joined else { continue };
        // At their peer port where they have one: clients may hold every
        // connection of the other.
        for member in &status.members {
            ask(member.peer_url.as_deref().unwrap_or(&member.url), &mut pending);
        }
        answers.push(status);
    }
    pending.abort_all();
    answers
}
