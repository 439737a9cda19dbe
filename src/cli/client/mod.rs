//! The client subcommands (`produce`, `consume`, `tail`, `check-tail`,
//! `cluster ...`, `logs ...`, `bench`), built on the `distlog-client` crate. Each runs
//! on its own runtime and ends with one line on stderr and exit 1 when it
//! fails.

mod bench;
mod cluster;
mod connect;
mod consume;
mod logs;
mod output;
mod produce;
mod time;

use std::process::ExitCode;

use bench::BenchArgs;
use clap::Subcommand;
use cluster::ClusterArgs;
use consume::{CheckTailArgs, ConsumeArgs, TailArgs};
use logs::LogsArgs;
use produce::ProduceArgs;

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Append one record per input line (NDJSON batches through an idempotent producer) and
    /// print each record's offset as NDJSON.
    Produce(ProduceArgs),
    /// Print records as NDJSON from an offset, a time or the tail; --follow waits for more.
    Consume(ConsumeArgs),
    /// Print the last records (-n, default 10); -f follows.
    Tail(TailArgs),
    /// Print the offset the next record will get.
    CheckTail(CheckTailArgs),
    /// The cluster's members; add, remove, hand leadership over.
    Cluster(ClusterArgs),
    /// Named logs: list, create, delete, describe.
    Logs(LogsArgs),
    /// Load the log with hash-chained records and verify every one: throughput, ack and
    /// end-to-end latency, errors.
    Bench(BenchArgs),
}

/// Runs a client subcommand to its end: exit 0, or 1 with one line saying why.
pub fn run_client(command: ClientCommand) -> ExitCode {
    let name = match &command {
        ClientCommand::Produce(_) => "produce",
        ClientCommand::Consume(_) => "consume",
        ClientCommand::Tail(_) => "tail",
        ClientCommand::CheckTail(_) => "check-tail",
        ClientCommand::Cluster(_) => "cluster",
        ClientCommand::Logs(_) => "logs",
        ClientCommand::Bench(_) => "bench",
    };
    let run = async move {
        match command {
            ClientCommand::Produce(args) => produce::run(args).await,
            ClientCommand::Consume(args) => consume::run(args).await,
            ClientCommand::Tail(args) => consume::tail(args).await,
            ClientCommand::CheckTail(args) => consume::check_tail(args).await,
            ClientCommand::Cluster(args) => cluster::run(args).await,
            ClientCommand::Logs(args) => logs::run(args).await,
            ClientCommand::Bench(args) => bench::run(args).await,
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let line = format!("{error:#}").replace('\n', " ");
            eprintln!("distlog {name}: {line}");
            ExitCode::FAILURE
        }
    }
}
