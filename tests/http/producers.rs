//! Idempotent producers and conditional appends on one standalone node:
//! `Producer-Id` / `Producer-Epoch` / `Producer-Seq` and
//! `Expected-Last-Offset` on `POST /`, every rule of issue 21 against a
//! real server, and the table rebuilt from the log after a restart.

use crate::common;

use common::{client, get_json, start, start_in};
use serde_json::{Value, json};

/// POST / with `headers` and a body of `content_type`: status and JSON body.
async fn post(url: &str, content_type: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut request = client()
        .post(format!("{url}/"))
        .header("content-type", content_type)
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn produce(url: &str, id: &str, epoch: u32, seq: u64, body: &str) -> (u16, Value) {
    let (epoch, seq) = (epoch.to_string(), seq.to_string());
    let headers = [("Producer-Id", id), ("Producer-Epoch", &epoch), ("Producer-Seq", &seq)];
    post(url, "application/json", &headers, body).await
}

/// The values readers see, in order.
async fn values(url: &str) -> Vec<Value> {
    let (status, page) = get_json(&format!("{url}/?from=0&limit=1000")).await;
    assert_eq!(status, 200, "{page}");
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].clone())
        .collect()
}

#[tokio::test]
async fn a_retry_is_answered_200_with_the_original_offset_and_appended_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let url = &node.url;
    assert_eq!(post(url, "application/json", &[], "\"plain\"").await.0, 201);
    let (status, first) = produce(url, "orders", 0, 0, "{\"n\":0}").await;
    assert_eq!((status, &first), (201, &json!({ "offset": 1 })));
    let (status, again) = produce(url, "orders", 0, 0, "{\"n\":0}").await;
    assert_eq!((status, &again), (200, &json!({ "offset": 1, "duplicate": true })));
    assert_eq!(produce(url, "orders", 0, 1, "{\"n\":1}").await.0, 201);
    assert_eq!(
        produce(url, "orders", 0, 0, "{\"n\":0}").await.0,
        200,
        "still one of the last 5"
    );
    assert_eq!(values(url).await, vec![json!("plain"), json!({"n":0}), json!({"n":1})]);
}

#[tokio::test]
async fn an_ndjson_batch_takes_a_sequence_range_and_its_retry_gets_the_range_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let headers = [("Producer-Id", "batcher"), ("Producer-Seq", "10")];
    let body = "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n";
    let (status, answer) = post(&node.url, "application/x-ndjson", &headers, body).await;
    assert_eq!((status, answer), (201, json!({ "first_offset": 0, "last_offset": 2 })));
    let (status, answer) = post(&node.url, "application/x-ndjson", &headers, body).await;
    assert_eq!(
        (status, answer),
        (200, json!({ "first_offset": 0, "last_offset": 2, "duplicate": true }))
    );
    let (status, answer) = produce(&node.url, "batcher", 0, 12, "{}").await;
    assert_eq!(status, 409, "12 was taken by the batch: {answer}");
    assert_eq!(answer["code"], "producer_sequence_stale");
    assert_eq!(produce(&node.url, "batcher", 0, 13, "{}").await.0, 201);
    let octets = [("Producer-Id", "batcher"), ("Producer-Seq", "14")];
    assert_eq!(post(&node.url, "application/octet-stream", &octets, "raw").await.0, 201);
    assert_eq!(post(&node.url, "application/octet-stream", &octets, "raw").await.0, 200);
    assert_eq!(values(&node.url).await.len(), 4 + 1);
}

#[tokio::test]
async fn gaps_stale_sequences_and_fenced_epochs_are_refused_409() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let url = &node.url;
    assert_eq!(
        produce(url, "p", 1, 5, "1").await.0,
        201,
        "a new producer starts anywhere"
    );
    let (status, gap) = produce(url, "p", 1, 7, "2").await;
    assert_eq!(
        (status, gap["code"].as_str(), gap["expected_seq"].as_u64()),
        (409, Some("producer_sequence_gap"), Some(6))
    );
    for seq in 6..12 {
        assert_eq!(produce(url, "p", 1, seq, "3").await.0, 201);
    }
    let (status, stale) = produce(url, "p", 1, 5, "1").await;
    assert_eq!(
        (status, stale["code"].as_str()),
        (409, Some("producer_sequence_stale")),
        "5 is no longer kept"
    );
    let (status, fenced) = produce(url, "p", 0, 12, "4").await;
    assert_eq!(
        (status, fenced["code"].as_str(), fenced["epoch"].as_u64()),
        (409, Some("producer_fenced"), Some(1))
    );
    let (status, restart) = produce(url, "p", 2, 3, "5").await;
    assert_eq!(
        (status, restart["expected_seq"].as_u64()),
        (409, Some(0)),
        "a new epoch starts at 0"
    );
    assert_eq!(produce(url, "p", 2, 0, "5").await.0, 201);
    assert_eq!(
        produce(url, "p", 1, 12, "6").await.0,
        409,
        "the old epoch is fenced now"
    );
    assert_eq!(values(url).await.len(), 1 + 6 + 1);
}

