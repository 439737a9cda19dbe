//! The edges a browser or an odd client reaches (issue 10): JSON nesting
//! and lone surrogates, cross-origin writes and CORS, SSE after retention,
//! Accept q-values, body limits and bodies cut short. Real servers on
//! ephemeral ports, real HTTP.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, get_json, next_offset, post_json, start, start_in};
use distlog::api::AllowedOrigins;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the server takes: nested this deep, a record read back in a range
/// (`{"records":[{"value": ..}]}`, three levels more) is still within
/// serde_json's default recursion limit.
const MAX_DEPTH: usize = 124;

fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

async fn error_code(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Reads an event stream until `done` holds for what came so far.
async fn read_events(response: reqwest::Response, done: impl Fn(&str) -> bool) -> String {
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while !done(&text) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("events keep coming; so far: {text}"))
            .expect("the stream goes on")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

#[tokio::test]
async fn json_nested_deeper_than_the_limit_is_refused_and_the_deepest_allowed_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;

    let response = post_json(&node.url, &nested(MAX_DEPTH)).await;
    assert_eq!(response.status(), 201, "depth {MAX_DEPTH} is taken");
    // Every answer that carries it parses with serde_json's default limit.
    let one = client().get(format!("{}/0", node.url)).send().await.unwrap();
    serde_json::from_slice::<Value>(&one.bytes().await.unwrap()).expect("GET /0 parses");
    let range = client().get(format!("{}/?from=0", node.url)).send().await.unwrap();
    serde_json::from_slice::<Value>(&range.bytes().await.unwrap()).expect("GET /?from=0 parses");
    let sse = client()
        .get(format!("{}/?from=0", node.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let events = read_events(sse, |t| t.contains("\n\n")).await;
    let data = events.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    serde_json::from_str::<Value>(data).expect("the SSE data parses");

    for depth in [MAX_DEPTH + 1, 100_000] {
        let (status, body) = error_code(post_json(&node.url, &nested(depth)).await).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_json")),
            "depth {depth}: {body}"
        );
    }
    let deep_object = "{\"a\":".repeat(MAX_DEPTH + 1) + "1" + &"}".repeat(MAX_DEPTH + 1);
    let (status, body) = error_code(post_json(&node.url, &deep_object).await).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_json")), "{body}");

    let batch = format!("{{\"ok\":1}}\n{}\n", nested(MAX_DEPTH + 1));
    let response = client()
        .post(format!("{}/", node.url))
        .header("content-type", "application/x-ndjson")
        .body(batch)
        .send()
        .await
        .unwrap();
    let (status, body) = error_code(response).await;
    assert_eq!(
        (status, body["code"].as_str(), body["line"].as_u64()),
        (400, Some("invalid_json"), Some(2)),
        "{body}"
    );
    assert_eq!(next_offset(&node.url).await, 1, "nothing refused was appended");
}

#[tokio::test]
async fn lone_surrogates_are_invalid_json_and_pairs_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    for body in [
        r#"{"a":"\ud800"}"#,
        r#"{"a":"\udc00x"}"#,
        r#"{"\ud800":1}"#,
        r#"["\ud800\u0041"]"#,
    ] {
        let (status, error) = error_code(post_json(&node.url, body).await).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (400, Some("invalid_json")),
            "{body}: {error}"
        );
    }
    let pair = r#"{"a":"\ud83d\ude00"}"#;
    assert_eq!(post_json(&node.url, pair).await.status(), 201);
    let (_, record) = get_json(&format!("{}/0", node.url)).await;
    assert_eq!(record["value"]["a"], "\u{1f600}");
}

