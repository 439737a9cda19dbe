//! `distlog produce`: one record per input line (or per length-prefixed
//! frame with `--binary`), batched, appended through an idempotent
//! producer, each record's offset printed as an NDJSON line
//! (`{"offset":N}`) in input order.
//!
//! Input: JSON lines by default, sent as NDJSON batches (empty lines are
//! skipped); `--raw` sends each line's bytes as a binary record;
//! `--binary` reads frames of a 4-byte big-endian length and that many
//! bytes, each a binary record.

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use clap::Args;
use distlog_client::{Append, PendingAppend, Producer};
use tokio::sync::mpsc;

use super::connect::ConnectArgs;

/// The largest `--binary` frame read (the server's own limit is lower).
const MAX_FRAME: u32 = 64 << 20;

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    connect: ConnectArgs,

    /// Read records from this file [default: standard input].
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,

    /// Input is frames of a 4-byte big-endian length and the record's bytes.
    #[arg(long, conflicts_with = "raw")]
    binary: bool,

    /// Each input line is a binary record (its bytes as they are), not JSON.
    #[arg(long)]
    raw: bool,

    /// Most records in one request (JSON lines only; binary records go one a request).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch_records: u64,

    /// How long a batch waits for more lines before it is sent.
    #[arg(long, value_name = "MS", default_value_t = 5)]
    linger_ms: u64,

    /// Requests in flight at once (1-5). More than 1 keeps input order only on a server that
    /// checks producer sequence numbers (issue 21): requests may arrive in any order.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    max_in_flight: u64,

    /// The producer id [default: a random id per run].
    #[arg(long, value_name = "ID")]
    producer_id: Option<String>,

    /// Print a summary on stderr instead of each offset.
    #[arg(long, short)]
    quiet: bool,
}

enum Input {
    Line(Bytes),
    Frame(Bytes),
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let client = args.connect.client()?;
    let id = args
        .producer_id
        .clone()
        .unwrap_or_else(distlog_client::random_producer_id);
    let in_flight_max = args.max_in_flight as usize;
    let producer = client.producer(&id)?.max_in_flight(in_flight_max);
    let (lines, mut input) = mpsc::channel(4096);
    let reader = spawn_reader(args.file.clone(), args.binary, lines)?;
    let started = Instant::now();
    let mut printer = Printer::new(args.quiet);
    let mut in_flight: VecDeque<(PendingAppend, u64)> = VecDeque::new();
    let linger = Duration::from_millis(args.linger_ms);
    loop {
        let batch = next_batch(&mut input, &args, linger).await;
        let Some(append) = batch else { break };
        if in_flight.len() >= in_flight_max
            && let Some((pending, records)) = in_flight.pop_front()
        {
            printer.print(pending.wait().await?, records)?;
        }
        let records = append.records();
        in_flight.push_back((producer.send(&append).await?, records));
    }
    while let Some((pending, records)) = in_flight.pop_front() {
        printer.print(pending.wait().await?, records)?;
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the input reader panicked"))?
        .context("reading the input")?;
    printer.finish(&producer, started.elapsed());
    Ok(())
}

/// The next request: up to `--batch-records` JSON lines (waiting at most
/// `--linger-ms` after the first for more), or one binary record.
async fn next_batch(input: &mut mpsc::Receiver<Input>, args: &ProduceArgs, linger: Duration) -> Option<Append> {
    let first = input.recv().await?;
    let first = match first {
        Input::Frame(bytes) => return Some(Append::bytes(bytes)),
        Input::Line(line) if args.raw => return Some(Append::bytes(line)),
        Input::Line(line) => line,
    };
    let mut body = BytesMut::from(&first[..]);
    body.extend_from_slice(b"\n");
    let mut records = 1;
    let deadline = tokio::time::Instant::now() + linger;
    while records < args.batch_records {
        let next = match input.try_recv() {
            Ok(next) => next,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(deadline, input.recv()).await {
                Ok(Some(next)) => next,
                _ => break,
            },
        };
        let (Input::Line(line) | Input::Frame(line)) = next;
        body.extend_from_slice(&line);
        body.extend_from_slice(b"\n");
        records += 1;
    }
    Some(Append::ndjson(body.freeze(), records))
}

fn spawn_reader(
    file: Option<PathBuf>,
    binary: bool,
    lines: mpsc::Sender<Input>,
) -> anyhow::Result<std::thread::JoinHandle<std::io::Result<()>>> {
    let source: Box<dyn Read + Send> = match &file {
        Some(path) => Box::new(std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?),
        None => Box::new(std::io::stdin()),
    };
    Ok(std::thread::spawn(move || {
        let mut source = std::io::BufReader::with_capacity(1 << 20, source);
        if binary {
            read_frames(&mut source, &lines)
        } else {
            read_lines(&mut source, &lines)
        }
    }))
}

fn read_lines(source: &mut impl BufRead, lines: &mpsc::Sender<Input>) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if source.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if lines.blocking_send(Input::Line(Bytes::copy_from_slice(&line))).is_err() {
            return Ok(()); // the sender stopped after an error of its own
        }
    }
}

fn read_frames(source: &mut impl Read, frames: &mpsc::Sender<Input>) -> std::io::Result<()> {
    loop {
        let mut length = [0u8; 4];
        match source.read_exact(&mut length) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let length = u32::from_be_bytes(length);
        if length > MAX_FRAME {
            return Err(std::io::Error::other(format!(
                "a frame of {length} bytes (at most {MAX_FRAME})"
            )));
        }
        let mut record = vec![0; length as usize];
        source.read_exact(&mut record)?;
        if frames.blocking_send(Input::Frame(Bytes::from(record))).is_err() {
            return Ok(());
        }
    }
}

struct Printer {
    quiet: bool,
    out: std::io::BufWriter<std::io::Stdout>,
    records: u64,
    requests: u64,
    first: Option<u64>,
    last: Option<u64>,
}

impl Printer {
    fn new(quiet: bool) -> Printer {
        Printer {
            quiet,
            out: std::io::BufWriter::new(std::io::stdout()),
            records: 0,
            requests: 0,
            first: None,
            last: None,
        }
    }

    fn print(&mut self, appended: distlog_client::Appended, records: u64) -> anyhow::Result<()> {
        use std::io::Write;
        self.records += records;
        self.requests += 1;
        self.first.get_or_insert(appended.first_offset);
        self.last = Some(appended.last_offset);
        if self.quiet {
            return Ok(());
        }
        if appended.last_offset - appended.first_offset + 1 == records {
            for offset in appended.first_offset..=appended.last_offset {
                writeln!(self.out, "{{\"offset\":{offset}}}")?;
            }
        } else {
            // A batch whose offsets are not dense (a cluster may skip some).
            let line = serde_json::json!({
                "first_offset": appended.first_offset, "last_offset": appended.last_offset, "records": records
            });
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }

    fn finish(mut self, producer: &Producer, elapsed: Duration) {
        use std::io::Write;
        let _ = self.out.flush();
        if self.quiet {
            let span = match (self.first, self.last) {
                (Some(first), Some(last)) => format!(", offsets {first}..={last}"),
                _ => String::new(),
            };
            eprintln!(
                "produced {} records in {} requests in {:.2?} as producer {}{span}",
                self.records,
                self.requests,
                elapsed,
                producer.id()
            );
        }
    }
}
