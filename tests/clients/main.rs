//! The `distlog-client` crate and the client subcommands of the binary
//! (`produce`, `consume`, `tail`, `check-tail`, `cluster`), against real
//! servers on ephemeral ports: in-process nodes for a standalone node and
//! a replica, `distlog` processes for clusters (one at a time, as in
//! tests/cluster) and for the command line.

#[path = "../common/mod.rs"]
mod common;

mod bench;
mod cli;
mod cluster;
mod library;
mod tls;
