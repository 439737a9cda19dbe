//! distlog: an append-only, totally ordered log of records served as JSON
//! over HTTP. `log` is the storage engine, `api` the HTTP layer,
//! `replication` the read replicas, `server` ties them into a node. `wire`
//! is the replication wire format that `api` serves and `replication` pulls.
//! `cluster` makes nodes a Raft cluster whose log is the Raft log.
//! `telemetry` exports traces (OpenTelemetry) when asked to.

pub mod api;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod http;
pub mod log;
pub mod mode;
pub mod node;
pub mod replication;
pub mod telemetry;
pub mod wire;
