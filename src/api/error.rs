//! Every error the HTTP API answers, and the one place that maps each to a
//! status code and a JSON body: `{"error": "<for a person>", "code": "<for
//! a program>", ...useful fields}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::AuthFailure;
use crate::log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid JSON{}: {detail}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    InvalidJson { line: Option<usize>, detail: String },

    #[error("the request body is empty")]
    EmptyBody,

    #[error("bad query parameter {param}: {detail}")]
    BadQuery { param: &'static str, detail: String },

    #[error("bad offset {0:?}: an offset is a whole number from 0")]
    BadOffset(String),

    #[error("unsupported content type {0:?}: send application/json, application/x-ndjson or application/octet-stream")]
    UnsupportedMediaType(String),

    #[error("{what} is too large: {size} exceeds the limit of {max}")]
    TooLarge { what: &'static str, size: u64, max: u64 },

    #[error("offset {offset} is not in the log (lowest {lowest}, next {next})")]
    OffsetNotFound { offset: u64, lowest: u64, next: u64 },

    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },

    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },

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
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson { .. }
            | ApiError::EmptyBody
            | ApiError::BadQuery { .. }
            | ApiError::BadOffset(_)
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
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::ReadOnlyFollower { .. } => StatusCode::TEMPORARY_REDIRECT,
            ApiError::CorruptRecord { .. } | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Storage(_) | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson { .. } => "invalid_json",
            ApiError::EmptyBody => "empty_body",
            ApiError::BadQuery { .. } => "bad_query",
            ApiError::BadOffset(_) => "bad_offset",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::TooLarge { .. } => "too_large",
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
        }
    }

    fn extra_fields(&self) -> Value {
        match self {
            ApiError::InvalidJson { line: Some(line), .. } => json!({ "line": line }),
            ApiError::BadQuery { param, .. } => json!({ "param": param }),
            ApiError::TooLarge { size, max, .. } => json!({ "size": size, "max": max }),
            ApiError::OffsetNotFound { offset, lowest, next } => {
                json!({ "offset": offset, "lowest_offset": lowest, "next_offset": next })
            }
            ApiError::ReadOnlyFollower { leader, .. } => json!({ "leader": leader }),
            ApiError::Forbidden { principal, action } => json!({ "principal": principal, "action": action }),
            ApiError::CorruptRecord { offset } => json!({ "offset": offset }),
            ApiError::TooManyConnections { max } => json!({ "max": max }),
            _ => json!({}),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(err: LogError) -> Self {
        match err {
            LogError::OutOfRange { offset, lowest, next } => ApiError::OffsetNotFound { offset, lowest, next },
            LogError::TooLarge { what, size, max } => ApiError::TooLarge { what, size, max },
            LogError::EmptyBatch => ApiError::EmptyBody,
            LogError::Corrupt {
                offset,
                ref file,
                position,
                ref reason,
            } => {
                tracing::error!(file = %file.display(), position, ?offset, reason, "corrupt record");
                ApiError::CorruptRecord { offset }
            }
            ref e if e.is_disk_full() => ApiError::DiskFull,
            LogError::Closed => ApiError::ShuttingDown,
            other => {
                tracing::error!(error = %other, "storage failure");
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
            ApiError::TooManyConnections { .. } => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
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
        if let ApiError::ReadOnlyFollower { location, .. } = &self
            && let Ok(value) = HeaderValue::from_str(location)
        {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

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
}
