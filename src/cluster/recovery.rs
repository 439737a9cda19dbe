//! Disks restored from an older copy: the leader's half of protocol-aware
//! recovery ("Protocol-Aware Recovery for Consensus-Based Storage", FAST '18).
//!
//! A node's own marks (`repair`) catch a log that lost what the node had
//! recorded. They cannot catch a whole data directory restored from a
//! backup or a volume snapshot at the same URL: the marks come back as old
//! as the log and agree with it. What the node acknowledged since is known
//! only to the leader that counted it (its replication progress for the
//! node's id, `match_offset` in the leader's `GET /cluster`). So before a
//! node that kept its id starts Raft (its routes do not answer yet, so the
//! leader's view cannot move), it asks: the seeds for the leader, then the
//! leader. A leader that had this node holding an entry past the end of its
//! log is a fault like a short log: the node takes a new id and joins
//! again (`repair`), and its old id stays a silent voter until a caught-up
//! replacement takes its place.
//!
//! Only with `--fsync always`: with write caching a log may come back
//! shorter after a power cut by design (`allow_log_reversion`). With no
//! leader in reach (a whole-cluster restart, a partition) nothing is known
//! and the node starts as before: the check is best effort, bounded by
//! `ASK_WITHIN`.

use std::time::Duration;

use super::formation::status_of;
use super::node::ClusterConfig;
use super::repair::Fault;
use super::status::ClusterStatus;
use super::types::NodeId;

/// How long a start waits for the seeds and the leader, at most.
const ASK_WITHIN: Duration = Duration::from_secs(3);

/// Asks the leader (found through `config.peers`) which entry it had node
/// `id` holding; a fault when that is past `log_end` (the log's next
/// index). None when the log holds it, or when no leader answered.
pub async fn check_with_leader(config: &ClusterConfig, id: NodeId, log_end: u64) -> Option<Fault> {
    let asked = tokio::time::timeout(ASK_WITHIN, leader_status(config)).await;
    let Ok(Some(leader)) = asked else {
        tracing::info!("no leader answered: starting without asking what this node had acknowledged");
        return None;
    };
    let matched = leader.members.iter().find(|m| m.id == id)?.match_offset?;
    (matched >= log_end).then(|| Fault::BehindLeader {
        leader: leader.url.clone(),
        matched,
        log_end,
    })
}

/// The `GET /cluster` of a node that answers as the leader, found by asking
/// each seed and then the leader it names.
async fn leader_status(config: &ClusterConfig) -> Option<ClusterStatus> {
    let own = config.advertise_url.trim_end_matches('/');
    for seed in config.peers.iter().filter(|s| s.trim_end_matches('/') != own) {
        let Ok(status) = status_of(config, seed).await else {
            continue;
        };
        if is_leader(&status) {
            return Some(status);
        }
        let Some(leader_url) = status.leader_url.filter(|u| u.trim_end_matches('/') != own) else {
            continue;
        };
        if let Ok(leader) = status_of(config, &leader_url).await
            && is_leader(&leader)
        {
            return Some(leader);
        }
    }
    None
}

fn is_leader(status: &ClusterStatus) -> bool {
    status.leader_id == Some(status.node_id)
}
