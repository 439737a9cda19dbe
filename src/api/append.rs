//! `POST /`: append one JSON document, an NDJSON batch, or raw bytes.
//!
//! The body's media type picks the format: none, `application/json`, any
//! `+json` type and `application/x-www-form-urlencoded` (what `curl -d`
//! sends) are one JSON document; `application/x-ndjson` is one record per
//! non-empty line, appended as one batch; `application/octet-stream` is one
//! binary record; `application/x-protobuf` is a `RecordBatch` appended as
//! one batch (`protobuf`, answered in protobuf when the Accept header asks
//! for it). JSON is validated in one pass (`json_check`, held to
//! `json_limits`' rules) and then stored byte for byte. Every body is
//! limited by `--max-request-bytes`, and one record's body by
//! `--max-record-bytes` too.
//!
//! Producer headers and `Expected-Last-Offset` make the append conditional
//! (`conditions`): a retry already in the log is answered `200` with its
//! original offsets and `"duplicate": true`, a refused one `409` or `412`.
//!
//! A cluster follower answers `307` to the leader, or with
//! `--forward-writes` sends the append there itself (`forward`).

use super::json_body::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::conditions;
use super::error::{ApiError, ApiResult, append_error};
use super::forward::{self, Forward};
use super::json_check;
use super::json_limits;
use super::media::{BodyFormat, body_format};
use super::protobuf;
use super::render::push_decimal;
use super::state::AppState;
use crate::log::attributes::BINARY;
use crate::mode::{AppendError, Appended};

pub async fn append(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    // The router is not nested, so the URI it saw is the client's: a writer
    // sent to the leader is sent to the same path there.
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let refused = |e| append_error(e, path);
    // Before the body is read: a writer sent on is sent on at once. A
    // replica never takes writes, so it sends writers to its leader even
    // while it stops; a node that takes writes refuses them once it stops.
    let writable = state.mode.check_writable();
    if state.shutting_down() && !matches!(writable, Err(AppendError::ReadOnlyReplica { .. })) {
        return Err(state.stopping());
    }
    let max_record = state.log.config().max_record_bytes;
    if let Err(refusal) = writable {
        let Some(forward) = Forward::of(&state, headers, &refusal)? else {
            return Err(refused(refusal));
        };
        // Held to this node's limits before it goes on; the leader checks the rest.
        let limit = body_limit(body_format(headers)?, max_record, state.limits.max_request_bytes);
        let body = read_body(headers, body, limit).await?;
        return forward.send(&parts, body).await;
    }
    let format = body_format(headers)?;
    let limit = body_limit(format, max_record, state.limits.max_request_bytes);
    let asked = conditions::read(headers)?;
    let body = read_body(headers, body, limit).await?;
    // Kept (a reference count) in case leadership moves before the append.
    let raw = body.clone();
    let records = match format {
        BodyFormat::Json => {
            check_json(&body, None)?;
            vec![(0, body)]
        }
        BodyFormat::Binary if body.is_empty() => return Err(ApiError::EmptyBody),
        BodyFormat::Binary => vec![(BINARY, body)],
        BodyFormat::Ndjson => split_ndjson(&body, max_record, state.limits.max_batch_records)?,
        BodyFormat::Protobuf => protobuf::split_batch(body, max_record, state.limits.max_batch_records, check_json)?,
    };
    let guard = asked.for_records(records.len())?;
    let append = async { Ok(state.mode.append(&state.log, &records, &guard).await) };
    let appended = match forward::within(forward::time_left(headers), append).await? {
        Ok(appended) => appended,
        // Raft refused it before proposing it (this node stopped leading
        // since `check_writable`): nothing was done, so it may go on.
        Err(refusal) => match Forward::of(&state, headers, &refusal)? {
            Some(forward) => return forward.send(&parts, raw).await,
            None => return Err(refused(refusal)),
        },
    };
    let one = matches!(format, BodyFormat::Json | BodyFormat::Binary);
    if protobuf::wanted(headers) {
        let count = records.len() as u64;
        let mut response = match appended {
            Appended::Created { first } => {
                protobuf::append_result(StatusCode::CREATED, first, first + count - 1, false)
            }
            Appended::Duplicate { first, last } => protobuf::append_result(StatusCode::OK, first, last, true),
        };
        let first = match appended {
            Appended::Created { first } | Appended::Duplicate { first, .. } => first,
        };
        set_location(&mut response, first);
        return Ok(response);
    }
    Ok(match appended {
        Appended::Created { first } if one => created_one(first),
        Appended::Created { first } => created_batch(first, records.len() as u64),
        Appended::Duplicate { first, last } => duplicate(one, first, last),
    })
}

