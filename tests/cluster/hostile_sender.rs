//! Every peer RPC names its sender (`x-distlog-raft-sender`). A message
//! whose named sender is not the node inside it (append and snapshot: the
//! leader of its vote; vote and pre-vote: the candidate; transfer: the
//! leader it comes from) is refused with 403 `peer_identity_mismatch` and
//! changes nothing: the receiver's term and leader stay. An honest sender,
//! and an older one that names none, are still heard. (The binding to a
//! client certificate under mutual TLS is in `tls`.)

use std::time::Duration;

use openraft::impls::Vote;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use serde_json::Value;

use distlog::cluster::{SnapshotBody, Tables, TypeConfig, encode_append};

use super::common::cluster::ClusterStatus;
use super::common::rt;
use super::faults::{config, start_with};

/// Posts `body` to `url`'s Raft route `path`, addressed to node `target`
/// and naming `sender` (if any); the status and the JSON answer.
async fn post(url: &str, path: &str, target: u64, sender: Option<u64>, body: Vec<u8>) -> (u16, Value) {
    let content_type = match path {
        "/raft/append" => "application/octet-stream",
        _ => "application/json",
    };
    let mut request = rt::http()
        .post(format!("{url}{path}"))
        .header("x-distlog-raft-target", target.to_string())
        .header("content-type", content_type)
        .timeout(Duration::from_secs(5))
        .body(body);
    if let Some(sender) = sender {
        request = request.header("x-distlog-raft-sender", sender.to_string());
    }
    let answer = request.send().await.unwrap_or_else(|e| panic!("{url}{path}: {e}"));
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Every kind of peer RPC, from `inside` at `term`, to node `target`.
fn every_rpc(term: u64, inside: u64, target: u64) -> Vec<(&'static str, Vec<u8>)> {
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, inside),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    };
    let snapshot = SnapshotBody {
        vote: Vote::new_committed(term, inside),
        meta: openraft::storage::SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
        },
        tables: Tables::default(),
    };
    let vote = VoteRequest::<TypeConfig>::new(Vote::new(term, inside), None);
    let transfer = TransferLeaderRequest::<TypeConfig>::new(Vote::new_committed(term, inside), target, None);
    vec![
        ("/raft/pre-vote", json(&vote)),
        ("/raft/vote", json(&vote)),
        ("/raft/append", encode_append(&append)),
        ("/raft/snapshot", json(&snapshot)),
        ("/raft/transfer-leader", json(&transfer)),
    ]
}

#[tokio::test]
async fn an_rpc_naming_one_member_and_carrying_another_is_refused_and_changes_nothing() {
    let what = "hostile sender";
    let (cluster, leader) = start_with(what, config()).await;
    let (victim, other) = ((leader + 1) % cluster.len(), (leader + 2) % cluster.len());
    let id_of = |status: &ClusterStatus| status.node_id.as_u64().unwrap_or_default();
    let cluster = &cluster;
    let status = |i| async move { cluster.cluster_status(i).await.unwrap_or_else(|e| panic!("{e}")) };
    let before = status(victim).await;
    let (target, leader_id, other_id) = (
        id_of(&before),
        id_of(&status(leader).await),
        id_of(&status(other).await),
    );
    let url = cluster.url(victim);

    // Named: the leader, a member. Inside: another member, at a term high
    // enough that the victim would follow it if it listened.
    let high = before.term + 100;
    let mut answers = Vec::new();
    for (path, body) in every_rpc(high, other_id, target) {
        let (status, body) = post(&url, path, target, Some(leader_id), body).await;
        answers.push(format!("{path}: {status} {body}"));
        let refused = status == 403 && body["code"] == "peer_identity_mismatch";
        assert!(
            refused,
            "{what}: {path} answered {status} {body} (all so far: {answers:#?})"
        );
    }
    let metrics = rt::http().get(format!("{url}/metrics")).send().await;
    let metrics = match metrics {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(e) => panic!("{url}/metrics: {e}"),
    };
    assert!(
        metrics.contains(r#"distlog_auth_failures_total{reason="peer_identity_mismatch"} 5"#),
        "{what}: each refusal is counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("auth_failures"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let after = status(victim).await;
    assert_eq!(
        (after.term, &after.leader_id),
        (before.term, &before.leader_id),
        "{what}: the refused messages changed the victim's term or leader"
    );

    // The same pre-vote naming its own candidate, or no one (an older
    // node), is heard: 200, a vote refused or granted, nothing changed.
    for named in [Some(other_id), None] {
        let (path, body) = every_rpc(high, other_id, target).swap_remove(0);
        let (status, body) = post(&url, path, target, named, body).await;
        assert_eq!(status, 200, "{what}: an honest pre-vote naming {named:?}: {body}");
    }
}
