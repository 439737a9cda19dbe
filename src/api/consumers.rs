//! Consumer positions: `PUT /consumers/{name}` stores a named consumer's
//! next offset (`{"offset": N}`, or only if the stored one is M:
//! `{"offset": N, "expected": M}`, `"expected": null` for none stored),
//! `GET /consumers/{name}` and `GET /consumers` read them with their lag,
//! `DELETE /consumers/{name}` removes one. Where they are kept, by mode:
//! `mode::consumers`; the rules: `log::consumers`.
//!
//! A position answers `{"name", "offset", "lag_records", "lag_ms",
//! "updated_ms"}`: `lag_records` is the log's next offset minus the
//! position (offsets, so a cluster's hidden entries count too), `lag_ms`
//! is now minus the timestamp of the first record not yet consumed (0 when
//! caught up). Readers stay plain GETs of the log: no session is kept.
//! `/metrics` has `distlog_consumer_lag_records{consumer="<name>"}`, one
//! series per stored consumer, so at most `--max-consumers` of them.
//! A cluster follower sends `PUT` and `DELETE` to the leader: by `307`, or
//! with `--forward-writes` itself (`forward`).

use std::collections::HashMap;
use std::fmt::Write;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};

use super::error::{ApiError, ApiResult, Echo, append_error};
use super::forward::{self, Forward};
use super::json_body::Json;
use super::media::{BodyFormat, body_format};
use super::state::AppState;
use crate::log::Log;
use crate::log::consumers::{Change, Expect, Position, Refusal, check_name};
use crate::mode::{AppendError, Mode};

/// The largest `PUT` body: two numbers need far less.
const MAX_BODY_BYTES: u64 = 4096;

/// Records a lag search reads from a position for its first shown record
/// (a cluster's control entries and aborted batches are skipped); behind
/// only hidden ones, a consumer is caught up.
const LAG_SEARCH_RECORDS: u64 = 256;

/// A `PUT` body. `expected` absent is unconditional; `null` means "none
/// stored".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    offset: u64,
    #[serde(default, deserialize_with = "present")]
    expected: Option<Option<u64>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// A position as answered.
#[derive(Serialize)]
struct View<'a> {
    name: &'a str,
    offset: u64,
    lag_records: u64,
    lag_ms: u64,
    updated_ms: u64,
}

#[derive(Serialize)]
struct List<'a> {
    consumers: Vec<View<'a>>,
}

pub async fn get_one(State(state): State<AppState>, uri: Uri) -> ApiResult<Response> {
    let name = name_in_path(&uri)?;
    let position = state
        .consumers
        .read(|t| t.get(name))
        .map_err(|e| refused(e, &uri))?
        .ok_or_else(|| ApiError::ConsumerNotFound { name: name.to_string() })?;
    Ok(answer(&state, name, position))
}

