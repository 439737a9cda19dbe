//! distlog: an append-only, totally ordered log of records served as JSON
//! over HTTP, alone, as a read replica, or as a Raft cluster.
//!
//! # Layout
//!
//! Each top module, what it owns, and the top modules it may import
//! (`crate::X`). A module imports only modules below it, so modules never
//! import each other in a circle. `LAYOUT` below is this table as data; a
//! test reads every `crate::` path under `src/` and holds it to it.
//!
//! ```text
//! module       owns                                                   may import
//! server       a whole node: bind, serve `api`, run retention and     api, cluster, replication,
//!              replication, stop gracefully                           auth, log, telemetry
//! api          the HTTP API: routes, handlers, errors, observation    cluster, replication, auth,
//!                                                                     log, wire, telemetry
//! cluster      the Raft cluster (openraft) whose log is the Raft log  log, telemetry
//! replication  read replicas: a follower pulls its leader's frames    log, wire, telemetry
//! telemetry    traces (OpenTelemetry), when asked for                 -
//! log          the storage engine, the frame format and every bit     -
//!              a frame carries (`log::record`)
//! wire         the replication wire format: `api` serves it,          -
//!              `replication` pulls it, neither imports the other
//! auth         who a caller is and what they may do                   -
//! ```
//!
//! The `distlog` binary (`main.rs`) stands above them all and reaches them
//! as `distlog::`. A new module is one line in `LAYOUT` (and one here).

pub mod api;
pub mod auth;
pub mod cluster;
pub mod log;
pub mod replication;
pub mod server;
pub mod telemetry;
pub mod wire;

/// The Layout as data: each top module, bottom up, with the modules below
/// it that it may import.
#[cfg(test)]
const LAYOUT: &[(&str, &[&str])] = &[
    ("auth", &[]),
    ("wire", &[]),
    ("log", &[]),
    ("telemetry", &[]),
    ("replication", &["log", "wire", "telemetry"]),
    ("cluster", &["log", "telemetry"]),
    ("api", &["cluster", "replication", "auth", "log", "wire", "telemetry"]),
    ("server", &["api", "cluster", "replication", "auth", "log", "telemetry"]),
];

#[cfg(test)]
mod layout;
