//! Raw-socket HTTP/1.1 helpers for tests of the connection layer: read an
//! answer head byte by byte, find its length, wait for the server to close.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Reads one answer head (up to the empty line) byte by byte, lowercased.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        let n = timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("an answer head within 10 s")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed before a whole answer head: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.push(byte[0]);
    }
    String::from_utf8(bytes).unwrap().to_ascii_lowercase()
}

/// The Content-Length of a lowercased head (0 without one).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Waits until the server closes `stream` (EOF or reset), reading and
/// dropping what it sends; the time it took, or None if it stayed open
/// for `within`.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}
