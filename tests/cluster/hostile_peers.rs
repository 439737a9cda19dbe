//! Peer messages that break Raft's rules, sent to a real follower: each
//! is refused with 400, and the node still takes part in the cluster (a
//! snapshot from a term above its sender's vote used to trip an assertion
//! in openraft's core and stop the node's Raft for good). Then random and
//! mutated append-entries bodies: never a crash.

use std::time::Duration;

use futures_util::StreamExt;
use openraft::impls::Vote;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::vote::leader_id_std::CommittedLeaderId;
use serde_json::json;

use distlog::cluster::{SnapshotBody, Tables, TypeConfig, encode_append};

use super::common::rt::{self, XorShift};
use super::common::writer::Load;
use super::faults::{LEADER_TIMEOUT, assert_progress, check_and_report, config, eventually, load_config, start_with};

type LogId = openraft::LogId<CommittedLeaderId<u64>>;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term), index)
}

/// Posts `body` to `url`'s Raft route `path`, addressed to node `target`.
async fn post(url: &str, path: &str, target: u64, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let answer = rt::http()
        .post(format!("{url}{path}"))
        .header("x-distlog-raft-target", target.to_string())
        .header("content-type", content_type)
        .timeout(Duration::from_secs(5))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}{path}: {e}"));
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap_or_default())
}

/// Starts a snapshot body that sends one byte and then nothing, on the
/// harness runtime and a client of its own (no pooled connection another
/// request just used); it ends, with why, only if its request fails.
fn stall_snapshot(url: &str, target: u64) -> tokio::task::JoinHandle<String> {
    let url = url.to_string();
    rt::runtime().spawn(async move {
        let endless = futures_util::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{")) })
            .chain(futures_util::stream::pending());
        let client = match reqwest::Client::builder().build() {
            Ok(client) => client,
            Err(e) => return format!("no client: {e}"),
        };
        // No timeout: a stalled sender holds its reader's place until it is
        // aborted (the node's 30 s body timeout is the other bound).
        let answer = client
            .post(format!("{url}/raft/snapshot"))
            .header("x-distlog-raft-target", target.to_string())
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(endless))
            .send()
            .await;
        match answer {
            Ok(answer) => format!("answered {}", answer.status()),
            Err(e) => format!("failed: {e}"),
        }
    })
}

