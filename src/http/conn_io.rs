//! The byte stream under hyper on one connection, and the answers written
//! on it outside hyper.
//!
//! Reads tell the connection's clock that a request head began; flushes,
//! that hyper wrote all it had (the clock's busy/flush rule); writes, whether
//! the socket accepted bytes or refused them (the send timeout). Writes are
//! watched for hyper's own answer to a request it cannot parse (an HTTP/0.9
//! request line, garbage, conflicting `Content-Length`s, a header section
//! or URI too large): hyper writes `HTTP/1.x 400|414|431 ...` with
//! `content-length: 0` itself, in the request's version, and gives no hook
//! to change it. Our API promises JSON for every error, so:
//!
//! 1. when no answer of ours is under way (the clock is not busy: every
//!    answer started was flushed whole, so nothing written now can be part
//!    of one, e.g. a raw record that looks like such an answer) and a write
//!    ends with exactly such a bare answer, that answer is held back
//!    (reported written);
//! 2. if the connection then ends with a parse error (`hyper::Error::
//!    is_parse`), the held bytes are dropped and the JSON error is written
//!    instead (`finish`);
//! 3. otherwise they go out before anything else on the next read, write
//!    or at the end, so nothing is lost or reordered; a write after them is
//!    watched as any other.
//!
//! hyper writes that answer only between messages (its writer idle) and
//! then closes, so it is always the end of the last write; the check runs
//! only on writes ending in an empty line, which answers with a body never
//! do. Reading the request head ourselves would have meant parsing every
//! request twice.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::timeouts::ConnClock;
use crate::api::ApiError;

/// How long a connection we answer outside hyper may take to read the
/// answer before we close it.
const LINGER: Duration = Duration::from_secs(1);
/// What we read and drop of a refused client's request while it reads the
/// answer, so that closing does not reset the connection under it.
const LINGER_BYTES: usize = 1024 * 1024;

pub(super) struct ConnIo<I> {
    inner: I,
    clock: Arc<ConnClock>,
    /// hyper's bare error answer, or bytes that looked like one.
    held: Option<Vec<u8>>,
}

impl<I: AsyncRead + AsyncWrite + Unpin> ConnIo<I> {
    pub fn new(inner: I, clock: Arc<ConnClock>) -> Self {
        ConnIo {
            inner,
            clock,
            held: None,
        }
    }

    /// Writes out held bytes, if any: they were not hyper's error answer.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(held) = &mut self.held {
            if held.is_empty() {
                self.held = None;
                break;
            }
            let n = ready!(watch_write(&self.clock, Pin::new(&mut self.inner).poll_write(cx, held)))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            held.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Where in `buf` hyper's bare error answer starts, if `buf` ends with
    /// one and no answer of ours is under way.
    fn bare_error_answer_at(&self, buf: &[u8]) -> Option<usize> {
        if !buf.ends_with(b"\r\n\r\n") || self.clock.is_busy() {
            return None;
        }
        bare_error_answer_at(buf)
    }

    /// Ends the connection once hyper is done with it: writes `answer` in
    /// place of hyper's bare one if it held one back, or releases what it
    /// held, then shuts the stream down.
    pub async fn finish(mut self, answer: Option<ApiError>) {
        let version = self.held_version();
        let replaced = match (self.held.take(), answer) {
            (Some(_bare), Some(answer)) => Some(raw_answer_in(&answer, version)),
            (held, _) => held,
        };
        let _ = tokio::time::timeout(LINGER, async {
            if let Some(bytes) = replaced {
                write_and_linger(&mut self.inner, &bytes).await
            } else {
                self.inner.shutdown().await
            }
        })
        .await;
    }
}