#[tokio::test]
async fn bad_or_half_given_headers_are_400_naming_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("Producer-Id", "p")], "Producer-Seq"),
        (&[("Producer-Seq", "1")], "Producer-Id"),
        (&[("Producer-Id", "p q"), ("Producer-Seq", "1")], "Producer-Id"),
        (&[("Producer-Id", "p"), ("Producer-Seq", "x")], "Producer-Seq"),
        (
            &[("Producer-Id", "p"), ("Producer-Seq", "1"), ("Producer-Epoch", "-1")],
            "Producer-Epoch",
        ),
        (&[("Expected-Last-Offset", "-2")], "Expected-Last-Offset"),
    ];
    for (headers, named) in cases {
        let (status, body) = post(&node.url, "application/json", headers, "{}").await;
        assert_eq!(status, 400, "{headers:?}: {body}");
        assert_eq!(
            (body["code"].as_str(), body["header"].as_str()),
            (Some("bad_header"), Some(named))
        );
    }
    assert!(values(&node.url).await.is_empty());
}

#[tokio::test]
async fn an_expected_last_offset_appends_only_after_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let url = &node.url;
    let expect = |n: &'static str| [("Expected-Last-Offset", n)];
    let (status, body) = post(url, "application/json", &expect("0"), "1").await;
    assert_eq!(
        (status, body["code"].as_str(), body["last_offset"].as_i64()),
        (412, Some("offset_mismatch"), Some(-1))
    );
    assert_eq!(post(url, "application/json", &expect("-1"), "1").await.0, 201);
    assert_eq!(post(url, "application/json", &expect("-1"), "1").await.0, 412);
    let batch = "2\n3\n";
    assert_eq!(post(url, "application/x-ndjson", &expect("0"), batch).await.0, 201);
    let (status, body) = post(url, "application/x-ndjson", &expect("0"), batch).await;
    assert_eq!(
        (status, body["last_offset"].as_i64()),
        (412, Some(2)),
        "the whole batch is refused"
    );
    assert_eq!(values(url).await, vec![json!(1), json!(2), json!(3)]);
}

#[tokio::test]
async fn a_conditional_retry_that_already_succeeded_is_a_duplicate_not_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let headers = [
        ("Producer-Id", "c"),
        ("Producer-Seq", "0"),
        ("Expected-Last-Offset", "-1"),
    ];
    assert_eq!(post(&node.url, "application/json", &headers, "1").await.0, 201);
    let (status, body) = post(&node.url, "application/json", &headers, "1").await;
    assert_eq!((status, body), (200, json!({ "offset": 0, "duplicate": true })));
    let next = [
        ("Producer-Id", "c"),
        ("Producer-Seq", "1"),
        ("Expected-Last-Offset", "-1"),
    ];
    let (status, body) = post(&node.url, "application/json", &next, "2").await;
    assert_eq!((status, body["last_offset"].as_i64()), (412, Some(0)));
    let next = [
        ("Producer-Id", "c"),
        ("Producer-Seq", "1"),
        ("Expected-Last-Offset", "0"),
    ];
    assert_eq!(
        post(&node.url, "application/json", &next, "2").await.0,
        201,
        "a refusal took no sequence"
    );
}

#[tokio::test]
async fn racing_conditional_appends_have_one_winner_each_round() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    for round in 0..50i64 {
        let expected = (round - 1).to_string();
        let race = |writer: u8| {
            let (url, expected) = (node.url.clone(), expected.clone());
            async move {
                let headers = [("Expected-Last-Offset", expected.as_str())];
                post(&url, "application/json", &headers, &writer.to_string()).await.0
            }
        };
        let (a, b) = tokio::join!(race(1), race(2));
        let mut statuses = [a, b];
        statuses.sort();
        assert_eq!(statuses, [201, 412], "round {round}");
    }
    assert_eq!(values(&node.url).await.len(), 50);
}

