//! Appends: [`Append`] is one `POST /` (a JSON record, bytes, an NDJSON
//! batch or a protobuf one, with an optional `Expected-Last-Offset`), and the
//! client's append methods send it to the leader.
//!
//! Without a producer handle an append is sent again only after a failure
//! that proves it did nothing; any other failure is returned, and
//! [`Error::has_no_side_effects`] says whether it may have been written.

use bytes::{BufMut, Bytes, BytesMut};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Serialize;

use crate::client::{Client, Request};
use crate::error::{Error, Result};
use crate::record::{Appended, parse_appended};

/// One append: what `POST /` sends.
///
/// ```
/// use distlog_client::Append;
/// let batch = Append::batch(&[serde_json::json!({"n": 1}), serde_json::json!({"n": 2})])?
///     .expect_last_offset(Some(41));
/// assert_eq!(batch.records(), 2);
/// # Ok::<(), distlog_client::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Append {
    content_type: &'static str,
    body: Bytes,
    records: u64,
    expected_last_offset: Option<i64>,
}

impl Append {
    /// One JSON record.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Append> {
        let body = serde_json::to_vec(value).map_err(|e| Error::Config(format!("not JSON: {e}")))?;
        Ok(Append::new("application/json", Bytes::from(body), 1))
    }

    /// One JSON record already serialized, sent as it is; the server
    /// checks it.
    pub fn json_text(body: impl Into<Bytes>) -> Append {
        Append::new("application/json", body.into(), 1)
    }

    /// One binary record.
    pub fn bytes(value: impl Into<Bytes>) -> Append {
        Append::new("application/octet-stream", value.into(), 1)
    }

    /// A batch of JSON records, appended all or nothing (NDJSON).
    pub fn batch<T: Serialize>(values: &[T]) -> Result<Append> {
        let mut body = BytesMut::new();
        for value in values {
            serde_json::to_writer((&mut body).writer(), value).map_err(|e| Error::Config(format!("not JSON: {e}")))?;
            body.put_u8(b'\n');
        }
        Ok(Append::new("application/x-ndjson", body.freeze(), values.len() as u64))
    }

    /// A batch already in NDJSON (one JSON document per line, `records`
    /// lines), sent as it is; the server checks it.
    pub fn ndjson(body: impl Into<Bytes>, records: u64) -> Append {
        Append::new("application/x-ndjson", body.into(), records)
    }

    /// A batch of records in the protobuf encoding ([`proto`](crate::proto)),
    /// appended all or nothing.
    pub fn protobuf(batch: &crate::proto::RecordBatch) -> Append {
        use prost::Message;
        let records = batch.records.len() as u64;
        Append::new(crate::proto::MEDIA_TYPE, Bytes::from(batch.encode_to_vec()), records)
    }

    fn new(content_type: &'static str, body: Bytes, records: u64) -> Append {
        Append {
            content_type,
            body,
            records,
            expected_last_offset: None,
        }
    }

    /// Appends only if the log's last record is at this offset (`-1`:
    /// only into a log with no record); else `412 offset_mismatch`.
    pub fn expect_last_offset(mut self, offset: Option<i64>) -> Append {
        self.expected_last_offset = offset;
        self
    }

    /// How many records this append writes.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The size of the request's body in bytes.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The request to `path` (the log's `/`), with `extra` headers (a producer's).
    pub(crate) fn request(&self, path: String, extra: HeaderMap) -> Request {
        let mut headers = extra;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if let Some(offset) = self.expected_last_offset {
            headers.insert("expected-last-offset", HeaderValue::from(offset));
        }
        Request {
            method: Method::POST,
            path,
            headers,
            body: Some(self.body.clone()),
            extra_time: std::time::Duration::ZERO,
        }
    }
}

impl Client {
    /// Appends to the leader. Sent again only while the failure proves
    /// nothing was written (never connected, `307`, `503 no_leader`); use a
    /// [`Producer`](crate::Producer) to retry anything without duplicates.
    pub async fn append(&self, append: &Append) -> Result<Appended> {
        let request = append.request(self.inner.log_path("/"), HeaderMap::new());
        let answer = self
            .inner
            .to_leader(&request, |error| error.is_retryable() && error.has_no_side_effects())
            .await?;
        let appended = parse_appended(&answer.url, &answer.body)?;
        self.inner.note_next(appended.last_offset + 1);
        Ok(appended)
    }

    /// Appends one JSON record.
    pub async fn append_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<Appended> {
        self.append(&Append::json(value)?).await
    }

    /// Appends one binary record.
    pub async fn append_bytes(&self, value: impl Into<Bytes>) -> Result<Appended> {
        self.append(&Append::bytes(value)).await
    }

    /// Appends JSON records as one batch, all or nothing.
    pub async fn append_batch<T: Serialize>(&self, values: &[T]) -> Result<Appended> {
        self.append(&Append::batch(values)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_one_compact_line_per_record() {
        let append = Append::batch(&[serde_json::json!({"a": [1, 2]}), serde_json::json!("x")]).unwrap();
        assert_eq!(&append.body[..], b"{\"a\":[1,2]}\n\"x\"\n");
        let request = append
            .expect_last_offset(Some(-1))
            .request("/".into(), HeaderMap::new());
        assert_eq!(request.headers["content-type"], "application/x-ndjson");
        assert_eq!(request.headers["expected-last-offset"], "-1");
    }
}
