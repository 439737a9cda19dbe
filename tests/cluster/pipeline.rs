//! Pipelined append-entries: under concurrent writes the leader keeps
//! several append-entries requests in flight to a follower (not one round
//! trip at a time), and every write is still acknowledged and the nodes
//! agree. A follower counts the most requests carrying entries it handled
//! at once (`distlog_raft_peer_appends_in_flight_max`).

use std::time::Duration;

use futures_util::future::join_all;

use super::faults::{config, get, send, start_with};

const WRITERS: usize = 16;
const WRITES_EACH: usize = 40;
const IN_FLIGHT_MAX: &str = "distlog_raft_peer_appends_in_flight_max";

/// The most append-entries with entries node `url` handled at once.
async fn most_in_flight(url: &str) -> u64 {
    let metrics = get(format!("{url}/metrics")).await.unwrap_or_else(|e| panic!("{e}"));
    let text = metrics.body.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|line| line.strip_prefix(IN_FLIGHT_MAX)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn write_many(leader: String, writer: usize) -> Vec<String> {
    let mut failures = Vec::new();
    for n in 0..WRITES_EACH {
        let body = format!(r#"{{"writer":{writer},"n":{n},"pad":"{}"}}"#, "x".repeat(200));
        let answer = send(
            reqwest::Method::POST,
            format!("{leader}/"),
            Some("application/json"),
            Some(body),
            Duration::from_secs(10),
        )
        .await;
        match answer {
            Ok(reply) if reply.status < 300 => {}
            other => failures.push(format!("writer {writer} write {n}: {other:?}")),
        }
    }
    failures
}

/// Concurrent writes to a cluster started with `extra_args`; the most
/// appends with entries each follower handled at once.
async fn most_in_flight_under_load(what: &str, extra_args: &[&str]) -> Vec<u64> {
    let mut config = config();
    config.extra_args.extend(extra_args.iter().map(|a| a.to_string()));
    let (cluster, leader) = start_with(what, config).await;
    let leader_url = cluster.url(leader);
    let writers = (0..WRITERS).map(|w| tokio::spawn(write_many(leader_url.clone(), w)));
    let failures: Vec<String> = join_all(writers)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap_or_else(|e| vec![format!("a writer panicked: {e}")]))
        .collect();
    assert!(failures.is_empty(), "{what}: writes failed: {failures:#?}");
    let mut most = Vec::new();
    for i in (0..cluster.len()).filter(|&i| i != leader) {
        most.push(most_in_flight(&cluster.url(i)).await);
    }
    most
}

#[tokio::test]
async fn concurrent_writes_keep_several_appends_in_flight_to_a_follower() {
    let what = "pipelined appends (--append-window 8 on every node)";
    let most = most_in_flight_under_load(what, &["--append-window", "8"]).await;
    assert!(
        most.iter().any(|&m| m > 1),
        "{what}: the followers handled at most {most:?} appends with entries at once: one round trip at a time"
    );
}

#[tokio::test]
#[ignore = "slow (~15 s): scripts/slow-tests.sh runs it"]
async fn by_default_one_append_is_in_flight_at_a_time() {
    // The default: pipelining is off (--append-window 1).
    let what = "the default --append-window";
    let most = most_in_flight_under_load(what, &[]).await;
    assert!(
        most.iter().all(|&m| m <= 1),
        "{what}: a follower handled {most:?} appends with entries at once"
    );
}
