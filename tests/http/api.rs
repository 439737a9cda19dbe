//! The HTTP contract, against a real server on an ephemeral port.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{client, get_json, post_json, start, start_in};
use futures_util::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn status_reports_the_retention_the_node_was_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.log.retention_bytes = Some(1 << 30);
    config.log.retention_ms = Some(86_400_000);
    let node = start(config).await;
    let status = common::status(&node.url).await;
    assert_eq!(status["retention_bytes"], 1 << 30);
    assert_eq!(status["retention_ms"], 86_400_000);
}

#[tokio::test]
async fn post_json_answers_offset_and_location_and_reads_back_as_posted() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let response = post_json(&node.url, r#"{"event": "signup", "n": [1, 2.5]}"#).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], "/0");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"offset": 0}));

    let (status, record) = get_json(&format!("{}/0", node.url)).await;
    assert_eq!(status, 200);
    assert_eq!(record["offset"], 0);
    assert_eq!(record["value"], json!({"event": "signup", "n": [1, 2.5]}));
    assert!(record["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
}

#[tokio::test]
async fn curl_style_bodies_without_json_content_type_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let plain = client()
        .post(format!("{}/", node.url))
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 201);
    let form = client()
        .post(format!("{}/", node.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"event":"signup"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(form.json::<Value>().await.unwrap(), json!({"offset": 1}));
    assert_eq!(get_json(&format!("{}/1", node.url)).await.1["value"]["event"], "signup");
}

#[tokio::test]
async fn ndjson_is_one_batch_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let send = |body: &'static str| {
        client()
            .post(format!("{}/", node.url))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    let ok = send("{\"a\":1}\n\n{\"b\":2}\n{\"c\":3}\n").await.unwrap();
    assert_eq!(ok.status(), 201);
    assert_eq!(
        ok.json::<Value>().await.unwrap(),
        json!({"first_offset": 0, "last_offset": 2})
    );

    let bad = send("{\"d\":4}\n{\"e\":\n").await.unwrap();
    assert_eq!(bad.status(), 400);
    let error: Value = bad.json().await.unwrap();
    assert_eq!(
        (error["code"].as_str(), error["line"].as_u64()),
        (Some("invalid_json"), Some(2))
    );
    assert_eq!(
        common::status(&node.url).await["next_offset"],
        3,
        "nothing of a bad batch is appended"
    );
}

#[tokio::test]
async fn binary_records_come_back_as_base64_or_raw() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let bytes = vec![0u8, 159, 146, 150, 10];
    let response = client()
        .post(format!("{}/", node.url))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (_, record) = get_json(&format!("{}/0", node.url)).await;
    assert_eq!(record["value_base64"], "AJ+Slgo=");
    assert!(record.get("value").is_none());
    let raw = client()
        .get(format!("{}/0", node.url))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "application/octet-stream");
    assert_eq!(raw.bytes().await.unwrap().to_vec(), bytes);
}

#[tokio::test]
async fn ranges_page_with_next_offset_and_validate_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    for i in 0..25 {
        post_json(&node.url, &format!("{{\"i\":{i}}}")).await;
    }
    let (status, page) = get_json(&format!("{}/?from=5&limit=10", node.url)).await;
    assert_eq!(status, 200);
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 10);
    assert_eq!(
        (records[0]["offset"].as_u64(), records[0]["value"]["i"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(page["next_offset"], 15);
    let (_, rest) = get_json(&format!("{}/?from=15&limit=100", node.url)).await;
    assert_eq!(
        (rest["records"].as_array().unwrap().len(), rest["next_offset"].as_u64()),
        (10, Some(25))
    );
    let (_, default_from) = get_json(&format!("{}/", node.url)).await;
    assert_eq!(
        default_from["records"][0]["offset"], 0,
        "from defaults to the lowest offset"
    );
    let (_, end) = get_json(&format!("{}/?from=25", node.url)).await;
    assert_eq!(end, json!({"records": [], "next_offset": 25}));

    for (query, param) in [
        ("from=abc", "from"),
        ("limit=-1", "limit"),
        ("limit=0", "limit"),
        ("wait_ms=x", "wait_ms"),
    ] {
        let (status, error) = get_json(&format!("{}/?{query}", node.url)).await;
        assert_eq!((status, error["code"].as_str()), (400, Some("bad_query")), "{query}");
        assert_eq!(error["param"], param, "{query}");
    }
    let (status, error) = get_json(&format!("{}/?from=26", node.url)).await;
    assert_eq!((status, &error["next_offset"]), (404, &json!(25)));
}

#[tokio::test]
async fn long_poll_answers_when_a_record_arrives_or_when_the_wait_ends() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let started = Instant::now();
    let (_, empty) = get_json(&format!("{}/?from=0&wait_ms=300", node.url)).await;
    assert_eq!(empty, json!({"records": [], "next_offset": 0}));
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "waited {:?}",
        started.elapsed()
    );

    let url = node.url.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let (_, page) = get_json(&format!("{url}/?from=0&wait_ms=20000")).await;
        (page, started.elapsed())
    });
    post_json(&node.url, r#"{"late":true}"#).await;
    let (page, waited) = poll.await.unwrap();
    assert_eq!(page["records"][0]["value"], json!({"late": true}));
    assert!(
        waited < Duration::from_secs(10),
        "the poll must end on arrival, took {waited:?}"
    );
}

