//! The command line: `distlog serve` (flags, each also a `DISTLOG_*`
//! variable, mapped into a `NodeConfig`), `distlog healthcheck`, and the
//! client subcommands (`client`: produce, consume, tail, cluster, ...). The
//! binary parses it, starts tracing, binds and runs until a signal
//! (`run`); everything here is a library so that every refusal is a unit
//! test rather than a spawned process.

mod client;
mod healthcheck;
mod logging;
mod memory;
mod node_config;
mod report;
mod run;
mod serve_args;
mod units;

use clap::{Parser, Subcommand};

pub use client::{ClientCommand, run_client};
pub use healthcheck::{HealthcheckArgs, healthcheck};
pub use logging::init_tracing;
pub use memory::without_huge_pages;
pub use report::failure_line;
pub use run::{Stop, bind, run_until_signal, start_node};
pub use serve_args::{Fsync, LogFormat, ServeArgs};

#[derive(Parser)]
#[command(
    name = "distlog",
    version,
    about = "An append-only, totally ordered log of records served as JSON over HTTP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the log service (every flag can also be set as DISTLOG_<FLAG>).
    ///
    /// Sizes take units (256MiB, 64KiB, 1GB; a bare number is bytes) and durations too (500ms, 30s,
    /// 7d; a bare number is milliseconds).
    Serve(Box<ServeArgs>),
    /// Exit 0 if the node answers 200 on /readyz (ready: serving, and in a cluster a leader is
    /// known), else 1 saying why on stderr. For container health checks: needs no shell or curl.
    Healthcheck(Box<HealthcheckArgs>),
    #[command(flatten)]
    Client(Box<ClientCommand>),
}
