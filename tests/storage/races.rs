//! Readers never see a surviving record as corrupt while the writer cuts the
//! tail inside a batch (issue 9, point 3).
//!
//! One writer appends batches and cuts each one with `truncate_after` at an
//! offset inside it, so that every cut lowers the index's `len`, cuts the
//! store mid-batch and rewrites the header of the last record kept (its
//! batch-continues flag goes). Reader threads meanwhile hammer the record
//! just below each cut (the "boundary": it survives, and its end is the slot
//! and the frame the cut touches) and records below the batch, through
//! `read`, `read_with` and `read_range`. Every one of those reads must
//! succeed with the record's own value: a surviving record is never out of
//! range, and `Corrupt` for it is the false `500 corrupt_record` of the issue.
//!
//! Against the engine as it stands (slots zeroed by `Index::truncate`) both
//! variants fail within a few cuts, well under a second: a reader that
//! loaded the old `len` takes the zeroed slot after the boundary for its end
//! ("impossible frame end 0"). The header rewrite racing a reader's copy is
//! not seen here: the cut holds the segment list's write lock and drains the
//! read map's readers just before it, so only a reader preempted at exactly
//! the wrong instant could meet it. `loom_protocol.rs` covers that one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use distlog::log::{Durability, Log, LogConfig, LogError, Payload, Record};

use crate::fixtures::index_bytes;

/// More readers than the CI machine's two cores: a reader preempted in the
/// middle of a read is what lets the writer's cut land inside that read.
const READERS: usize = 3;
/// Records per batch; every cut lands inside the newest batch.
const BATCH: u64 = 6;
/// How long each durability variant runs at most (a failure stops it early).
const RUN_FOR: Duration = Duration::from_secs(4);
/// Fewer cuts than this in `RUN_FOR` would prove nothing.
const MIN_CUTS: u64 = 20;

/// Small segments, as in `engine.rs`, so that batches roll across
/// segments too; roomy enough that most cuts stay inside one segment.
fn small_config(durability: Durability) -> LogConfig {
    LogConfig {
        max_segment_bytes: 4096,
        max_index_bytes: index_bytes(64),
        max_record_bytes: 512,
        durability,
        ..LogConfig::default()
    }
}

/// The value of the record at `offset`. It depends on the offset alone, so
/// offsets written again after a cut carry the same value, and any read
/// that succeeds can be checked.
fn value(offset: u64) -> Vec<u8> {
    format!("{{\"n\":{offset},\"pad\":\"{}\"}}", "x".repeat((offset % 32) as usize)).into_bytes()
}

/// What the writer publishes to the readers, and what they report back.
struct Race {
    log: Log,
    /// Records below this offset are never cut again.
    floor: AtomicU64,
    /// The newest record the writer is about to keep as the last before a cut.
    boundary: AtomicU64,
    /// For each reader, the boundary it last read: the writer cuts once
    /// every reader is on the current one.
    seen: Vec<AtomicU64>,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    reads: AtomicU64,
}