/// Writes `answer`, shuts the writing half and reads what the client still
/// sends until it closes (bounded), so that closing does not reset the
/// connection before the client read the answer.
pub(super) async fn write_and_linger<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I, answer: &[u8]) -> io::Result<()> {
    io.write_all(answer).await?;
    io.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match io.read(&mut sink).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// A whole HTTP/1.1 answer carrying `error` as JSON, for connections we
/// answer outside hyper; it closes the connection.
pub(super) fn raw_answer(error: &ApiError) -> Vec<u8> {
    raw_answer_in(error, HTTP_1_1)
}

/// `raw_answer` in `version` (`HTTP/1.0 ` or `HTTP/1.1 `): an HTTP/1.0
/// client may not read a 1.1 answer.
fn raw_answer_in(error: &ApiError, version: &str) -> Vec<u8> {
    let status = error.status();
    // Ends with a newline, as every JSON answer does (`api::json_body`).
    let body = format!("{}\n", error.body());
    let mut out = format!(
        "{version}{} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(secs) = error.retry_after_secs() {
        out.push_str(&format!("retry-after: {secs}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// The error hyper's bare answer in `held` stood for, given the error the
/// connection ended with.
pub(super) fn protocol_error(error: &hyper::Error, held_status: Option<u16>) -> Option<ApiError> {
    if !(error.is_parse() || error.is_parse_too_large()) {
        return None;
    }
    Some(match held_status {
        Some(431) => ApiError::HeadersTooLarge,
        Some(414) => ApiError::UriTooLong,
        _ => ApiError::BadRequest(error.to_string()),
    })
}

const HTTP_1_1: &str = "HTTP/1.1 ";
const HTTP_1_0: &str = "HTTP/1.0 ";

impl<I> ConnIo<I> {
    /// The status of the held bare answer, if any.
    pub fn held_status(&self) -> Option<u16> {
        let held = self.held.as_deref()?;
        std::str::from_utf8(held.get(9..12)?).ok()?.parse().ok()
    }

    /// The HTTP version hyper answered in (that of the request).
    fn held_version(&self) -> &'static str {
        match &self.held {
            Some(held) if held.starts_with(HTTP_1_0.as_bytes()) => HTTP_1_0,
            _ => HTTP_1_1,
        }
    }
}

/// Where `buf` ends with an answer of the shape hyper writes on its own for
/// a request it cannot parse: `HTTP/1.1 400|414|431 <reason>` (or
/// `HTTP/1.0`), then only `connection: close`, `content-length: 0` and
/// `date` headers, no body.
fn bare_error_answer_at(buf: &[u8]) -> Option<usize> {
    // Such an answer is short; only its tail matters.
    let tail_start = buf.len().saturating_sub(256);
    let tail = &buf[tail_start..];
    let at = tail
        .windows(9)
        .rposition(|w| w == HTTP_1_1.as_bytes() || w == HTTP_1_0.as_bytes())?;
    let answer = std::str::from_utf8(&tail[at..]).ok()?;
    let mut lines = answer.strip_suffix("\r\n\r\n")?.split("\r\n");
    let status = lines.next()?.get(HTTP_1_1.len()..)?;
    if !["400 ", "414 ", "431 "].iter().any(|code| status.starts_with(code)) {
        return None;
    }
    let mut zero_length = false;
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value == "0" => zero_length = true,
            "connection" if value == "close" => {}
            "date" => {}
            _ => return None,
        }
    }
    zero_length.then_some(tail_start + at)
}

/// Tells the clock whether a write of bytes was accepted or refused by the
/// socket (for the send timeout); passes the result on.
fn watch_write(clock: &ConnClock, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    match &written {
        Poll::Pending => clock.write_blocked(),
        Poll::Ready(Ok(n)) if *n > 0 => clock.write_progressed(),
        Poll::Ready(_) => {}
    }
    written
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for ConnIo<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.held.is_some() {
            ready!(this.poll_release(cx))?;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.clock.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ConnIo<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.held.is_some() {
            ready!(this.poll_release(cx))?;
        }
        match this.bare_error_answer_at(buf) {
            Some(0) => {
                this.held = Some(buf.to_vec());
                Poll::Ready(Ok(buf.len()))
            }
            // Ours first; hyper comes back with the rest.
            Some(at) => watch_write(&this.clock, Pin::new(&mut this.inner).poll_write(cx, &buf[..at])),
            None => watch_write(&this.clock, Pin::new(&mut this.inner).poll_write(cx, buf)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.held.is_some() {
            ready!(this.poll_release(cx))?;
        }
        let Some(last) = bufs.iter().rposition(|b| !b.is_empty()) else {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        };
        if this.bare_error_answer_at(&bufs[last]).is_none() {
            return watch_write(&this.clock, Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        }
        match bufs[..last].iter().position(|b| !b.is_empty()) {
            // Ours first; hyper comes back with the rest.
            Some(_) => watch_write(
                &this.clock,
                Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..last]),
            ),
            None => Pin::new(this).poll_write(cx, &bufs[last]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Under TLS the last bytes of an answer may wait in the TLS stream
        // for the socket: a flush that cannot finish is a refused write too.
        if Pin::new(&mut self.inner).poll_flush(cx)?.is_pending() {
            self.clock.write_blocked();
            return Poll::Pending;
        }
        self.clock.write_progressed();
        self.clock.flushed();
        if self.held.is_some() {
            // If the connection goes on, hyper must come back to us so
            // that the held bytes go out.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_release(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sat, 28 Nov 2026 04:27:35 GMT\r\n\r\n";

    #[test]
    fn hyper_s_bare_error_answers_are_recognised_at_the_end_of_a_write() {
        assert_eq!(bare_error_answer_at(BARE), Some(0));
        let mut after_ours = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec();
        let ours = after_ours.len();
        after_ours.extend_from_slice(BARE);
        assert_eq!(bare_error_answer_at(&after_ours), Some(ours));
        let http_1_0 = b"HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(bare_error_answer_at(http_1_0), Some(0));
        let too_large = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(bare_error_answer_at(too_large), Some(0));
    }

    #[test]
    fn answers_of_ours_are_not_taken_for_hyper_s() {
        for ours in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
        ] {
            assert_eq!(bare_error_answer_at(ours), None, "{}", String::from_utf8_lossy(ours));
        }
    }

    #[tokio::test]
    async fn a_vectored_write_after_held_bytes_is_watched_too() {
        let (ours, mut client) = tokio::io::duplex(4096);
        let mut io = ConnIo::new(ours, ConnClock::new());
        io.write_all(BARE).await.unwrap();
        assert!(io.held.is_some(), "held while nothing of ours is under way");
        let written = io.write_vectored(&[io::IoSlice::new(BARE)]).await.unwrap();
        assert_eq!(written, BARE.len());
        assert_eq!(io.held.as_deref(), Some(BARE), "the second one is held in turn");
        drop(io);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, BARE, "the first went out once");
    }

    #[test]
    fn a_raw_answer_to_an_http_1_0_client_is_http_1_0() {
        let raw = raw_answer_in(&ApiError::HeadersTooLarge, HTTP_1_0);
        assert!(raw.starts_with(b"HTTP/1.0 431 "), "{}", String::from_utf8_lossy(&raw));
    }

    #[test]
    fn a_raw_answer_is_http_with_a_json_body() {
        let raw = raw_answer(&ApiError::TooManyConnections { max: 3 });
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains("\r\nretry-after: 1"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "too_many_connections");
    }
}
