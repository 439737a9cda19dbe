//! Where a replicated write's time goes: one histogram,
//! `distlog_raft_stage_seconds{stage}`, of the commit path's steps as each
//! node sees them. `scripts/cluster-load.sh latency` reads it from the
//! leader and a follower and prints the mean of each stage in path order.
//!
//! On the leader, a write's milestones, each timed from the moment its
//! records were handed to the Raft core (`UserRecord::proposed_at`, kept in
//! memory with the entry, never on the wire), so that they add up along
//! one write's path without a clock shared between nodes:
//! - `queued`: the Raft core handed its entries to the log store;
//! - `written`: its frames are written (not synced);
//! - `sent`: an append-entries request carrying it left for a follower
//!   (one a follower);
//! - `acknowledged`: a follower answered that request (one a follower);
//! - `applied`: the state machine applied it (committed);
//! - `commit`: its writer is answered (applied and visible to readers).
//!
//! Steps timed on their own, on every node:
//! - `log_write`: writing an append's frames into the log (no sync);
//! - `log_sync`: from the write to the frames being durable;
//! - `append_rpc`: on the leader, one append-entries request that carries
//!   entries, from sending to the follower's answer;
//! - `peer_append`: on a follower, a peer's append-entries request from
//!   its decoded body to the answer (the Raft core's queue, the write and
//!   the sync).
//!
//! `acknowledged - sent - peer_append` is what the network, HTTP and the
//! two nodes' connection tasks cost both ways.

use std::time::Instant;

use openraft::EntryPayload;

use super::types::Entry;

pub const STAGE_SECONDS: &str = "distlog_raft_stage_seconds";

pub const QUEUED: &str = "queued";
pub const WRITTEN: &str = "written";
pub const SENT: &str = "sent";
pub const ACKNOWLEDGED: &str = "acknowledged";
pub const APPLIED: &str = "applied";
pub const COMMIT: &str = "commit";
pub const LOG_WRITE: &str = "log_write";
pub const LOG_SYNC: &str = "log_sync";
pub const APPEND_RPC: &str = "append_rpc";
pub const PEER_APPEND: &str = "peer_append";

/// Records the time since `started` under `stage`.
pub fn record(stage: &'static str, started: Instant) {
    metrics::histogram!(STAGE_SECONDS, "stage" => stage).record(started.elapsed().as_secs_f64());
}

/// Records `milestone` for each of `entries` this node proposed (a
/// follower's entries came off the wire and carry no proposal time).
pub fn reached<'a>(milestone: &'static str, entries: impl IntoIterator<Item = &'a Entry>) {
    let mut histogram = None;
    for entry in entries {
        if let EntryPayload::Normal(record) = &entry.payload
            && let Some(proposed_at) = record.proposed_at
        {
            histogram
                .get_or_insert_with(|| metrics::histogram!(STAGE_SECONDS, "stage" => milestone))
                .record(proposed_at.elapsed().as_secs_f64());
        }
    }
}
