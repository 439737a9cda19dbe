//! The Raft cluster (openraft): quorum writes, elections, membership.
//!
//! One log, not two: the segmented log (`crate::log`) *is* the Raft log.
//! Entry `i` is the record at offset `i`; Raft's own entries (a leader's
//! blank entry, membership changes) are control records that readers skip,
//! so offsets in a cluster increase but may skip values. What is ours:
//! - `types`: the Raft type configuration;
//! - `codec`: entries as frames, and the append-entries wire body;
//! - `terms`: each entry's term, beside the log (a leader-epoch file);
//! - `durable`: the small checksummed files Raft keeps (vote, committed...);
//! - `log_store`: openraft's log storage over our log;
//! - `state_machine`: applying = making visible; batches whole or never;
//! - `consumers`: consumer positions as control entries, applied into the tables;
//! - `catalogue`: named logs as control entries of group 0, applied into
//!   its tables; `group` a named log's own Raft group on this node;
//!   `spread` hands each group's leadership back to its preferred leader;
//! - `network`: peer RPCs over HTTP (served by `api::cluster`), `rpc` the
//!   serving side, `sender` who may speak for which member, `validate`
//!   their checks before openraft sees them,
//!   `peer_health` each peer's reachability, logged when it changes;
//!   `pipeline` several append-entries in flight per follower, `gate` the
//!   follower handing them to its Raft core in order; `pulse` named groups'
//!   heartbeats to one node coalesced into one request;
//! - `contact`: whether this node is in touch with its leader (check-quorum);
//! - `reads`: whether an offset a member does not show yet is committed;
//! - `node`, `formation`, `membership`, `status`: a running node, forming
//!   and growing the cluster from the seed list, `GET /cluster`;
//! - `reconcile`: the leader finishes joins that stopped halfway;
//! - `quarantine`: a member's corrupt sealed segment moved aside at open,
//!   where the cluster can supply it again;
//! - `removal`: a member the cluster removed finds out and stands still;
//! - `stages`: where a replicated write's time goes (a histogram);
//! - `failpoint`: crash points in multi-step changes, for the fault tests;
//! - `start`: starting a node, the top: nothing here imports it.
//!
//! Design and traps: `docs/cluster-design.md`, `docs/openraft-0.10-notes.md`.

mod catalogue;
mod codec;
mod consumers;
mod contact;
mod contradiction;
mod durable;
mod error;
pub mod failpoint;
mod formation;
mod gate;
mod group;
mod identity;
mod last_run;
mod log_store;
mod marks;
mod membership;
mod metrics;
mod moves;
mod network;
mod node;
mod patience;
mod peer_health;
mod pipeline;
mod pulse;
mod quarantine;
mod quiet;
mod reads;
mod recent;
mod reconcile;
mod recovery;
mod removal;
mod repair;
pub mod retention;
mod rpc;
mod sender;
mod spread;
mod stages;
mod start;
mod starting;
mod state_machine;
mod status;
mod tables;
mod terms;
mod types;
mod validate;

pub use catalogue::{
    Catalogue, CatalogueChange, FIRST_GROUP, Outcome as CatalogueOutcome, PlacedLog, Refusal as CatalogueRefusal,
};
pub use codec::{decode_append, encode_append};
pub use durable::{Durable, MAX_DOCUMENT};
pub use error::ClusterError;
pub use failpoint::{FAILPOINT_ENV, JOIN_AFTER_LEARNER};
pub use formation::JoinRequest;
pub use gate::{GATED_HEADER, Position, STREAM_HEADER};
pub use group::replica_made_for;
pub use log_store::{APPEND_BUDGET_BYTES, LogStore};
pub use metrics::describe_metrics;
pub use moves::{GroupMembership, Moving};
pub use network::{
    APPEND_PATH, COMMIT_HEADER, PRE_VOTE_PATH, SNAPSHOT_PATH, SnapshotBody, TARGET_HEADER, TRANSFER_PATH, VOTE_PATH,
};
pub use node::{Cluster, ClusterConfig, RaftNode};
pub use pulse::{HEARTBEATS_PATH, PulseAnswer, Pulses, WAIT_HEADER, decode_batch, item_deadline, pulse_body_limit};
pub use quarantine::{OpenError, QUARANTINE_DIR, open_member_log};
pub use quiet::{QUIET_PATH, QuietAnswer, QuietPulse};
pub use reads::Beyond;
pub use sender::{Caller, HostProof, SENDER_HEADER};
pub use spread::Spreading;
pub use start::StartError;
pub use starting::{StartProgress, StartStep};
pub use state_machine::StateMachine;
pub use status::{ClusterStatus, MemberStatus};
pub use tables::Tables;
pub use types::{Applied, Member, NodeId, TypeConfig, UserRecord};
