//! `GET /replication/frames`: the compact transfer replicas pull, serving
//! the wire format described in `crate::wire`. The body is the log's own
//! frames, exactly as stored, so a follower checks each by its checksum and
//! appends it without re-encoding. On a cluster member, the records of
//! aborted batches are re-encoded with the control attribute, so that a
//! replica hides them too (see `mode::Mode::frames_for_replicas`).

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::catch_up::{path_of, shown_or_sent_on};
use super::error::{ApiError, ApiResult};
use super::position::{check_from, wait_for_records};
use super::query::Query;
use super::state::AppState;
use crate::wire::{LOG_NEXT_OFFSET, LOWEST_OFFSET, NEXT_OFFSET, param};

/// The most a follower may ask for in one pull; larger `max_bytes` are
/// capped to it, like every other budget a client names.
const MAX_PULL_BYTES: u64 = 16 * 1024 * 1024;

pub async fn frames(
    State(state): State<AppState>,
    request_uri: axum::http::Uri,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref())?;
    let from = query.offset(param::FROM)?.ok_or(ApiError::BadQuery {
        param: param::FROM,
        detail: "is required".into(),
    })?;
    // The byte budget is soft (one frame always comes), so 0 is a fair
    // way to ask for exactly one frame.
    let max_bytes = query
        .number(param::MAX_BYTES)?
        .unwrap_or(MAX_PULL_BYTES)
        .clamp(1, MAX_PULL_BYTES);
    // Zero records would answer an empty body, which a follower reads as
    // "caught up": refused rather than honoured or silently raised.
    let max_records = match query.number(param::MAX_RECORDS)? {
        Some(0) => {
            return Err(ApiError::BadQuery {
                param: param::MAX_RECORDS,
                detail: "must be at least 1".into(),
            });
        }
        Some(n) => n.min(u64::from(u32::MAX)) as u32,
        None => u32::MAX,
    };
    // A member behind what the cluster committed does not tell a replica
    // that pulls past its end that the replica diverged (a 404 it stops
    // on for good): it catches up briefly or answers a status it retries.
    if from > state.log.next_offset() {
        shown_or_sent_on(&state, from, || path_of(&request_uri)).await?;
    }
    check_from(&state.log, from)?;
    if let Some(ms) = query.number(param::WAIT_MS)? {
        wait_for_records(&state, from, Duration::from_millis(ms).min(state.limits.max_wait)).await;
    }
    let log = state.log.clone();
    let (frames, count) = tokio::task::spawn_blocking(move || log.read_frames(from, max_records, max_bytes))
        .await
        .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))??;
    let frames = state
        .mode
        .frames_for_replicas(frames, from, count)
        .map_err(ApiError::Internal)?;
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
        (HeaderName::from_static(NEXT_OFFSET), number(from + u64::from(count))),
        (
            HeaderName::from_static(LOWEST_OFFSET),
            number(state.log.lowest_offset()),
        ),
        (
            HeaderName::from_static(LOG_NEXT_OFFSET),
            number(state.log.next_offset()),
        ),
    ];
    Ok((headers, frames).into_response())
}

fn number(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}