#[tokio::test]
async fn peer_messages_that_break_raft_rules_are_refused_and_the_node_lives_on() {
    let what = "hostile peer";
    let (cluster, leader) = start_with(what, config()).await;
    let victim = (leader + 1) % cluster.len();
    let url = cluster.url(victim);
    let status = cluster.cluster_status(victim).await.unwrap_or_else(|e| panic!("{e}"));
    let (target, term) = (status.node_id.as_u64().unwrap_or_default(), status.term);
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 30, "before the hostile messages").await;

    let high = term + 100;
    let snapshot = SnapshotBody {
        vote: Vote::new_committed(high, 7),
        meta: openraft::storage::SnapshotMeta {
            last_log_id: Some(log_id(high + 50, 1_000_000)),
            last_membership: Default::default(),
        },
        tables: Tables::default(),
    };
    let append_gap = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(high, 7),
        prev_log_id: Some(log_id(term, 3)),
        leader_commit: Some(log_id(high + 9, 5)),
        entries: vec![],
    };
    let vote = VoteRequest::<TypeConfig>::new(Vote::new(high, 7), Some(log_id(high + 1, 10)));
    // The same snapshot grown past 2 MiB (tables of many producers and
    // consumers are megabytes): it must be read and judged, not cut off.
    let mut big = serde_json::to_value(&snapshot).unwrap_or_default();
    big["pad"] = json!("x".repeat(3 << 20));
    let hostile: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "/raft/snapshot",
            "application/json",
            serde_json::to_vec(&snapshot).unwrap_or_default(),
        ),
        (
            "/raft/snapshot",
            "application/json",
            serde_json::to_vec(&big).unwrap_or_default(),
        ),
        ("/raft/append", "application/octet-stream", encode_append(&append_gap)),
        (
            "/raft/vote",
            "application/json",
            serde_json::to_vec(&vote).unwrap_or_default(),
        ),
        (
            "/raft/pre-vote",
            "application/json",
            serde_json::to_vec(&vote).unwrap_or_default(),
        ),
        (
            "/raft/vote",
            "application/json",
            json!({"vote": 1}).to_string().into_bytes(),
        ),
    ];
    for (path, content_type, body) in hostile {
        let (status, text) = post(&url, path, target, content_type, body).await;
        assert_eq!(status, 400, "{what}: {path} answered {status}: {text}");
    }

    // Random and mutated append-entries bodies: refused, never a crash.
    let mut rng = XorShift::new(cluster.seed());
    let honest = encode_append(&AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, 7),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    });
    for round in 0..200 {
        let mut body = honest.clone();
        match round % 3 {
            0 => body.iter_mut().for_each(|b| *b = rng.next_u64() as u8),
            1 => body.truncate(rng.index(body.len())),
            _ => {
                let at = rng.index(body.len());
                body[at] ^= 1 << rng.index(8);
            }
        }
        let (status, _) = post(&url, "/raft/append", target, "application/octet-stream", body).await;
        assert!(
            status == 400 || status == 200,
            "{what}: a mutated body (round {round}) answered {status}"
        );
    }

    // Snapshot bodies that never finish hold at most two readers: a third
    // is refused at once (503 busy), and the readers go with their senders.
    let snapshot_bytes = serde_json::to_vec(&snapshot).unwrap_or_default();
    let mut stalled: Vec<tokio::task::JoinHandle<String>> = (0..2).map(|_| stall_snapshot(&url, target)).collect();
    let mut ended = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let busy = loop {
        // A sender whose request failed (a loaded machine's connect
        // timeout) holds no place: start it again, and say so on failure.
        for task in stalled.iter_mut().filter(|t| t.is_finished()) {
            let done = std::mem::replace(task, stall_snapshot(&url, target));
            ended.push(done.await.unwrap_or_else(|e| e.to_string()));
        }
        let (status, _) = post(
            &url,
            "/raft/snapshot",
            target,
            "application/json",
            snapshot_bytes.clone(),
        )
        .await;
        if status == 503 || std::time::Instant::now() >= deadline {
            break status == 503;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        busy,
        "{what}: a third snapshot body while two stall is refused (stalled senders that ended: {ended:?})"
    );
    for task in stalled {
        task.abort();
    }
    let released = eventually(Duration::from_secs(10), || {
        let (url, body) = (url.clone(), snapshot_bytes.clone());
        async move { post(&url, "/raft/snapshot", target, "application/json", body).await.0 == 400 }
    })
    .await;
    assert!(
        released,
        "{what}: once the stalled senders are gone, a snapshot is read and judged again"
    );

    // The victim is alive and still part of the cluster: it stays ready and
    // follows the leader's commits.
    let before = cluster.cluster_status(leader).await.ok().and_then(|s| s.commit_offset);
    assert_progress(&load, 50, "after the hostile messages").await;
    let follows = eventually(LEADER_TIMEOUT, || async {
        let ready = rt::http()
            .get(format!("{url}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        let ours = cluster.cluster_status(victim).await.ok().and_then(|s| s.commit_offset);
        ready.ok() == Some(200) && ours > before
    })
    .await;
    assert!(
        follows,
        "{what}: node {victim} stopped following: {}",
        cluster.log_tail(victim, 30)
    );
    let history = load.stop().await;
    check_and_report(&cluster, what, &history).await;
}

/// An append forged by someone who reaches the peer port, naming at an
/// index the follower holds as committed an entry of another term, from a
/// "leader" that is none of its voters: the follower used to take it for a
/// contradiction by its leader, plan to move its whole log aside and stop
/// (one such message to each member moved every copy aside). It is
/// openraft's to judge now; the node keeps its log and its id.
#[tokio::test]
async fn a_forged_append_contradicting_a_committed_entry_does_not_move_the_log_aside() {
    let what = "forged contradiction";
    let (cluster, leader) = start_with(what, config()).await;
    let victim = (leader + 1) % cluster.len();
    let status = cluster.cluster_status(victim).await.unwrap_or_else(|e| panic!("{e}"));
    let (target, term) = (status.node_id.as_u64().unwrap_or_default(), status.term);
    let forged = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term + 100, 7),
        prev_log_id: Some(log_id(term + 100, 1)),
        leader_commit: None,
        entries: vec![],
    };
    let (status, body) = post(
        &cluster.url(victim),
        "/raft/append",
        target,
        "application/octet-stream",
        encode_append(&forged),
    )
    .await;
    assert!(
        !body.contains("repair itself"),
        "{what}: node {victim} answered {status} and stops to move its log aside: {body}"
    );
    let same = eventually(LEADER_TIMEOUT, || async {
        cluster
            .cluster_status(victim)
            .await
            .is_ok_and(|s| s.node_id.as_u64() == Some(target) && s.leader_url.is_some())
    })
    .await;
    assert!(
        same,
        "{what}: node {victim} lost its id or its leader: {}",
        cluster.log_tail(victim, 20)
    );
    assert!(
        !cluster.log_tail(victim, 200).contains("STORAGE FAULT"),
        "{what}: node {victim} planned a repair: {}",
        cluster.log_tail(victim, 20)
    );
}