/// `200`: a retry of an append already in the log, answered with its
/// original offsets.
fn duplicate(one: bool, first: u64, last: u64) -> Response {
    let body = match one {
        true => json!({ "offset": first, "duplicate": true }),
        false => json!({ "first_offset": first, "last_offset": last, "duplicate": true }),
    };
    let mut response = (StatusCode::OK, Json(body)).into_response();
    set_location(&mut response, first);
    response
}

/// The most a body may hold, and what that limit is called in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BodyLimit {
    bytes: u64,
    what: &'static str,
}

/// `--max-request-bytes` caps every body; one record's body is also capped
/// by `--max-record-bytes`, and the error names whichever is smaller.
fn body_limit(format: BodyFormat, max_record: u64, max_request: u64) -> BodyLimit {
    let request = BodyLimit {
        bytes: max_request,
        what: "request body",
    };
    match format {
        BodyFormat::Json | BodyFormat::Binary if max_record < max_request => BodyLimit {
            bytes: max_record,
            what: "record",
        },
        _ => request,
    }
}

/// Reads the body up to `limit` bytes; a larger one is refused as 413, from
/// its Content-Length when it has one, before reading it. Without one, the
/// body is read only up to the limit, so its real size is not known.
async fn read_body(headers: &HeaderMap, body: Body, limit: BodyLimit) -> ApiResult<Bytes> {
    let BodyLimit { bytes: max, what } = limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|size| *size > max) {
        return Err(ApiError::TooLarge {
            what,
            size: Some(size),
            max,
        });
    }
    let bytes = axum::body::to_bytes(body, usize::try_from(max).unwrap_or(usize::MAX))
        .await
        .map_err(|e| {
            if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
                ApiError::TooLarge { what, size: None, max }
            } else {
                // Not the client's query: the connection ended or failed
                // before the body it announced was all there.
                ApiError::IncompleteBody(e.to_string())
            }
        })?;
    Ok(bytes)
}

fn check_json(bytes: &[u8], line: Option<usize>) -> ApiResult<()> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::EmptyBody);
    }
    if json_check::is_json(bytes) {
        debug_assert!(
            json_limits::check_document(bytes).is_ok(),
            "json_check accepted what json_limits refuses"
        );
        return Ok(());
    }
    Err(why_not_json(bytes, line))
}

/// Why `bytes` are not a record's JSON, in serde_json's or `json_limits`'
/// words (`json_check` only says whether). Stored values are copied
/// verbatim into answers, which must stay valid UTF-8 and parseable by
/// readers with default limits (see `json_limits`).
#[cold]
fn why_not_json(bytes: &[u8], line: Option<usize>) -> ApiError {
    let detail = match json_limits::check_document(bytes) {
        Err(e) => e.to_string(),
        Ok(()) => {
            debug_assert!(false, "json_check refused what json_limits accepts");
            "not JSON".to_string()
        }
    };
    ApiError::InvalidJson { line, detail }
}

/// Splits an NDJSON body into checked records, naming the first bad line.
fn split_ndjson(body: &Bytes, max_record: u64, max_records: usize) -> ApiResult<Vec<(u8, Bytes)>> {
    let mut records = Vec::new();
    let mut start = 0;
    for (i, line) in ndjson_lines(body).enumerate() {
        let end = start + line.len();
        let trimmed = line.strip_suffix(b"\r").unwrap_or(line);
        if !trimmed.iter().all(u8::is_ascii_whitespace) {
            if trimmed.len() as u64 > max_record {
                return Err(ApiError::TooLarge {
                    what: "record",
                    size: Some(trimmed.len() as u64),
                    max: max_record,
                });
            }
            check_json(trimmed, Some(i + 1))?;
            records.push((0, body.slice(start..start + trimmed.len())));
            if records.len() > max_records {
                return Err(ApiError::TooLarge {
                    what: "batch",
                    size: Some(records.len() as u64),
                    max: max_records as u64,
                });
            }
        }
        start = end + 1;
    }
    if records.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    Ok(records)
}

