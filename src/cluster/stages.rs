//! Where a replicated write's time goes: one histogram,
//! `distlog_raft_stage_seconds{stage}`, of the commit path's steps as each
//! node sees them. `scripts/cluster-load.sh latency` reads it from the
//! leader and a follower and prints the mean of each stage.
//!
//! Stages (the leader's first; a follower records the `log_*` and `peer_*`
//! stages for the entries it is sent):
//! - `commit`: on the leader, from handing records to the Raft core to
//!   their answer (committed and applied);
//! - `log_write`: writing an append's frames into the log (no sync);
//! - `log_sync`: from the write to the frames being durable;
//! - `append_rpc`: on the leader, one append-entries request that carries
//!   entries, from sending to the follower's answer;
//! - `peer_append`: on a follower, a peer's append-entries request from
//!   its decoded body to the answer (the Raft core's queue, the write and
//!   the sync).

use std::time::Instant;

pub const STAGE_SECONDS: &str = "distlog_raft_stage_seconds";

pub const COMMIT: &str = "commit";
pub const LOG_WRITE: &str = "log_write";
pub const LOG_SYNC: &str = "log_sync";
pub const APPEND_RPC: &str = "append_rpc";
pub const PEER_APPEND: &str = "peer_append";

/// Records the time since `started` under `stage`.
pub fn record(stage: &'static str, started: Instant) {
    metrics::histogram!(STAGE_SECONDS, "stage" => stage).record(started.elapsed().as_secs_f64());
}