#[tokio::test]
async fn cross_origin_writes_are_refused_and_curl_still_writes() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let form = "application/x-www-form-urlencoded";
    let refused = [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ];
    for (name, value) in refused {
        let response = client()
            .post(format!("{}/", node.url))
            .header("content-type", form)
            .header(name, value)
            .body(r#"{"csrf":true}"#)
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("access-control-allow-origin").is_none());
        let (status, body) = error_code(response).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("cross_origin")),
            "{name}: {value}: {body}"
        );
    }
    assert_eq!(next_offset(&node.url).await, 0, "no refused write landed");

    // What curl -d sends, and what a same-origin or typed-URL request says.
    for extra in [
        None,
        Some(("sec-fetch-site", "same-origin")),
        Some(("sec-fetch-site", "none")),
    ] {
        let mut request = client()
            .post(format!("{}/", node.url))
            .header("content-type", form)
            .body(r#"{"curl":true}"#);
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        assert_eq!(request.send().await.unwrap().status(), 201, "{extra:?}");
    }
    // Reads stay open to any origin, without CORS headers for it.
    let read = client()
        .get(format!("{}/0", node.url))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert!(read.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn options_without_cors_answers_the_allowed_methods() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    for (path, allow) in [("/", "GET, HEAD, POST, OPTIONS"), ("/7", "GET, HEAD, OPTIONS")] {
        let response = client()
            .request(Method::OPTIONS, format!("{}{path}", node.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{path}");
        assert_eq!(response.headers()["allow"], allow, "{path}");
    }
    // A preflight from an origin nobody allowed: no CORS headers, so the browser stops.
    let preflight = client()
        .request(Method::OPTIONS, format!("{}/", node.url))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight.headers().get("access-control-allow-origin").is_none());
    assert_eq!(error_code(preflight).await.1["code"], "cross_origin");
}

const APP: &str = "https://app.example";

async fn with_cors(dir: &std::path::Path, security: distlog::auth::SecurityConfig) -> common::Node {
    let mut config = common::config(dir);
    config.cors_origins = AllowedOrigins::parse([APP]).unwrap();
    config.security = security;
    start(config).await
}

fn assert_cors(response: &reqwest::Response, what: &str) {
    let headers = response.headers();
    assert_eq!(
        headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()),
        Some(APP),
        "{what}: {headers:?}"
    );
    assert!(
        headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin")),
        "{what}: {headers:?}"
    );
}

#[tokio::test]
async fn allowed_origins_get_preflights_and_cors_headers_even_on_errors_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let token = "t0k3n-for-the-browser-app-0123456789abcdef";
    std::fs::write(&tokens, format!("webapp {token}\n")).unwrap();
    let security = distlog::auth::SecurityConfig {
        token_file: Some(tokens),
        ..Default::default()
    };
    let data = dir.path().join("data");
    let node = with_cors(&data, security).await;

    // A preflight carries no credentials: it is answered before the guard.
    let preflight = client()
        .request(Method::OPTIONS, format!("{}/", node.url))
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_cors(&preflight, "preflight");
    let headers = preflight.headers();
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap().to_string();
    for name in ["authorization", "content-type", "last-event-id"] {
        assert!(allowed_headers.contains(name), "{allowed_headers}");
    }
    assert!(headers.get("access-control-max-age").is_some());

    let post = client()
        .post(format!("{}/", node.url))
        .header("origin", APP)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(r#"{"from":"the app"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 201);
    assert_cors(&post, "POST");
    let exposed = post.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("location"), "{exposed}");

    let unauthenticated = client()
        .get(format!("{}/0", node.url))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_cors(&unauthenticated, "a 401");

    let bad_json = client()
        .post(format!("{}/", node.url))
        .header("origin", APP)
        .header("authorization", format!("Bearer {token}"))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    assert_cors(&bad_json, "a 400");

    let stream = client()
        .get(format!("{}/?from=0", node.url))
        .header("origin", APP)
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_cors(&stream, "an event stream");
    drop(stream);

    // Other origins still may not write, and get no CORS headers.
    let foreign = client()
        .post(format!("{}/", node.url))
        .header("origin", "https://other.example")
        .header("authorization", format!("Bearer {token}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(foreign.headers().get("access-control-allow-origin").is_none());
    let (status, body) = error_code(foreign).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("cross_origin")), "{body}");
    assert_eq!(body["origin"], "https://other.example");
    assert!(
        body["error"].as_str().unwrap().contains("https://other.example"),
        "{body}"
    );
    assert_eq!(next_offset_with(&node.url, token).await, 1);
}

