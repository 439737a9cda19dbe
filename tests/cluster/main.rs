//! Cluster mode (Raft), one test binary: real `distlog serve --peers`
//! processes under faults, followers of a cluster, tokens and mutual TLS
//! between peers, one write traced across the nodes, the Raft store's crash
//! points and openraft's conformance suite, and the fault harness's own
//! tests. Clusters of real processes run one at a time however many test
//! threads there are (`common::cluster::exclusive`): two at once on a small
//! machine starve each other's elections.

#[path = "../common/mod.rs"]
mod common;

mod by_time;
mod consumers;
mod faults;
mod follow;
mod formation;
mod forward;
mod full_disk;
mod graceful;
mod harness_selftest;
mod hostile_peers;
mod hostile_sender;
mod identity;
mod joins;
mod named_logs;
mod partitions;
mod peer_port;
mod pipeline;
mod power_cuts;
mod producers;
mod raft_conformance;
mod schedule_steps;
mod security;
mod store_crashes;
mod tls;
mod traces;
