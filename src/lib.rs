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
//! cli          the command line: flags, their refusals, logging,      node, http, logs, mode, api,
//!              bind, run until a signal (`main.rs` only calls it)     auth, log, replication, telemetry
//! node         a whole node started from a listener it is handed:     http, api, logs, mode, auth,
//!              its mode's parts, the HTTP layer, a graceful stop      log, telemetry
//! http         the HTTP connection layer: TLS, connection limits,     api, auth
//!              timeouts, serving `api`
//! api          the HTTP API: routes, handlers, errors, observation    logs, mode, cluster, replication,
//!                                                                     auth, log, wire, telemetry
//! logs         named logs: names, settings, the catalogue on disk     mode, cluster, log
//! mode         what this node is (standalone, replica, member):       cluster, replication, log,
//!              starts its parts, takes appends, hides offsets,        telemetry
//!              answers status and readiness
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
pub mod cli;
pub mod cluster;
pub mod http;
pub mod log;
pub mod logs;
pub mod mode;
pub mod node;
pub mod replication;
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
    ("mode", &["cluster", "replication", "log", "telemetry"]),
    ("logs", &["mode", "cluster", "log"]),
    (
        "api",
        &[
            "logs",
            "mode",
            "cluster",
            "replication",
            "auth",
            "log",
            "wire",
            "telemetry",
        ],
    ),
    ("http", &["api", "auth"]),
    ("node", &["http", "api", "logs", "mode", "auth", "log", "telemetry"]),
    (
        "cli",
        &[
            "node",
            "http",
            "logs",
            "mode",
            "api",
            "auth",
            "log",
            "replication",
            "telemetry",
        ],
    ),
];

#[cfg(test)]
mod layout;