#[tokio::test]
async fn server_sent_events_tail_live_and_resume_after_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    for i in 0..3 {
        post_json(&node.url, &format!("{{\"i\":{i}}}")).await;
    }
    let response = client()
        .get(format!("{}/?from=1", node.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let mut posted_live = false;
    while !text.contains("id: 3") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("id: 2") && !posted_live {
            posted_live = true;
            post_json(&node.url, r#"{"live":true}"#).await;
        }
    }
    assert!(!text.contains("id: 0"), "from=1 skips offset 0: {text}");
    assert!(text.contains(r#"data: {"offset":1,"#), "{text}");
    assert!(text.contains(r#""value":{"live":true}"#), "{text}");

    let resumed = client()
        .get(format!("{}/", node.url))
        .header("accept", "text/event-stream")
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();
    let mut stream = resumed.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first).to_string();
    assert!(first.contains("id: 3") && !first.contains("id: 2"), "{first}");
}

#[tokio::test]
async fn every_error_is_json_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.log.max_record_bytes = 1000;
    config.limits.max_request_bytes = 5000;
    config.limits.max_batch_records = 10;
    let node = start(config).await;
    let url = &node.url;
    let post = |content_type: &'static str, body: Vec<u8>| {
        client()
            .post(format!("{url}/"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            post("application/json", b"{\"a\":".to_vec()).await.unwrap(),
            400,
            "invalid_json",
        ),
        (post("application/json", Vec::new()).await.unwrap(), 400, "empty_body"),
        (
            post("application/octet-stream", Vec::new()).await.unwrap(),
            400,
            "empty_body",
        ),
        (
            post("text/plain", b"hi".to_vec()).await.unwrap(),
            415,
            "unsupported_media_type",
        ),
        (
            post("application/json", format!("\"{}\"", "x".repeat(2000)).into_bytes())
                .await
                .unwrap(),
            413,
            "too_large",
        ),
        (
            post("application/x-ndjson", "1\n".repeat(11).into_bytes())
                .await
                .unwrap(),
            413,
            "too_large",
        ),
        (
            post("application/x-ndjson", "1\n".repeat(3000).into_bytes())
                .await
                .unwrap(),
            413,
            "too_large",
        ),
        (
            client().get(format!("{url}/7")).send().await.unwrap(),
            404,
            "offset_not_found",
        ),
        (
            client().get(format!("{url}/-1")).send().await.unwrap(),
            400,
            "bad_offset",
        ),
        (
            client().get(format!("{url}/no/such/route")).send().await.unwrap(),
            404,
            "not_found",
        ),
        (
            client().delete(format!("{url}/")).send().await.unwrap(),
            405,
            "method_not_allowed",
        ),
    ];
    for (response, status, code) in cases {
        assert_eq!(response.status().as_u16(), status, "{code}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }
    let (_, missing) = get_json(&format!("{url}/7")).await;
    assert_eq!(
        (missing["lowest_offset"].as_u64(), missing["next_offset"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        common::status(url).await["next_offset"],
        0,
        "no error appended anything"
    );
}

#[tokio::test]
async fn status_health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    post_json(&node.url, "{}").await;
    client().get(format!("{}/0", node.url)).send().await.unwrap();
    let status = common::status(&node.url).await;
    assert_eq!(status["next_offset"], 1);
    assert_eq!(status["lowest_offset"], 0);
    assert_eq!(status["segments"], 1);
    assert_eq!(status["role"], "leader");
    assert_eq!(status["leader"], Value::Null);
    assert!(status["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(status["retention_bytes"], Value::Null, "keeps all by default");
    assert_eq!(status["retention_ms"], Value::Null, "keeps all by default");
    assert_eq!(get_json(&format!("{}/healthz", node.url)).await.0, 200);
    assert_eq!(get_json(&format!("{}/readyz", node.url)).await.0, 200);

    let metrics = client()
        .get(format!("{}/metrics", node.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "distlog_records_appended_total",
        "distlog_bytes_appended_total",
        "distlog_http_requests_total",
        "distlog_http_request_duration_seconds_bucket",
        "distlog_log_next_offset",
        "distlog_log_lowest_offset",
        "distlog_log_segments",
        "distlog_log_size_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(
        metrics.contains(r#"route="/{offset}""#),
        "routes are labelled by template"
    );
    let appended: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("distlog_records_appended_total{log=\"default\"} "))
        .and_then(|value| value.trim().parse().ok())
        .expect("distlog_records_appended_total has a value");
    assert!(appended >= 1.0, "the append shows in the counter ({appended})");
    assert!(!metrics.contains(r#"route="/0""#), "never by raw path");
}

#[tokio::test]
async fn request_ids_are_honoured_or_made() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let given = client()
        .get(format!("{}/healthz", node.url))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "abc-123");
    let made = client().get(format!("{}/healthz", node.url)).send().await.unwrap();
    assert!(!made.headers()["x-request-id"].is_empty());
}

#[tokio::test]
async fn concurrent_producers_get_every_offset_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.log.durability = distlog::log::Durability::Always;
    let node = start(config).await;
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let url = node.url.clone();
            tokio::spawn(async move {
                let mut offsets = Vec::new();
                for i in 0..50 {
                    let response = post_json(&url, &format!("{{\"p\":{p},\"i\":{i}}}")).await;
                    assert_eq!(response.status(), 201);
                    offsets.push(response.json::<Value>().await.unwrap()["offset"].as_u64().unwrap());
                }
                offsets
            })
        })
        .collect();
    let mut all = Vec::new();
    for producer in producers {
        all.extend(producer.await.unwrap());
    }
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), 400, "no offset given twice");
    assert_eq!(*all.iter().max().unwrap(), 399, "none skipped");
}

#[tokio::test]
async fn a_graceful_restart_serves_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    for i in 0..100 {
        assert_eq!(post_json(&node.url, &format!("{{\"i\":{i}}}")).await.status(), 201);
    }
    node.server.shutdown().await.unwrap();
    let node = start_in(dir.path()).await;
    let (_, page) = get_json(&format!("{}/?from=0&limit=1000", node.url)).await;
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 100);
    assert!(records.iter().enumerate().all(|(i, r)| r["value"]["i"] == i));
    assert_eq!(
        post_json(&node.url, "{}").await.json::<Value>().await.unwrap()["offset"],
        100
    );
}

#[tokio::test]
async fn a_corrupt_record_is_a_500_naming_the_offset_and_neighbours_still_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.log.max_segment_bytes = 1024;
    config.log.max_record_bytes = 512;
    let node = start(config).await;
    for i in 0..40 {
        post_json(&node.url, &format!("{{\"i\":{i}}}")).await;
    }
    let first_store = dir.path().join(format!("{:020}.store", 0));
    let mut bytes = std::fs::read(&first_store).unwrap();
    let garbled = bytes.len() / 2;
    bytes[garbled] ^= 0x55;
    std::fs::write(&first_store, &bytes).unwrap();

    let mut corrupt = None;
    for offset in 0..40 {
        let (status, body) = get_json(&format!("{}/{offset}", node.url)).await;
        if status == 500 {
            assert_eq!(body["code"], "corrupt_record");
            assert_eq!(body["offset"], offset);
            assert!(
                !body.to_string().contains("\\u"),
                "no garbled bytes in the answer: {body}"
            );
            corrupt = Some(offset);
        } else {
            assert_eq!((status, &body["value"]["i"]), (200, &json!(offset)));
        }
    }
    assert!(corrupt.is_some(), "the garbled record is reported");
    let (status, _) = get_json(&format!("{}/?from=0&limit=100", node.url)).await;
    assert_eq!(status, 500, "a range over it fails rather than serving it");
    assert_eq!(
        post_json(&node.url, "{}").await.status(),
        201,
        "the server stays up and writable"
    );
}

#[tokio::test]
async fn numbers_beyond_u64_are_capped_where_large_values_are_and_offsets_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    for i in 0..3 {
        post_json(&node.url, &format!("{{\"i\":{i}}}")).await;
    }
    let huge = "99999999999999999999";
    let (status, page) = get_json(&format!("{}/?from=0&limit={huge}&wait_ms={huge}", node.url)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["next_offset"], 3, "{page}");
    let frames = client()
        .get(format!(
            "{}/replication/frames?from=0&max_bytes={huge}&max_records={huge}&wait_ms={huge}",
            node.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(frames.status(), 200);
    assert_eq!(frames.headers()["x-distlog-next-offset"], "3");

    for path in [format!("/?from={huge}"), format!("/replication/frames?from={huge}")] {
        let (status, error) = get_json(&format!("{}{path}", node.url)).await;
        assert_eq!((status, error["code"].as_str()), (400, Some("bad_query")), "{path}");
        assert_eq!(error["param"], "from", "{path}");
        let message = error["error"].as_str().unwrap();
        assert!(
            message.contains("18446744073709551615"),
            "names the largest offset: {message}"
        );
    }
}

#[tokio::test]
async fn echoed_client_input_is_cut_to_a_bounded_length() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let url = &node.url;
    let long = "é".repeat(10_000); // 20 KB, two bytes a char: a cut must respect them
    let long_method = reqwest::Method::from_bytes("M".repeat(2_000).as_bytes()).unwrap();
    let cases = [
        client().get(format!("{url}/a/{long}")).send().await.unwrap(),
        client().get(format!("{url}/{long}")).send().await.unwrap(),
        client().get(format!("{url}/?limit={long}")).send().await.unwrap(),
        client()
            .request(long_method, format!("{url}/status"))
            .send()
            .await
            .unwrap(),
        client()
            .post(format!("{url}/"))
            .header("content-type", format!("text/{}", "x".repeat(20_000)))
            .body("1")
            .send()
            .await
            .unwrap(),
        client()
            .get(format!("{url}/"))
            .header("accept", "text/event-stream")
            .header("last-event-id", "9".repeat(20_000))
            .send()
            .await
            .unwrap(),
    ];
    for response in cases {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        let message = body["error"].as_str().unwrap();
        assert!((400..500).contains(&status), "{status} {message}");
        assert!(
            message.len() < 1_000 && message.contains('…'),
            "{status}: echoed input is cut ({} bytes): {}",
            message.len(),
            &message[..message.len().min(300)]
        );
    }
}

#[tokio::test]
async fn replication_frames_cap_byte_budgets_and_refuse_zero_records() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    for i in 0..3 {
        post_json(&node.url, &format!("{{\"i\":{i}}}")).await;
    }
    let pull = |query: &'static str| {
        let url = format!("{}/replication/frames?from=0&{query}", node.url);
        async move { client().get(url).send().await.unwrap() }
    };
    let none = pull("max_records=0").await;
    assert_eq!(
        none.status(),
        400,
        "honoured, it would answer no frames, which reads as caught up"
    );
    let error: Value = none.json().await.unwrap();
    assert_eq!(
        (error["code"].as_str(), error["param"].as_str()),
        (Some("bad_query"), Some("max_records"))
    );
    // The byte budget is soft (one frame always comes): 0 asks for one frame.
    let one = pull("max_bytes=0").await;
    assert_eq!(
        (one.status().as_u16(), &one.headers()["x-distlog-next-offset"]),
        (200, &"1".parse().unwrap())
    );
    let all = pull("max_bytes=1073741824").await;
    assert_eq!(
        (all.status().as_u16(), &all.headers()["x-distlog-next-offset"]),
        (200, &"3".parse().unwrap())
    );
}

/// Every JSON answer ends with a newline: created offsets, records, ranges,
/// batches, status and probes, and errors.
#[tokio::test]
async fn json_answers_end_with_a_newline() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let created = post_json(&node.url, r#"{"a":1}"#).await.text().await.unwrap();
    assert_eq!(created, "{\"offset\":0}\n");
    let batch = client()
        .post(format!("{}/", node.url))
        .header("content-type", "application/x-ndjson")
        .body("1\n2\n")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(batch, "{\"first_offset\":1,\"last_offset\":2}\n");
    for path in [
        "/0",
        "/?from=0",
        "/status",
        "/healthz",
        "/readyz",
        "/999",
        "/no/such/route",
    ] {
        let body = client()
            .get(format!("{}{path}", node.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.ends_with("}\n"), "{path}: {body:?}");
        assert_eq!(body.matches('\n').count(), 1, "{path}: one line: {body:?}");
    }
}
