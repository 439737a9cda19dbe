//! Reads by time and from the end: `GET /?from_timestamp=MS` (the first
//! record stamped at or after MS, with `limit`, `wait_ms` and SSE as
//! `from` has) and `GET /?tail=N`, against a real server whose writer
//! stamps with a clock the test sets.

use crate::common;

use std::time::{Duration, Instant};

use common::{client, get_json, post_json, start};
use distlog::log::ManualClock;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// A node whose records are stamped by `clock`.
async fn node_with(dir: &std::path::Path, clock: &ManualClock) -> common::Node {
    let mut config = common::config(dir);
    config.log.clock = clock.clock();
    start(config).await
}

/// Posts one record at `time` on `clock`.
async fn post_at(node: &common::Node, clock: &ManualClock, time: u64, body: &str) {
    clock.set(time);
    assert_eq!(post_json(&node.url, body).await.status(), 201);
}

fn offsets(page: &Value) -> Vec<u64> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect()
}

/// Records at 1000, 2000, 2000, 3000 (offsets 0 to 3).
async fn four_records(node: &common::Node, clock: &ManualClock) {
    for (time, body) in [(1000, "\"a\""), (2000, "\"b\""), (2000, "\"c\""), (3000, "\"d\"")] {
        post_at(node, clock, time, body).await;
    }
}

#[tokio::test]
async fn from_timestamp_starts_at_the_first_record_at_or_after_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let node = node_with(dir.path(), &clock).await;
    four_records(&node, &clock).await;
    for (time, expected) in [
        (1500, vec![1, 2, 3]),
        (2000, vec![1, 2, 3]),
        (2001, vec![3]),
        (3000, vec![3]),
        (1000, vec![0, 1, 2, 3]),
        (0, vec![0, 1, 2, 3]),
    ] {
        let (status, page) = get_json(&format!("{}/?from_timestamp={time}", node.url)).await;
        assert_eq!(status, 200, "{time}: {page}");
        assert_eq!(offsets(&page), expected, "from_timestamp={time}");
        assert_eq!(page["next_offset"], 4, "{time}");
    }
    let (_, page) = get_json(&format!("{}/?from_timestamp=1500&limit=1", node.url)).await;
    assert_eq!(page["records"][0]["timestamp"], 2000);
    assert_eq!((offsets(&page), &page["next_offset"]), (vec![1], &json!(2)));

    // Past the newest record: nothing yet, and where the log ends.
    let (status, page) = get_json(&format!("{}/?from_timestamp=3001", node.url)).await;
    assert_eq!((status, page), (200, json!({"records": [], "next_offset": 4})));
    let (_, page) = get_json(&format!("{}/?from_timestamp=99999999999999999999999", node.url)).await;
    assert_eq!(
        page,
        json!({"records": [], "next_offset": 4}),
        "beyond u64 is after every record"
    );
}

#[tokio::test]
async fn from_timestamp_on_an_empty_log_is_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(5);
    let node = node_with(dir.path(), &clock).await;
    let (status, page) = get_json(&format!("{}/?from_timestamp=0", node.url)).await;
    assert_eq!((status, page), (200, json!({"records": [], "next_offset": 0})));
}

#[tokio::test]
async fn a_long_poll_from_a_time_to_come_is_woken_by_a_record_stamped_then() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let node = node_with(dir.path(), &clock).await;
    four_records(&node, &clock).await;
    let url = node.url.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let (status, page) = get_json(&format!("{url}/?from_timestamp=5000&wait_ms=20000")).await;
        (status, page, started.elapsed())
    });
    post_at(&node, &clock, 5000, r#"{"late":true}"#).await;
    let (status, page, waited) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(offsets(&page), vec![4], "{page}");
    assert_eq!(page["records"][0]["value"], json!({"late": true}));
    assert_eq!(page["next_offset"], 5);
    assert!(
        waited < Duration::from_secs(10),
        "the poll must end on arrival, took {waited:?}"
    );
}

