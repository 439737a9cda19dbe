//! Managing named logs: `PUT /logs/{name}` creates one (`201`; the same
//! settings again `200`; other settings `409 log_exists`), `PATCH` changes
//! its retention, `GET /logs/{name}` and `GET /logs` describe them,
//! `DELETE /logs/{name}` removes one with everything it holds (`204`).
//! Where they are kept: `crate::logs`. A log's records are served under
//! `/logs/{name}/` (`named`).
//!
//! Bodies (JSON, every field optional):
//!
//! ```text
//! PUT   {"replicas": 1, "retention_bytes": 1073741824, "retention_ms": 86400000, "max_record_bytes": 65536}
//! PATCH {"retention_bytes": null, "retention_ms": 3600000}    (null: back to the node's flag)
//! ```
//!
//! A log answers `{"name", "settings": {as stored, null where the node's
//! flag applies}, "effective": {what applies}, "status", "lowest_offset",
//! "next_offset", "size_bytes", "segments", "leader", "members",
//! "preferred_leader"}`; a standalone node's logs have no group (`leader`
//! and `preferred_leader` null, `members` empty). In a cluster
//! `preferred_leader` is the first node of the log's placement, the one
//! leadership is handed back to when it can lead (`cluster::spread`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};

use super::consumers::read_small_body;
use super::error::{ApiError, ApiResult, Echo};
use super::json_body::Json;
use super::media::{BodyFormat, body_format};
use super::named::NamedRouters;
use super::state::AppState;
use crate::log::{Log, LogConfig};
use crate::logs::{
    Catalog, CatalogError, DEFAULT_LOG, Found, LogName, NamedLog, Remote, Requested, RetentionChange, Settings,
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PutBody {
    replicas: Option<u64>,
    retention_bytes: Option<u64>,
    retention_ms: Option<u64>,
    max_record_bytes: Option<u64>,
}

/// Only retention may change; the other fields are named in the refusal.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "present")]
    retention_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    retention_ms: Option<Option<u64>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// The settings that apply, the node's flags filling what is left out.
#[derive(Serialize)]
struct Effective {
    retention_bytes: Option<u64>,
    retention_ms: Option<u64>,
    max_record_bytes: u64,
}

#[derive(Serialize)]
struct View<'a> {
    name: &'a str,
    settings: Settings,
    effective: Effective,
    status: &'static str,
    lowest_offset: u64,
    next_offset: u64,
    size_bytes: u64,
    segments: usize,
    leader: Option<String>,
    members: Vec<String>,
    preferred_leader: Option<String>,
}

#[derive(Serialize)]
struct List<'a> {
    logs: Vec<View<'a>>,
}

fn view<'a>(name: &'a str, settings: Settings, log: &Log) -> View<'a> {
    let stats = log.stats();
    let retention = log.retention();
    View {
        name,
        settings,
        effective: Effective {
            retention_bytes: retention.bytes,
            retention_ms: retention.ms,
            max_record_bytes: log.config().max_record_bytes,
        },
        status: "live",
        lowest_offset: stats.lowest_offset,
        next_offset: stats.next_offset,
        size_bytes: stats.size_bytes,
        segments: stats.segments,
        leader: None,
        members: Vec::new(),
        preferred_leader: None,
    }
}

fn named_view<'a>(named: &'a NamedLog, catalog: &Catalog) -> View<'a> {
    let mut view = view(named.name.as_str(), named.settings(), &named.log);
    if let Some(group) = named.mode.cluster() {
        view.leader = group.leader().and_then(|(_, url)| url);
        view.members = group.member_urls();
        let (preferred_leader, moving) = catalog.placement(named.name.as_str());
        view.preferred_leader = preferred_leader;
        if moving {
            view.status = "moving";
        }
    }
    view
}

/// A cluster's log with no replica here: its settings and where it is
/// (its offsets and size are on the nodes that hold it).
fn remote_view<'a>(remote: &'a Remote, base: Option<&LogConfig>, status: &'static str) -> View<'a> {
    let settings = remote.settings.clone();
    let effective = match base {
        Some(base) => {
            let retention = settings.retention(base);
            Effective {
                retention_bytes: retention.bytes,
                retention_ms: retention.ms,
                max_record_bytes: settings.log_config(base).max_record_bytes,
            }
        }
        None => Effective {
            retention_bytes: settings.retention_bytes,
            retention_ms: settings.retention_ms,
            max_record_bytes: settings.max_record_bytes.unwrap_or_default(),
        },
    };
    View {
        name: remote.name.as_str(),
        settings,
        effective,
        status,
        lowest_offset: 0,
        next_offset: 0,
        size_bytes: 0,
        segments: 0,
        leader: None,
        members: remote.urls.clone(),
        preferred_leader: remote.urls.first().cloned(),
    }
}

fn found_view<'a>(found: &'a Found, catalog: &Catalog) -> Option<View<'a>> {
    let base = catalog.base();
    match found {
        Found::Here(named) => Some(named_view(named, catalog)),
        Found::Elsewhere(remote) => Some(remote_view(remote, base, "elsewhere")),
        Found::Opening(remote) => remote.as_ref().map(|remote| remote_view(remote, base, "opening")),
    }
}

/// The default log as a named one: its settings are the node's flags.
fn default_settings(config: &LogConfig) -> Settings {
    Settings {
        replicas: 1,
        retention_bytes: config.retention_bytes,
        retention_ms: config.retention_ms,
        max_record_bytes: Some(config.max_record_bytes),
    }
}

pub(super) fn parse_name(name: &str) -> ApiResult<LogName> {
    LogName::parse(name).map_err(|e| ApiError::InvalidLogName {
        name: Echo::of(name),
        reason: e.reason,
    })
}

