//! `distlog logs ls|create|rm|describe`: named logs (issue 22), managed
//! through the leader.

use std::io::Write;

use clap::{Args, Subcommand};
use distlog_client::{LogInfo, LogSettings};

use super::connect::ConnectArgs;

#[derive(Args)]
pub struct LogsArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// A table of the named logs: name, next and lowest offset, size, retention.
    Ls {
        #[command(flatten)]
        connect: ConnectArgs,
        /// GET /logs as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create the log NAME (the same settings again is not an error).
    Create {
        #[command(flatten)]
        connect: ConnectArgs,
        name: String,
        /// Replicas in a cluster (1, 3 or 5) [default: min(3, nodes)].
        #[arg(long)]
        replicas: Option<u64>,
        /// Delete the oldest segments while the log is larger than this many bytes [default: the node's flag].
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<u64>,
        /// Delete segments whose newest record is older than this many ms [default: the node's flag].
        #[arg(long, value_name = "MS")]
        retention_ms: Option<u64>,
        /// The largest record value in bytes [default: the node's flag].
        #[arg(long, value_name = "BYTES")]
        max_record_bytes: Option<u64>,
    },
    /// Delete the log NAME with every record, consumer position and producer it holds.
    Rm {
        #[command(flatten)]
        connect: ConnectArgs,
        name: String,
    },
    /// The log NAME's settings, bounds and size, as JSON.
    Describe {
        #[command(flatten)]
        connect: ConnectArgs,
        name: String,
    },
}

pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Ls { connect, json } => {
            let logs = connect.client()?.logs().await?;
            if json {
                let raw: Vec<_> = logs.iter().map(|log| &log.raw).collect();
                println!("{}", serde_json::to_string_pretty(&raw)?);
            } else {
                print_table(&logs)?;
            }
        }
        Action::Create {
            connect,
            name,
            replicas,
            retention_bytes,
            retention_ms,
            max_record_bytes,
        } => {
            let settings = LogSettings {
                replicas,
                retention_bytes,
                retention_ms,
                max_record_bytes,
            };
            let log = connect.client()?.create_log(&name, &settings).await?;
            println!("{}", serde_json::to_string_pretty(&log.raw)?);
        }
        Action::Rm { connect, name } => {
            connect.client()?.delete_log(&name).await?;
            eprintln!("deleted log {name}");
        }
        Action::Describe { connect, name } => {
            let log = connect.client()?.describe_log(&name).await?;
            println!("{}", serde_json::to_string_pretty(&log.raw)?);
        }
    }
    Ok(())
}

fn print_table(logs: &[LogInfo]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<32} {:>12} {:>12} {:>14} {:>16} {:>14}",
        "NAME", "NEXT", "LOWEST", "BYTES", "RETENTION_BYTES", "RETENTION_MS"
    )?;
    let or_flag = |value: Option<u64>| value.map_or("-".to_string(), |v| v.to_string());
    for log in logs {
        writeln!(
            out,
            "{:<32} {:>12} {:>12} {:>14} {:>16} {:>14}",
            log.name,
            log.next_offset,
            log.lowest_offset,
            log.size_bytes,
            or_flag(log.settings.retention_bytes),
            or_flag(log.settings.retention_ms),
        )?;
    }
    Ok(())
}
