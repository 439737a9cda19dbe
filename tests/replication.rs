//! Read replicas against real leaders, all on ephemeral ports.

mod common;

use std::time::Duration;

use common::{client, eventually, follower_config, get_json, post_json, start, start_in};
use serde_json::Value;

const CATCH_UP: Duration = Duration::from_secs(30);

async fn post_batch(url: &str, from: usize, count: usize) {
    let body: String = (from..from + count).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let response = client()
        .post(format!("{url}/"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

async fn next_offset(url: &str) -> u64 {
    common::status(url).await["next_offset"].as_u64().unwrap()
}

async fn wait_for_next(url: &str, next: u64) {
    eventually(CATCH_UP, &format!("{url} to reach {next}"), || async move {
        next_offset(url).await == next
    })
    .await;
}

/// Every record of `url` from `from` on, in order.
async fn all_records(url: &str, from: u64) -> Vec<Value> {
    let mut records = Vec::new();
    let mut from = from;
    loop {
        let (_, page) = get_json(&format!("{url}/?from={from}&limit=10000")).await;
        let batch = page["records"].as_array().unwrap().clone();
        if batch.is_empty() {
            return records;
        }
        from = page["next_offset"].as_u64().unwrap();
        records.extend(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_followers_hold_the_leaders_records_at_the_same_offsets() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let leader = start_in(dirs[0].path()).await;
    let a = start(follower_config(dirs[1].path(), &leader.url)).await;
    let b = start(follower_config(dirs[2].path(), &leader.url)).await;
    for batch in 0..100 {
        post_batch(&leader.url, batch * 100, 100).await;
    }
    wait_for_next(&a.url, 10_000).await;
    wait_for_next(&b.url, 10_000).await;
    let expected = all_records(&leader.url, 0).await;
    assert_eq!(expected.len(), 10_000);
    assert_eq!(
        all_records(&a.url, 0).await,
        expected,
        "offsets, timestamps and values agree"
    );
    assert_eq!(all_records(&b.url, 0).await, expected);

    let status = common::status(&a.url).await;
    assert_eq!(status["role"], "follower");
    assert_eq!(status["leader"], leader.url.as_str());
    assert_eq!(status["leader_next_offset"], 10_000);
    assert_eq!(status["lag"], 0);
    let metrics = client()
        .get(format!("{}/metrics", a.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in ["distlog_replication_lag_records", "distlog_replication_records_total"] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_redirects_writes_and_tails_within_a_second() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let leader = start_in(dirs[0].path()).await;
    let follower = start(follower_config(dirs[1].path(), &leader.url)).await;

    let response = post_json(&follower.url, r#"{"x":1}"#).await;
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], format!("{}/", leader.url).as_str());
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["code"].as_str(), body["leader"].as_str()),
        (Some("read_only_follower"), Some(leader.url.as_str()))
    );

    let followed = reqwest::Client::new()
        .post(format!("{}/", follower.url))
        .header("content-type", "application/json")
        .body(r#"{"via":"redirect"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        followed.status(),
        201,
        "a client that follows redirects lands on the leader"
    );

    let started = std::time::Instant::now();
    post_json(&leader.url, r#"{"tail":true}"#).await;
    wait_for_next(&follower.url, 2).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(get_json(&format!("{}/1", follower.url)).await.1["value"]["tail"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_resumes_without_gaps_or_repeats() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let leader = start_in(dirs[0].path()).await;
    let follower = start(follower_config(dirs[1].path(), &leader.url)).await;
    post_batch(&leader.url, 0, 500).await;
    wait_for_next(&follower.url, 500).await;
    follower.server.shutdown().await.unwrap();

    post_batch(&leader.url, 500, 700).await;
    let follower = start(follower_config(dirs[1].path(), &leader.url)).await;
    wait_for_next(&follower.url, 1200).await;
    assert_eq!(all_records(&follower.url, 0).await, all_records(&leader.url, 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_ride_out_a_leader_restart() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let leader = start_in(dirs[0].path()).await;
    let addr = leader.server.local_addr();
    let follower = start(follower_config(dirs[1].path(), &leader.url)).await;
    post_batch(&leader.url, 0, 100).await;
    wait_for_next(&follower.url, 100).await;

    leader.server.shutdown().await.unwrap();
    let url = follower.url.clone();
    eventually(CATCH_UP, "the follower to notice", || {
        let url = url.clone();
        async move { common::status(&url).await["replication_state"] == "retrying" }
    })
    .await;
    assert_eq!(
        get_json(&format!("{}/99", follower.url)).await.0,
        200,
        "reads go on during the outage"
    );

    let mut config = common::config(dirs[0].path());
    config.listen = addr;
    let leader = start(config).await;
    post_batch(&leader.url, 100, 50).await;
    wait_for_next(&follower.url, 150).await;
    assert_eq!(all_records(&follower.url, 0).await, all_records(&leader.url, 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn divergence_stops_replication_and_follow_reset_resyncs() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = start_in(dirs[0].path()).await;
    let follower = start(follower_config(dirs[1].path(), &first.url)).await;
    post_batch(&first.url, 0, 10).await;
    wait_for_next(&follower.url, 10).await;
    follower.server.shutdown().await.unwrap();

    // Another log, with different records at the same offsets.
    let other = start_in(dirs[2].path()).await;
    post_batch(&other.url, 1000, 20).await;
    let follower = start(follower_config(dirs[1].path(), &other.url)).await;
    let url = follower.url.clone();
    eventually(CATCH_UP, "divergence to be detected", || {
        let url = url.clone();
        async move { common::status(&url).await["replication_state"] == "diverged" }
    })
    .await;
    assert_eq!(
        next_offset(&follower.url).await,
        10,
        "no record of the other history is mixed in"
    );
    let metrics = client()
        .get(format!("{}/metrics", follower.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("distlog_replication_diverged 1"), "diverged gauge set");
    assert!(metrics.contains("distlog_replication_errors_total"));
    follower.server.shutdown().await.unwrap();

    let mut config = follower_config(dirs[1].path(), &other.url);
    if let Some(follow) = config.follow.as_mut() {
        follow.reset = true;
    }
    let follower = start(config).await;
    wait_for_next(&follower.url, 20).await;
    assert_eq!(all_records(&follower.url, 0).await, all_records(&other.url, 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_gap_restarts_the_follower_at_the_leaders_lowest_offset() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut config = common::config(dirs[0].path());
    config.log.max_segment_bytes = 4096;
    config.log.max_record_bytes = 1024;
    let leader = start(config).await;
    for batch in 0..100 {
        post_batch(&leader.url, batch * 10, 10).await;
    }
    let dropped = leader.server.log().purge_before(500).unwrap();
    assert!(dropped > 0);
    let lowest = leader.server.log().lowest_offset();
    assert!(lowest > 0);

    let follower = start(follower_config(dirs[1].path(), &leader.url)).await;
    wait_for_next(&follower.url, 1000).await;
    let status = common::status(&follower.url).await;
    assert_eq!(
        status["lowest_offset"], lowest,
        "the follower's log starts where the leader's does"
    );
    assert_eq!(
        all_records(&follower.url, lowest).await,
        all_records(&leader.url, lowest).await
    );
    let metrics = client()
        .get(format!("{}/metrics", follower.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("distlog_replication_gaps_total"), "the gap is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_can_follow_followers() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let leader = start_in(dirs[0].path()).await;
    let middle = start(follower_config(dirs[1].path(), &leader.url)).await;
    let last = start(follower_config(dirs[2].path(), &middle.url)).await;
    post_batch(&leader.url, 0, 300).await;
    wait_for_next(&last.url, 300).await;
    assert_eq!(all_records(&last.url, 0).await, all_records(&leader.url, 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_publishes_whole_batches_even_when_pulls_split_them() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let leader = start_in(dirs[0].path()).await;
    let mut config = follower_config(dirs[1].path(), &leader.url);
    if let Some(follow) = config.follow.as_mut() {
        follow.pull_bytes = 700; // far smaller than one batch of 50 records
    }
    let follower = start(config).await;
    let mut published = follower.server.log().subscribe();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while published.changed().await.is_ok() {
            let next = *published.borrow_and_update();
            seen.push(next);
            if next >= 1000 {
                break;
            }
        }
        seen
    });
    for batch in 0..20 {
        post_batch(&leader.url, batch * 50, 50).await;
    }
    wait_for_next(&follower.url, 1000).await;
    let seen = tokio::time::timeout(CATCH_UP, watcher).await.unwrap().unwrap();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|next| next % 50 == 0),
        "half a batch was published: {seen:?}"
    );
    assert_eq!(all_records(&follower.url, 0).await, all_records(&leader.url, 0).await);
}
