//! Edges of the HTTP connection layer (src/server/) on raw sockets against
//! a real server: a slow reader of a large answer, a head on a reused
//! connection, records that look like hyper's own errors, timeouts in odd
//! orders, an upload in flight at shutdown, TE and CL together.

use crate::common;

use common::raw_http::{closed_within, content_length, read_head};

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

async fn node(header: u64, idle: u64, body: u64) -> (common::Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.http.header_timeout = Duration::from_millis(header);
    config.http.idle_timeout = Duration::from_millis(idle);
    config.http.body_timeout = Duration::from_millis(body);
    (common::start(config).await, dir)
}

/// The idle clock starts when the answer's body is *handed to hyper*
/// (TrackedBody dropped), not when its bytes reached the client. hyper
/// queues a whole `Full` body (here ~4 MiB of JSON) at once, so a client
/// that reads a large answer slowly has its connection dropped by the idle
/// timeout mid-answer and gets a truncated body.
#[tokio::test]
async fn a_large_answer_read_slowly_is_not_cut_by_the_idle_timeout() {
    let (node, _dir) = node(500, 300, 500).await;
    let record = format!("{{\"s\":\"{}\"}}", "a".repeat(900_000));
    for _ in 0..5 {
        let response = common::post_json(&node.url, &record).await;
        assert_eq!(response.status(), 201);
    }
    let socket = TcpSocket::new_v4().unwrap();
    // A slow reader: small receive window.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(node.server.local_addr()).await.unwrap();
    client
        .write_all(b"GET /?from=0&limit=10 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length = content_length(&head);
    assert!(length > 3_000_000, "{head}");
    // The client is busy for a while (longer than the idle timeout), then reads.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut body = Vec::new();
    let _ = timeout(Duration::from_secs(20), client.read_to_end(&mut body)).await;
    assert_eq!(
        body.len(),
        length,
        "answer truncated: {} of {length} body bytes arrived before the server closed",
        body.len()
    );
}

/// The connection task looks at its clock only when its one timer fires;
/// after an answer the timer is armed for min(idle deadline, now + body
/// timeout), and a new head starting on the idle connection does not
/// re-arm it. So on a reused keep-alive connection the header timeout is
/// enforced only up to `body_timeout` late (defaults: 30 s instead of 10 s
/// for a slowloris that first sends one quick request).
#[tokio::test]
async fn a_head_started_on_a_reused_connection_gets_the_header_timeout() {
    let (node, _dir) = node(300, 10_000, 5_000).await;
    let mut client = TcpStream::connect(node.server.local_addr()).await.unwrap();
    client
        .write_all(b"GET /status HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    let mut body = vec![0u8; content_length(&head)];
    client.read_exact(&mut body).await.unwrap();
    // Idle for a while (longer than the header timeout, well within the
    // idle timeout), then half a head and nothing more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.write_all(b"GET /status HTTP/1.1\r\nhost: te").await.unwrap();
    let took = closed_within(&mut client, Duration::from_secs(10)).await;
    let took = took.expect("never closed");
    assert!(
        took < Duration::from_millis(1_500),
        "an unfinished head on a reused connection was closed after {took:?}, not the 300 ms header timeout"
    );
}

/// conn_io holds back a write that looks like hyper's bare error answer. A
/// raw record can end with exactly those bytes; if the connection then ends
/// with a parse error for which hyper writes nothing (the HTTP/2 preface,
/// `Parse::VersionH2`, `is_parse()`), `finish` takes the held record bytes
/// for hyper's answer and replaces them with a JSON 400: the record's
/// answer loses its body.
#[tokio::test]
async fn a_record_that_looks_like_hypers_error_is_never_replaced() {
    let (node, _dir) = node(10_000, 60_000, 30_000).await;
    let record: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    let response = common::client()
        .post(format!("{}/", node.url))
        .header("content-type", "application/octet-stream")
        .body(record.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let mut client = TcpStream::connect(node.server.local_addr()).await.unwrap();
    client
        .write_all(
            b"GET /0 HTTP/1.1\r\nhost: test\r\naccept: application/octet-stream\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(content_length(&head), record.len(), "{head}");
    let mut rest = Vec::new();
    let _ = timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
    assert!(
        rest.starts_with(record),
        "the record's body was replaced: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// An HTTP/1.0 keep-alive request followed by garbage: hyper answers the
/// parse error as `HTTP/1.0 400`, which `bare_error_answer_at` (it looks
/// for `HTTP/1.1 `) does not recognise, so the client gets hyper's empty
/// 400 rather than JSON.
#[tokio::test]
async fn garbage_after_an_http_1_0_keep_alive_request_gets_a_json_error() {
    let (node, _dir) = node(10_000, 60_000, 30_000).await;
    let mut client = TcpStream::connect(node.server.local_addr()).await.unwrap();
    client
        .write_all(b"GET /status HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGARBAGE\r\n\r\n")
        .await
        .unwrap();
    let first = read_head(&mut client).await;
    assert!(first.contains(" 200 "), "{first}");
    let mut body = vec![0u8; content_length(&first)];
    client.read_exact(&mut body).await.unwrap();
    let second = read_head(&mut client).await;
    assert!(second.contains(" 400 "), "{second}");
    assert!(second.contains("content-type: application/json"), "{second}");
}

/// Same root cause as the header case: with an idle timeout shorter than
/// the header timeout, the first look after an answer is at the header
/// timeout, so the idle timeout is enforced late.
#[tokio::test]
async fn an_idle_timeout_shorter_than_the_header_timeout_is_kept() {
    let (node, _dir) = node(5_000, 300, 5_000).await;
    let mut client = TcpStream::connect(node.server.local_addr()).await.unwrap();
    client
        .write_all(b"GET /status HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    let mut body = vec![0u8; content_length(&head)];
    client.read_exact(&mut body).await.unwrap();
    let took = closed_within(&mut client, Duration::from_secs(10))
        .await
        .expect("never closed");
    assert!(
        took < Duration::from_millis(1_500),
        "an idle connection was closed after {took:?}, not the 300 ms idle timeout"
    );
}

/// A request whose body is still arriving when shutdown starts finishes
/// (graceful), and shutdown then returns promptly.
#[tokio::test]
async fn shutdown_lets_an_upload_in_flight_finish() {
    let (node, _dir) = node(10_000, 60_000, 30_000).await;
    let mut client = TcpStream::connect(node.server.local_addr()).await.unwrap();
    client
        .write_all(
            b"POST / HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let common::Node { server, .. } = node;
    let started = Instant::now();
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.write_all(b"1}").await.unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("http/1.1 201"), "{head}");
    timeout(Duration::from_secs(3), stopping)
        .await
        .expect("shutdown returns once the request is done")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Checks that pass: smuggling angles and Expect: 100-continue.
#[tokio::test]
async fn te_and_cl_together_closes_after_answering_and_expect_continue_works() {
    let (node, _dir) = node(10_000, 60_000, 30_000).await;
    let mut client = TcpStream::connect(node.server.local_addr()).await.unwrap();
    client
        .write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n")
        .await
        .unwrap();
    // hyper takes the chunked body and closes after answering (RFC 9112 6.3).
    let head = read_head(&mut client).await;
    assert!(head.starts_with("http/1.1 201"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(node.server.log().next_offset(), 1);

    let mut client = TcpStream::connect(node.server.local_addr()).await.unwrap();
    client
        .write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 7\r\nexpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("http/1.1 100"), "{head}");
    client.write_all(b"{\"a\":1}").await.unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("http/1.1 201"), "{head}");

    // Connection: close, then a smuggled second request: never served.
    let mut client = TcpStream::connect(node.server.local_addr()).await.unwrap();
    client
        .write_all(b"POST / HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"b\":2}POST / HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"c\":3}")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("http/1.1 201"), "{head}");
    let mut rest = Vec::new();
    let _ = timeout(Duration::from_secs(3), client.read_to_end(&mut rest)).await;
    assert_eq!(
        node.server.log().next_offset(),
        3,
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// `poll_write_vectored` with bytes held: it releases them and then writes
/// the new buffers without looking at them, so hyper's bare 400 that
/// follows a held (record) write goes out as is: an empty 400, not JSON.
#[tokio::test]
async fn garbage_after_a_record_that_looks_like_hypers_error_gets_a_json_error() {
    let (node, _dir) = node(10_000, 60_000, 30_000).await;
    let record: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    let response = common::client()
        .post(format!("{}/", node.url))
        .header("content-type", "application/octet-stream")
        .body(record.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let mut client = TcpStream::connect(node.server.local_addr()).await.unwrap();
    client
        .write_all(b"GET /0 HTTP/1.1\r\nhost: test\r\naccept: application/octet-stream\r\n\r\nGARBAGE\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut body = vec![0u8; content_length(&head)];
    client.read_exact(&mut body).await.unwrap();
    assert_eq!(body, record);
    let second = read_head(&mut client).await;
    assert!(second.starts_with("http/1.1 400"), "{second}");
    assert!(second.contains("content-type: application/json"), "{second}");
}
