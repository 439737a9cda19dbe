//! The storage engine: an append-only log of records split into segments.
//!
//! Layering, bottom up: `record` (frame format) -> `segment` (one store file
//! of frames and one mmap'd index of offset -> position, named by base
//! offset; the files are private to it) -> `commit_log` (the segments in order, one writer, many
//! readers, durability, retention, recovery on open).
//!
//! Nothing here may panic on what the disk or a caller hands it: the lints
//! below refuse `unwrap`, `expect` and unchecked indexing outside tests.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod clock;
mod commit_log;
mod config;
pub mod consumers;
mod error;
pub mod fsops;
mod group_commit;
pub mod producers;
mod record;
mod segment;
mod snapshot;

pub use clock::{Clock, ManualClock};
pub(crate) use commit_log::describe_metrics;
pub use commit_log::{Appended, Log, LogStats, PendingAppend, PendingSync, Retention, now_ms};
pub use config::{Durability, LogConfig, MIB, default_max_record_bytes, record_ceiling};
pub use error::{LogError, Result};
pub use record::{
    EncodedBatch, FLAG_BATCH_CONTINUES, FRAME_HEADER, Frame, FrameError, FrameStamps, FrameView, Frames, Guard,
    MAX_PRODUCER_ID, MAX_RECORD_CEILING, MAX_STORED_FRAME, Payload, ProducerStamp, Record, RecordRef, attributes,
    decode_frame, encode_frame, finished_batches_len, frame_len, frame_stamps, split_checked, split_frames,
};
pub use segment::Recovered;
pub use snapshot::SnapshotReader;
