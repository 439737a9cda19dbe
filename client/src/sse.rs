//! Server-Sent Events, as [`Stream`](crate::Stream) tails the log:
//! `GET /?from=N` with `Accept: text/event-stream` answers every record
//! from N on as one event (`id:` its offset, `data:` the record's JSON, as
//! a single read answers it), then each new one as it is appended. An event
//! `gap` (`{"from", "to"}`) says retention deleted records the stream had
//! not reached; an event `error` ends the stream. Comments (`:`, the
//! server's keep-alives) carry nothing.
//!
//! A server that answers the request with anything but an event stream
//! (`406`, `415`, or another content type: a proxy or an older server) has
//! refused it, and the stream falls back to long polls.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};

use crate::client::Inner;
use crate::error::{Error, Result};
use crate::record::{Record, parse_record};

/// The most an event may hold before the stream is taken as broken (a
/// record is bounded by the server's record size; this is far above it).
const MAX_EVENT_BYTES: usize = 64 << 20;

/// What one event said.
#[derive(Debug)]
pub(crate) enum Event {
    Record(Record),
    /// Records `from..to` were deleted before the stream reached them.
    Gap {
        from: u64,
        to: u64,
    },
    /// The server ended the stream on an error.
    Failed(String),
}

/// An open event stream from one server.
pub(crate) struct Events {
    pub url: String,
    response: reqwest::Response,
    buffer: BytesMut,
}

/// How a server answered the request for an event stream.
pub(crate) enum Opened {
    Events(Events),
    Refused,
}

impl Inner {
    /// Asks `url` for the events of `path` (path and query).
    pub(crate) async fn open_events(&self, url: &str, path: &str) -> Result<Opened> {
        let response = self
            .http
            .get(format!("{url}{path}"))
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
            .send()
            .await
            .map_err(|e| Error::transport(url, &e))?;
        let status = response.status().as_u16();
        let is_events = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if (200..300).contains(&status) && is_events {
            return Ok(Opened::Events(Events {
                url: url.to_string(),
                response,
                buffer: BytesMut::new(),
            }));
        }
        if (200..300).contains(&status) || matches!(status, 406 | 415) {
            return Ok(Opened::Refused);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(Error::from_answer(url, status, &body, None))
    }
}

impl Events {
    /// The next event; `Ok(None)` if nothing came for `idle` (not even a
    /// keep-alive) or the server ended the stream, either way a reason to
    /// connect again.
    pub async fn next(&mut self, idle: Duration) -> Result<Option<Event>> {
        loop {
            if let Some(block) = self.take_block() {
                if let Some(event) = parse_block(&self.url, &block)? {
                    return Ok(Some(event));
                }
                continue;
            }
            if self.buffer.len() > MAX_EVENT_BYTES {
                return Err(Error::Protocol {
                    url: self.url.clone(),
                    reason: format!("an event of more than {MAX_EVENT_BYTES} bytes"),
                });
            }
            let chunk = match tokio::time::timeout(idle, self.response.chunk()).await {
                Err(_) => return Ok(None),
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => return Err(Error::transport(&self.url, &e)),
            };
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next whole event (its lines, without the blank line ending it).
    fn take_block(&mut self) -> Option<Vec<u8>> {
        let end = find_blank_line(&self.buffer)?;
        let block = self.buffer[..end.0].to_vec();
        self.buffer.advance(end.1);
        Some(block)
    }
}

/// Where the first event ends: (its length, the length with the blank line).
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|at| (at, at + 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|at| (at, at + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// One event's lines; `None` for one that carries nothing (a comment).
fn parse_block(url: &str, block: &[u8]) -> Result<Option<Event>> {
    let text = std::str::from_utf8(block).map_err(|_| Error::Protocol {
        url: url.to_string(),
        reason: "an event that is not UTF-8".into(),
    })?;
    let mut name = "message";
    let mut data = String::new();
    for line in text.lines() {
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => name = value,
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {} // `id` (the record says its offset), comments, retry
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    let unexpected = |what: &str| Error::Protocol {
        url: url.to_string(),
        reason: format!("an event {what}"),
    };
    match name {
        "message" => Ok(Some(Event::Record(parse_record(url, data.as_bytes())?))),
        "gap" => {
            let gap: serde_json::Value = serde_json::from_str(&data).map_err(|_| unexpected("gap that is not JSON"))?;
            match (gap["from"].as_u64(), gap["to"].as_u64()) {
                (Some(from), Some(to)) => Ok(Some(Event::Gap { from, to })),
                _ => Err(unexpected("gap without from and to")),
            }
        }
        "error" => Ok(Some(Event::Failed(data))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_at_blank_lines_and_comments_carry_nothing() {
        assert_eq!(find_blank_line(b"id: 1\ndata: 2\n\nid"), Some((13, 15)));
        assert_eq!(find_blank_line(b"data: 2\r\n\r\n"), Some((7, 11)));
        assert_eq!(find_blank_line(b"data: 2\n"), None);
        assert!(parse_block("u", b":").unwrap().is_none());
        let record = parse_block("u", b"id: 7\ndata: {\"offset\":7,\"timestamp\":1,\"value\":{\"a\":1}}")
            .unwrap()
            .unwrap();
        assert!(matches!(record, Event::Record(r) if r.offset == 7));
        let gap = parse_block("u", b"event: gap\ndata: {\"from\":3,\"to\":9}")
            .unwrap()
            .unwrap();
        assert!(matches!(gap, Event::Gap { from: 3, to: 9 }));
        assert!(parse_block("u", b"event: gap\ndata: {}").is_err());
        let failed = parse_block("u", b"event: error\ndata: {\"error\":\"x\"}")
            .unwrap()
            .unwrap();
        assert!(matches!(failed, Event::Failed(_)));
    }
}