async fn next_offset_with(url: &str, token: &str) -> u64 {
    let response = client()
        .get(format!("{url}/status"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    response.json::<Value>().await.unwrap()["next_offset"].as_u64().unwrap()
}

#[tokio::test]
async fn an_event_stream_from_before_retention_starts_with_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.log.max_segment_bytes = 4096;
    config.log.max_record_bytes = 1024;
    let node = start(config).await;
    let record = format!("{{\"pad\":\"{}\"}}", "x".repeat(200));
    for _ in 0..60 {
        assert_eq!(post_json(&node.url, &record).await.status(), 201);
    }
    assert!(node.server.log().purge_before(30).unwrap() > 0);
    let lowest = node.server.log().lowest_offset();
    assert!(lowest > 0);

    let response = client()
        .get(format!("{}/?from=0", node.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "an EventSource must not get a 404 it never retries"
    );
    let first_id = format!("id: {lowest}\n");
    let text = read_events(response, |t| t.contains(&first_id)).await;
    let gap = format!("event: gap\ndata: {{\"from\":0,\"to\":{lowest}}}\n");
    assert!(text.starts_with(&gap), "{text}");

    // Past the end is still an error: there is nothing to wait for there.
    let beyond = client()
        .get(format!("{}/?from=1000", node.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 404);
}

#[tokio::test]
async fn accept_q_values_pick_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    post_json(&node.url, r#"{"a":1}"#).await;
    let content_type = |accept: &'static str, path: &'static str| {
        let url = format!("{}{path}", node.url);
        async move {
            let response = client().get(url).header("accept", accept).send().await.unwrap();
            let ct = response.headers()["content-type"].to_str().unwrap().to_string();
            ct.split(';').next().unwrap().to_string()
        }
    };
    for (accept, path, expected) in [
        (
            "application/json, text/event-stream;q=0.1",
            "/?from=0",
            "application/json",
        ),
        ("text/event-stream;q=0", "/?from=0", "application/json"),
        ("text/event-stream;q=0.5, */*", "/?from=0", "application/json"),
        ("text/*", "/?from=0", "application/json"),
        (
            "text/event-stream;q=0.5, application/json;q=0.4",
            "/?from=0",
            "text/event-stream",
        ),
        ("TEXT/Event-Stream ; Q=1", "/?from=0", "text/event-stream"),
        ("application/octet-stream;q=0", "/0", "application/json"),
        (
            "application/json;q=0.9, application/octet-stream",
            "/0",
            "application/octet-stream",
        ),
        (
            "application/json, application/octet-stream;q=0.9",
            "/0",
            "application/json",
        ),
    ] {
        assert_eq!(content_type(accept, path).await, expected, "Accept: {accept} on {path}");
    }
}

#[tokio::test]
async fn max_request_bytes_limits_every_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.log.max_record_bytes = 1000;
    config.limits.max_request_bytes = 100;
    let node = start(config).await;
    let json = format!("{{\"pad\":\"{}\"}}", "x".repeat(200));
    for content_type in ["application/json", "application/octet-stream"] {
        let response = client()
            .post(format!("{}/", node.url))
            .header("content-type", content_type)
            .body(json.clone())
            .send()
            .await
            .unwrap();
        let (status, body) = error_code(response).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (413, Some("too_large")),
            "{content_type}: {body}"
        );
        assert_eq!(body["max"], 100, "{content_type}: the smaller limit: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("request body"),
            "names the request limit: {body}"
        );
    }
    assert_eq!(next_offset(&node.url).await, 0);
}

/// Runs `distlog serve` with `args` and `env` on a fresh directory and
/// returns its exit status and stderr, killing it if it is still serving
/// after a while (a bad flag must stop it at once).
fn serve_briefly(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn max_request_bytes_0_is_refused_at_startup() {
    let (ok, message) = serve_briefly(&["--max-request-bytes", "0"], &[]);
    assert!(!ok && message.contains("--max-request-bytes"), "{message}");
}

#[test]
fn bad_cors_origins_are_refused_at_startup() {
    let (ok, message) = serve_briefly(
        &[],
        &[("DISTLOG_CORS_ORIGIN", "https://ok.example,https://bad.example/")],
    );
    assert!(
        !ok && message.contains("--cors-origin \"https://bad.example/\""),
        "{message}"
    );
}

#[tokio::test]
async fn a_body_cut_short_is_incomplete_not_a_bad_query() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let mut socket = tokio::net::TcpStream::connect(node.server.local_addr()).await.unwrap();
    let request = "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":";
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""code":"incomplete_body""#), "{answer}");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_claims_no_size_it_did_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.log.max_record_bytes = 1024;
    let node = start(config).await;
    let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024]));
    let response = client()
        .post(format!("{}/", node.url))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (status, body) = error_code(response).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")), "{body}");
    assert_eq!(body["max"], 1024);
    assert!(body.get("size").is_none(), "the real size is unknown: {body}");
    assert_eq!(
        body["error"], "record is too large: more than the limit of 1024 bytes",
        "{body}"
    );
}
