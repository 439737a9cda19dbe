//! The idempotent producers' table (issue 21): what 100,000 producers cost
//! in memory, counted by a global allocator that tallies live bytes, and
//! what a full table costs an append (a producer's `check` and `record`,
//! the work each guarded append adds), side by side with an empty table in
//! the same run. Ids are 63 characters, the worst case but one of the
//! 64 allowed; every producer has 5 kept appends.
//!
//! `cargo bench --bench producers`. Knobs (environment): PRODUCERS
//! (100000), APPENDS (1000000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use distlog::log::ProducerStamp;
use distlog::log::producers::{KEPT_REQUESTS, ProducerLimits, Producers};

/// The system allocator, counting the bytes it holds.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn stamp(i: u64, seq: u64) -> ProducerStamp {
    ProducerStamp {
        id: format!("producer-{i:0>54}"),
        epoch: 0,
        seq,
        count: 1,
    }
}

/// Nanoseconds per guarded append by producer `writer` (check, then record)
/// on `table`, over `appends` appends in sequence.
fn per_append(table: &mut Producers, writer: u64, appends: u64, limits: &ProducerLimits) -> f64 {
    let stamps: Vec<ProducerStamp> = (0..appends).map(|seq| stamp(writer, 1_000 + seq)).collect();
    let started = Instant::now();
    for (offset, p) in stamps.iter().enumerate() {
        assert!(
            black_box(table.check(p, 1, limits)).is_none(),
            "each append is the next one"
        );
        table.record(p, offset as u64, 1, limits);
    }
    started.elapsed().as_nanos() as f64 / appends as f64
}

fn main() {
    let producers = env_number("PRODUCERS", 100_000);
    let appends = env_number("APPENDS", 1_000_000);
    let limits = ProducerLimits::default();

    let mut empty = Producers::default();
    let first = stamp(u64::MAX, 999);
    empty.record(&first, 0, 1, &limits);
    let empty_ns = per_append(&mut empty, u64::MAX, appends, &limits);

    let before = LIVE.load(Ordering::Relaxed);
    let mut full = Producers::default();
    for i in 0..producers {
        for seq in 0..KEPT_REQUESTS as u64 {
            full.record(&stamp(i, seq), i * 10 + seq, 1, &limits);
        }
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    full.record(&first, 0, 1, &limits);
    let full_ns = per_append(&mut full, u64::MAX, appends, &limits);

    println!(
        "producers table: {} producers, 63-byte ids, {KEPT_REQUESTS} kept appends each",
        full.len()
    );
    println!(
        "  memory: {:.1} MiB ({} bytes a producer; target < 64 MiB)",
        bytes as f64 / (1 << 20) as f64,
        bytes / producers.max(1) as isize
    );
    println!("  an append's check + record: {empty_ns:.0} ns with 1 producer, {full_ns:.0} ns with {producers}");
}
