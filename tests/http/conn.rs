//! HTTP connections against real slow and malformed clients on raw sockets:
//! header, idle, body and send timeouts, the connection cap, and JSON
//! answers to requests hyper cannot parse.

use crate::common;

use common::raw_http::{closed_within, content_length, read_head};

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

use distlog::node::NodeConfig;

/// Short timeouts for a test server: header, idle, body (ms), connection cap.
fn http_limits(config: &mut NodeConfig, header: u64, idle: u64, body: u64, max_connections: usize) {
    config.http.header_timeout = Duration::from_millis(header);
    config.http.idle_timeout = Duration::from_millis(idle);
    config.http.body_timeout = Duration::from_millis(body);
    config.http.max_connections = max_connections;
}

async fn node(header: u64, idle: u64, body: u64, max_connections: usize) -> (common::Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    http_limits(&mut config, header, idle, body, max_connections);
    (common::start(config).await, dir)
}

async fn connect(node: &common::Node) -> TcpStream {
    TcpStream::connect(node.server.local_addr()).await.unwrap()
}

struct Answer {
    status: u16,
    head: String,
    body: Value,
}

/// Reads one HTTP/1.1 answer with a Content-Length body.
async fn read_answer(stream: &mut TcpStream) -> Answer {
    let head = read_head(stream).await;
    let status = head[9..12].parse().unwrap();
    let length = content_length(&head);
    let mut body = vec![0u8; length];
    timeout(Duration::from_secs(10), stream.read_exact(&mut body))
        .await
        .expect("a body within 10 s")
        .unwrap();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Answer { status, head, body }
}

