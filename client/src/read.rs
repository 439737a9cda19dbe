//! Reads: one record (`GET /{offset}`), a range (`GET /?from=`), by time
//! (`GET /?from_timestamp=`), the last records (`GET /?tail=`) and where
//! the log ends. Each goes to the next member in turn; committed offsets
//! read the same on every member, so any one will do, except one that
//! lags: a member that says an offset is not there yet when an earlier
//! answer showed it committed is passed over for the next.

use std::time::Duration;

use crate::client::{Client, Request};
use crate::error::{Error, Result};
use crate::record::{Page, Record, parse_page, parse_record};

/// Where a range starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At this offset (or the next one that holds a record).
    Offset(u64),
    /// At the first record stamped at or after this time (ms since the
    /// Unix epoch).
    Timestamp(u64),
    /// At the last `n` records.
    Tail(u64),
}

impl Start {
    fn query(self) -> String {
        match self {
            Start::Offset(offset) => format!("from={offset}"),
            Start::Timestamp(ms) => format!("from_timestamp={ms}"),
            Start::Tail(n) => format!("tail={n}"),
        }
    }
}

impl Client {
    /// The record at `offset`.
    pub async fn read(&self, offset: u64) -> Result<Record> {
        let known_next = self.inner.known_next();
        let lags = |error: &Error| {
            error.code() == Some("offset_not_found")
                && offset < known_next
                && error_field(error, "next_offset").is_some_and(|next| next <= offset)
        };
        let answer = self
            .inner
            .to_any(&Request::get(self.inner.log_path(&format!("/{offset}"))), lags)
            .await?;
        parse_record(&answer.url, &answer.body)
    }

    /// Up to `limit` records from `from` on (the server caps the page).
    pub async fn read_range(&self, from: u64, limit: u32) -> Result<Page> {
        self.page(Start::Offset(from), limit, Duration::ZERO).await
    }

    /// Up to `limit` records from the first stamped at or after `ms`.
    pub async fn read_from_time(&self, ms: u64, limit: u32) -> Result<Page> {
        self.page(Start::Timestamp(ms), limit, Duration::ZERO).await
    }

    /// The last `n` records, oldest first; `next_offset` is where the log
    /// ends.
    pub async fn tail(&self, n: u64) -> Result<Page> {
        self.page(Start::Tail(n), u32::MAX, Duration::ZERO).await
    }

    /// The offset the next record will get, or beyond (as readers see the
    /// log: asked of the leader, which has applied all it committed).
    pub async fn next_offset(&self) -> Result<u64> {
        let request = Request::get(self.inner.log_path("/?tail=1"));
        let answer = self.inner.to_leader(&request, Error::is_retryable).await?;
        let page = parse_page(&answer.url, &answer.body)?;
        self.inner.note_next(page.next_offset);
        Ok(page.next_offset)
    }

    /// One page from `start`, waiting up to `wait` for a first record (a
    /// long poll; `Duration::ZERO` answers at once).
    pub async fn page(&self, start: Start, limit: u32, wait: Duration) -> Result<Page> {
        let mut path = self.inner.log_path(&format!("/?{}", start.query()));
        if limit != u32::MAX {
            path.push_str(&format!("&limit={}", limit.max(1)));
        }
        if !wait.is_zero() {
            path.push_str(&format!("&wait_ms={}", wait.as_millis()));
        }
        let request = Request {
            extra_time: wait,
            ..Request::get(path)
        };
        let members = self.inner.topology().urls().len().max(1);
        let known_next = self.inner.known_next();
        let lags = |error: &Error| match start {
            Start::Offset(from) => from <= known_next && is_beyond_end(error, from),
            _ => false,
        };
        let mut page = Page::default();
        for _ in 0..members {
            let answer = self.inner.to_any(&request, lags).await?;
            page = parse_page(&answer.url, &answer.body)?;
            let lagging = matches!(start, Start::Offset(from)
                if page.records.is_empty() && page.next_offset <= from && from < self.inner.known_next());
            if !lagging {
                break;
            }
        }
        self.inner.note_next(page.next_offset);
        Ok(page)
    }
}

/// A `404 offset_not_found` for an offset at or past where the answering
/// member's log ends (not one retention deleted): it has not got there yet.
pub(crate) fn is_beyond_end(error: &Error, from: u64) -> bool {
    error.code() == Some("offset_not_found") && error_field(error, "next_offset").is_some_and(|next| next <= from)
}

fn error_field(error: &Error, field: &str) -> Option<u64> {
    match error {
        Error::Server { body, .. } => body[field].as_u64(),
        _ => None,
    }
}
