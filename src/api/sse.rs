//! `GET /?from=N` with `Accept: text/event-stream` (or `from_timestamp`,
//! `tail`: see `start`): every record from there on as one event (`id:` the offset, `data:` the record JSON), then live
//! ones as they are appended, until the client goes or the server stops. A
//! client that reconnects with `Last-Event-ID: K` resumes at `K + 1`. If
//! retention deletes records the stream has not reached, it sends an event
//! `gap` with `{"from": .., "to": ..}` and goes on from the lowest offset;
//! so does a stream asked to start (`from`) below the lowest offset, which
//! an `EventSource` would otherwise get as a 404 it never retries.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};

use super::error::{ApiError, ApiResult, Echo};
use super::position::{check_from, wait_for_records};
use super::render::record_json;
use super::start::skip_before;
use super::state::AppState;
use crate::log::{LogError, Record};

const BATCH: u32 = 256;
const BATCH_BYTES: u64 = 1024 * 1024;

/// A stream from `start` (the query's, resolved; the log's end if none),
/// skipping records stamped before `not_before` until one is not.
pub fn tail(state: AppState, start: Option<u64>, not_before: Option<u64>, headers: &HeaderMap) -> ApiResult<Response> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| ApiError::BadQuery {
                param: "Last-Event-ID",
                detail: format!("{:?} is not an offset", Echo::of(v)),
            })
        })
        .transpose()?;
    let from = match resume {
        Some(last_seen) => last_seen.checked_add(1).ok_or(ApiError::BadQuery {
            param: "Last-Event-ID",
            detail: "is past the largest offset".into(),
        })?,
        None => start.unwrap_or_else(|| state.log.next_offset()),
    };
    // Below the lowest offset, the stream begins with a gap (see `events`).
    if resume.is_none() && from > state.log.next_offset() {
        check_from(&state.log, from)?;
    }
    let stream = events(state, from, not_before);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Tail {
    state: AppState,
    cursor: u64,
    pending: std::vec::IntoIter<Record>,
    /// Set after a final error event: the next poll ends the stream.
    done: bool,
    /// Records stamped before this are skipped until one is not (a stream
    /// from a time still to come).
    not_before: Option<u64>,
    _counted: Subscriber,
}

/// Counts an open stream in `distlog_sse_subscribers` until dropped (the
/// client went away, or the server stopped).
struct Subscriber;

impl Subscriber {
    fn new() -> Subscriber {
        metrics::gauge!(super::metrics::SSE_SUBSCRIBERS).increment(1.0);
        Subscriber
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        metrics::gauge!(super::metrics::SSE_SUBSCRIBERS).decrement(1.0);
    }
}

fn events(state: AppState, from: u64, not_before: Option<u64>) -> impl Stream<Item = Result<Event, Infallible>> {
    let tail = Tail {
        state,
        cursor: from,
        pending: Vec::new().into_iter(),
        done: false,
        not_before,
        _counted: Subscriber::new(),
    };
    stream::unfold(tail, |mut tail| async move {
        loop {
            if let Some(record) = tail.pending.next() {
                let event = Event::default()
                    .id(record.offset.to_string())
                    .data(String::from_utf8_lossy(&record_json(record.borrowed())));
                return Some((Ok(event), tail));
            }
            if tail.done || tail.state.shutting_down() {
                return None;
            }
            let log = tail.state.log.clone();
            let cursor = tail.cursor;
            let read = tokio::task::spawn_blocking(move || log.read_range(cursor, BATCH, BATCH_BYTES)).await;
            match read {
                Ok(Ok(records)) if records.is_empty() => {
                    wait_for_records(&tail.state, cursor, Duration::from_secs(60)).await;
                }
                Ok(Ok(mut records)) => {
                    tail.cursor = records.last().map(|r| r.offset + 1).unwrap_or(cursor);
                    records.retain(|r| !tail.state.hidden(r.offset, r.attributes));
                    skip_before(&mut records, tail.not_before);
                    if !records.is_empty() {
                        tail.not_before = None;
                    }
                    tail.pending = records.into_iter();
                }
                Ok(Err(LogError::OutOfRange { lowest, .. })) if cursor < lowest => {
                    tail.cursor = lowest;
                    let gap = format!("{{\"from\":{cursor},\"to\":{lowest}}}");
                    return Some((Ok(Event::default().event("gap").data(gap)), tail));
                }
                Ok(Err(LogError::OutOfRange { next, .. })) if cursor > next => {
                    // A resume point past the end (the log was cut): wait for it.
                    wait_for_records(&tail.state, cursor - 1, Duration::from_secs(60)).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "event stream ends on a read error");
                    let error = ApiError::from(e);
                    let data = format!("{{\"error\":{:?},\"code\":\"{}\"}}", error.to_string(), error.code());
                    tail.done = true;
                    return Some((Ok(Event::default().event("error").data(data)), tail));
                }
                Err(_) => return None,
            }
        }
    })
}