async fn get_status(stream: &mut TcpStream) -> Answer {
    stream
        .write_all(b"GET /status HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    read_answer(stream).await
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_closed_after_the_header_timeout() {
    let (node, _dir) = node(300, 60_000, 30_000, 100).await;
    let mut silent = connect(&node).await;
    let took = closed_within(&mut silent, Duration::from_secs(5)).await;
    let took = took.expect("a silent client must be closed after the 300 ms header timeout");
    assert!(took >= Duration::from_millis(250), "closed too early: {took:?}");
}

#[tokio::test]
async fn a_client_that_trickles_its_head_is_closed_after_the_header_timeout() {
    let (node, _dir) = node(500, 60_000, 30_000, 100).await;
    let mut slow = connect(&node).await;
    slow.write_all(b"GET /status HTTP/1.1\r\nx-slow: ").await.unwrap();
    let started = Instant::now();
    // One byte every 100 ms: never quiet for the whole timeout.
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"a").await.is_err() {
            break true;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_millis(1), slow.read(&mut probe)).await {
            break true;
        }
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
    };
    assert!(
        closed,
        "a head trickled for 5 s was not cut by the 500 ms header timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_closed() {
    let (node, _dir) = node(5_000, 60_000, 300, 100).await;
    let mut stalled = connect(&node).await;
    stalled
        .write_all(
            b"POST / HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut stalled).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "408 only after {:?}",
        started.elapsed()
    );
    assert_eq!(answer.status, 408, "{}", answer.head);
    assert_eq!(answer.body["code"], "body_timeout", "{}", answer.body);
    assert!(closed_within(&mut stalled, Duration::from_secs(2)).await.is_some());
    assert_eq!(node.server.log().next_offset(), 0);
}

#[tokio::test]
async fn a_slow_body_that_keeps_moving_is_not_cut_by_the_body_timeout() {
    let (node, _dir) = node(5_000, 60_000, 300, 100).await;
    let mut slow = connect(&node).await;
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(10));
    slow.write_all(
        format!(
            "POST / HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // 20 bytes, one every 100 ms: two seconds in all, never quiet for 300 ms.
    for byte in body.as_bytes() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        slow.write_all(&[*byte]).await.unwrap();
    }
    let answer = read_answer(&mut slow).await;
    assert_eq!(answer.status, 201, "{}: {}", answer.head, answer.body);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let (node, _dir) = node(200, 1_000, 30_000, 100).await;
    let mut client = connect(&node).await;
    assert_eq!(get_status(&mut client).await.status, 200);
    // Idle for longer than the header timeout: still served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get_status(&mut client).await.status, 200);
    let took = closed_within(&mut client, Duration::from_secs(5)).await;
    let took = took.expect("an idle keep-alive connection must be closed after the 1 s idle timeout");
    assert!(
        took >= Duration::from_millis(900),
        "closed before the idle timeout: {took:?}"
    );
}

#[tokio::test]
async fn a_long_poll_and_an_event_stream_outlast_the_idle_timeout() {
    let (node, _dir) = node(200, 200, 30_000, 100).await;
    let mut poll = connect(&node).await;
    poll.write_all(b"GET /?from=0&wait_ms=800 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut events = connect(&node).await;
    events
        .write_all(b"GET /?from=0 HTTP/1.1\r\nhost: test\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut poll).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    common::post_json(&node.url, r#"{"late":true}"#).await;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let arrived = timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&seen).contains("late") {
            let n = events.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the event stream was closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(
        arrived.is_ok(),
        "no event after the idle timeout: {}",
        String::from_utf8_lossy(&seen)
    );
}

#[tokio::test]
async fn beyond_max_connections_a_client_gets_503_json_and_is_served_once_others_close() {
    let (node, _dir) = node(10_000, 60_000, 30_000, 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut client = connect(&node).await;
        assert_eq!(get_status(&mut client).await.status, 200);
        open.push(client);
    }
    let mut extra = connect(&node).await;
    let refused = get_status(&mut extra).await;
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert_eq!(refused.body["code"], "too_many_connections", "{}", refused.body);
    assert!(refused.head.contains("\r\nretry-after: "), "{}", refused.head);
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = connect(&node).await;
        let answer = get_status(&mut next).await;
        if answer.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused 5 s after a connection closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `request` raw and reads the one answer.
async fn answer_to(node: &common::Node, request: &[u8]) -> Answer {
    let mut client = connect(node).await;
    client.write_all(request).await.unwrap();
    read_answer(&mut client).await
}

#[tokio::test]
async fn requests_hyper_cannot_parse_are_answered_with_json_errors() {
    let (node, _dir) = node(10_000, 60_000, 30_000, 100).await;
    let huge_header = format!("GET / HTTP/1.1\r\nhost: test\r\nx-big: {}\r\n\r\n", "a".repeat(500_000));
    let long_uri = format!("GET /{} HTTP/1.1\r\nhost: test\r\n\r\n", "a".repeat(70_000));
    let cases: [(&str, &[u8], u16, &str); 5] = [
        ("HTTP/0.9", b"GET /\r\n\r\n", 400, "bad_request"),
        ("garbage", b"\x00\x01\x02 not http at all\r\n\r\n", 400, "bad_request"),
        (
            "conflicting Content-Lengths",
            b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
            400,
            "bad_request",
        ),
        ("a huge header", huge_header.as_bytes(), 431, "headers_too_large"),
        ("a 70 KB URI", long_uri.as_bytes(), 414, "uri_too_long"),
    ];
    for (what, request, status, code) in cases {
        let answer = answer_to(&node, request).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.head);
        assert!(
            answer.head.contains("content-type: application/json"),
            "{what}: {}",
            answer.head
        );
        assert_eq!(answer.body["code"], code, "{what}: {}", answer.body);
        assert!(answer.body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}");
    }
    assert_eq!(node.server.log().next_offset(), 0);
}

#[tokio::test]
async fn garbage_after_a_good_request_gets_the_answer_then_a_json_error() {
    let (node, _dir) = node(10_000, 60_000, 30_000, 100).await;
    let mut client = connect(&node).await;
    client
        .write_all(b"GET /status HTTP/1.1\r\nhost: test\r\n\r\nGARBAGE\r\n\r\n")
        .await
        .unwrap();
    let first = read_answer(&mut client).await;
    assert_eq!(first.status, 200, "{}", first.head);
    assert_eq!(first.body["role"], "leader");
    let second = read_answer(&mut client).await;
    assert_eq!(second.status, 400, "{}", second.head);
    assert_eq!(second.body["code"], "bad_request", "{}", second.body);
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_are_answered_in_order() {
    let (node, _dir) = node(10_000, 60_000, 30_000, 100).await;
    let mut client = connect(&node).await;
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(
            format!("POST / HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{{\"i\":{i}}}")
                .as_bytes(),
        );
    }
    client.write_all(&batch).await.unwrap();
    for i in 0..5 {
        let answer = read_answer(&mut client).await;
        assert_eq!(answer.status, 201, "{}", answer.head);
        assert_eq!(answer.body["offset"], i);
    }
}

/// A server with long header, idle and body timeouts, `send_ms` as its send
/// timeout, and `records` records of about 900 KB each (five make a range
/// answer of the 4 MiB cap).
async fn node_with_send_timeout(
    send_ms: u64,
    max_connections: usize,
    records: usize,
) -> (common::Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    http_limits(&mut config, 10_000, 60_000, 30_000, max_connections);
    config.http.send_timeout = Duration::from_millis(send_ms);
    let node = common::start(config).await;
    let record = format!("{{\"s\":\"{}\"}}", "a".repeat(900_000));
    for _ in 0..records {
        node.server.log().append(record.as_bytes()).unwrap();
    }
    (node, dir)
}

/// Connects with a receive buffer of `recv_buffer` bytes (which also turns
/// off the kernel's growing of it), so that a client that does not read
/// stops the server's writes soon.
async fn connect_with_recv_buffer(node: &common::Node, recv_buffer: u32) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(recv_buffer).unwrap();
    socket.connect(node.server.local_addr()).await.unwrap()
}

/// Asks for the whole log as one range answer and reads its head; the
/// answer's body length.
async fn request_large_range(client: &mut TcpStream) -> usize {
    client
        .write_all(b"GET /?from=0&limit=100 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = timeout(Duration::from_secs(10), client.read(&mut byte))
            .await
            .expect("an answer head within 10 s")
            .unwrap();
        assert_eq!(n, 1, "closed before a whole head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    head.lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse().unwrap())
        .expect("a content-length")
}

#[tokio::test]
async fn a_client_that_never_reads_its_answer_is_closed_after_the_send_timeout() {
    // One connection at most: the one that never reads holds it until the
    // send timeout frees it.
    let (node, _dir) = node_with_send_timeout(300, 1, 5).await;
    let mut stalled = connect_with_recv_buffer(&node, 4096).await;
    let length = request_large_range(&mut stalled).await;
    assert!(length > 3_000_000, "a range answer of several MiB: {length}");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    loop {
        let mut next = connect(&node).await;
        if get_status(&mut next).await.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the connection of a client that does not read its answer still held 5 s after a 300 ms send timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "freed before the send timeout: {:?}",
        started.elapsed()
    );
    let mut body = Vec::new();
    let _ = timeout(Duration::from_secs(10), stalled.read_to_end(&mut body)).await;
    assert!(
        body.len() < length,
        "closed, so not all of the answer came: {} of {length} bytes",
        body.len()
    );
}

#[tokio::test]
async fn a_slow_reader_that_keeps_reading_gets_the_whole_answer() {
    let (node, _dir) = node_with_send_timeout(300, 100, 5).await;
    let mut slow = connect_with_recv_buffer(&node, 4096).await;
    let length = request_large_range(&mut slow).await;
    assert!(length > 3_000_000, "{length}");
    let mut chunk = vec![0u8; 64 * 1024];
    let mut read = 0;
    let started = Instant::now();
    while read < length {
        // 64 KiB every 100 ms: the server's writes wait on the client most
        // of the time, and the kernel's send buffer (MiBs on loopback) can
        // hold them back longer than the send timeout while it drains.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let want = chunk.len().min(length - read);
        let got = timeout(Duration::from_secs(5), slow.read_exact(&mut chunk[..want]))
            .await
            .expect("the rest within 5 s");
        assert!(
            got.is_ok(),
            "cut after {read} of {length} bytes ({:?} in): {got:?}",
            started.elapsed()
        );
        read += want;
    }
    assert!(
        started.elapsed() > Duration::from_millis(900),
        "the reader was slower than the send timeout overall"
    );
}

#[tokio::test]
async fn an_event_stream_with_nothing_new_outlasts_the_send_timeout() {
    let (node, _dir) = node_with_send_timeout(200, 100, 0).await;
    let mut events = connect(&node).await;
    events
        .write_all(b"GET /?from=0 HTTP/1.1\r\nhost: test\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let quiet = timeout(Duration::from_millis(1_000), async {
        loop {
            let n = events.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "the event stream was closed within 1 s (send timeout 200 ms): {}",
        String::from_utf8_lossy(&seen)
    );
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    node.server.log().append(br#"{"late":true}"#).unwrap();
    let arrived = timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&seen).contains("late") {
            let n = events.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the event stream was closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(
        arrived.is_ok(),
        "no event after the send timeout: {}",
        String::from_utf8_lossy(&seen)
    );
}