#[tokio::test]
async fn the_producer_table_is_rebuilt_from_the_log_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    assert_eq!(produce(&node.url, "durable", 3, 0, "\"a\"").await.0, 201);
    let headers = [
        ("Producer-Id", "durable"),
        ("Producer-Epoch", "3"),
        ("Producer-Seq", "1"),
    ];
    assert_eq!(post(&node.url, "application/x-ndjson", &headers, "1\n2\n").await.0, 201);
    node.server.shutdown().await.unwrap();
    let node = start(common::config(dir.path())).await;
    let (status, body) = post(&node.url, "application/x-ndjson", &headers, "1\n2\n").await;
    assert_eq!(
        (status, body),
        (200, json!({ "first_offset": 1, "last_offset": 2, "duplicate": true }))
    );
    assert_eq!(produce(&node.url, "durable", 2, 3, "\"zombie\"").await.0, 409);
    assert_eq!(produce(&node.url, "durable", 3, 4, "\"gap\"").await.0, 409);
    assert_eq!(produce(&node.url, "durable", 3, 3, "\"b\"").await.0, 201);
    assert_eq!(values(&node.url).await.len(), 4);
}

#[tokio::test]
async fn beyond_max_producers_the_least_recently_used_is_forgotten_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.log.producers.max_producers = 2;
    let node = start(config).await;
    let url = &node.url;
    for id in ["a", "b", "c"] {
        assert_eq!(produce(url, id, 0, 7, "1").await.0, 201);
    }
    assert_eq!(produce(url, "c", 0, 7, "1").await.0, 200, "c is remembered");
    assert_eq!(produce(url, "b", 0, 7, "1").await.0, 200, "so is b");
    assert_eq!(
        produce(url, "a", 0, 7, "1").await.0,
        201,
        "a was forgotten: its late retry is appended again"
    );
    let metrics = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evicted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("distlog_producers_evicted_total "))
        .unwrap_or_else(|| panic!("no eviction counter in {metrics}"));
    assert_eq!(evicted.trim(), "2", "c, then a again pushed one out each");
}

#[tokio::test]
async fn retention_deleting_a_producers_records_does_not_forget_it_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let configure = || {
        let mut config = common::config(dir.path());
        config.log.max_segment_bytes = 4096;
        config.log.max_record_bytes = 1024;
        config.log.retention_bytes = Some(8192);
        config.retention_check = std::time::Duration::from_millis(50);
        config
    };
    let node = start(configure()).await;
    for seq in 0..5 {
        assert_eq!(produce(&node.url, "kept", 0, seq, &seq.to_string()).await.0, 201);
    }
    let pad = format!("\"{}\"", "x".repeat(500));
    for _ in 0..40 {
        assert_eq!(post(&node.url, "application/json", &[], &pad).await.0, 201);
    }
    common::eventually(
        std::time::Duration::from_secs(10),
        "retention to delete offsets 0 to 4",
        || async { common::status(&node.url).await["lowest_offset"].as_u64().unwrap_or(0) > 4 },
    )
    .await;
    node.server.shutdown().await.unwrap();

    let node = start(configure()).await;
    for seq in 0..5u64 {
        let (status, body) = produce(&node.url, "kept", 0, seq, &seq.to_string()).await;
        assert_eq!(
            (status, body),
            (200, json!({ "offset": seq, "duplicate": true })),
            "seq {seq}"
        );
    }
    assert_eq!(produce(&node.url, "kept", 0, 5, "5").await.0, 201);
}

/// Sends a producer append on a connection of its own and closes it at
/// once, as a client that gives up waiting does: the server may be
/// dropping the request while the log writes it.
async fn produce_and_hang_up(url: &str, id: &str, seq: u64, body: &str) {
    use tokio::io::AsyncWriteExt;
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nProducer-Id: {id}\r\n\
         Producer-Seq: {seq}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_retry_after_the_client_hung_up_on_its_first_try_is_appended_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let url = &node.url;
    for seq in 0..30u64 {
        let body = format!("{{\"n\":{seq}}}");
        produce_and_hang_up(url, "hangs-up", seq, &body).await;
        // The retry: answered once the first try is decided, either way.
        let (status, answer) = produce(url, "hangs-up", 0, seq, &body).await;
        assert!(status == 200 || status == 201, "seq {seq}: {status} {answer}");
    }
    let expected: Vec<Value> = (0..30).map(|n| json!({ "n": n })).collect();
    assert_eq!(values(url).await, expected, "every record once, in order");
}
