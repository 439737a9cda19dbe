//! The protobuf encoding (`proto/distlog.proto`, types generated in the
//! client crate): a `RecordBatch` body for `POST /`, and `AppendResult`,
//! `Record` and `RangeResult` answers for a client whose Accept header asks
//! for `application/x-protobuf` (`media::prefers`). A record's `format`
//! maps to the engine's attributes: `FORMAT_BINARY` is a binary record,
//! `FORMAT_JSON` a JSON one, checked as an NDJSON line is. Values are
//! sliced from the body and from the log (`Bytes`), not copied.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use distlog_client::proto::{self, Format, Message};

use super::error::{ApiError, ApiResult};
use super::media::choose;
use crate::log::Record;
use crate::log::attributes::BINARY;

/// The protobuf media type's names, as `media::choose` takes them.
pub const NAMES: &str = "application/x-protobuf,application/protobuf";

/// Whether the client asks for protobuf answers.
pub fn wanted(headers: &HeaderMap) -> bool {
    choose(headers, &[NAMES]).is_some()
}

/// The records of a `RecordBatch` body, each checked as one of an NDJSON
/// batch is (`check_json` for JSON ones), numbered from 1 in errors.
pub fn split_batch(
    body: Bytes,
    max_record: u64,
    max_records: usize,
    check_json: impl Fn(&[u8], Option<usize>) -> ApiResult<()>,
) -> ApiResult<Vec<(u8, Bytes)>> {
    // Counted before decoding: a record of two bytes decodes to some 60,
    // so a body of empty records would cost thirty times its size.
    let count = count_records(&body)?;
    if count > max_records {
        return Err(ApiError::TooLarge {
            what: "batch",
            size: Some(count as u64),
            max: max_records as u64,
        });
    }
    let batch = proto::RecordBatch::decode(body).map_err(|e| ApiError::InvalidProtobuf(e.to_string()))?;
    if batch.records.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    let mut records = Vec::with_capacity(batch.records.len());
    for (i, record) in batch.records.into_iter().enumerate() {
        let number = i + 1;
        if record.value.len() as u64 > max_record {
            return Err(ApiError::TooLarge {
                what: "record",
                size: Some(record.value.len() as u64),
                max: max_record,
            });
        }
        let attributes = match Format::try_from(record.format) {
            Ok(Format::Binary) if record.value.is_empty() => {
                return Err(ApiError::InvalidProtobuf(format!("record {number} has an empty value")));
            }
            Ok(Format::Binary) => BINARY,
            Ok(Format::Json) => {
                check_json(&record.value, Some(number))?;
                0
            }
            Err(_) => {
                return Err(ApiError::InvalidProtobuf(format!(
                    "record {number} has format {}, which is neither FORMAT_BINARY (0) nor FORMAT_JSON (1)",
                    record.format
                )));
            }
        };
        records.push((attributes, record.value));
    }
    Ok(records)
}

/// The `records` fields (number 1) of a `RecordBatch` body, read from its
/// top-level keys and lengths without decoding them; other fields are
/// skipped as protobuf says. Groups (deprecated, and never in this schema)
/// and keys or lengths that do not read are refused.
fn count_records(body: &[u8]) -> ApiResult<usize> {
    let bad = |why: &str| ApiError::InvalidProtobuf(why.to_string());
    let mut rest = body;
    let mut count = 0;
    while !rest.is_empty() {
        let key = read_varint(&mut rest).ok_or_else(|| bad("a field key does not read"))?;
        let skip = match key & 7 {
            0 => {
                read_varint(&mut rest).ok_or_else(|| bad("a number does not read"))?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                count += usize::from(key >> 3 == 1);
                let len = read_varint(&mut rest).ok_or_else(|| bad("a length does not read"))?;
                usize::try_from(len).map_err(|_| bad("a length past the body"))?
            }
            _ => return Err(bad("a group or an unknown wire type")),
        };
        rest = rest
            .get(skip..)
            .ok_or_else(|| bad("a field runs past the end of the body"))?;
    }
    Ok(count)
}

/// A base-128 varint at the front of `buf`, taken off it; `None` if it
/// runs past the end or past ten bytes.
fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

/// An `AppendResult` answer: `201` for a new append, `200` for a duplicate.
pub fn append_result(status: StatusCode, first: u64, last: u64, duplicate: bool) -> Response {
    let result = proto::AppendResult {
        first_offset: first,
        last_offset: last,
        duplicate,
    };
    answer(status, result.encode_to_vec())
}

