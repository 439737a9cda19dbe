//! Every error the HTTP API answers, and the one place that maps each to a
//! status code and a JSON body: `{"error": "<for a person>", "code": "<for
//! a program>", ...useful fields}`.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::AuthFailure;
use crate::cluster::ClusterError;
use crate::log::LogError;
use crate::log::producers::Refusal;
use crate::logs::{CatalogError, SettingsError};
use crate::mode::AppendError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid JSON{}: {detail}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    InvalidJson { line: Option<usize>, detail: String },

    #[error("invalid protobuf: {0} (send a distlog.v1.RecordBatch, see proto/distlog.proto)")]
    InvalidProtobuf(String),

    #[error("the request body is empty")]
    EmptyBody,

    #[error("bad query parameter {param}: {detail}")]
    BadQuery { param: &'static str, detail: String },

    #[error("query parameters {} cannot be used together: each says where the read starts", params.join(" and "))]
    ConflictingQuery { params: Vec<&'static str> },

    #[error("bad offset {0:?}: an offset is a whole number from 0")]
    BadOffset(Echo),

    #[error("bad {header} header: {detail}")]
    BadHeader { header: &'static str, detail: String },

    #[error("Producer-Seq is ahead of the producer: the next one expected is {expected}")]
    ProducerSequenceGap { expected: u64 },

    #[error(
        "Producer-Seq is behind the producer and is none of its last 5 appends: the next one expected is {expected}"
    )]
    ProducerSequenceStale { expected: u64 },

    #[error("Producer-Epoch is below the producer's epoch {epoch}: a newer copy of this producer took over")]
    ProducerFenced { epoch: u32 },

    #[error("{}", match last {
        Some(last) => format!("the log's last record is at offset {last}"),
        None => "the log has no record".to_string(),
    })]
    OffsetMismatch { last: Option<u64> },

    #[error(
        "unsupported content type {0:?}: send application/json, application/x-ndjson, application/octet-stream or application/x-protobuf"
    )]
    UnsupportedMediaType(Echo),

    /// `size` is unknown when a body without a Content-Length outgrows the
    /// limit: it is not read further.
    #[error("{what} is too large: {}", match size {
        Some(size) => format!("{size} exceeds the limit of {max}"),
        None => format!("more than the limit of {max} bytes"),
    })]
    TooLarge {
        what: &'static str,
        size: Option<u64>,
        max: u64,
    },

    /// The client stopped sending (closed, or the connection failed) before
    /// the body its headers announced was complete.
    #[error("the request body ended before it was complete: {0}")]
    IncompleteBody(String),

    /// A browser request from another origin that would change state; see
    /// `cors`. Without an origin, the browser said so in `Sec-Fetch-Site`.
    #[error("{}", match origin {
        Some(origin) => format!("cross-origin write refused: origin {origin:?} is not allowed (see --cors-origin)"),
        None => "cross-site write refused: the browser marked it Sec-Fetch-Site: cross-site or same-site".to_string(),
    })]
    CrossOrigin { origin: Option<String> },

    #[error("offset {offset} is not in the log (lowest {lowest}, next {next})")]
    OffsetNotFound { offset: u64, lowest: u64, next: u64 },

    #[error("no route for {method} {path}")]
    RouteNotFound { method: Echo, path: Echo },

    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: Echo, path: Echo },

    #[error("{}", match reason {
        AuthFailure::NoCredentials => "authentication required: send Authorization: Bearer <token> or a client certificate",
        AuthFailure::BadToken => "the bearer token is not valid",
    })]
    Unauthorized { reason: AuthFailure },

    #[error("{principal} may not {action}")]
    Forbidden { principal: String, action: &'static str },

    #[error("this node is a read-only follower; write to the leader at {leader}")]
    ReadOnlyFollower { leader: String, location: String },

    #[error("a record{} is corrupt on disk", offset.map(|o| format!(" at offset {o}")).unwrap_or_default())]
    CorruptRecord { offset: Option<u64> },

    #[error("the disk is full; reads still work")]
    DiskFull,

    #[error("storage is unavailable: {0}")]
    Storage(String),

    #[error("the server is shutting down")]
    ShuttingDown,

    #[error("internal error: {0}")]
    Internal(String),

    #[error("the request is not valid HTTP/1.1: {0}")]
    BadRequest(String),

    #[error("the request's header section is too large")]
    HeadersTooLarge,

    #[error("the request URI is too long")]
    UriTooLong,

    #[error("the request body stalled: no bytes came for {after_ms} ms")]
    BodyTimeout { after_ms: u64 },

    #[error("the server has {max} open connections, its limit; retry shortly")]
    TooManyConnections { max: usize },

    #[error("this node is not the cluster's leader; write to the leader at {leader}")]
    NotLeader { leader: String, location: String },

    #[error("no leader is known: an election is under way or a majority is unreachable; retry shortly")]
    NoLeader,

    /// A write forwarded to the leader (`forward`) that the leader did not
    /// take: it could not be reached, or no longer led. Nothing was written.
    #[error("{0}; retry shortly")]
    LeaderUnreachable(String),

    /// A read of a committed offset that this member does not hold yet.
    #[error(
        "offset {offset} is committed, but this node has not caught up to it yet (it holds up to {next}); read it from the leader at {leader}"
    )]
    NotCaughtUp {
        offset: u64,
        next: u64,
        leader: String,
        location: String,
    },

    /// `no_leader` on a node that is in no cluster yet: what it waits for.
    #[error("{0}")]
    NotFormed(String),

    /// A member the cluster removed: it serves nothing until added again.
    #[error("{0}")]
    Removed(String),

    #[error(
        "the write's outcome is unknown (the leader changed or stopped, or no majority answered in time); it may or may not be in the log: {0}"
    )]
    OutcomeUnknown(String),

    #[error(
        "offset {offset} holds no record (a cluster's control entry or an aborted batch); the next one is at {next}"
    )]
    NoRecordAtOffset { offset: u64, next: u64 },

    #[error("this node is not part of a cluster (start it with --peers)")]
    NotCluster,

    /// A peer's message for a named log's Raft group this node does not
    /// hold (never created here, deleted, or not opened).
    #[error("this node holds no replica of group {0}")]
    NoSuchGroup(u64),

    /// A peer-only route asked on the client port of a node that serves
    /// peers on a port of their own.
    #[error("{path} is served on this node's peer port (--peer-listen) only{}", match peer_url {
        Some(url) => format!(", at {url}"),
        None => String::new(),
    })]
    PeerPortOnly { path: Echo, peer_url: Option<String> },

    #[error("no cluster member has id {0}")]
    NoSuchMember(u64),

    #[error("{0}")]
    BadClusterRequest(String),

    /// A node's replicas of named logs have nowhere to go (`DELETE /cluster/members/{id}`).
    #[error("the node's replicas cannot move: {0}")]
    CannotMoveReplicas(String),

    #[error("{0}")]
    WrongNode(String),

    /// A peer RPC whose sender is not who it says (`cluster::sender`).
    #[error("{0}")]
    PeerIdentityMismatch(String),

    #[error("the Raft core stopped; this node must be restarted: {0}")]
    RaftStopped(String),

    /// A cluster node whose start has not finished (see `starting`).
    #[error("this node is starting: {0}")]
    Starting(String),

    #[error("timed out: {0}")]
    ClusterTimeout(String),

    #[error("bad consumer name {0:?}: a name is 1-128 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadConsumerName(Echo),

    #[error("no consumer is named {name:?}")]
    ConsumerNotFound { name: String },

    #[error("the stored position is {}, not the one expected", stored.map_or("none".to_string(), |s| s.to_string()))]
    PositionMismatch { stored: Option<u64> },

    #[error("{max} consumers are stored, the limit (--max-consumers); delete one first")]
    TooManyConsumers { max: usize },

    #[error("offset {offset} is past the log's end (next offset {next}): a position cannot point past it")]
    PositionPastEnd { offset: u64, next: u64 },

    #[error("bad log name {name:?}: {reason}")]
    InvalidLogName { name: Echo, reason: &'static str },

    #[error("no log is named {name:?}")]
    LogNotFound { name: String },

    #[error("log {name:?} exists with other settings")]
    LogExists { name: String, settings: Value },

    /// A cluster's named log with no replica on this node: served by the
    /// nodes that hold it.
    #[error("this node holds no replica of log {name:?}; it is served at {node}")]
    LogElsewhere {
        name: String,
        node: String,
        location: String,
    },

    #[error("the node holds {max} logs, the limit (--max-logs); delete one first")]
    TooManyLogs { max: usize },

    #[error("replicas {replicas} is more than the {nodes} node(s) there are")]
    NotEnoughNodes { replicas: u64, nodes: u64 },

    #[error("bad log settings: {detail}")]
    BadLogSettings { field: &'static str, detail: String },

    #[error("named logs are not served here: {0}")]
    NamedLogsUnavailable(&'static str),

    /// A peer route refusing more work of one kind at once, or a follower
    /// more forwarded writes (`--max-forwarded-writes`).
    #[error("busy: {0}")]
    Busy(&'static str),
}

/// Client input quoted back in an error (a path, a method, a header or
/// query value), cut to `Echo::MAX_BYTES` on a character boundary with an
/// ellipsis: a 20 KB path must not come back whole, in the answer or in
/// the logs that print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Echo(String);

impl Echo {
    pub const MAX_BYTES: usize = 256;

    pub fn of(input: &str) -> Echo {
        if input.len() <= Self::MAX_BYTES {
            return Echo(input.to_string());
        }
        let mut end = Self::MAX_BYTES;
        while !input.is_char_boundary(end) {
            end -= 1;
        }
        Echo(format!("{}…", &input[..end]))
    }
}

impl fmt::Display for Echo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Echo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson { .. }
            | ApiError::InvalidProtobuf(_)
            | ApiError::EmptyBody
            | ApiError::BadQuery { .. }
            | ApiError::ConflictingQuery { .. }
            | ApiError::BadOffset(_)
            | ApiError::BadHeader { .. }
            | ApiError::IncompleteBody(_)
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyConnections { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::OffsetNotFound { .. } | ApiError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::CrossOrigin { .. } | ApiError::PeerIdentityMismatch(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::ReadOnlyFollower { .. } => StatusCode::TEMPORARY_REDIRECT,
            ApiError::CorruptRecord { .. } | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Storage(_) | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotLeader { .. } | ApiError::NotCaughtUp { .. } | ApiError::LogElsewhere { .. } => {
                StatusCode::TEMPORARY_REDIRECT
            }
            ApiError::NoLeader
            | ApiError::LeaderUnreachable(_)
            | ApiError::NotFormed(_)
            | ApiError::Removed(_)
            | ApiError::OutcomeUnknown(_)
            | ApiError::RaftStopped(_)
            | ApiError::Starting(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NoRecordAtOffset { .. }
            | ApiError::NotCluster
            | ApiError::NoSuchGroup(_)
            | ApiError::NoSuchMember(_)
            | ApiError::PeerPortOnly { .. } => StatusCode::NOT_FOUND,
            ApiError::BadClusterRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::WrongNode(_)
            | ApiError::CannotMoveReplicas(_)
            | ApiError::ProducerSequenceGap { .. }
            | ApiError::ProducerSequenceStale { .. }
            | ApiError::ProducerFenced { .. } => StatusCode::CONFLICT,
            ApiError::OffsetMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::ClusterTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::BadConsumerName(_) | ApiError::PositionPastEnd { .. } => StatusCode::BAD_REQUEST,
            ApiError::ConsumerNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::PositionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::TooManyConsumers { .. } => StatusCode::CONFLICT,
            ApiError::InvalidLogName { .. } | ApiError::NotEnoughNodes { .. } | ApiError::BadLogSettings { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::LogNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::LogExists { .. } | ApiError::TooManyLogs { .. } => StatusCode::CONFLICT,
            ApiError::NamedLogsUnavailable(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson { .. } => "invalid_json",
            ApiError::InvalidProtobuf(_) => "invalid_protobuf",
            ApiError::EmptyBody => "empty_body",
            ApiError::BadQuery { .. } => "bad_query",
            ApiError::ConflictingQuery { .. } => "conflicting_query",
            ApiError::BadOffset(_) => "bad_offset",
            ApiError::BadHeader { .. } => "bad_header",
            ApiError::ProducerSequenceGap { .. } => "producer_sequence_gap",
            ApiError::ProducerSequenceStale { .. } => "producer_sequence_stale",
            ApiError::ProducerFenced { .. } => "producer_fenced",
            ApiError::OffsetMismatch { .. } => "offset_mismatch",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::IncompleteBody(_) => "incomplete_body",
            ApiError::CrossOrigin { .. } => "cross_origin",
            ApiError::OffsetNotFound { .. } => "offset_not_found",
            ApiError::RouteNotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unauthorized { reason } => reason.reason(),
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::ReadOnlyFollower { .. } => "read_only_follower",
            ApiError::CorruptRecord { .. } => "corrupt_record",
            ApiError::DiskFull => "disk_full",
            ApiError::Storage(_) => "storage_unavailable",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::UriTooLong => "uri_too_long",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::TooManyConnections { .. } => "too_many_connections",
            ApiError::NotLeader { .. } => "not_leader",
            ApiError::NotCaughtUp { .. } => "not_caught_up",
            ApiError::LogElsewhere { .. } => "log_elsewhere",
            ApiError::NoLeader | ApiError::LeaderUnreachable(_) | ApiError::NotFormed(_) => "no_leader",
            ApiError::Removed(_) => "removed",
            ApiError::OutcomeUnknown(_) => "outcome_unknown",
            ApiError::NoRecordAtOffset { .. } => "no_record_at_offset",
            ApiError::NotCluster => "not_a_cluster",
            ApiError::NoSuchGroup(_) => "no_such_group",
            ApiError::PeerPortOnly { .. } => "peer_port_only",
            ApiError::NoSuchMember(_) => "no_such_member",
            ApiError::BadClusterRequest(_) => "bad_request",
            ApiError::CannotMoveReplicas(_) => "cannot_move_replicas",
            ApiError::WrongNode(_) => "wrong_node",
            ApiError::PeerIdentityMismatch(_) => "peer_identity_mismatch",
            ApiError::RaftStopped(_) => "raft_stopped",
            ApiError::Starting(_) => "starting",
            ApiError::ClusterTimeout(_) => "timeout",
            ApiError::BadConsumerName(_) => "bad_consumer_name",
            ApiError::ConsumerNotFound { .. } => "consumer_not_found",
            ApiError::PositionMismatch { .. } => "position_mismatch",
            ApiError::TooManyConsumers { .. } => "too_many_consumers",
            ApiError::PositionPastEnd { .. } => "offset_past_end",
            ApiError::InvalidLogName { .. } => "invalid_log_name",
            ApiError::LogNotFound { .. } => "log_not_found",
            ApiError::LogExists { .. } => "log_exists",
            ApiError::TooManyLogs { .. } => "too_many_logs",
            ApiError::NotEnoughNodes { .. } => "not_enough_nodes",
            ApiError::BadLogSettings { .. } => "bad_log_settings",
            ApiError::NamedLogsUnavailable(_) => "named_logs_unavailable",
            ApiError::Busy(_) => "busy",
        }
    }

    fn extra_fields(&self) -> Value {
        match self {
            ApiError::InvalidJson { line: Some(line), .. } => json!({ "line": line }),
            ApiError::PeerPortOnly { peer_url, .. } => json!({ "peer_url": peer_url }),
            ApiError::BadQuery { param, .. } => json!({ "param": param }),
            ApiError::BadHeader { header, .. } => json!({ "header": header }),
            ApiError::ProducerSequenceGap { expected } | ApiError::ProducerSequenceStale { expected } => {
                json!({ "expected_seq": expected })
            }
            ApiError::ProducerFenced { epoch } => json!({ "epoch": epoch }),
            ApiError::OffsetMismatch { last } => json!({ "last_offset": last.map_or(-1, |l| l as i128) }),
            ApiError::ConflictingQuery { params } => json!({ "params": params }),
            ApiError::TooLarge {
                size: Some(size), max, ..
            } => json!({ "size": size, "max": max }),
            ApiError::TooLarge { size: None, max, .. } => json!({ "max": max }),
            ApiError::CrossOrigin { origin: Some(origin) } => json!({ "origin": origin }),
            ApiError::OffsetNotFound { offset, lowest, next } => {
                json!({ "offset": offset, "lowest_offset": lowest, "next_offset": next })
            }
            ApiError::ReadOnlyFollower { leader, .. } => json!({ "leader": leader }),
            ApiError::Forbidden { principal, action } => json!({ "principal": principal, "action": action }),
            ApiError::CorruptRecord { offset } => json!({ "offset": offset }),
            ApiError::TooManyConnections { max } => json!({ "max": max }),
            ApiError::NotLeader { leader, .. } => json!({ "leader": leader }),
            ApiError::LogElsewhere { name, node, .. } => json!({ "name": name, "node": node }),
            ApiError::NotCaughtUp {
                offset, next, leader, ..
            } => {
                json!({ "offset": offset, "next_offset": next, "leader": leader })
            }
            ApiError::NoRecordAtOffset { offset, next } => json!({ "offset": offset, "next_offset": next }),
            ApiError::NoSuchMember(id) => json!({ "id": id }),
            ApiError::ConsumerNotFound { name } => json!({ "name": name }),
            ApiError::PositionMismatch { stored } => json!({ "stored": stored }),
            ApiError::TooManyConsumers { max } => json!({ "max": max }),
            ApiError::PositionPastEnd { offset, next } => json!({ "offset": offset, "next_offset": next }),
            ApiError::InvalidLogName { name, .. } => json!({ "name": name.to_string() }),
            ApiError::LogNotFound { name } => json!({ "name": name }),
            ApiError::LogExists { name, settings } => json!({ "name": name, "settings": settings }),
            ApiError::TooManyLogs { max } => json!({ "max": max }),
            ApiError::NotEnoughNodes { replicas, nodes } => json!({ "replicas": replicas, "nodes": nodes }),
            ApiError::BadLogSettings { field, .. } => json!({ "field": field }),
            _ => json!({}),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Unavailable(why) => ApiError::NamedLogsUnavailable(why),
            CatalogError::NotFound(name) => ApiError::LogNotFound { name },
            CatalogError::Exists { name, settings } => ApiError::LogExists {
                name,
                settings: serde_json::to_value(settings).unwrap_or_default(),
            },
            CatalogError::TooMany { max } => ApiError::TooManyLogs { max },
            CatalogError::Settings(SettingsError::NotEnoughNodes { replicas, nodes }) => {
                ApiError::NotEnoughNodes { replicas, nodes }
            }
            CatalogError::Settings(e @ SettingsError::BadReplicas(_)) => ApiError::BadLogSettings {
                field: "replicas",
                detail: e.to_string(),
            },
            CatalogError::Settings(e @ SettingsError::OutOfRange { key, .. }) => ApiError::BadLogSettings {
                field: key,
                detail: e.to_string(),
            },
            CatalogError::Log(e) => e.into(),
            CatalogError::Io(e) => {
                tracing::error!(error = %e, "named log storage failure");
                super::metrics::storage_error("io");
                ApiError::Storage(e.to_string())
            }
            CatalogError::Start(e) => ApiError::Storage(e.to_string()),
            CatalogError::Cluster { error, path } => cluster_error(error, &path),
            CatalogError::Placement(detail) => ApiError::BadLogSettings {
                field: "replicas",
                detail,
            },
            e @ CatalogError::Failed { .. } => ApiError::Storage(e.to_string()),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(err: LogError) -> Self {
        match err {
            LogError::OutOfRange { offset, lowest, next } => ApiError::OffsetNotFound { offset, lowest, next },
            LogError::TooLarge { what, size, max } => ApiError::TooLarge {
                what,
                size: Some(size),
                max,
            },
            LogError::EmptyBatch => ApiError::EmptyBody,
            LogError::Corrupt {
                offset,
                ref file,
                position,
                ref reason,
            } => {
                tracing::error!(file = %file.display(), position, ?offset, reason, "corrupt record");
                super::metrics::storage_error("corrupt");
                ApiError::CorruptRecord { offset }
            }
            ref e if e.is_disk_full() => {
                super::metrics::storage_error("disk_full");
                ApiError::DiskFull
            }
            LogError::Closed => ApiError::ShuttingDown,
            other => {
                tracing::error!(error = %other, "storage failure");
                super::metrics::storage_error("io");
                ApiError::Storage(other.to_string())
            }
        }
    }
}

impl ApiError {
    /// The JSON body of the answer.
    pub fn body(&self) -> Value {
        let mut body = self.extra_fields();
        body["error"] = Value::String(self.to_string());
        body["code"] = Value::String(self.code().to_string());
        body
    }

    /// Seconds a client should wait before it tries again, for errors
    /// that pass.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            ApiError::TooManyConnections { .. }
            | ApiError::NoLeader
            | ApiError::LeaderUnreachable(_)
            | ApiError::NotFormed(_)
            | ApiError::Busy(_)
            | ApiError::Starting(_)
            | ApiError::OutcomeUnknown(_) => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), super::json_body::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::Unauthorized { reason } = &self {
            let challenge = match reason {
                AuthFailure::NoCredentials => r#"Bearer realm="distlog""#,
                AuthFailure::BadToken => r#"Bearer realm="distlog", error="invalid_token""#,
            };
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let ApiError::ReadOnlyFollower { location, .. }
        | ApiError::NotLeader { location, .. }
        | ApiError::NotCaughtUp { location, .. }
        | ApiError::LogElsewhere { location, .. } = &self
            && let Ok(value) = HeaderValue::from_str(location)
        {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Why an append was refused, for a request to `path` (a writer sent to
/// the leader is sent to the same path there).
pub fn append_error(err: AppendError, path: &str) -> ApiError {
    match err {
        AppendError::ReadOnlyReplica { leader } => ApiError::ReadOnlyFollower {
            location: format!("{}{}", leader.trim_end_matches('/'), path),
            leader,
        },
        AppendError::Cluster(e) => cluster_error(e, path),
        AppendError::Log(e) => e.into(),
        AppendError::Refused(why) => match why {
            Refusal::SequenceGap { expected } => ApiError::ProducerSequenceGap { expected },
            Refusal::SequenceStale { expected } => ApiError::ProducerSequenceStale { expected },
            Refusal::Fenced { epoch } => ApiError::ProducerFenced { epoch },
            Refusal::OffsetMismatch { last } => ApiError::OffsetMismatch { last },
            // Answered as a success before it gets here.
            Refusal::Duplicate { first, last } => {
                ApiError::Internal(format!("a duplicate of offsets {first}..={last} taken for an error"))
            }
        },
    }
}

/// A cluster operation's error as the answer to a request for `path`
/// (and query): a follower redirects to the same path on the leader.
pub fn cluster_error(err: ClusterError, path: &str) -> ApiError {
    match err {
        ClusterError::NotLeader {
            leader_url: Some(leader),
        } => ApiError::NotLeader {
            location: format!("{}{}", leader.trim_end_matches('/'), path),
            leader,
        },
        ClusterError::NotLeader { leader_url: None } | ClusterError::NoLeader => ApiError::NoLeader,
        ClusterError::NotFormed(why) => ApiError::NotFormed(why),
        ClusterError::Removed(why) => ApiError::Removed(why),
        ClusterError::OutcomeUnknown(why) => ApiError::OutcomeUnknown(why),
        ClusterError::NoSuchMember(id) => ApiError::NoSuchMember(id),
        ClusterError::BadRequest(why) | ClusterError::BadRpc(why) => ApiError::BadClusterRequest(why),
        e @ ClusterError::WrongNode { .. } => ApiError::WrongNode(e.to_string()),
        e @ ClusterError::PeerIdentityMismatch(_) => ApiError::PeerIdentityMismatch(e.to_string()),
        ClusterError::Stopped(why) => ApiError::RaftStopped(why),
        ClusterError::Timeout(why) => ApiError::ClusterTimeout(why),
        ClusterError::DiskFull => ApiError::DiskFull,
        ClusterError::CannotMove(why) => ApiError::CannotMoveReplicas(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_to_503_and_507() {
        let full = ApiError::from(LogError::Io(std::io::Error::from(std::io::ErrorKind::StorageFull)));
        assert_eq!(
            (full.status(), full.code()),
            (StatusCode::INSUFFICIENT_STORAGE, "disk_full")
        );
        let broken = ApiError::from(LogError::Io(std::io::Error::other("EIO")));
        assert_eq!(
            (broken.status(), broken.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
        );
        let corrupt = ApiError::from(LogError::Corrupt {
            file: "0.store".into(),
            position: 7,
            offset: Some(3),
            reason: "checksum mismatch".into(),
        });
        assert_eq!(corrupt.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(corrupt.extra_fields()["offset"], 3);
    }

    /// A peer refused for who it is gets a code of its own: not `forbidden`
    /// (the ACL), and nothing a peer client counts as a vote (`not_found`).
    #[test]
    fn a_peer_identity_mismatch_is_403_with_its_own_code() {
        let refused = cluster_error(ClusterError::PeerIdentityMismatch("node 7".into()), "");
        assert_eq!(
            (refused.status(), refused.code()),
            (StatusCode::FORBIDDEN, "peer_identity_mismatch")
        );
    }

    #[test]
    fn echoes_are_cut_on_a_char_boundary_with_an_ellipsis() {
        assert_eq!(Echo::of("/short").to_string(), "/short");
        let exact = "x".repeat(Echo::MAX_BYTES);
        assert_eq!(Echo::of(&exact).to_string(), exact);
        // 'é' is two bytes: the 256th byte is inside the 128th one.
        let cut = Echo::of(&format!("a{}", "é".repeat(200))).to_string();
        assert_eq!(cut, format!("a{}…", "é".repeat(127)));
        assert!(cut.len() <= Echo::MAX_BYTES + '…'.len_utf8());
        assert_eq!(format!("{:?}", Echo::of("a\"b")), r#""a\"b""#);
    }
}
