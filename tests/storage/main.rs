//! The storage engine (`distlog::log`) through its public API, one test
//! binary: appends and reads, crash images, power cuts, failed steps,
//! races, sizing, random sequences against a model, and the loom model of
//! the reader/writer/cut protocol. No server, no process: these need no
//! harness from `tests/common`.

mod background_thread;
mod by_time;
mod crash;
mod engine;
mod failures_at_rolls_cuts_resets;
mod faults;
mod fixtures;
mod loom_protocol;
mod open_and_reopen;
mod power_cut;
mod props;
mod races;
mod raft_files_power_cut;
mod sizing;
