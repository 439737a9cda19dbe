//! The replication wire format, shared by the endpoint that serves it
//! (`api::frames`) and the follower that pulls it (`replication`), so that
//! neither has to import the other.
//!
//! ```text
//! GET /replication/frames?from=N&max_bytes=B[&max_records=R][&wait_ms=T]
//! ```
//!
//! - `200`, `application/octet-stream`: the log's own frames from offset
//!   `from` on, back to back, exactly as stored (layout in `log::record`):
//!   at most `max_records` of them and about `max_bytes` (one frame always
//!   comes, however large), possibly none once `wait_ms` ran out. Headers:
//!   - `x-distlog-next-offset`: `from` plus the number of frames in the body
//!   - `x-distlog-lowest-offset`, `x-distlog-log-next-offset`: the serving
//!     log's bounds when it answered
//! - `404` when `from` is outside the log, with the JSON error body that
//!   carries the log's bounds as `lowest_offset` and `next_offset` (this is
//!   how a follower learns of a retention gap).
//!
//! Offsets are decimal `u64`s, but no log gets near `MAX_OFFSET`: a peer
//! that claims more is broken or hostile, and refusing it keeps every
//! `next + 1` far from overflow.

use std::time::Duration;

/// The path of the frames endpoint.
pub const FRAMES_PATH: &str = "/replication/frames";

/// Header: where the next pull starts.
pub const NEXT_OFFSET: &str = "x-distlog-next-offset";
/// Header: the serving log's lowest offset.
pub const LOWEST_OFFSET: &str = "x-distlog-lowest-offset";
/// Header: the serving log's next offset.
pub const LOG_NEXT_OFFSET: &str = "x-distlog-log-next-offset";

/// Query parameters of the frames endpoint.
pub mod param {
    pub const FROM: &str = "from";
    pub const MAX_BYTES: &str = "max_bytes";
    pub const MAX_RECORDS: &str = "max_records";
    pub const WAIT_MS: &str = "wait_ms";
}

/// Fields of the 404 body a follower reads.
pub mod bounds_field {
    pub const LOWEST_OFFSET: &str = "lowest_offset";
    pub const NEXT_OFFSET: &str = "next_offset";
}

/// The largest offset a peer may claim: far beyond any real log (2^63
/// records), and far enough below `u64::MAX` for arithmetic on it.
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// One pull, as the follower asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramesRequest {
    pub from: u64,
    pub max_bytes: u64,
    pub max_records: Option<u32>,
    pub wait: Option<Duration>,
}

impl FramesRequest {
    /// The path and query to request from a node's base URL.
    pub fn path_and_query(&self) -> String {
        use param::*;
        let mut url = format!("{FRAMES_PATH}?{FROM}={}&{MAX_BYTES}={}", self.from, self.max_bytes);
        if let Some(n) = self.max_records {
            url.push_str(&format!("&{MAX_RECORDS}={n}"));
        }
        if let Some(wait) = self.wait {
            url.push_str(&format!("&{WAIT_MS}={}", wait.as_millis()));
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_only_the_parameters_it_sets() {
        let mut request = FramesRequest {
            from: 7,
            max_bytes: 1024,
            max_records: None,
            wait: None,
        };
        assert_eq!(request.path_and_query(), "/replication/frames?from=7&max_bytes=1024");
        request.max_records = Some(1);
        request.wait = Some(Duration::from_millis(2500));
        assert_eq!(
            request.path_and_query(),
            "/replication/frames?from=7&max_bytes=1024&max_records=1&wait_ms=2500"
        );
    }
}
