//! A `--follow` read replica of a cluster member copies committed records
//! only, and hides the cluster's control records as the members do.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{ClusterConfig, TestCluster, free_ports};
use common::rt;
use serde_json::Value;

async fn range(url: &str) -> Option<Value> {
    let answer = rt::http().get(format!("{url}/?from=0&limit=1000")).send().await.ok()?;
    answer.status().is_success().then_some(())?;
    answer.json().await.ok()
}

/// A `--follow LEADER` read replica (with `extra` flags) on a fresh port and directory: the
/// directory (kept while it runs), the process and its URL.
fn start_replica(leader: &str, extra: &[&str]) -> (tempfile::TempDir, std::process::Child, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_ports(1)[0];
    let replica = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--follow", leader])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("a replica starts");
    (dir, replica, format!("http://127.0.0.1:{port}"))
}

/// Waits up to 20 s until `replica` serves the range `source` does; both ranges.
async fn copied(source: &str, replica: &str, what: &str) -> (Option<Value>, Option<Value>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let theirs = range(source).await;
        let ours = range(replica).await;
        if theirs.is_some() && theirs == ours {
            return (theirs, ours);
        }
        assert!(Instant::now() < deadline, "{what}: {theirs:?} vs {ours:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_replica_of_a_member_copies_committed_records_and_hides_control_records() {
    let cluster = TestCluster::start(ClusterConfig::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let leader_url = cluster.url(leader);
    for n in 0..20 {
        let answer = rt::http()
            .post(format!("{leader_url}/"))
            .body(format!(r#"{{"n":{n}}}"#))
            .send()
            .await
            .expect("a write");
        assert_eq!(answer.status(), 201);
    }
    let batch = rt::http()
        .post(format!("{leader_url}/"))
        .header("content-type", "application/x-ndjson")
        .body("{\"b\":1}\n{\"b\":2}\n")
        .send()
        .await
        .expect("a batch");
    assert_eq!(batch.status(), 201);

    // The replica follows a member that is not the leader.
    let member = cluster.url((leader + 1) % cluster.len());
    let (_dir, mut replica, replica_url) = start_replica(&member, &[]);
    let (theirs, ours) = copied(&member, &replica_url, "the replica copies the member").await;
    let records = ours.as_ref().and_then(|v| v["records"].as_array()).expect("records");
    assert_eq!(
        records.len(),
        22,
        "20 records and a batch of 2, no control records: {theirs:?}"
    );
    let zero = rt::http()
        .get(format!("{replica_url}/0"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(zero.status(), 404, "offset 0 is the cluster's membership entry");
    let body: Value = zero.json().await.expect("json");
    assert_eq!(body["code"], "no_record_at_offset");
    let _ = replica.kill();
    let _ = replica.wait();
}

/// `--follow MEMBER --follow-log NAME` of a cluster copies that named log, from a member that does
/// not hold it too: that member answers `307 log_elsewhere` to one that does, and the replica's
/// client follows it. The copy holds the log's committed records at the same offsets, without
/// the group's control records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_replica_of_a_named_log_copies_it_through_a_member_without_it() {
    let cluster = TestCluster::start(ClusterConfig::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let created = rt::http()
        .put(format!("{}/logs/orders", cluster.url(leader)))
        .json(&serde_json::json!({"replicas": 1}))
        .send()
        .await
        .expect("a create");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    let holder_url = created["members"][0]
        .as_str()
        .expect("the node that holds it")
        .to_string();
    let holder = cluster.index_of(&holder_url).expect("a member");
    let elsewhere = cluster.url((holder + 1) % cluster.len());
    let log_url = format!("{holder_url}/logs/orders");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut written = 0;
    while written < 20 {
        let answer = rt::http()
            .post(format!("{log_url}/"))
            .body(format!(r#"{{"n":{written}}}"#))
            .send()
            .await;
        match answer.map(|a| a.status().as_u16()) {
            Ok(201) => written += 1,
            // The group may still be electing its first leader.
            other => assert!(Instant::now() < deadline, "a write to {log_url}: {other:?}"),
        }
    }

    let (_dir, mut replica, replica_url) = start_replica(&elsewhere, &["--follow-log", "orders"]);
    let (theirs, ours) = copied(&log_url, &replica_url, "the replica copies the named log").await;
    let records = ours.as_ref().and_then(|v| v["records"].as_array()).expect("records");
    assert_eq!(records.len(), 20, "the 20 records, no control records: {theirs:?}");
    let _ = replica.kill();
    let _ = replica.wait();
}
