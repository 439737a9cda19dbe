//! `distlog consume`, `distlog tail` and `distlog check-tail`: records
//! printed one a line (see `output`), from an offset, a time, an age or
//! the tail, until the end of the log or, with `--follow`, until Ctrl-C.
//! `--group NAME` starts from the consumer position stored under NAME and
//! stores the position reached after each page and on Ctrl-C.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use distlog_client::{Client, Record, Start};

use super::connect::ConnectArgs;
use super::output::{Format, write_record};
use super::time::parse_time;
use crate::cli::units;

/// Records asked for in one page.
const PAGE: u32 = 1000;

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    connect: ConnectArgs,

    /// Start at this offset [default: the lowest, or the group's position].
    #[arg(long, value_name = "OFFSET", group = "start")]
    from: Option<u64>,

    /// Start at the first record stamped at or after this time (2026-12-01T10:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time, group = "start")]
    from_time: Option<u64>,

    /// Start at records this old or newer (90s, 1h, 7d).
    #[arg(long, value_name = "DURATION", value_parser = units::millis, group = "start")]
    ago: Option<u64>,

    /// Start at the last N records.
    #[arg(long, value_name = "N", group = "start")]
    tail: Option<u64>,

    /// Stop after M records.
    #[arg(long, value_name = "M")]
    limit: Option<u64>,

    /// Wait for new records instead of stopping at the end of the log (Ctrl-C stops).
    #[arg(long, short)]
    follow: bool,

    /// Resume from and store this consumer's position.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,

    /// json: {"offset","timestamp","value"} (value_base64 for bytes); text: offset, timestamp and
    /// value separated by tabs; value: the value alone.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

#[derive(Args)]
pub struct TailArgs {
    #[command(flatten)]
    connect: ConnectArgs,

    /// How many of the last records.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 10)]
    n: u64,

    /// Then wait for new records (Ctrl-C stops).
    #[arg(short = 'f', long)]
    follow: bool,

    /// json, text (tab-separated) or value (the value alone).
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

#[derive(Args)]
pub struct CheckTailArgs {
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.connect.client()?;
    let start = match (args.from, args.from_time, args.ago, args.tail) {
        (Some(offset), ..) => Start::Offset(offset),
        (_, Some(ms), ..) => Start::Timestamp(ms),
        (_, _, Some(ago), _) => Start::Timestamp(now_ms().saturating_sub(ago)),
        (.., Some(n)) => Start::Tail(n.max(1)),
        (None, None, None, None) => match &args.group {
            Some(group) => Start::Offset(client.position(group).await?.map_or(0, |p| p.offset)),
            None => Start::Offset(0),
        },
    };
    let reader = Reader {
        client,
        follow: args.follow,
        limit: args.limit,
        group: args.group,
        format: args.format,
    };
    reader.run(start).await
}

pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let reader = Reader {
        client: args.connect.client()?,
        follow: args.follow,
        limit: None,
        group: None,
        format: args.format,
    };
    reader.run(Start::Tail(args.n.max(1))).await
}

pub async fn check_tail(args: CheckTailArgs) -> anyhow::Result<()> {
    let next = args.connect.client()?.next_offset().await?;
    println!("{next}");
    Ok(())
}

struct Reader {
    client: Client,
    follow: bool,
    limit: Option<u64>,
    group: Option<String>,
    format: Format,
}

impl Reader {
    async fn run(&self, start: Start) -> anyhow::Result<()> {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut left = self.limit.unwrap_or(u64::MAX);
        // The first page finds where a time or a tail starts.
        let first = self.client.page(start, PAGE, Duration::ZERO).await?;
        let mut position = self.print(&mut out, &first.records, &mut left, first.next_offset)?;
        out.flush()?;
        self.store(position).await?;
        if left == 0 || (matches!(start, Start::Tail(_)) && !self.follow) {
            return Ok(());
        }
        if !self.follow {
            // The records there are now, then stop.
            while left > 0 {
                let page = self.client.read_range(position, PAGE).await?;
                if page.records.is_empty() {
                    break;
                }
                position = self.print(&mut out, &page.records, &mut left, page.next_offset)?;
                self.store(position).await?;
            }
            out.flush()?;
            return Ok(());
        }
        let mut stream = self.client.stream(position).page_size(PAGE);
        let stop = tokio::signal::ctrl_c();
        tokio::pin!(stop);
        while left > 0 {
            let record = tokio::select! {
                record = stream.next() => record?,
                _ = &mut stop => break,
            };
            let Some(record) = record else { break };
            position = self.print(&mut out, std::slice::from_ref(&record), &mut left, record.offset + 1)?;
            // Print what else has arrived before waiting again.
            let more = stream.drain_buffered();
            if let Some(last) = more.last() {
                position = self.print(&mut out, &more, &mut left, last.offset + 1)?;
            }
            out.flush()?;
            self.store(position).await?;
        }
        out.flush()?;
        self.store(position).await?;
        Ok(())
    }

    /// Prints `records` while `left` lasts; returns the position after
    /// them: `after` when all were printed, else the first one not printed.
    fn print(&self, out: &mut impl Write, records: &[Record], left: &mut u64, after: u64) -> anyhow::Result<u64> {
        for record in records {
            if *left == 0 {
                return Ok(record.offset);
            }
            write_record(out, record, self.format).context("writing to standard output")?;
            *left -= 1;
        }
        Ok(after)
    }

    async fn store(&self, position: u64) -> anyhow::Result<()> {
        if let Some(group) = &self.group {
            self.client
                .commit(group, position, None)
                .await
                .with_context(|| format!("storing the position of {group}"))?;
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
