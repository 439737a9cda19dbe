//! Reads: `GET /{offset}` for one record, `GET /?from=N&limit=M&wait_ms=T`
//! for a range (a long poll when `wait_ms` is given and nothing is there
//! yet), starting instead at a time (`from_timestamp=MS`) or at the last
//! N records (`tail=N`, see `start`), and the same route with
//! `Accept: text/event-stream` for a live Server-Sent Events tail (see
//! `sse`). `Accept: application/x-protobuf` answers a protobuf `Record` or
//! `RangeResult` instead of JSON (`protobuf`).

use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::catch_up::{at_the_end_or_sent_on, path_of, shown_or_sent_on};
use super::error::{ApiError, ApiResult, Echo};
use super::media::choose;
use super::position::{check_from, wait_for_records};
use super::protobuf;
use super::query::Query;
use super::render::{range_json, record_json};
use super::sse;
use super::start::{Start, last_records, offset_at_time, skip_before};
use super::state::AppState;

const DEFAULT_LIMIT: u64 = 100;

/// What a single read answers: JSON, the raw bytes, or a protobuf
/// `Record` (read without copying the headers).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    Json,
    Raw,
    Protobuf,
}

impl<S: Send + Sync> FromRequestParts<S> for Wants {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(
            match choose(&parts.headers, &["application/octet-stream", protobuf::NAMES]) {
                Some(0) => Wants::Raw,
                Some(_) => Wants::Protobuf,
                None => Wants::Json,
            },
        )
    }
}

/// The `{offset}` of `/{offset}`, parsed from the path as it came: the
/// router's own parameters would cost a string per request. Anything but
/// plain digits (percent-encoded ones included) is a bad offset.
pub struct OffsetInPath(u64);

impl<S: Send + Sync> FromRequestParts<S> for OffsetInPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let segment = parts.uri.path().trim_start_matches('/');
        match segment.parse::<u64>() {
            Ok(offset) if segment.bytes().all(|b| b.is_ascii_digit()) => Ok(OffsetInPath(offset)),
            _ => Err(ApiError::BadOffset(Echo::of(segment))),
        }
    }
}

pub async fn read_one(
    State(state): State<AppState>,
    OffsetInPath(offset): OffsetInPath,
    wants: Wants,
) -> ApiResult<Response> {
    shown_or_sent_on(&state, offset, || format!("/{offset}")).await?;
    if wants != Wants::Json {
        let record = state.log.read(offset)?;
        if state.hidden(offset, record.attributes) {
            return Err(no_record_at(&state, offset).await);
        }
        if wants == Wants::Protobuf {
            return Ok(protobuf::record(record));
        }
        let binary = HeaderValue::from_static("application/octet-stream");
        return Ok(([(header::CONTENT_TYPE, binary)], record.value).into_response());
    }
    let shown = state.log.read_with(offset, |r| {
        (!state.hidden(r.offset, r.attributes)).then(|| record_json(r))
    })?;
    match shown {
        Some(body) => Ok(json_response(body)),
        None => Err(no_record_at(&state, offset).await),
    }
}

/// The answer for an offset that holds no record for readers (a cluster's
/// control entry or an aborted batch): 404, with the next offset that
/// holds one (or where the log ends for now).
async fn no_record_at(state: &AppState, offset: u64) -> ApiError {
    const PAGE: u32 = 1000;
    let mut cursor = offset + 1;
    // Skipped offsets come a few at a time (one per election or aborted
    // batch), so a few pages find the next record; past them, say where
    // the search stopped, which is still a valid place to read from.
    for _ in 0..16 {
        let log = state.log.clone();
        let from = cursor;
        let read = tokio::task::spawn_blocking(move || log.read_range(from, PAGE, 1 << 20)).await;
        let Ok(Ok(records)) = read else { break };
        if let Some(record) = records.iter().find(|r| !state.hidden(r.offset, r.attributes)) {
            return ApiError::NoRecordAtOffset {
                offset,
                next: record.offset,
            };
        }
        match records.last() {
            Some(last) => cursor = last.offset + 1,
            None => break,
        }
    }
    ApiError::NoRecordAtOffset { offset, next: cursor }
}

