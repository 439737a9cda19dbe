//! The client crate against a standalone node and a `--follow` replica.

use crate::common;

use std::time::Duration;

use common::{eventually, follower_config, start_in};
use distlog_client::{Append, Client, Payload, Start};
use serde_json::json;

fn client(urls: &[&str]) -> Client {
    Client::builder()
        .seeds(urls.iter().copied())
        .retry_for(Duration::from_secs(10))
        .build()
        .expect("a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_reads_of_every_kind_against_a_standalone_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let client = client(&[&node.url]);

    let one = client.append_json(&json!({"n": 0})).await.expect("a JSON record");
    assert_eq!((one.first_offset, one.last_offset, one.duplicate), (0, 0, false));
    let batch = client
        .append_batch(&[json!({"n": 1}), json!({"n": 2})])
        .await
        .expect("a batch");
    assert_eq!((batch.first_offset, batch.last_offset), (1, 2));
    let bytes = client.append_bytes(vec![0u8, 255]).await.expect("bytes");
    assert_eq!(bytes.first_offset, 3);

    assert_eq!(client.read(1).await.unwrap().json(), Some(&json!({"n": 1})));
    assert_eq!(
        client.read(3).await.unwrap().payload,
        Payload::Bytes(vec![0u8, 255].into())
    );
    let page = client.read_range(1, 2).await.unwrap();
    assert_eq!(page.records.iter().map(|r| r.offset).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(page.next_offset, 3);
    let tail = client.tail(2).await.unwrap();
    assert_eq!(tail.records.iter().map(|r| r.offset).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(client.next_offset().await.unwrap(), 4);
    let stamp = client.read(2).await.unwrap().timestamp;
    let by_time = client.read_from_time(stamp, 10).await.unwrap();
    assert!(
        by_time
            .records
            .first()
            .is_some_and(|r| r.offset <= 2 && r.timestamp <= stamp)
    );
    let future = client
        .page(Start::Timestamp(stamp + 3_600_000), 10, Duration::ZERO)
        .await
        .unwrap();
    assert!(future.records.is_empty());

    let missing = client.read(99).await.expect_err("no record at 99");
    assert_eq!(missing.code(), Some("offset_not_found"));
    assert!(!missing.is_retryable(), "{missing}");
    let invalid = client
        .append(&Append::ndjson("{not json\n", 1))
        .await
        .expect_err("invalid JSON");
    assert_eq!((invalid.status(), invalid.code()), (Some(400), Some("invalid_json")));
    assert!(invalid.has_no_side_effects() && !invalid.is_retryable());
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_hands_out_every_record_once_in_order_while_they_are_appended() {
    for long_polls in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let node = start_in(dir.path()).await;
        let client = client(&[&node.url]);
        let writer = client.clone();
        let writes = tokio::spawn(async move {
            for n in 0..300u64 {
                if n % 3 == 0 {
                    writer.append_batch(&[json!(n), json!(n + 1000)]).await.unwrap();
                } else {
                    writer.append_json(&json!(n)).await.unwrap();
                }
            }
        });
        let mut stream = client.stream(0).wait(Duration::from_millis(500)).page_size(7);
        if long_polls {
            stream = stream.long_polls();
        }
        let mut seen = Vec::new();
        while seen.len() < 400 {
            let record = stream.next().await.unwrap().expect("a record");
            seen.push(record.offset);
        }
        writes.await.unwrap();
        assert_eq!(
            seen,
            (0..400).collect::<Vec<_>>(),
            "no skip, no repeat (long polls: {long_polls})"
        );
        assert_eq!(stream.position(), 400);
        assert_eq!(stream.uses_events(), !long_polls);
        assert_eq!(stream.source().is_some(), !long_polls);
        node.server.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_given_a_replica_writes_to_its_leader_and_reads_from_both() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = start_in(dirs.0.path()).await;
    let replica = common::start(follower_config(dirs.1.path(), &leader.url)).await;
    let client = client(&[&replica.url]);

    let (members, writes_to) = client.members().await.unwrap();
    assert_eq!(writes_to.as_deref(), Some(leader.url.as_str()));
    assert_eq!(members, [replica.url.clone(), leader.url.clone()]);
    for n in 0..10 {
        client
            .append_json(&json!({"n": n}))
            .await
            .expect("appended through the replica's leader");
    }
    eventually(Duration::from_secs(10), "the replica to copy the records", || async {
        common::next_offset(&replica.url).await == 10
    })
    .await;
    // Reads rotate over both; every one of them sees the same records.
    for offset in 0..10 {
        assert_eq!(client.read(offset).await.unwrap().json(), Some(&json!({"n": offset})));
    }
    replica.server.shutdown().await.unwrap();
    leader.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_never_reached_a_server_says_so() {
    let port = common::cluster::free_ports(1)[0];
    let client = Client::builder()
        .seeds([format!("http://127.0.0.1:{port}")])
        .retry_for(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = client.append_json(&json!(1)).await.expect_err("nobody listens");
    assert!(error.has_no_side_effects(), "{error:?}");
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_retry_of_an_appended_request_gets_the_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let client = client(&[&node.url]);
    let batch = Append::batch(&[json!(1), json!(2)]).unwrap();
    let first = client
        .producer_at("retrying", 0, 0)
        .unwrap()
        .append(&batch)
        .await
        .unwrap();
    // The same id, epoch and sequence again: a retry after a lost answer.
    let again = client
        .producer_at("retrying", 0, 0)
        .unwrap()
        .append(&batch)
        .await
        .unwrap();
    assert_eq!(
        (again.first_offset, again.last_offset),
        (first.first_offset, first.last_offset)
    );
    assert!(again.duplicate);
    assert_eq!(common::next_offset(&node.url).await, 2, "nothing appended twice");
    // A gap is retried (an earlier request may be on its way) until the deadline.
    let impatient = Client::builder()
        .seeds([node.url.clone()])
        .retry_for(Duration::from_millis(300))
        .build()
        .unwrap();
    let gap = impatient.producer_at("retrying", 0, 7).unwrap().append(&batch).await;
    assert_eq!(gap.unwrap_err().code(), Some("producer_sequence_gap"));
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_expecting_another_last_offset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let client = client(&[&node.url]);
    let first = Append::json(&json!("first")).unwrap().expect_last_offset(Some(-1));
    assert_eq!(client.append(&first).await.unwrap().first_offset, 0);
    let stale = client.append(&first).await.expect_err("the log is not empty any more");
    assert_eq!((stale.status(), stale.code()), (Some(412), Some("offset_mismatch")));
    assert!(stale.has_no_side_effects() && !stale.is_retryable());
    node.server.shutdown().await.unwrap();
}

/// A server that answers `GET /cluster` as a member in an election does:
/// itself as the only member, no leader.
async fn start_leaderless_member() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = json!({"node_id": 1, "url": url, "initialized": true, "term": 3, "leader_id": null,
        "leader_url": null, "leader_contact_ms": null, "commit_offset": 0, "members": [{"id": 1, "url": url,
        "voter": true, "match_offset": null, "reachable": null}]});
    let app = axum::Router::new().route("/cluster", axum::routing::get(move || async move { axum::Json(body) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_while_no_member_knows_a_leader_waits_for_one_then_says_no_leader() {
    let url = start_leaderless_member().await;
    let client = Client::builder()
        .seeds([url])
        .retry_for(Duration::from_millis(500))
        .build()
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), client.append_json(&json!(1))).await;
    let error = answer.expect("an answer, not a hang").expect_err("no leader");
    assert_eq!(error.code(), Some("no_leader"), "{error:?}");
    assert!(error.has_no_side_effects() && error.is_retryable());
}