/// A log on disk that did not open (see `Catalog::failure`), as its routes answer it.
pub(super) fn set_aside(name: &str, why: String) -> ApiError {
    CatalogError::Failed {
        name: name.to_string(),
        why,
    }
    .into()
}

fn available(state: &AppState) -> ApiResult<()> {
    match state.catalog.unavailable_reason() {
        Some(why) => Err(ApiError::NamedLogsUnavailable(why)),
        None => Ok(()),
    }
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Response> {
    available(&state)?;
    let logs = state.catalog.list_all();
    let views = logs
        .iter()
        .filter_map(|found| found_view(found, &state.catalog))
        .collect();
    Ok(Json(List { logs: views }).into_response())
}

pub async fn get_one(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    if name == DEFAULT_LOG {
        let settings = default_settings(state.log.config());
        return Ok(Json(view(DEFAULT_LOG, settings, &state.log)).into_response());
    }
    let name = parse_name(&name)?;
    available(&state)?;
    let not_found = || match (state.catalog.failure(name.as_str()), state.catalog.not_final()) {
        (Some(why), _) => set_aside(name.as_str(), why),
        // A member that may not have heard of the log yet sends the reader to the cluster group's leader.
        (None, Some(ask)) => super::error::cluster_error(ask, &format!("/logs/{name}")),
        (None, None) => ApiError::LogNotFound { name: name.to_string() },
    };
    match state.catalog.find(name.as_str()).ok_or_else(not_found)? {
        Found::Here(named) => Ok(Json(named_view(&named, &state.catalog)).into_response()),
        // Its offsets and size are known where it is.
        Found::Elsewhere(remote) => {
            let node = remote.next_node().ok_or(ApiError::NoLeader)?;
            Err(ApiError::LogElsewhere {
                name: name.to_string(),
                location: format!("{}/logs/{name}", node.trim_end_matches('/')),
                node,
            })
        }
        Found::Opening(_) => Err(match state.catalog.failure(name.as_str()) {
            Some(why) => set_aside(name.as_str(), why),
            None => ApiError::Busy("this node's replica of the log is opening; retry shortly"),
        }),
    }
}

pub async fn put(State(state): State<AppState>, Path(name): Path<String>, request: Request) -> ApiResult<Response> {
    let name = parse_name(&name)?;
    available(&state)?;
    let body: PutBody = read_json(request).await?;
    let requested = Requested {
        replicas: body.replicas,
        retention_bytes: body.retention_bytes,
        retention_ms: body.retention_ms,
        max_record_bytes: body.max_record_bytes,
    };
    let (created, named) = state.catalog.create(name, &requested).await?;
    let status = match created {
        crate::logs::Created::New => StatusCode::CREATED,
        crate::logs::Created::Existing => StatusCode::OK,
    };
    Ok(located(status, &named, &state.catalog))
}

pub async fn patch(State(state): State<AppState>, Path(name): Path<String>, request: Request) -> ApiResult<Response> {
    let name = parse_name(&name)?;
    available(&state)?;
    let body: PatchBody = read_json(request).await?;
    let change = RetentionChange {
        retention_bytes: body.retention_bytes,
        retention_ms: body.retention_ms,
    };
    let found = state.catalog.change(name.as_str(), &change).await?;
    let view = found_view(&found, &state.catalog).ok_or(ApiError::Busy("the log's replica is opening"))?;
    Ok(Json(view).into_response())
}

/// Deletes the log and drops its router (which holds the log open).
pub async fn delete(state: AppState, name: String, routers: Arc<NamedRouters>) -> ApiResult<Response> {
    let name = parse_name(&name)?;
    available(&state)?;
    let deleted = state.catalog.delete(name.as_str()).await;
    routers.forget(name.as_str());
    deleted?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn located(status: StatusCode, found: &Found, catalog: &Catalog) -> Response {
    let Some(view) = found_view(found, catalog) else {
        return ApiError::Busy("the log's replica is opening; retry shortly").into_response();
    };
    let location = format!("/logs/{}", view.name);
    let mut response = (status, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A small JSON body; an empty one is every field left out.
async fn read_json<T: serde::de::DeserializeOwned + Default>(request: Request) -> ApiResult<T> {
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body).await?;
    if body.is_empty() {
        return Ok(T::default());
    }
    if body_format(&parts.headers)? != BodyFormat::Json {
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        return Err(ApiError::UnsupportedMediaType(Echo::of(
            content_type.unwrap_or_default(),
        )));
    }
    // Through a `Value`: a struct would also take a JSON array of its fields.
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| settings_error(&e))?;
    if !value.is_object() {
        return Err(ApiError::InvalidJson {
            line: None,
            detail: "the settings are a JSON object".into(),
        });
    }
    serde_json::from_value(value).map_err(|e| settings_error(&e))
}

async fn read_body(headers: &HeaderMap, body: Body) -> ApiResult<axum::body::Bytes> {
    read_small_body(headers, body).await
}

/// A field a PATCH may not change (`replicas`, `max_record_bytes`) is a
/// settings error naming it; anything else is bad JSON.
fn settings_error(e: &serde_json::Error) -> ApiError {
    let text = e.to_string();
    let unknown = text
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field);
    match unknown {
        Some(field @ ("replicas" | "max_record_bytes")) => ApiError::BadLogSettings {
            field: if field == "replicas" {
                "replicas"
            } else {
                "max_record_bytes"
            },
            detail: format!("{field} cannot be changed once a log exists; only retention_bytes and retention_ms"),
        },
        _ => ApiError::InvalidJson {
            line: None,
            detail: text,
        },
    }
}
