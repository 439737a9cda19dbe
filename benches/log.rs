//! Storage engine benchmarks (criterion): `cargo bench --bench log`.
//!
//! - `append_never/1KiB`: one writer, `Durability::Never`, bytes/s of record values;
//!   `append_never/1KiB_batch64` the same in `append_batch`es of 64 records.
//! - `append_always/writers/{1,8,64}`: `Durability::Always` (group commit), records/s.
//!   One writer means one fdatasync per record: the baseline group commit improves on.
//! - `read_random/1KiB`: `Log::read` at random offsets of a 200k-record log, one thread.
//! - `open/1GiB_256_segments`: `Log::open` + `close` of 1 GiB in 4 MiB segments.
//!
//! Logs live in temporary directories (under `$DISTLOG_BENCH_DIR` if set, else the
//! system's temp dir) that are removed when each benchmark ends.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use distlog::log::{Durability, Log, LogConfig, MIB, Payload};
use tempfile::TempDir;

const RECORD_BYTES: usize = 1024;
const BATCH: usize = 64;
const READ_RECORDS: u64 = 200_000;
const OPEN_SEGMENT_BYTES: u64 = 4 * MIB;
const OPEN_LOG_BYTES: u64 = 1024 * MIB;

fn temp_dir() -> TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("distlog-bench-");
    match std::env::var_os("DISTLOG_BENCH_DIR") {
        Some(parent) => {
            std::fs::create_dir_all(&parent).expect("create DISTLOG_BENCH_DIR");
            builder.tempdir_in(parent)
        }
        None => builder.tempdir(),
    }
    .expect("create a temporary directory")
}

fn config(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        ..LogConfig::default()
    }
}

