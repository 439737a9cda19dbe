//! Read replicas: a follower pulls its leader's frames over HTTP
//! (`GET /replication/frames`, see `crate::wire`) from its own
//! `next_offset`, checks each frame's checksum and appends it with the
//! leader's offset and timestamp. Fetching and appending are pipelined.
//!
//! Before streaming, and after every reconnect, the follower checks that its
//! newest record is byte for byte the leader's record at that offset; if
//! not, the histories diverged and replication stops (reads go on) until an
//! operator restarts with `--follow-reset`. When the leader has already
//! deleted records the follower never copied (retention), the follower says
//! so loudly and restarts its own log, empty, at the leader's lowest offset:
//! its segments then begin there, with no marker record in between.

mod answer;
mod config;
mod follower;
mod metrics;
mod status;

pub use config::FollowConfig;
pub use follower::spawn_follower;
pub use metrics::describe_metrics;
pub use status::{FollowerStatus, ReplicationState, StatusSnapshot};
