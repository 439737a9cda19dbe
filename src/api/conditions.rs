//! The headers that make `POST /` conditional, read into a `log::Guard`:
//!
//! - `Producer-Id` (1-64 chars of `[A-Za-z0-9._-]`), `Producer-Epoch` (u32,
//!   default 0), `Producer-Seq` (u64: the sequence number of the request's
//!   first record; an NDJSON batch of k records takes `seq .. seq+k-1`);
//! - `Expected-Last-Offset` (the offset the log's last record must be at;
//!   `-1`: no record yet).
//!
//! Without them an append is plain. A header half given (an id without a
//! sequence, a sequence or epoch without an id), out of range, or not a
//! number is refused as `400 bad_header` naming the header.

use axum::http::{HeaderMap, HeaderValue};

use super::error::{ApiError, ApiResult};
use crate::log::{Guard, MAX_PRODUCER_ID, ProducerStamp};

pub const PRODUCER_ID: &str = "producer-id";
pub const PRODUCER_EPOCH: &str = "producer-epoch";
pub const PRODUCER_SEQ: &str = "producer-seq";
pub const EXPECTED_LAST_OFFSET: &str = "expected-last-offset";

/// The conditions' header names, in the order `Found` holds them.
const NAMES: [&str; 4] = [PRODUCER_ID, PRODUCER_EPOCH, PRODUCER_SEQ, EXPECTED_LAST_OFFSET];

/// How a header is named in errors.
fn shown(name: &'static str) -> &'static str {
    match name {
        PRODUCER_ID => "Producer-Id",
        PRODUCER_EPOCH => "Producer-Epoch",
        PRODUCER_SEQ => "Producer-Seq",
        _ => "Expected-Last-Offset",
    }
}

fn bad(name: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::BadHeader {
        header: shown(name),
        detail: detail.into(),
    }
}

/// The conditions' headers a request sent, by `NAMES`' order.
struct Found<'h>([Option<&'h HeaderValue>; 4]);

/// Finds the conditions' headers in one pass over the request's handful
/// of headers, names compared by length first: four lookups by name hash
/// each name (about 900 instructions on every append, guarded or not),
/// and a header sent twice is refused here.
fn find(headers: &HeaderMap) -> ApiResult<Found<'_>> {
    let mut found = [None; 4];
    // Once per value: a header sent twice is seen twice.
    for (name, value) in headers {
        let name = name.as_str();
        let Some(at) = NAMES.iter().position(|n| n.len() == name.len() && *n == name) else {
            continue;
        };
        if found[at].replace(value).is_some() {
            return Err(bad(NAMES[at], "sent more than once"));
        }
    }
    Ok(Found(found))
}