/// A 1 KiB JSON-ish record, so that what is written looks like what the server stores.
fn record() -> Vec<u8> {
    let mut value = br#"{"event":"bench","pad":""#.to_vec();
    value.resize(RECORD_BYTES - 2, b'x');
    value.extend_from_slice(br#""}"#);
    assert_eq!(value.len(), RECORD_BYTES);
    value
}

/// Appends `count` copies of `value` in batches of `BATCH` (small enough that
/// segments fill up to their size).
fn fill(log: &Log, value: &[u8], count: u64) {
    let batch: Vec<Payload> = (0..BATCH).map(|_| Payload::new(value)).collect();
    let mut left = count;
    while left > 0 {
        let n = left.min(batch.len() as u64) as usize;
        log.append_batch(&batch[..n]).expect("fill the log");
        left -= n as u64;
    }
}

/// A log in its own temporary directory, made on first use so that a
/// benchmark filtered out on the command line costs nothing.
struct Scratch {
    log: Log,
    _dir: TempDir,
}

impl Scratch {
    fn new(config: LogConfig) -> Scratch {
        let dir = temp_dir();
        let log = Log::open(dir.path(), config).expect("open");
        Scratch { log, _dir: dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.log.close();
    }
}

fn append_never(c: &mut Criterion) {
    let value = record();
    let batch: Vec<Payload> = (0..BATCH).map(|_| Payload::new(&value)).collect();
    let mut scratch = None;
    let mut group = c.benchmark_group("append_never");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(RECORD_BYTES as u64));
    group.bench_function("1KiB", |b| {
        let log = &scratch
            .get_or_insert_with(|| Scratch::new(config(Durability::Never)))
            .log;
        b.iter(|| log.append(black_box(&value)).expect("append"))
    });
    drop(scratch.take());
    // The same bytes in batches of 64: one write call per 64 records, the most
    // that coalescing appends (group commit) could give.
    group.throughput(Throughput::Bytes((BATCH * RECORD_BYTES) as u64));
    group.bench_function("1KiB_batch64", |b| {
        let log = &scratch
            .get_or_insert_with(|| Scratch::new(config(Durability::Never)))
            .log;
        b.iter(|| log.append_batch(black_box(&batch)).expect("append"))
    });
    group.finish();
}

/// `iters` appends shared by `writers` threads against one log; the clock runs
/// from when all threads are ready until the last one is done.
fn concurrent_appends(log: &Log, value: &Arc<Vec<u8>>, writers: u64, iters: u64) -> Duration {
    let start = Arc::new(Barrier::new(writers as usize + 1));
    let threads: Vec<_> = (0..writers)
        .map(|i| {
            let (log, value, start) = (log.clone(), value.clone(), start.clone());
            let share = iters / writers + u64::from(i < iters % writers);
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..share {
                    log.append(&value).expect("append");
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    began.elapsed()
}

/// Like `concurrent_appends`, with the writers as tasks on a two-thread
/// tokio runtime using `append_batch_async`: how the HTTP server appends.
fn concurrent_async_appends(
    runtime: &tokio::runtime::Runtime,
    log: &Log,
    value: &Arc<Vec<u8>>,
    writers: u64,
    iters: u64,
) -> Duration {
    runtime.block_on(async {
        let began = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|i| {
                let (log, value) = (log.clone(), value.clone());
                let share = iters / writers + u64::from(i < iters % writers);
                tokio::spawn(async move {
                    for _ in 0..share {
                        log.append_batch_async(&[Payload::new(&value)]).await.expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer task");
        }
        began.elapsed()
    })
}

fn append_always(c: &mut Criterion) {
    let value = Arc::new(record());
    let mut group = c.benchmark_group("append_always");
    group.throughput(Throughput::Elements(1));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for writers in [1u64, 8, 64] {
        let mut scratch = None;
        group.bench_with_input(BenchmarkId::new("writers", writers), &writers, |b, &writers| {
            let log = &scratch
                .get_or_insert_with(|| Scratch::new(config(Durability::Always)))
                .log;
            b.iter_custom(|iters| concurrent_appends(log, &value, writers, iters))
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    for writers in [8u64, 64] {
        let mut scratch = None;
        group.bench_with_input(BenchmarkId::new("tasks", writers), &writers, |b, &writers| {
            let log = &scratch
                .get_or_insert_with(|| Scratch::new(config(Durability::Always)))
                .log;
            b.iter_custom(|iters| concurrent_async_appends(&runtime, log, &value, writers, iters))
        });
    }
    group.finish();
}

/// xorshift64: cheap enough not to show up next to a read.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn read_random(c: &mut Criterion) {
    let mut scratch = None;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut group = c.benchmark_group("read_random");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function(BenchmarkId::new("1KiB", READ_RECORDS), |b| {
        let log = &scratch
            .get_or_insert_with(|| {
                let scratch = Scratch::new(config(Durability::Never));
                fill(&scratch.log, &record(), READ_RECORDS);
                scratch
            })
            .log;
        b.iter(|| {
            let offset = rng.next() % READ_RECORDS;
            log.read(black_box(offset)).expect("read")
        })
    });
    group.finish();
}

fn open(c: &mut Criterion) {
    let config = LogConfig {
        max_segment_bytes: OPEN_SEGMENT_BYTES,
        ..config(Durability::Never)
    };
    let mut filled: Option<TempDir> = None;
    let mut group = c.benchmark_group("open");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("1GiB_4MiB_segments", |b| {
        let dir = filled.get_or_insert_with(|| {
            let dir = temp_dir();
            let log = Log::open(dir.path(), config.clone()).expect("open");
            let frame_bytes = RECORD_BYTES as u64 + distlog::log::FRAME_HEADER as u64;
            fill(&log, &record(), OPEN_LOG_BYTES / frame_bytes);
            let segments = log.stats().segments;
            log.close().expect("close");
            eprintln!("open: {segments} segments of {} MiB", OPEN_SEGMENT_BYTES / MIB);
            dir
        });
        b.iter(|| {
            let log = Log::open(dir.path(), config.clone()).expect("open");
            log.close().expect("close");
        })
    });
    group.finish();
}

criterion_group!(benches, append_never, append_always, read_random, open);
criterion_main!(benches);