/// The body's lines without their `\n`, as `body.split(|b| *b == b'\n')`
/// would give them (an empty last one after a final newline), found with
/// `memchr` rather than byte by byte.
fn ndjson_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(body);
    std::iter::from_fn(move || {
        let all = rest?;
        match memchr::memchr(b'\n', all) {
            Some(at) => {
                rest = all.get(at + 1..);
                all.get(..at)
            }
            None => rest.take(),
        }
    })
}

fn created_batch(first: u64, count: u64) -> Response {
    let last = first + count - 1;
    let body = Json(json!({ "first_offset": first, "last_offset": last }));
    let mut response = (StatusCode::CREATED, body).into_response();
    set_location(&mut response, first);
    response
}

fn created_one(offset: u64) -> Response {
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(b"{\"offset\":");
    push_decimal(&mut body, offset);
    body.push(b'}');
    let mut response = super::json_body::json_bytes(StatusCode::CREATED, body);
    set_location(&mut response, offset);
    response
}

fn set_location(response: &mut Response, offset: u64) {
    let mut location = Vec::with_capacity(24);
    location.push(b'/');
    push_decimal(&mut location, offset);
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(location)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_names_the_bad_line_and_skips_blank_ones() {
        let body = Bytes::from_static(b"{\"a\":1}\n\n{\"b\":2}\r\n{oops}\n");
        match split_ndjson(&body, 1000, 100) {
            Err(ApiError::InvalidJson { line: Some(4), .. }) => {}
            other => panic!("expected line 4 to be named, got {other:?}"),
        }
        let body = Bytes::from_static(b"{\"a\":1}\n\n{\"b\":2}\r\n");
        let records = split_ndjson(&body, 1000, 100).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(&records[1].1[..], b"{\"b\":2}");
    }

    #[test]
    fn ndjson_lines_are_split_as_slice_split_splits_them() {
        let bodies: [&[u8]; 7] = [b"", b"\n", b"a", b"a\n", b"a\nb", b"\n\na\r\n\nbc\n", b"x\n\n"];
        for body in bodies {
            let expected: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
            assert_eq!(ndjson_lines(body).collect::<Vec<_>>(), expected, "{body:?}");
        }
    }

    #[test]
    fn ndjson_batches_are_capped() {
        let body = Bytes::from_static(b"1\n2\n3\n");
        assert!(matches!(
            split_ndjson(&body, 1000, 2),
            Err(ApiError::TooLarge { what: "batch", .. })
        ));
        assert!(matches!(
            split_ndjson(&Bytes::from_static(b"\n \n"), 1000, 2),
            Err(ApiError::EmptyBody)
        ));
    }

    #[test]
    fn every_body_is_capped_by_the_request_limit_and_a_record_by_the_smaller() {
        let limit = |format, record, request| {
            let BodyLimit { bytes, what } = body_limit(format, record, request);
            (bytes, what)
        };
        assert_eq!(limit(BodyFormat::Json, 1000, 100), (100, "request body"));
        assert_eq!(limit(BodyFormat::Binary, 1000, 100), (100, "request body"));
        assert_eq!(limit(BodyFormat::Json, 100, 1000), (100, "record"));
        assert_eq!(limit(BodyFormat::Binary, 100, 100), (100, "request body"));
        assert_eq!(limit(BodyFormat::Ndjson, 100, 1000), (1000, "request body"));
        assert_eq!(limit(BodyFormat::Ndjson, 1000, 100), (100, "request body"));
    }

    #[test]
    fn json_must_be_one_whole_document() {
        assert!(check_json(b"{\"event\":\"signup\"}", None).is_ok());
        assert!(matches!(
            check_json(b"{\"a\":", None),
            Err(ApiError::InvalidJson { .. })
        ));
        assert!(matches!(check_json(b"{} {}", None), Err(ApiError::InvalidJson { .. })));
        assert!(matches!(check_json(b"  ", None), Err(ApiError::EmptyBody)));
        assert!(matches!(
            check_json(b"{\"a\":\"\xff\xfe\"}", None),
            Err(ApiError::InvalidJson { .. })
        ));
    }
}
