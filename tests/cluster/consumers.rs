//! Consumer positions in a cluster: changes go through Raft as control
//! entries readers never see, every member answers reads from what it
//! applied, a conditional change is decided at apply time (two racing
//! writers: exactly one wins), and positions survive a leader's death, a
//! restart of every node, and a retention purge of their entries that
//! sends a lagging member a snapshot.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::{ClusterConfig, TestCluster};
use common::rt;
use serde_json::Value;

async fn send(method: reqwest::Method, url: &str, body: &str) -> (u16, Value, Option<String>) {
    let answer = rt::http()
        .request(method, url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("an answer");
    let status = answer.status().as_u16();
    let location = answer
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    (status, answer.json().await.unwrap_or(Value::Null), location)
}

async fn put(url: &str, name: &str, body: &str) -> (u16, Value) {
    let (status, body, _) = send(reqwest::Method::PUT, &format!("{url}/consumers/{name}"), body).await;
    (status, body)
}

async fn write_records(url: &str, count: usize) {
    let batch: String = (0..count).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let answer = rt::http()
        .post(format!("{url}/"))
        .header("content-type", "application/x-ndjson")
        .body(batch)
        .send()
        .await
        .expect("a write");
    assert_eq!(answer.status(), 201, "a write to {url}");
}

/// The offset node `url` shows for consumer `name`, once it shows `want`.
async fn shows(url: &str, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(answer) = rt::http().get(format!("{url}/consumers/{name}")).send().await
            && answer.status() == 200
        {
            last = answer.json().await.unwrap_or(Value::Null);
            if last["offset"].as_u64() == Some(want) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never showed {name} at {want}; last {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (~16 s): scripts/slow-tests.sh runs it"]
async fn positions_replicate_and_survive_a_leader_kill_and_a_full_restart() {
    let mut cluster = TestCluster::start(ClusterConfig::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % cluster.len();
    write_records(&cluster.url(leader), 10).await;

    let (status, body) = put(&cluster.url(leader), "a", r#"{"offset": 4}"#).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, location) = send(
        reqwest::Method::PUT,
        &format!("{}/consumers/a", cluster.url(follower)),
        r#"{"offset": 5}"#,
    )
    .await;
    assert_eq!(status, 307, "a follower sends changes to the leader, as appends");
    assert_eq!(location, Some(format!("{}/consumers/a", cluster.url(leader))));
    let (status, _, _) = send(
        reqwest::Method::DELETE,
        &format!("{}/consumers/a", cluster.url(follower)),
        "",
    )
    .await;
    assert_eq!(status, 307);
    for i in 0..cluster.len() {
        shows(&cluster.url(i), "a", 4).await;
    }
    // The change is a control entry: readers still see the 10 records only.
    let (_, page) = common::get_json(&format!("{}/?from=0&limit=100", cluster.url(follower))).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 10, "{page}");

    let end = common::next_offset(&cluster.url(leader)).await;
    cluster.kill(leader);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    shows(&cluster.url(leader), "a", 4).await;
    // A consumer at the new leader's blank entry (stamped 0, hidden): its
    // time lag comes from the first record after, not from the entry.
    let url = cluster.url(leader);
    common::eventually(Duration::from_secs(20), "the new leader's blank entry", || {
        let url = url.clone();
        async move { common::next_offset(&url).await > end }
    })
    .await;
    let blank = common::next_offset(&url).await - 1;
    assert_eq!(put(&url, "tail", &format!(r#"{{"offset": {blank}}}"#)).await.0, 200);
    write_records(&url, 1).await;
    let (_, tail) = common::get_json(&format!("{}/consumers/tail", cluster.url(leader))).await;
    assert!(
        tail["lag_records"].as_u64().unwrap() >= 3,
        "the blank entry, the change, the record: {tail}"
    );
    assert!(
        tail["lag_ms"].as_u64().unwrap() < 60_000,
        "hidden entries carry no time: {tail}"
    );
    assert_eq!(
        put(&cluster.url(leader), "a", r#"{"offset": 6, "expected": 4}"#)
            .await
            .0,
        200
    );
    assert_eq!(put(&cluster.url(leader), "b", r#"{"offset": 2}"#).await.0, 200);

    for i in 0..cluster.len() {
        cluster.kill(i);
    }
    for i in 0..cluster.len() {
        cluster.restart(i).await;
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    for i in 0..cluster.len() {
        shows(&cluster.url(i), "a", 6).await;
        shows(&cluster.url(i), "b", 2).await;
    }

    let (status, _, _) = send(
        reqwest::Method::DELETE,
        &format!("{}/consumers/b", cluster.url(leader)),
        "",
    )
    .await;
    assert_eq!(status, 204);
    for i in 0..cluster.len() {
        let url = format!("{}/consumers/b", cluster.url(i));
        common::eventually(Duration::from_secs(20), "the deletion on every node", || {
            let url = url.clone();
            async move { common::get_json(&url).await.0 == 404 }
        })
        .await;
    }
    let (_, list) = common::get_json(&format!("{}/consumers", cluster.url(follower))).await;
    assert_eq!(
        list["consumers"].as_array().map(Vec::len),
        Some(2),
        "a and tail: {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (~15 s): scripts/slow-tests.sh runs it"]
async fn racing_conditional_puts_have_exactly_one_winner() {
    const ROUNDS: u64 = 200;
    const RECORDS: u64 = 20;
    let config = ClusterConfig {
        extra_args: vec!["--max-consumers".into(), "2".into()],
        ..ClusterConfig::default()
    };
    let cluster = TestCluster::start(config).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let url = cluster.url(leader);
    write_records(&url, RECORDS as usize).await;
    assert_eq!(put(&url, "race", r#"{"offset": 0}"#).await.0, 200);
    let mut stored = 0;
    for round in 0..ROUNDS {
        let (mine, theirs) = ((stored + 1) % RECORDS, (stored + 2) % RECORDS);
        let body = |offset: u64| format!(r#"{{"offset": {offset}, "expected": {stored}}}"#);
        let (mine_body, theirs_body) = (body(mine), body(theirs));
        let (a, b) = tokio::join!(put(&url, "race", &mine_body), put(&url, "race", &theirs_body));
        let statuses = (a.0, b.0);
        let winner = match statuses {
            (200, 412) => mine,
            (412, 200) => theirs,
            other => panic!("round {round}: {other:?}, {} and {}", a.1, b.1),
        };
        let loser = if a.0 == 412 { &a.1 } else { &b.1 };
        assert_eq!(loser["code"], "position_mismatch", "round {round}");
        assert_eq!(
            loser["stored"], winner,
            "round {round}: the loser is told the winner's offset"
        );
        stored = winner;
    }
    for i in 0..cluster.len() {
        shows(&cluster.url(i), "race", stored).await;
    }
    // The limit holds in a cluster too: the leader's, carried in the entry.
    assert_eq!(put(&url, "second", r#"{"offset": 0}"#).await.0, 200);
    let (status, body) = put(&url, "third", r#"{"offset": 0}"#).await;
    assert_eq!(
        (status, body["code"].as_str(), body["max"].as_u64()),
        (409, Some("too_many_consumers"), Some(2))
    );
}

/// A cluster whose leader purges early: 4 KiB segments, 16 KiB kept.
fn purging_config() -> ClusterConfig {
    ClusterConfig {
        extra_args: [
            "--max-segment-bytes",
            "4096",
            "--max-record-bytes",
            "1024",
            "--retention-bytes",
            "16384",
        ]
        .map(String::from)
        .to_vec(),
        ..ClusterConfig::default()
    }
}

/// Writes past the purge margin (1000 applied entries), in whole segments,
/// and waits until the leader at `url` has purged its first entries.
async fn write_past_the_purge(url: &str) {
    for _ in 0..12 {
        write_records(url, 200).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::status(url).await["lowest_offset"].as_u64().unwrap_or(0) <= 10 {
        assert!(Instant::now() < deadline, "the leader never purged its first entries");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until node `i`'s log says it installed a snapshot (log lines are
/// written by a background thread: waited for, not read at once).
async fn said_it_installed_a_snapshot(cluster: &TestCluster, i: usize) {
    common::eventually(
        Duration::from_secs(10),
        &format!("node {i} caught up by a snapshot"),
        || {
            let said = cluster.log_tail(i, 5000).contains("installing a snapshot");
            async move { said }
        },
    )
    .await;
}

/// A purging cluster holding 5 records, with a follower killed: the
/// leader, its URL and the follower, which can catch up only by snapshot once
/// the leader purges.
async fn a_purging_cluster_with_a_member_down() -> (TestCluster, usize, String, usize) {
    let mut cluster = TestCluster::start(purging_config()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let url = cluster.url(leader);
    write_records(&url, 5).await;
    let lagging = (leader + 1) % cluster.len();
    cluster.kill(lagging);
    (cluster, leader, url, lagging)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_survive_a_retention_purge_and_a_snapshot_install() {
    // Down before the change: it can learn of it from the snapshot only.
    let (mut cluster, _, url, lagging) = a_purging_cluster_with_a_member_down().await;
    assert_eq!(put(&url, "early", r#"{"offset": 3}"#).await.0, 200);

    write_past_the_purge(&url).await;
    shows(&url, "early", 3).await;

    cluster.restart(lagging).await;
    shows(&cluster.url(lagging), "early", 3).await;
    // The snapshot's tables are in place a moment before its log reset.
    let lagging_url = cluster.url(lagging);
    common::eventually(
        Duration::from_secs(20),
        "the lagging node's log to start after the snapshot",
        || {
            let url = lagging_url.clone();
            async move { common::status(&url).await["lowest_offset"].as_u64().unwrap_or(0) > 10 }
        },
    )
    .await;
    said_it_installed_a_snapshot(&cluster, lagging).await;
    for i in 0..cluster.len() {
        cluster.kill(i);
    }
    for i in 0..cluster.len() {
        cluster.restart(i).await;
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    for i in 0..cluster.len() {
        shows(&cluster.url(i), "early", 3).await;
    }
}

/// A member that can catch up only through a snapshot holding about half a
/// MiB of tables (2,500 consumers), on a slow link from its leader (2 MiB/s:
/// the body takes a quarter of a second). A snapshot was waited for 3/4 of
/// openraft's `install_snapshot_timeout` (200 ms) whatever its size: it
/// timed out every time, was sent again, and the member never caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (~15 s): scripts/slow-tests.sh runs it"]
async fn a_snapshot_of_large_tables_reaches_a_member_on_a_slow_link() {
    use futures_util::StreamExt;

    let (mut cluster, leader, url, lagging) = a_purging_cluster_with_a_member_down().await;
    let names: Vec<String> = (0..2500).map(|i| format!("{i:0>120}")).collect();
    futures_util::stream::iter(&names)
        .for_each_concurrent(8, |name| {
            let url = url.clone();
            async move {
                let (status, body) = put(&url, name, r#"{"offset": 3}"#).await;
                assert_eq!(status, 200, "{body}");
            }
        })
        .await;
    write_past_the_purge(&url).await;

    cluster.link(leader, lagging).set_rate(Some(2 << 20));
    cluster.restart(lagging).await;
    let lagging_url = cluster.url(lagging);
    shows(&lagging_url, &names[0], 3).await;
    shows(&lagging_url, &names[2499], 3).await;
    // And the leader heard it went in: what comes after reaches it by
    // appends (a timed-out snapshot whose bytes arrived anyway installs,
    // but its leader sends it again and again, and nothing else).
    write_records(&url, 5).await;
    let next = common::status(&url).await["next_offset"].as_u64().unwrap_or(u64::MAX);
    let sent = cluster.link(leader, lagging).stats().to_target;
    common::eventually(
        Duration::from_secs(30),
        &format!("node {lagging} to take records appended after its snapshot ({sent} bytes sent to it by then)"),
        || {
            let url = lagging_url.clone();
            async move { common::status(&url).await["next_offset"].as_u64().unwrap_or(0) >= next }
        },
    )
    .await;
    said_it_installed_a_snapshot(&cluster, lagging).await;
}
