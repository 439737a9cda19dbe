//! What the log holds and answers, as the client hands it out: a
//! [`Record`] (`{"offset", "timestamp", "value" | "value_base64"}` on the
//! wire), a [`Page`] of them (`{"records", "next_offset"}`) and what an
//! append answers ([`Appended`]: `{"offset"}` for one record,
//! `{"first_offset", "last_offset"}` for a batch, with `"duplicate": true`
//! when a producer's retry found its records already in the log).

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A record's contents: a JSON document as it was posted, or bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    Json(serde_json::Value),
    Bytes(Bytes),
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub offset: u64,
    /// Append time, ms since the Unix epoch.
    pub timestamp: u64,
    pub payload: Payload,
}

impl Record {
    /// The JSON document, if the record is JSON.
    pub fn json(&self) -> Option<&serde_json::Value> {
        match &self.payload {
            Payload::Json(value) => Some(value),
            Payload::Bytes(_) => None,
        }
    }

    /// The record's bytes: a JSON record's text (compact) or a binary
    /// record's bytes.
    pub fn bytes(&self) -> Bytes {
        match &self.payload {
            Payload::Json(value) => Bytes::from(value.to_string()),
            Payload::Bytes(bytes) => bytes.clone(),
        }
    }
}

/// A page of records and where to go on from (`next_offset` may skip
/// offsets that no reader is shown, such as a cluster's own entries).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    pub records: Vec<Record>,
    pub next_offset: u64,
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub first_offset: u64,
    pub last_offset: u64,
    /// A producer's retry whose records were already in the log: the
    /// offsets are the original ones and nothing new was written.
    pub duplicate: bool,
}

#[derive(Deserialize)]
struct WireRecord {
    offset: u64,
    timestamp: u64,
    value: Option<serde_json::Value>,
    value_base64: Option<String>,
}

#[derive(Deserialize)]
struct WirePage {
    records: Vec<WireRecord>,
    next_offset: u64,
}

#[derive(Deserialize)]
struct WireAppended {
    offset: Option<u64>,
    first_offset: Option<u64>,
    last_offset: Option<u64>,
    #[serde(default)]
    duplicate: bool,
}

impl WireRecord {
    fn into_record(self, url: &str) -> Result<Record> {
        let payload = match (self.value, self.value_base64) {
            (_, Some(text)) => Payload::Bytes(Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| protocol(url, format!("value_base64 of offset {}: {e}", self.offset)))?,
            )),
            (Some(value), None) => Payload::Json(value),
            (None, None) => return Err(protocol(url, format!("record {} has no value", self.offset))),
        };
        Ok(Record {
            offset: self.offset,
            timestamp: self.timestamp,
            payload,
        })
    }
}

pub(crate) fn parse_record(url: &str, body: &[u8]) -> Result<Record> {
    let wire: WireRecord = serde_json::from_slice(body).map_err(|e| protocol(url, format!("a record: {e}")))?;
    wire.into_record(url)
}

pub(crate) fn parse_page(url: &str, body: &[u8]) -> Result<Page> {
    let wire: WirePage = serde_json::from_slice(body).map_err(|e| protocol(url, format!("a page: {e}")))?;
    let records = wire
        .records
        .into_iter()
        .map(|record| record.into_record(url))
        .collect::<Result<Vec<_>>>()?;
    Ok(Page {
        records,
        next_offset: wire.next_offset,
    })
}

pub(crate) fn parse_appended(url: &str, body: &[u8]) -> Result<Appended> {
    let wire: WireAppended =
        serde_json::from_slice(body).map_err(|e| protocol(url, format!("an append's answer: {e}")))?;
    match (wire.offset, wire.first_offset, wire.last_offset) {
        (Some(offset), _, _) => Ok(Appended {
            first_offset: offset,
            last_offset: offset,
            duplicate: wire.duplicate,
        }),
        (None, Some(first), Some(last)) if first <= last => Ok(Appended {
            first_offset: first,
            last_offset: last,
            duplicate: wire.duplicate,
        }),
        _ => Err(protocol(url, "an append's answer has no offsets".to_string())),
    }
}

fn protocol(url: &str, reason: String) -> Error {
    Error::Protocol {
        url: url.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_keeps_json_and_binary_records() {
        let body = br#"{"records":[{"offset":3,"timestamp":9,"value":{"a":1}},{"offset":5,"timestamp":9,"value_base64":"AAE="}],"next_offset":6}"#;
        let page = parse_page("u", body).unwrap();
        assert_eq!(page.next_offset, 6);
        assert_eq!(page.records[0].json(), Some(&serde_json::json!({"a": 1})));
        assert_eq!(page.records[1].payload, Payload::Bytes(Bytes::from_static(&[0, 1])));
    }

    #[test]
    fn one_record_and_a_batch_answer_the_same_type() {
        let one = parse_appended("u", br#"{"offset":7}"#).unwrap();
        assert_eq!((one.first_offset, one.last_offset, one.duplicate), (7, 7, false));
        let batch = parse_appended("u", br#"{"first_offset":7,"last_offset":9,"duplicate":true}"#).unwrap();
        assert_eq!((batch.first_offset, batch.last_offset, batch.duplicate), (7, 9, true));
        assert!(parse_appended("u", br#"{"first_offset":9,"last_offset":7}"#).is_err());
    }
}