impl Race {
    fn new(log: Log) -> Race {
        Race {
            log,
            floor: AtomicU64::new(0),
            boundary: AtomicU64::new(u64::MAX),
            seen: (0..READERS).map(|_| AtomicU64::new(u64::MAX)).collect(),
            stop: AtomicBool::new(false),
            failures: Mutex::new(Vec::new()),
            reads: AtomicU64::new(0),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Records a failure and stops the run: the first one is the proof.
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
        self.stop.store(true, Ordering::Release);
    }
}

/// Appends one batch at the log's end and returns its first offset.
fn append_batch(log: &Log) -> u64 {
    let first = log.next_offset();
    let values: Vec<Vec<u8>> = (first..first + BATCH).map(value).collect();
    let payloads: Vec<Payload> = values.iter().map(|v| Payload::new(v)).collect();
    let got = log.append_batch(&payloads).expect("append");
    assert_eq!(got, first, "the only writer appends at the visible end");
    first
}

/// Spins until every reader has read `boundary` at least once (or the run stops).
fn wait_for_readers_on(race: &Race, boundary: u64) {
    while !race.stopped() && race.seen.iter().any(|s| s.load(Ordering::Acquire) != boundary) {
        thread::yield_now();
    }
}

/// Appends batches and cuts each inside itself until `deadline`; returns how many cuts it made.
fn write_and_cut(race: &Race, deadline: Instant) -> u64 {
    let mut cuts = 0;
    while !race.stopped() && Instant::now() < deadline {
        let first = append_batch(&race.log);
        // Keep 1..BATCH-1 records of the batch: the last kept always had
        // the batch-continues flag, so every cut rewrites its header.
        let boundary = first + cuts % (BATCH - 1);
        race.floor.store(first, Ordering::Release);
        race.boundary.store(boundary, Ordering::Release);
        wait_for_readers_on(race, boundary);
        race.log.cut_after(boundary).expect("cut");
        cuts += 1;
    }
    race.stop.store(true, Ordering::Release);
    cuts
}

/// Checks that a read of the surviving record `offset` gave that record.
fn check_record(race: &Race, how: &str, offset: u64, got: Result<Record, LogError>) {
    match got {
        Ok(record) if record.offset == offset && record.value[..] == value(offset)[..] => {}
        Ok(record) => race.fail(format!("{how}({offset}) returned offset {}", record.offset)),
        Err(e) => race.fail(format!("{how}({offset}) of a surviving record failed: {e:?}")),
    }
}

fn check_read(race: &Race, offset: u64) {
    check_record(race, "read", offset, race.log.read(offset));
}

fn check_read_with(race: &Race, offset: u64) {
    let got = race.log.read_with(offset, |r| Record {
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        attributes: r.attributes,
        value: r.value.to_vec().into(),
    });
    check_record(race, "read_with", offset, got);
}

/// Reads a few records ending exactly at `last`, never past it: the range
/// holds survivors only, and its last frame's end is the slot being cut.
fn check_read_range_up_to(race: &Race, last: u64) {
    let from = last.saturating_sub(3).max(race.log.lowest_offset());
    let count = (last - from + 1) as u32;
    match race.log.read_range(from, count, u64::MAX) {
        Ok(records) if records.len() == count as usize => {
            for (offset, record) in (from..).zip(records) {
                check_record(race, "read_range", offset, Ok(record));
            }
        }
        Ok(records) => race.fail(format!("read_range({from}, {count}) gave {} records", records.len())),
        Err(e) => race.fail(format!(
            "read_range({from}, {count}) of surviving records failed: {e:?}"
        )),
    }
}

/// Reads the current boundary (all three ways, in turn) and now and then a
/// record further below the cut, until the run stops.
fn read_survivors(race: &Race, me: usize) {
    let mut i: u64 = me as u64;
    while !race.stopped() {
        let boundary = race.boundary.load(Ordering::Acquire);
        if boundary == u64::MAX {
            thread::yield_now();
            continue;
        }
        match i % 3 {
            0 => check_read(race, boundary),
            1 => check_read_with(race, boundary),
            _ => check_read_range_up_to(race, boundary),
        }
        race.seen[me].store(boundary, Ordering::Release);
        if i.is_multiple_of(16) {
            // Below the floor nothing is ever cut: a cheap control.
            let floor = race.floor.load(Ordering::Acquire);
            check_read(race, i.wrapping_mul(0x9E37_79B9) % floor.max(1));
        }
        race.reads.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

/// Runs the writer and the readers on a fresh log and asserts that no
/// surviving record ever read wrong.
fn race_cuts_against_reads(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let race = Arc::new(Race::new(Log::open(dir.path(), small_config(durability)).unwrap()));
    let started = Instant::now();
    let readers: Vec<_> = (0..READERS)
        .map(|me| {
            let race = race.clone();
            thread::spawn(move || read_survivors(&race, me))
        })
        .collect();
    let cuts = write_and_cut(&race, started + RUN_FOR);
    for reader in readers {
        reader.join().expect("reader thread");
    }
    let failures = race.failures.lock().unwrap();
    let reads = race.reads.load(Ordering::Relaxed);
    eprintln!(
        "{durability:?}: {cuts} cuts, {reads} reads, {} failures in {:?}",
        failures.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "after {cuts} cuts: {failures:#?}");
    assert!(
        cuts >= MIN_CUTS,
        "only {cuts} cuts in {RUN_FOR:?}: the race was hardly run"
    );
}

#[test]
fn surviving_records_never_read_corrupt_during_cuts_without_fsync() {
    race_cuts_against_reads(Durability::Never);
}

#[test]
fn surviving_records_never_read_corrupt_during_cuts_with_fsync_always() {
    race_cuts_against_reads(Durability::Always);
}
