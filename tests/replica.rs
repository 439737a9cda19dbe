//! Read replicas against real leaders, all on ephemeral ports.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Query;
use common::{client, eventually, follower_config, get_json, next_offset, post_json, start, start_in};
use distlog::log::{FLAG_BATCH_CONTINUES, Payload, encode_frame};
use distlog::wire;
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

    let leader = common::start_on(common::config(dirs[0].path()), addr).await;
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
    {
        let follow = common::follow_mut(&mut config);
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
    {
        let follow = common::follow_mut(&mut config);
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

/// The records a fake leader holds: offset `i` has value `{"i":i}`.
fn history_frames(from: u64, count: u64, flags: u8) -> Vec<u8> {
    let mut frames = Vec::new();
    for offset in from..from + count {
        let value = format!("{{\"i\":{offset}}}");
        encode_frame(
            &mut frames,
            offset,
            1_000 + offset,
            flags,
            Payload::new(value.as_bytes()),
        );
    }
    frames
}

/// What a fake leader answers to one pull.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    /// A 200 of `frames`, with bounds headers as given.
    fn frames(frames: Vec<u8>, next: u64, lowest: u64, log_next: u64) -> Answer {
        Answer {
            status: 200,
            headers: vec![
                (wire::NEXT_OFFSET, next.to_string()),
                (wire::LOWEST_OFFSET, lowest.to_string()),
                (wire::LOG_NEXT_OFFSET, log_next.to_string()),
            ],
            body: frames,
        }
    }

    /// The 404 a leader answers when `from` is outside its log.
    fn outside(lowest: u64, next: u64) -> Answer {
        let body = serde_json::json!({
            "error": "offset is not in the log",
            "code": "offset_not_found",
            "lowest_offset": lowest,
            "next_offset": next,
        });
        Answer {
            status: 404,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// A leader on a real socket whose `GET /replication/frames` answers what
/// `answer(from, max_bytes)` says. Returns its URL and a count of pulls.
async fn fake_leader<F>(answer: F) -> (String, Arc<AtomicU64>)
where
    F: Fn(u64, u64) -> Answer + Clone + Send + Sync + 'static,
{
    let pulls = Arc::new(AtomicU64::new(0));
    let counted = pulls.clone();
    let handler = move |Query(query): Query<HashMap<String, String>>| {
        let (answer, pulls) = (answer.clone(), counted.clone());
        async move {
            pulls.fetch_add(1, Ordering::Relaxed);
            let number = |name: &str| query.get(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let Answer { status, headers, body } = answer(number("from"), number("max_bytes"));
            let mut response = axum::http::Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(axum::body::Body::from(body)).unwrap()
        }
    };
    let router = axum::Router::new().route(wire::FRAMES_PATH, axum::routing::get(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, pulls)
}

/// Waits until the follower at `url` reports a replication error
/// containing `words`, then returns its status.
async fn wait_for_error(url: &str, words: &str) -> Value {
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        last = common::status(url).await;
        let error = last["replication_error"].as_str().unwrap_or_default();
        if last["replication_state"] == "retrying" && error.contains(words) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the follower never reported an error containing {words:?}; last status: {last}");
}

/// The follower's records are the fake history's first ones, in order.
async fn assert_prefix_of_history(url: &str) {
    let status = common::status(url).await;
    let (lowest, next) = (status["lowest_offset"].as_u64(), status["next_offset"].as_u64());
    assert_eq!(lowest, Some(0), "the follower's log still starts at 0: {status}");
    let records = all_records(url, 0).await;
    assert_eq!(Some(records.len() as u64), next, "{status}");
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["offset"], i as u64);
        assert_eq!(record["value"]["i"], i as u64, "record {i} is the history's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_offset_header_that_disagrees_with_the_frames_is_refused() {
    // Ten records, but the header claims five more than the body holds.
    let (leader, _) = fake_leader(|from, _| match from {
        0..10 => Answer::frames(history_frames(from, 10 - from, 0), 15, 0, 10),
        _ => Answer::outside(0, 10),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let follower = start(follower_config(dir.path(), &leader)).await;
    let status = wait_for_error(&follower.url, wire::NEXT_OFFSET).await;
    assert_ne!(status["replication_state"], "diverged");
    assert_prefix_of_history(&follower.url).await;
    assert_eq!(
        next_offset(&follower.url).await,
        0,
        "nothing from the lying answer is appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_claiming_u64_max_offsets_gets_a_protocol_error_not_a_panic() {
    let (leader, _) =
        fake_leader(|from, _| Answer::frames(history_frames(from, 1, 0), from + 1, u64::MAX, u64::MAX)).await;
    let dir = tempfile::tempdir().unwrap();
    let follower = start(follower_config(dir.path(), &leader)).await;
    let status = wait_for_error(&follower.url, "offset").await;
    assert_eq!(
        status["leader_next_offset"],
        Value::Null,
        "the absurd offset is not shown as the leader's"
    );
    assert_prefix_of_history(&follower.url).await;
    assert_eq!(next_offset(&follower.url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_claiming_an_absurd_lowest_offset_does_not_reset_the_follower() {
    let absurd = u64::MAX - 1;
    let (leader, _) = fake_leader(move |_, _| Answer::outside(absurd, absurd)).await;
    let dir = tempfile::tempdir().unwrap();
    let follower = start(follower_config(dir.path(), &leader)).await;
    wait_for_error(&follower.url, "offset").await;
    assert_prefix_of_history(&follower.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_unfinished_batch_restarts_the_pull_instead_of_growing() {
    // Every frame says the batch goes on; the batch never ends.
    let (leader, pulls) = fake_leader(|from, max_bytes| {
        let count = (max_bytes / 40).max(1);
        let frames = history_frames(from, count, FLAG_BATCH_CONTINUES);
        Answer::frames(frames, from + count, 0, 1 << 40)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = follower_config(dir.path(), &leader);
    {
        let follow = common::follow_mut(&mut config);
        follow.pull_bytes = 1_000;
        follow.max_unfinished_batch_bytes = 4_000;
    }
    let follower = start(config).await;
    wait_for_error(&follower.url, "batch").await;
    assert_prefix_of_history(&follower.url).await;
    assert_eq!(next_offset(&follower.url).await, 0, "half a batch is never appended");
    let before = pulls.load(Ordering::Relaxed);
    eventually(CATCH_UP, "the follower to pull again", || {
        let pulls = pulls.clone();
        async move { pulls.load(Ordering::Relaxed) > before }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_gap_the_leader_cannot_back_up_does_not_reset_the_follower() {
    // Claims to hold [1000, 2000) but serves none of it.
    let (leader, _) = fake_leader(|_, _| Answer::outside(1000, 2000)).await;
    let dir = tempfile::tempdir().unwrap();
    let follower = start(follower_config(dir.path(), &leader)).await;
    wait_for_error(&follower.url, "gap").await;
    assert_prefix_of_history(&follower.url).await;
}

/// A replica of one named log (`--follow <leader>/logs/<name>`, what
/// `--follow-log` makes): it copies that log, not the leader's default one,
/// serves it as its own, and sends writes to the named log's routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_one_named_log() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let leader = start_in(dirs[0].path()).await;
    let created = client()
        .put(format!("{}/logs/orders", leader.url))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    post_batch(&format!("{}/logs/orders", leader.url), 0, 30).await;
    post_json(&leader.url, r#"{"default":true}"#).await;

    let follower = start(follower_config(dirs[1].path(), &format!("{}/logs/orders", leader.url))).await;
    wait_for_next(&follower.url, 30).await;
    let copied = all_records(&follower.url, 0).await;
    let original = all_records(&format!("{}/logs/orders", leader.url), 0).await;
    assert_eq!(copied, original, "the named log's records, at the same offsets");

    let refused = post_json(&follower.url, "{}").await;
    assert_eq!(refused.status(), 307);
    assert_eq!(
        refused.headers()["location"],
        format!("{}/logs/orders/", leader.url).as_str(),
        "writes go to the named log on the leader"
    );
}