pub async fn read_range(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    // Owned: a future holding the request's borrow would not be `Send`.
    let uri = request.uri().clone();
    let headers = request.headers();
    let query = Query::parse(request.uri().query())?;
    let start = Start::parse(&query)?;
    let answer = choose(headers, &["text/event-stream", protobuf::NAMES]);
    if answer == Some(0) {
        let from = match start {
            Some(start) => Some(stream_start(&state, start).await?),
            None => None,
        };
        // A stream from past this member's end that the cluster committed
        // goes to the leader, as a range read does (not "no such offset").
        if let Some(from) = from.filter(|from| *from > state.log.next_offset()) {
            shown_or_sent_on(&state, from, || path_of(&uri)).await?;
        }
        return sse::tail(state, from, start.and_then(Start::not_before), request.headers());
    }
    let limit = match query.number("limit")?.unwrap_or(DEFAULT_LIMIT) {
        0 => {
            return Err(ApiError::BadQuery {
                param: "limit",
                detail: "must be at least 1".into(),
            });
        }
        n => n.min(u64::from(state.limits.max_range_records)) as u32,
    };
    let wait = query
        .number("wait_ms")?
        .map(|ms| Duration::from_millis(ms).min(state.limits.max_wait));
    let max_bytes = state.limits.max_range_bytes;
    let from = match start {
        Some(Start::Tail(n)) => {
            // A member behind what the cluster committed does not call its
            // last records the log's: it catches up briefly, or sends the
            // reader to the leader (with no leader: 503).
            at_the_end_or_sent_on(&state, || path_of(&uri)).await?;
            // `limit`, when given, caps N as the cap on `limit` does.
            let n = query.number("limit")?.map_or(n, |limit| limit.min(n));
            let n = n.min(u64::from(state.limits.max_range_records)) as u32;
            let (records, next) = last_records(&state, n, max_bytes).await?;
            return Ok(range_answer(answer.is_some(), records, next));
        }
        Some(Start::Offset(from)) => from,
        Some(Start::Time(time)) => offset_at_time(&state, time).await?,
        None => state.log.lowest_offset(),
    };

    shown_or_sent_on(&state, from, || path_of(&uri)).await?;
    check_from(&state.log, from)?;
    if let Some(wait) = wait {
        wait_for_records(&state, from, wait).await;
    }
    let log = state.log.clone();
    let mut records = tokio::task::spawn_blocking(move || log.read_range(from, limit, max_bytes))
        .await
        .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))??;
    let next = records.last().map(|r| r.offset + 1).unwrap_or(from);
    records.retain(|r| !state.hidden(r.offset, r.attributes));
    skip_before(&mut records, start.and_then(Start::not_before));
    Ok(range_answer(answer.is_some(), records, next))
}

/// A range's answer: JSON, or a protobuf `RangeResult` if asked for.
fn range_answer(protobuf: bool, records: Vec<crate::log::Record>, next: u64) -> Response {
    match protobuf {
        true => protobuf::range(records, next),
        false => json_response(range_json(&records, next)),
    }
}

/// Where an event stream asked to start at `start` begins: a time's
/// offset, or the first of the last N records.
async fn stream_start(state: &AppState, start: Start) -> ApiResult<u64> {
    match start {
        Start::Offset(from) => Ok(from),
        Start::Time(time) => offset_at_time(state, time).await,
        Start::Tail(n) => {
            let n = n.min(u64::from(state.limits.max_range_records)) as u32;
            let (records, next) = last_records(state, n, state.limits.max_range_bytes).await?;
            Ok(records.first().map_or(next, |r| r.offset))
        }
    }
}

pub fn json_response(body: Vec<u8>) -> Response {
    super::json_body::json_bytes(StatusCode::OK, body)
}