#[tokio::test]
async fn an_event_stream_from_a_time_sends_the_records_from_there_then_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let node = node_with(dir.path(), &clock).await;
    four_records(&node, &clock).await;
    let response = client()
        .get(format!("{}/?from_timestamp=2000", node.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let mut posted_live = false;
    while !text.contains("id: 4") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("id: 3") && !posted_live {
            posted_live = true;
            post_at(&node, &clock, 4000, r#"{"live":true}"#).await;
        }
    }
    assert!(!text.contains("id: 0"), "offset 0 is older than the time: {text}");
    assert!(text.contains("id: 1") && text.contains("id: 2"), "{text}");
    assert!(text.contains(r#""value":{"live":true}"#), "{text}");
}

#[tokio::test]
async fn an_event_stream_from_a_time_to_come_skips_records_stamped_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let node = node_with(dir.path(), &clock).await;
    four_records(&node, &clock).await;
    let response = client()
        .get(format!("{}/?from_timestamp=9000", node.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    post_at(&node, &clock, 8000, "\"early\"").await;
    post_at(&node, &clock, 9000, "\"on time\"").await;
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("id: 5") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("early"), "a record stamped before the time: {text}");
}

#[tokio::test]
async fn tail_answers_the_last_records_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1);
    let node = node_with(dir.path(), &clock).await;
    let (_, empty) = get_json(&format!("{}/?tail=3", node.url)).await;
    assert_eq!(empty, json!({"records": [], "next_offset": 0}));
    for i in 0..5 {
        post_json(&node.url, &i.to_string()).await;
    }
    for (query, expected) in [
        ("tail=2", vec![3, 4]),
        ("tail=1", vec![4]),
        ("tail=100", vec![0, 1, 2, 3, 4]),
        ("tail=3&limit=1", vec![4]),
        ("tail=18446744073709551616", vec![0, 1, 2, 3, 4]),
    ] {
        let (status, page) = get_json(&format!("{}/?{query}", node.url)).await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(offsets(&page), expected, "{query}");
        assert_eq!(page["next_offset"], 5, "{query}");
    }
    let (_, page) = get_json(&format!("{}/?tail=2", node.url)).await;
    assert_eq!(page["records"][0]["value"], 3);

    let response = client()
        .get(format!("{}/?tail=1", node.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first).to_string();
    assert!(first.contains("id: 4") && !first.contains("id: 3"), "{first}");
}

#[tokio::test]
async fn tail_is_capped_as_limit_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.limits.max_range_records = 3;
    let node = start(config).await;
    for i in 0..5 {
        post_json(&node.url, &i.to_string()).await;
    }
    let (_, page) = get_json(&format!("{}/?tail=5", node.url)).await;
    assert_eq!((offsets(&page), &page["next_offset"]), (vec![2, 3, 4], &json!(5)));
}

#[tokio::test]
async fn two_starts_at_once_and_bad_values_are_refused_naming_the_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1);
    let node = node_with(dir.path(), &clock).await;
    post_json(&node.url, "1").await;
    for (query, params) in [
        ("from=0&from_timestamp=0", json!(["from", "from_timestamp"])),
        ("tail=1&from=0", json!(["from", "tail"])),
        ("tail=1&from_timestamp=0", json!(["from_timestamp", "tail"])),
        (
            "from=0&from_timestamp=0&tail=1",
            json!(["from", "from_timestamp", "tail"]),
        ),
        ("from=x&from_timestamp=y", json!(["from", "from_timestamp"])),
    ] {
        for accept in ["application/json", "text/event-stream"] {
            let response = client()
                .get(format!("{}/?{query}", node.url))
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{query} ({accept})");
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["code"], "conflicting_query", "{query}");
            assert_eq!(error["params"], params, "{query}");
            for param in params.as_array().unwrap() {
                assert!(
                    error["error"].as_str().unwrap().contains(param.as_str().unwrap()),
                    "{error}"
                );
            }
        }
    }
    for (query, param) in [
        ("from_timestamp=soon", "from_timestamp"),
        ("from_timestamp=-1", "from_timestamp"),
        ("tail=x", "tail"),
        ("tail=0", "tail"),
        ("tail=2&limit=0", "limit"),
    ] {
        let (status, error) = get_json(&format!("{}/?{query}", node.url)).await;
        assert_eq!((status, error["code"].as_str()), (400, Some("bad_query")), "{query}");
        assert_eq!(error["param"], param, "{query}");
    }
}

#[tokio::test]
async fn a_clock_stepped_back_never_stamps_a_record_earlier_than_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(50_000);
    let node = node_with(dir.path(), &clock).await;
    post_at(&node, &clock, 50_000, "1").await;
    post_at(&node, &clock, 10_000, "2").await;
    post_at(&node, &clock, 60_000, "3").await;
    let (_, page) = get_json(&format!("{}/?from=0", node.url)).await;
    let stamps: Vec<u64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["timestamp"].as_u64().unwrap())
        .collect();
    assert_eq!(stamps, [50_000, 50_000, 60_000]);
    let (_, page) = get_json(&format!("{}/?from_timestamp=50000", node.url)).await;
    assert_eq!(offsets(&page), vec![0, 1, 2]);
}