pub async fn list(State(state): State<AppState>, uri: Uri) -> ApiResult<Response> {
    let positions: Vec<(String, Position)> = state
        .consumers
        .read(|t| t.iter().map(|(n, p)| (n.to_string(), p)).collect())
        .map_err(|e| refused(e, &uri))?;
    let lags = tokio::task::spawn_blocking({
        let state = state.clone();
        let offsets: Vec<u64> = positions.iter().map(|(_, p)| p.offset).collect();
        move || {
            // Many consumers share a position: each is looked up once.
            let now = state.log.config().clock.now_ms();
            let mut known: HashMap<u64, (u64, u64)> = HashMap::new();
            offsets
                .into_iter()
                .map(|o| *known.entry(o).or_insert_with(|| lag(&state.log, &state.mode, o, now)))
                .collect::<Vec<_>>()
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let consumers = positions
        .iter()
        .zip(lags)
        .map(|((name, p), (lag_records, lag_ms))| View {
            name,
            offset: p.offset,
            lag_records,
            lag_ms,
            updated_ms: p.updated_ms,
        })
        .collect();
    Ok(Json(List { consumers }).into_response())
}

pub async fn put(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let (uri, headers) = (&parts.uri, &parts.headers);
    let name = name_in_path(uri)?.to_string();
    let forward = writable(&state, uri, headers)?;
    if body_format(headers)? != BodyFormat::Json {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        return Err(ApiError::UnsupportedMediaType(Echo::of(
            content_type.unwrap_or_default(),
        )));
    }
    let body = read_small_body(headers, body).await?;
    if let Some(forward) = forward {
        return forward.send(&parts, body).await;
    }
    let put: PutBody = serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson {
        line: None,
        detail: e.to_string(),
    })?;
    let next = state.log.next_offset();
    if put.offset > next {
        return Err(ApiError::PositionPastEnd {
            offset: put.offset,
            next,
        });
    }
    let change = Change::Set {
        name: name.clone(),
        offset: put.offset,
        expected: match put.expected {
            None => Expect::Anything,
            Some(None) => Expect::Nothing,
            Some(Some(offset)) => Expect::Offset(offset),
        },
        max: state.limits.max_consumers,
        at_ms: state.log.config().clock.now_ms(),
    };
    let change = async { state.consumers.change(change).await.map_err(|e| refused(e, uri)) };
    let stored = forward::within(forward::time_left(headers), change).await?;
    match stored {
        Ok(Some(position)) => Ok(answer(&state, &name, position)),
        Ok(None) => Err(ApiError::Internal("a set stored nothing".into())),
        Err(refusal) => Err(refusal_error(refusal, &name)),
    }
}

pub async fn delete(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let (parts, _) = request.into_parts();
    let (uri, headers) = (&parts.uri, &parts.headers);
    let name = name_in_path(uri)?.to_string();
    if let Some(forward) = writable(&state, uri, headers)? {
        return forward.send(&parts, Bytes::new()).await;
    }
    let change = Change::Delete { name: name.clone() };
    let change = async { state.consumers.change(change).await.map_err(|e| refused(e, uri)) };
    match forward::within(forward::time_left(headers), change).await? {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(refusal) => Err(refusal_error(refusal, &name)),
    }
}

/// `distlog_consumer_lag_records`, one line per consumer of each log
/// (labelled `log`, the default log's `default`), appended to the
/// `/metrics` text. Nothing for a log whose node keeps no positions.
pub fn render_metrics(state: &AppState, out: &mut String) {
    out.push_str(
        "# HELP distlog_consumer_lag_records Offsets between a named consumer's position and the log's next \
         offset (one series per consumer of each log, at most --max-consumers a log).\n",
    );
    out.push_str("# TYPE distlog_consumer_lag_records gauge\n");
    render_lags(crate::logs::DEFAULT_LOG, &state.log, &state.consumers, out);
    for named in state.catalog.list() {
        render_lags(named.name.as_str(), &named.log, &named.consumers, out);
    }
}

fn render_lags(log_name: &str, log: &Log, consumers: &crate::mode::Consumers, out: &mut String) {
    let next = log.next_offset();
    let _ = consumers.read(|t| {
        for (name, p) in t.iter() {
            // Names are [A-Za-z0-9._-] (log names a subset): nothing to escape in a label.
            let _ = writeln!(
                out,
                "distlog_consumer_lag_records{{log=\"{log_name}\",consumer=\"{name}\"}} {}",
                next.saturating_sub(p.offset)
            );
        }
    });
}

/// The name in `/consumers/{name}`, as sent: an encoded character is not
/// one a name may hold.
fn name_in_path(uri: &Uri) -> ApiResult<&str> {
    let name = uri.path().strip_prefix("/consumers/").unwrap_or_default();
    check_name(name).map_err(|_| ApiError::BadConsumerName(Echo::of(name)))?;
    Ok(name)
}

/// As appends: a writer is sent on before its body is read, to the leader
/// by a redirect, or by this node (`Some`: see `forward`).
fn writable(state: &AppState, uri: &Uri, headers: &HeaderMap) -> ApiResult<Option<Forward>> {
    let writable = state.mode.check_writable();
    if state.shutting_down() && !matches!(writable, Err(AppendError::ReadOnlyReplica { .. })) {
        return Err(state.stopping());
    }
    match writable {
        Ok(()) => Ok(None),
        Err(refusal) => match Forward::of(state, headers, &refusal)? {
            Some(forward) => Ok(Some(forward)),
            None => Err(refused(refusal, uri)),
        },
    }
}

/// A follower or replica sends the request to the same path on the leader.
fn refused(err: AppendError, uri: &Uri) -> ApiError {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    append_error(err, path)
}

fn refusal_error(refusal: Refusal, name: &str) -> ApiError {
    match refusal {
        Refusal::Mismatch { stored } => ApiError::PositionMismatch { stored },
        Refusal::Full { max } => ApiError::TooManyConsumers { max },
        Refusal::Unknown => ApiError::ConsumerNotFound { name: name.to_string() },
    }
}

pub(super) async fn read_small_body(headers: &HeaderMap, body: Body) -> ApiResult<axum::body::Bytes> {
    let too_large = |size| ApiError::TooLarge {
        what: "request body",
        size,
        max: MAX_BODY_BYTES,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|size| *size > MAX_BODY_BYTES) {
        return Err(too_large(Some(size)));
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES as usize).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_large(None)
        } else {
            ApiError::IncompleteBody(e.to_string())
        }
    })
}

fn answer(state: &AppState, name: &str, position: Position) -> Response {
    let now = state.log.config().clock.now_ms();
    let (lag_records, lag_ms) = lag(&state.log, &state.mode, position.offset, now);
    Json(View {
        name,
        offset: position.offset,
        lag_records,
        lag_ms,
        updated_ms: position.updated_ms,
    })
    .into_response()
}

/// `(lag_records, lag_ms)` of a consumer at `offset` (see the module doc).
/// A position below the log's lowest offset is behind records retention
/// deleted: its time lag is that of the oldest record left.
fn lag(log: &Log, mode: &Mode, offset: u64, now_ms: u64) -> (u64, u64) {
    let next = log.next_offset();
    if offset >= next {
        return (0, 0);
    }
    let from = offset.max(log.lowest_offset());
    let to = next.min(from.saturating_add(LAG_SEARCH_RECORDS));
    // Headers only, read where they lie: a list of many consumers reads
    // one record header each, not their values.
    let first_shown = (from..to).find_map(|o| {
        let (attributes, stamp) = log.read_with(o, |r| (r.attributes, r.timestamp_ms)).ok()?;
        (!mode.hidden(o, attributes)).then_some(stamp)
    });
    (
        next - offset,
        first_shown.map_or(0, |stamp| now_ms.saturating_sub(stamp)),
    )
}
