//! Reads by time (issue 21): `Log::offset_at_time`, what `GET
//! /?from_timestamp=MS` does before it reads, on one log of 1 KiB records
//! measured at 100 MiB and again grown to 1 GiB, side by side with the
//! plain read from an offset (`GET /?from=N`: `Log::read_range`) on the
//! same log in the same run. Each row: latency percentiles of LOOKUPS
//! calls at random times (or offsets), one thread, the log in the page
//! cache as a freshly written one is.
//!
//! `cargo bench --bench by_time` (or `scripts/time-lookup.sh`). Knobs
//! (environment): LOOKUPS (20000), SEGMENT_MIB (256, the server's
//! default), SIZES_MIB (`100,1024`), DISTLOG_BENCH_DIR (where the log
//! lives; else the system's temp dir; removed at the end).

use std::hint::black_box;
use std::time::{Duration, Instant};

use distlog::log::{Durability, Log, LogConfig, MIB, ManualClock, Payload};

const RECORD_BYTES: usize = 1024;
const BATCH: usize = 64;
/// Stamps start here and go up by 1 ms a batch.
const START_MS: u64 = 1_700_000_000_000;
const MAX_READ_BYTES: u64 = 4 * MIB;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn temp_dir() -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("distlog-bench-by-time-");
    match std::env::var_os("DISTLOG_BENCH_DIR") {
        Some(parent) => {
            std::fs::create_dir_all(&parent).expect("create DISTLOG_BENCH_DIR");
            builder.tempdir_in(parent)
        }
        None => builder.tempdir(),
    }
    .expect("a temporary directory")
}

/// xorshift64*: repeatable random picks without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Appends batches of 1 KiB records, one stamp a batch, until the log
/// holds `bytes`.
fn grow_to(log: &Log, clock: &ManualClock, bytes: u64) {
    let mut value = br#"{"event":"bench","pad":""#.to_vec();
    value.resize(RECORD_BYTES - 2, b'x');
    value.extend_from_slice(br#""}"#);
    let batch: Vec<Payload> = (0..BATCH).map(|_| Payload::new(&value)).collect();
    while log.stats().size_bytes < bytes {
        clock.set(clock.get() + 1);
        log.append_batch(&batch).expect("an append");
    }
}

/// Percentiles of `samples` in microseconds.
fn row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e6
    };
    println!(
        "  {name:<34} p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  max {:>8.1} us",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

fn timed<T>(n: u64, mut f: impl FnMut() -> T) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            black_box(f());
            started.elapsed()
        })
        .collect()
}

fn measure(log: &Log, clock: &ManualClock, lookups: u64) {
    let (next, newest) = (log.next_offset(), clock.get());
    let span = newest - START_MS + 1;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut time = || START_MS + rng.below(span);
    row(
        "from_timestamp lookup",
        timed(lookups, || log.offset_at_time(time()).unwrap()),
    );
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    row(
        "from= read, limit=1 (baseline)",
        timed(lookups, || log.read_range(rng.below(next), 1, MAX_READ_BYTES).unwrap()),
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut time = || START_MS + rng.below(span);
    row(
        "from_timestamp read, limit=1",
        timed(lookups, || {
            let from = log.offset_at_time(time()).unwrap();
            log.read_range(from, 1, MAX_READ_BYTES).unwrap()
        }),
    );
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    row(
        "from= read, limit=100 (baseline)",
        timed(lookups, || {
            log.read_range(rng.below(next), 100, MAX_READ_BYTES).unwrap()
        }),
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut time = || START_MS + rng.below(span);
    row(
        "from_timestamp read, limit=100",
        timed(lookups, || {
            let from = log.offset_at_time(time()).unwrap();
            log.read_range(from, 100, MAX_READ_BYTES).unwrap()
        }),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let lookups = env_number("LOOKUPS", 20_000);
    let segment_bytes = env_number("SEGMENT_MIB", 256) * MIB;
    let sizes: Vec<u64> = std::env::var("SIZES_MIB")
        .unwrap_or_else(|_| "100,1024".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = temp_dir();
    let clock = ManualClock::at(START_MS);
    let config = LogConfig {
        max_segment_bytes: segment_bytes,
        durability: Durability::Never,
        clock: clock.clock(),
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).expect("the log opens");
    for mib in sizes {
        let started = Instant::now();
        grow_to(&log, &clock, mib * MIB);
        let stats = log.stats();
        println!(
            "log of {} MiB: {} records of {RECORD_BYTES} B in {} segments of {} MiB (grown in {:.1?}), {lookups} calls a row",
            stats.size_bytes / MIB,
            stats.next_offset,
            stats.segments,
            segment_bytes / MIB,
            started.elapsed()
        );
        measure(&log, &clock, lookups);
    }
}
