//! `distlog bench` against a node in this process: its counts agree with
//! the node's, and its verifier fails the run when a record goes missing.

use crate::cli::distlog;
use crate::common;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::start_in;
use serde_json::Value;

fn report(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("bench prints JSON ({e}): {}", String::from_utf8_lossy(&output.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_for_a_few_seconds_agrees_with_the_nodes_status() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let args = [
        "bench",
        "--url",
        &node.url,
        "--duration",
        "2s",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--json",
    ];
    let output = distlog(&args, b"").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = report(&output);
    let status = common::status(&node.url).await;
    let appended = status["next_offset"].as_u64().unwrap();
    assert!(appended > 0);
    assert_eq!(report["produced"]["records"].as_u64(), Some(appended), "{report}");
    assert_eq!(report["end_offset"].as_u64(), Some(appended));
    assert_eq!(report["catch_up"]["records"].as_u64(), Some(appended));
    for consumer in report["consumers"].as_array().unwrap() {
        assert_eq!(consumer["records"].as_u64(), Some(appended));
    }
    assert_eq!(report["failed"], false);
    assert!(report["ack_latency"]["p99_ms"].as_f64().is_some_and(|p99| p99 > 0.0));
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_fails_when_a_record_is_deleted_behind_its_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let proxy = start_hiding_proxy(node.url.clone(), 50).await;
    let args = [
        "bench",
        "--url",
        &proxy,
        "--records",
        "200",
        "--batch-size",
        "10",
        "--producers",
        "1",
        "--json",
    ];
    let output = distlog(&args, b"").await;
    assert!(!output.status.success(), "a missing record fails the run");
    let report = report(&output);
    assert_eq!(report["failed"], true);
    assert_eq!(report["consumers"][0]["faults"]["lost"].as_u64(), Some(1), "{report}");
    assert_eq!(report["catch_up"]["faults"]["lost"].as_u64(), Some(1), "{report}");
    assert_eq!(
        common::next_offset(&node.url).await,
        200,
        "the node itself holds them all"
    );
    node.server.shutdown().await.unwrap();
}

/// A proxy to `target` that drops the record at offset `hidden` from every
/// range it passes on and refuses event streams (`406`); returns its URL.
async fn start_hiding_proxy(target: String, hidden: u64) -> String {
    let app = axum::Router::new().fallback(forward).with_state((target, hidden));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn forward(State((target, hidden)): State<(String, u64)>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // It passes on whole answers only, so it refuses event streams, as a
    // buffering proxy would: the bench's consumers must fall back to long polls.
    let wants_events = parts
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_events {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut outgoing = common::client()
        .request(parts.method.clone(), format!("{target}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            outgoing = outgoing.header(name, value);
        }
    }
    let Ok(answer) = outgoing.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let content_type = answer.headers().get("content-type").cloned();
    let mut bytes: Bytes = answer.bytes().await.unwrap_or_default();
    if parts.uri.path() == "/"
        && let Ok(mut page) = serde_json::from_slice::<Value>(&bytes)
        && let Some(records) = page["records"].as_array_mut()
    {
        records.retain(|record| record["offset"].as_u64() != Some(hidden));
        bytes = Bytes::from(page.to_string());
    }
    let mut response = (status, bytes).into_response();
    if let Some(content_type) = content_type {
        response.headers_mut().insert("content-type", content_type);
    }
    response
}
