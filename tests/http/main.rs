//! The HTTP surface of one node, one test binary: the API contract (through
//! `api::app` without a socket, and against real servers on ephemeral
//! ports), odd clients and raw connections, TLS, tokens and the ACL,
//! `openapi.yaml` and `/metrics`.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod by_time;
mod client_edges;
mod conn;
mod conn_edges;
mod console;
mod consumers;
mod handlers;
mod metrics;
mod named_logs;
mod openapi;
mod producers;
mod protobuf;
mod security;
