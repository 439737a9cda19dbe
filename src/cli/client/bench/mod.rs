//! `distlog bench`: producers append hash-chained records (see `chain`)
//! through idempotent producers, consumers tail the log and verify every
//! record as it arrives, and after the run a catch-up read verifies
//! everything written, timed on its own. A progress line each second on a
//! terminal, a final table (or `--json`), exit 1 if any record was lost,
//! duplicated, reordered or altered.

mod chain;
mod stats;

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use distlog_client::{Append, Appended, Client, Error, PendingAppend, Producer, proto};
use tokio::sync::watch;

use super::connect::ConnectArgs;
use chain::{Chain, Faults, Verifier};
use stats::{Live, Report};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    connect: ConnectArgs,

    /// Concurrent producers, each with its own producer id and hash chain.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    producers: u32,

    /// Consumers tailing and verifying the log while it is written (0: none).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=100))]
    consumers: u32,

    /// Bytes of each record (a JSON line; at least the bench's own fields, about 70).
    #[arg(long, value_name = "SIZE", default_value = "100", value_parser = crate::cli::units::bytes)]
    record_size: u64,

    /// Records in each request (an NDJSON batch).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch_size: u64,

    /// How long to produce.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::cli::units::millis, conflicts_with = "records")]
    duration: u64,

    /// Produce this many records in all, then stop.
    #[arg(long, value_name = "N")]
    records: Option<u64>,

    /// Records per second in all, spread over the producers [default: as fast as acknowledged].
    /// Latency is then measured from each request's intended send time.
    #[arg(long, value_name = "RECORDS_PER_S")]
    rate: Option<f64>,

    /// Requests each producer keeps in flight (1-5). More than 1 keeps order only on a server
    /// that checks producer sequence numbers (issue 21).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    max_in_flight: u64,

    /// Append without producer ids: plain `POST /`s, each writer (--producers) with one
    /// request in flight, retried only when the failure proves nothing was written (the
    /// load of `curl -d` or wrk; a failure that may have written stops that writer).
    #[arg(long, conflicts_with = "max_in_flight")]
    plain: bool,

    /// How batches of more than one record are sent: `json` (NDJSON) or `protobuf`
    /// (a `RecordBatch` of JSON records, proto/distlog.proto).
    #[arg(long, value_enum, default_value_t = Encoding::Json)]
    encoding: Encoding,

    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let client = args.connect.client()?;
    let start_offset = client.next_offset().await?;
    let live = Arc::new(Mutex::new(Live::default()));
    let (end_tx, end_rx) = watch::channel(None::<u64>);
    let consumers: Vec<_> = (0..args.consumers)
        .map(|_| tokio::spawn(consume(client.clone(), start_offset, end_rx.clone(), Arc::clone(&live))))
        .collect();
    let started = Instant::now();
    let progress = tokio::spawn(progress(Arc::clone(&live), started));
    let quota = args.records.map(|total| share(total, args.producers));
    let producers: Vec<_> = (0..args.producers)
        .map(|p| {
            let plan = Plan {
                producer: p,
                quota: quota.as_ref().map(|q| q[p as usize]),
                until: (args.records.is_none()).then(|| started + Duration::from_millis(args.duration)),
                batch: args.batch_size,
                record_bytes: args.record_size as usize,
                batch_interval: args
                    .rate
                    .map(|r| Duration::from_secs_f64(args.batch_size as f64 * args.producers as f64 / r.max(1e-3))),
                in_flight: args.max_in_flight as usize,
                plain: args.plain,
                encoding: args.encoding,
            };
            tokio::spawn(produce(client.clone(), plan, Arc::clone(&live), started))
        })
        .collect();
    let mut written = Vec::new();
    for producer in producers {
        written.push(producer.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.abort();
    let end_offset = client.next_offset().await?;
    let _ = end_tx.send(Some(end_offset));
    let mut verified = Vec::new();
    for consumer in consumers {
        let (verifier, _) = consumer.await??;
        let mut faults = verifier.faults;
        faults.lost += verifier.missing_tails(&written);
        verified.push((verifier.records, faults));
    }
    let catch_up = catch_up(&client, start_offset, end_offset, &written).await?;
    let live = std::mem::take(&mut *live.lock().unwrap_or_else(|p| p.into_inner()));
    let report = Report {
        seconds,
        totals: live.totals,
        ack: live.ack,
        end_to_end: live.end_to_end,
        consumers: verified,
        catch_up: Some(catch_up),
        start_offset,
        end_offset,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    if report.failed() {
        anyhow::bail!("the log lost, repeated, reordered or altered records (see above)");
    }
    Ok(())
}

/// `total` split over `n` as evenly as it goes.
fn share(total: u64, n: u32) -> Vec<u64> {
    let n = u64::from(n);
    (0..n).map(|i| total / n + u64::from(i < total % n)).collect()
}

struct Plan {
    producer: u32,
    quota: Option<u64>,
    until: Option<Instant>,
    batch: u64,
    record_bytes: usize,
    batch_interval: Option<Duration>,
    in_flight: usize,
    plain: bool,
    encoding: Encoding,
}

/// How the bench sends batches (`--encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    Json,
    Protobuf,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// How a writer appends: through a producer handle (retried without
/// duplicates, up to `in_flight` requests at once), or plain `POST /`s,
/// one at a time (what `curl -d` and wrk's POST load send).
enum Writer {
    Producer(Producer),
    Plain(Client),
}

/// An append sent and not yet acknowledged.
struct Sent {
    intended: Instant,
    records: u64,
    bytes: u64,
    pending: Pending,
}

enum Pending {
    /// Sent by the producer's own task.
    Producer(PendingAppend),
    /// Answered already.
    Done(Result<Appended, Error>),
}

impl Sent {
    /// Waits for the answer and counts it; the records acknowledged.
    async fn settle(self, live: &Mutex<Live>) -> Result<u64, ()> {
        let answer = match self.pending {
            Pending::Producer(pending) => pending.wait().await,
            Pending::Done(answer) => answer,
        };
        match answer {
            Ok(_) => {
                lock(live).acked(self.intended.elapsed(), self.records, self.bytes);
                Ok(self.records)
            }
            Err(error) => {
                lock(live).failed(kind(&error));
                Err(())
            }
        }
    }
}

/// One writer's run; returns how many records it had acknowledged. Its
/// requests are awaited in this task (no task a request: at wrk's rates the
/// hops cost the client as much as the work).
async fn produce(client: Client, plan: Plan, live: Arc<Mutex<Live>>, started: Instant) -> anyhow::Result<u64> {
    let (writer, window) = if plan.plain {
        (Writer::Plain(client), 1)
    } else {
        let id = format!("{}-{}", distlog_client::random_producer_id(), plan.producer);
        let producer = client.producer(&id)?.max_in_flight(plan.in_flight);
        (Writer::Producer(producer), plan.in_flight)
    };
    let mut chain = Chain::new(plan.producer, plan.record_bytes);
    let mut sent = 0u64;
    let mut acknowledged = 0;
    let mut in_flight = VecDeque::with_capacity(window);
    for batch_index in 0u32.. {
        let records = match plan.quota {
            Some(quota) => plan.batch.min(quota - sent),
            None => plan.batch,
        };
        let intended = match plan.batch_interval {
            Some(interval) => started + interval * batch_index,
            None => Instant::now(),
        };
        if records == 0 || plan.until.is_some_and(|until| intended >= until) {
            break;
        }
        if plan.batch_interval.is_some() {
            tokio::time::sleep_until(intended.into()).await;
        }
        if in_flight.len() >= window {
            let oldest: Sent = in_flight.pop_front().expect("the window is full");
            match oldest.settle(&live).await {
                Ok(records) => acknowledged += records,
                // A writer stops at its first failure, so what it wrote is a prefix.
                Err(()) => return Ok(acknowledged),
            }
        }
        let sent_us = now_us().saturating_sub(intended.elapsed().as_micros() as u64);
        let append = batch(&mut chain, sent_us, records, plan.record_bytes, plan.encoding);
        let bytes = append.body_len() as u64;
        let pending = match &writer {
            // One in flight: sent from this task (a task for it is a hop each way).
            Writer::Producer(producer) if window == 1 => Pending::Done(producer.append(&append).await),
            Writer::Producer(producer) => match producer.send(&append).await {
                Ok(pending) => Pending::Producer(pending),
                Err(error) => {
                    lock(&live).failed(kind(&error));
                    break;
                }
            },
            Writer::Plain(client) => Pending::Done(client.append(&append).await),
        };
        sent += records;
        in_flight.push_back(Sent {
            intended,
            records,
            bytes,
            pending,
        });
    }
    for sent in in_flight {
        match sent.settle(&live).await {
            Ok(records) => acknowledged += records,
            Err(()) => break,
        }
    }
    Ok(acknowledged)
}

/// The next `records` of the chain as one append: one record goes as plain
/// JSON, as `curl -d` and wrk's POST load send it; more as an NDJSON batch,
/// or a protobuf one of JSON records.
fn batch(chain: &mut Chain, sent_us: u64, records: u64, record_bytes: usize, encoding: Encoding) -> Append {
    let mut body = Vec::with_capacity(records as usize * (record_bytes + 1));
    for _ in 0..records {
        chain.next_line(sent_us, &mut body);
    }
    match (records, encoding) {
        (1, _) => {
            body.pop();
            Append::json_text(body)
        }
        (_, Encoding::Json) => Append::ndjson(body, records),
        (_, Encoding::Protobuf) => Append::protobuf(&protobuf_batch(body)),
    }
}

/// The lines of an NDJSON `body` as a `RecordBatch` of JSON records, each a
/// slice of the body.
fn protobuf_batch(body: Vec<u8>) -> proto::RecordBatch {
    let body = bytes::Bytes::from(body);
    let mut records = Vec::new();
    let mut start = 0;
    for (at, _) in body.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        records.push(proto::Record {
            value: body.slice(start..at),
            format: proto::Format::Json.into(),
            ..Default::default()
        });
        start = at + 1;
    }
    proto::RecordBatch { records }
}

fn lock(live: &Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    live.lock().unwrap_or_else(|p| p.into_inner())
}

fn kind(error: &Error) -> String {
    match error {
        Error::Server { code, .. } => code.clone(),
        Error::GaveUp { last, .. } => format!("gave_up:{}", kind(last)),
        Error::Unreachable { .. } => "unreachable".into(),
        Error::OutcomeUnknown { .. } => "no_answer".into(),
        Error::ProducerStopped { .. } => "producer_stopped".into(),
        other => format!("{other}").split(':').next().unwrap_or("other").to_string(),
    }
}

/// Tails the log from `start` and verifies it until `end` is known and
/// reached (or 30 s after it is known).
async fn consume(
    client: Client,
    start: u64,
    mut end: watch::Receiver<Option<u64>>,
    live: Arc<Mutex<Live>>,
) -> anyhow::Result<(Verifier, u64)> {
    let mut stream = client.stream(start).wait(Duration::from_millis(500));
    let mut verifier = Verifier::default();
    let mut give_up: Option<tokio::time::Instant> = None;
    loop {
        if let Some(end) = *end.borrow()
            && stream.position() >= end
        {
            break;
        }
        let record = tokio::select! {
            record = stream.next() => record?,
            _ = end.changed(), if give_up.is_none() => {
                give_up = Some(tokio::time::Instant::now() + Duration::from_secs(30));
                continue;
            }
            _ = tokio::time::sleep_until(give_up.unwrap_or_else(far_future)), if give_up.is_some() => break,
        };
        let Some(record) = record else { break };
        if let Some(sent_us) = verifier.check(record.json()) {
            let latency = Duration::from_micros(now_us().saturating_sub(sent_us));
            stats::record_latency(&mut lock(&live).end_to_end, latency);
        }
    }
    Ok((verifier, stream.position()))
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

/// Reads `start..end` again, verifying it, timed.
async fn catch_up(client: &Client, start: u64, end: u64, written: &[u64]) -> anyhow::Result<(u64, u64, f64, Faults)> {
    let began = Instant::now();
    let mut verifier = Verifier::default();
    let mut bytes = 0u64;
    let mut from = start;
    while from < end {
        let page = client.read_range(from, 10_000).await?;
        if page.records.is_empty() {
            break;
        }
        for record in &page.records {
            if record.offset >= end {
                break;
            }
            bytes += record.bytes().len() as u64;
            verifier.check(record.json());
        }
        from = page.next_offset;
    }
    let mut faults = verifier.faults;
    faults.lost += verifier.missing_tails(written);
    Ok((verifier.records, bytes, began.elapsed().as_secs_f64(), faults))
}

/// A progress line each second, on a terminal only.
async fn progress(live: Arc<Mutex<Live>>, started: Instant) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let line = lock(&live).progress_line(started.elapsed(), last.elapsed());
        last = Instant::now();
        eprintln!("{line}");
    }
}