impl Found<'_> {
    /// The header's value as text, if it was sent.
    fn text(&self, name: &'static str) -> ApiResult<Option<&str>> {
        let at = NAMES.iter().position(|n| *n == name);
        let Some(value) = at.and_then(|at| self.0[at]) else {
            return Ok(None);
        };
        let value = value.to_str().map_err(|_| bad(name, "not visible ASCII"))?;
        // ASCII only (to_str saw to that): `trim` would decode every character.
        Ok(Some(value.trim_ascii()))
    }

    fn number<T: std::str::FromStr>(&self, name: &'static str, what: &str) -> ApiResult<Option<T>> {
        match self.text(name)? {
            None => Ok(None),
            // `FromStr` for integers takes a leading `+`; a header value should not.
            Some(value) if value.starts_with('+') => Err(bad(name, format!("{value:?} is not {what}"))),
            Some(value) => value
                .parse()
                .map(Some)
                .map_err(|_| bad(name, format!("{value:?} is not {what}"))),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

/// The headers read before the body (a bad header is refused at once),
/// for an append of yet unknown size: `for_records` completes it once the
/// body says how many records it holds, without reading them again.
#[derive(Debug)]
pub struct Asked(Guard);

/// Reads the headers (see the module doc) for an append of at least one record.
pub fn read(headers: &HeaderMap) -> ApiResult<Asked> {
    let found = find(headers)?;
    if found.is_empty() {
        return Ok(Asked(Guard::default()));
    }
    Ok(Asked(Guard {
        producer: producer(&found)?,
        expected_last: expected_last(&found)?,
    }))
}

impl Asked {
    /// The guard for an append of `count` records: its producer's sequence
    /// numbers must leave room for them all.
    pub fn for_records(self, count: usize) -> ApiResult<Guard> {
        let Asked(mut guard) = self;
        if let Some(p) = &mut guard.producer {
            let count = u32::try_from(count).map_err(|_| bad(PRODUCER_SEQ, "too many records for one append"))?;
            if p.seq.checked_add(u64::from(count.max(1)) - 1).is_none() {
                return Err(bad(
                    PRODUCER_SEQ,
                    format!("{} leaves no room for {count} records", p.seq),
                ));
            }
            p.count = count;
        }
        Ok(guard)
    }
}

/// The producer's stamp, counted as one record until `Asked::for_records`.
fn producer(found: &Found) -> ApiResult<Option<ProducerStamp>> {
    let id = found.text(PRODUCER_ID)?;
    let epoch = found.number::<u32>(PRODUCER_EPOCH, "a whole number from 0 to 4294967295")?;
    let seq = found.number::<u64>(PRODUCER_SEQ, "a whole number from 0 to 18446744073709551615")?;
    let (id, seq) = match (id, seq) {
        (None, None) if epoch.is_none() => return Ok(None),
        (None, _) => return Err(bad(PRODUCER_ID, "missing: Producer-Epoch and Producer-Seq need it")),
        (Some(_), None) => return Err(bad(PRODUCER_SEQ, "missing: Producer-Id needs it")),
        (Some(id), Some(seq)) => (id, seq),
    };
    let valid = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-');
    if id.is_empty() || id.len() > MAX_PRODUCER_ID || !id.bytes().all(valid) {
        return Err(bad(PRODUCER_ID, "must be 1-64 characters of A-Z a-z 0-9 . _ -"));
    }
    Ok(Some(ProducerStamp {
        id: id.to_string(),
        epoch: epoch.unwrap_or(0),
        seq,
        count: 1,
    }))
}

fn expected_last(found: &Found) -> ApiResult<Option<i64>> {
    let what = "an offset from 0, or -1 for a log with no record";
    match found.number::<i64>(EXPECTED_LAST_OFFSET, what)? {
        Some(offset) if offset < -1 => Err(bad(EXPECTED_LAST_OFFSET, format!("{offset} is not {what}"))),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard the headers ask for, for an append of `count` records.
    fn guard(headers: &HeaderMap, count: usize) -> ApiResult<Guard> {
        read(headers)?.for_records(count)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn refused_header(pairs: &[(&'static str, &str)]) -> &'static str {
        match guard(&headers(pairs), 3) {
            Err(ApiError::BadHeader { header, .. }) => header,
            other => panic!("{pairs:?} gave {other:?}"),
        }
    }

    #[test]
    fn no_headers_is_no_guard() {
        assert!(guard(&HeaderMap::new(), 1).unwrap().is_none());
    }

    #[test]
    fn producer_headers_read_into_a_stamp() {
        let g = guard(&headers(&[(PRODUCER_ID, "orders-1.a_B"), (PRODUCER_SEQ, "7")]), 3).unwrap();
        assert_eq!(
            g.producer,
            Some(ProducerStamp {
                id: "orders-1.a_B".into(),
                epoch: 0,
                seq: 7,
                count: 3
            })
        );
        let g = guard(
            &headers(&[
                (PRODUCER_ID, "p"),
                (PRODUCER_EPOCH, "4294967295"),
                (PRODUCER_SEQ, "0"),
                (EXPECTED_LAST_OFFSET, "-1"),
            ]),
            1,
        )
        .unwrap();
        assert_eq!(g.producer.map(|p| p.epoch), Some(u32::MAX));
        assert_eq!(g.expected_last, Some(-1));
    }

    #[test]
    fn every_bad_header_is_named() {
        assert_eq!(refused_header(&[(PRODUCER_ID, "p")]), "Producer-Seq");
        assert_eq!(refused_header(&[(PRODUCER_SEQ, "1")]), "Producer-Id");
        assert_eq!(refused_header(&[(PRODUCER_EPOCH, "1")]), "Producer-Id");
        assert_eq!(
            refused_header(&[(PRODUCER_ID, "a b"), (PRODUCER_SEQ, "1")]),
            "Producer-Id"
        );
        assert_eq!(refused_header(&[(PRODUCER_ID, ""), (PRODUCER_SEQ, "1")]), "Producer-Id");
        let long = "x".repeat(65);
        assert_eq!(
            refused_header(&[(PRODUCER_ID, &long), (PRODUCER_SEQ, "1")]),
            "Producer-Id"
        );
        assert_eq!(
            refused_header(&[(PRODUCER_ID, "p"), (PRODUCER_SEQ, "-1")]),
            "Producer-Seq"
        );
        assert_eq!(
            refused_header(&[(PRODUCER_ID, "p"), (PRODUCER_SEQ, "+1")]),
            "Producer-Seq"
        );
        assert_eq!(
            refused_header(&[(PRODUCER_ID, "p"), (PRODUCER_SEQ, "18446744073709551615")]),
            "Producer-Seq",
            "3 records do not fit"
        );
        assert_eq!(
            refused_header(&[(PRODUCER_ID, "p"), (PRODUCER_SEQ, "1"), (PRODUCER_EPOCH, "4294967296")]),
            "Producer-Epoch"
        );
        assert_eq!(refused_header(&[(EXPECTED_LAST_OFFSET, "-2")]), "Expected-Last-Offset");
        assert_eq!(refused_header(&[(EXPECTED_LAST_OFFSET, "x")]), "Expected-Last-Offset");
        assert_eq!(
            refused_header(&[(EXPECTED_LAST_OFFSET, "1"), (EXPECTED_LAST_OFFSET, "2")]),
            "Expected-Last-Offset"
        );
    }
}
