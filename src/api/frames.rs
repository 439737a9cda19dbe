//! `GET /replication/frames?from=N&max_bytes=B&wait_ms=T`: the compact
//! transfer replicas pull. The body is the log's own frames, back to back,
//! exactly as stored (`application/octet-stream`), so a follower checks each
//! by its checksum and appends it without re-encoding. Headers say where the
//! answer stands:
//!
//! - `x-distlog-next-offset`: the offset to ask for next (`from` + records)
//! - `x-distlog-lowest-offset`, `x-distlog-log-next-offset`: the leader's bounds
//!
//! `from` outside the log answers the usual JSON 404 with `lowest_offset`
//! and `next_offset`, which is how a follower learns of a retention gap.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::read::{check_from, wait_for_records};
use super::state::AppState;

pub const NEXT_OFFSET: &str = "x-distlog-next-offset";
pub const LOWEST_OFFSET: &str = "x-distlog-lowest-offset";
pub const LOG_NEXT_OFFSET: &str = "x-distlog-log-next-offset";

/// The most a follower may ask for in one pull.
const MAX_PULL_BYTES: u64 = 16 * 1024 * 1024;

pub async fn frames(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref())?;
    let from = query.number("from")?.ok_or(ApiError::BadQuery {
        param: "from",
        detail: "is required".into(),
    })?;
    let max_bytes = query
        .number("max_bytes")?
        .unwrap_or(MAX_PULL_BYTES)
        .clamp(1, MAX_PULL_BYTES);
    let max_records = query
        .number("max_records")?
        .unwrap_or(u64::from(u32::MAX))
        .clamp(1, u64::from(u32::MAX)) as u32;
    check_from(&state.log, from)?;
    if let Some(ms) = query.number("wait_ms")? {
        wait_for_records(&state, from, Duration::from_millis(ms).min(state.limits.max_wait)).await;
    }
    let log = state.log.clone();
    let (frames, count) = tokio::task::spawn_blocking(move || log.read_frames(from, max_records, max_bytes))
        .await
        .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))??;
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
