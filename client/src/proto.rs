//! The protobuf encoding (`proto/distlog.proto`): the messages `POST /`
//! takes and answers with `Content-Type: application/x-protobuf`, and
//! reads answer with `Accept: application/x-protobuf`. Generated at build
//! time (prost, with protox as the compiler); shared with the server.
//!
//! ```
//! use distlog_client::proto::{Format, Record, RecordBatch};
//! use distlog_client::proto::Message;
//!
//! let batch = RecordBatch {
//!     records: vec![Record { value: br#"{"n":1}"#.to_vec().into(), format: Format::Json.into(), ..Default::default() }],
//! };
//! let body = batch.encode_to_vec();
//! assert_eq!(RecordBatch::decode(body.as_slice()).unwrap(), batch);
//! ```

#![allow(clippy::doc_markdown, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/distlog.v1.rs"));

pub use prost::Message;

/// The media type of protobuf bodies.
pub const MEDIA_TYPE: &str = "application/x-protobuf";
