//! The `distlog` binary: parses the command line, starts tracing, binds,
//! and runs the node until a signal, or runs a client subcommand. Everything it calls is in the library
//! (`distlog::cli`, `distlog::node`).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use distlog::cli::{self, Cli, Command, ServeArgs};
use distlog::telemetry::Telemetry;

/// A failed start is one line on stderr (`cli::failure_line`), exit 1.
fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Healthcheck(args) => return cli::healthcheck(*args),
        Command::Client(command) => return cli::run_client(*command),
        Command::Serve(args) => args,
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("distlog: {}", cli::failure_line(&error, args.data_dir()));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let telemetry = Telemetry::start(args.otlp_endpoint(), &args.instance())?;
    let _flush_logs_on_exit = cli::init_tracing(args.log_format(), args.access_log(), telemetry.as_ref());
    cli::without_huge_pages();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(args))
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.node_config()?;
    let listener = cli::bind(args.listen()).await?;
    let peers = match args.peer_listen() {
        Some(addr) => Some(cli::bind(addr).await?),
        None => None,
    };
    let node = cli::start_node(config, listener, peers).await?;
    let stop = cli::run_until_signal(&node).await?;
    node.shutdown().await?;
    match stop {
        cli::Stop::Asked => Ok(()),
        cli::Stop::Restart(why) => anyhow::bail!("stopped to be started again, which repairs this node: {why}"),
    }
}

/// mimalloc: the server allocates and frees small buffers on every request,
/// and glibc's malloc showed up as a tenth of its CPU time under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
