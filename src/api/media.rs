//! Media types: what a request body is, and what a reader accepts.

use axum::http::{HeaderMap, header};

use super::error::{ApiError, ApiResult, Echo};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
    Binary,
}

fn essence(value: &str) -> String {
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The body's format from its Content-Type (none means JSON).
pub fn body_format(headers: &HeaderMap) -> ApiResult<BodyFormat> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let raw = value.to_str().unwrap_or("");
    match essence(raw).as_str() {
        "" | "application/json" | "application/x-www-form-urlencoded" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(BodyFormat::Ndjson),
        "application/octet-stream" => Ok(BodyFormat::Binary),
        other if other.ends_with("+json") => Ok(BodyFormat::Json),
        _ => Err(ApiError::UnsupportedMediaType(Echo::of(raw))),
    }
}

/// Whether the Accept header asks for `media` (exactly, not by wildcard).
pub fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| essence(part) == media)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn content_types_pick_the_format() {
        assert_eq!(body_format(&HeaderMap::new()).unwrap(), BodyFormat::Json);
        let json = with(header::CONTENT_TYPE, "application/json; charset=utf-8");
        assert_eq!(body_format(&json).unwrap(), BodyFormat::Json);
        let ndjson = with(header::CONTENT_TYPE, "application/x-ndjson");
        assert_eq!(body_format(&ndjson).unwrap(), BodyFormat::Ndjson);
        let binary = with(header::CONTENT_TYPE, "Application/Octet-Stream");
        assert_eq!(body_format(&binary).unwrap(), BodyFormat::Binary);
        assert!(body_format(&with(header::CONTENT_TYPE, "text/plain")).is_err());
    }

    #[test]
    fn accept_lists_are_searched() {
        let headers = with(header::ACCEPT, "text/html, text/event-stream;q=0.9");
        assert!(accepts(&headers, "text/event-stream"));
        assert!(!accepts(&headers, "application/octet-stream"));
    }
}