/// One record's answer (`GET /{offset}`).
pub fn record(record: Record) -> Response {
    answer(StatusCode::OK, to_wire(record).encode_to_vec())
}

/// A range's answer: the records and where the next read starts.
pub fn range(records: Vec<Record>, next_offset: u64) -> Response {
    let result = proto::RangeResult {
        records: records.into_iter().map(to_wire).collect(),
        next_offset,
    };
    answer(StatusCode::OK, result.encode_to_vec())
}

fn to_wire(record: Record) -> proto::Record {
    let format = match record.attributes & BINARY {
        0 => Format::Json,
        _ => Format::Binary,
    };
    proto::Record {
        offset: record.offset,
        timestamp: record.timestamp_ms,
        value: record.value,
        format: format.into(),
    }
}

fn answer(status: StatusCode, body: Vec<u8>) -> Response {
    let media = HeaderValue::from_static(proto::MEDIA_TYPE);
    (status, [(header::CONTENT_TYPE, media)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: Vec<(Format, &'static [u8])>) -> Bytes {
        let batch = proto::RecordBatch {
            records: records
                .into_iter()
                .map(|(format, value)| proto::Record {
                    value: Bytes::from_static(value),
                    format: format.into(),
                    ..Default::default()
                })
                .collect(),
        };
        Bytes::from(batch.encode_to_vec())
    }

    fn no_check(_: &[u8], _: Option<usize>) -> ApiResult<()> {
        Ok(())
    }

    #[test]
    fn a_batch_keeps_each_records_format_and_bytes() {
        let body = batch(vec![(Format::Json, b"{\"a\":1}"), (Format::Binary, &[0, 255])]);
        let records = split_batch(body, 100, 10, no_check).unwrap();
        assert_eq!(records[0], (0, Bytes::from_static(b"{\"a\":1}")));
        assert_eq!(records[1], (BINARY, Bytes::from_static(&[0, 255])));
    }

    #[test]
    fn records_are_counted_without_decoding_them() {
        let body = batch(vec![
            (Format::Json, b"{}"),
            (Format::Binary, b"x"),
            (Format::Binary, b""),
        ]);
        assert_eq!(count_records(&body).unwrap(), 3);
        assert_eq!(count_records(&[]).unwrap(), 0);
        // A million empty records in 2 MB: refused before any is decoded.
        let empties = Bytes::from([0x0a, 0x00].repeat(1_000_000));
        let refused = split_batch(empties, 100, 10_000, no_check).unwrap_err();
        assert!(
            matches!(
                refused,
                ApiError::TooLarge {
                    what: "batch",
                    size: Some(1_000_000),
                    ..
                }
            ),
            "{refused:?}"
        );
        assert_eq!(
            count_records(&[0x0a, 0x05, 0x01]).unwrap_err().code(),
            "invalid_protobuf"
        );
    }

    #[test]
    fn bad_batches_are_refused_naming_what_is_wrong() {
        let code = |r: ApiResult<Vec<(u8, Bytes)>>| r.unwrap_err().code();
        assert_eq!(
            code(split_batch(Bytes::from_static(&[0xff, 0xff]), 100, 10, no_check)),
            "invalid_protobuf"
        );
        assert_eq!(code(split_batch(batch(vec![]), 100, 10, no_check)), "empty_body");
        assert_eq!(
            code(split_batch(batch(vec![(Format::Binary, b"")]), 100, 10, no_check)),
            "invalid_protobuf"
        );
        let many = batch(vec![(Format::Binary, b"x"); 3]);
        assert_eq!(code(split_batch(many, 100, 2, no_check)), "too_large");
        assert_eq!(
            code(split_batch(batch(vec![(Format::Binary, b"xyz")]), 2, 10, no_check)),
            "too_large"
        );
        let mut wild = proto::RecordBatch::decode(batch(vec![(Format::Binary, b"x")])).unwrap();
        wild.records[0].format = 7;
        let wild = Bytes::from(wild.encode_to_vec());
        assert_eq!(code(split_batch(wild, 100, 10, no_check)), "invalid_protobuf");
        let refuse = |_: &[u8], line: Option<usize>| {
            Err(ApiError::InvalidJson {
                line,
                detail: "no".into(),
            })
        };
        let json = batch(vec![(Format::Binary, b"x"), (Format::Json, b"{")]);
        let refused = split_batch(json, 100, 10, refuse).unwrap_err();
        assert!(
            matches!(refused, ApiError::InvalidJson { line: Some(2), .. }),
            "{refused:?}"
        );
    }
}
