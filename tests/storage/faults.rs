//! What an error in the middle of a multi-step change leaves behind.
//!
//! Every cut, purge, reset and roll is run once per file-system step it
//! makes (`fsops::Step`), with that step failed by an injected I/O error.
//! Whatever fails, the log must be either as it was or failed loudly
//! (appends refused, reads going on, `failure()` saying why), with its
//! offsets agreeing with its segments; every record it still claims must
//! read back; retention must not panic; and the directory must reopen to a
//! valid log holding every record the operation was not asked to remove.
//! The committer dying and a poisoned writer lock are checked the same way.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use distlog::log::fsops::{self, Step};
use distlog::log::{Durability, Log, LogConfig, LogError, Payload};
use tempfile::TempDir;

use crate::fixtures::index_bytes;

fn config(durability: Durability) -> LogConfig {
    LogConfig {
        max_segment_bytes: 1024,
        max_index_bytes: index_bytes(16),
        max_record_bytes: 300,
        retention_bytes: Some(1 << 30),
        durability,
        ..LogConfig::default()
    }
}

fn value(offset: u64) -> Vec<u8> {
    format!("record {offset} {}", "x".repeat((offset % 70) as usize)).into_bytes()
}

/// A log of `n` records in several segments, and the values it holds.
fn log_with(dir: &Path, durability: Durability, n: u64) -> Log {
    let log = Log::open(dir, config(durability)).unwrap();
    for offset in 0..n {
        assert_eq!(log.append(&value(offset)).unwrap(), offset);
    }
    log
}

/// Fails the `nth` step (from 0) made under `dir` after this is called;
/// `failed` says whether it came to that.
fn fail_step(dir: &Path, nth: usize) -> (fsops::Watch, Arc<AtomicBool>) {
    let seen = AtomicUsize::new(0);
    let failed = Arc::new(AtomicBool::new(false));
    let told = failed.clone();
    let watch = fsops::watch(
        dir,
        Arc::new(move |step: &Step<'_>| {
            if seen.fetch_add(1, Ordering::SeqCst) == nth {
                told.store(true, Ordering::SeqCst);
                return Err(io::Error::other(format!("injected failure of {step:?}")));
            }
            Ok(())
        }),
    );
    (watch, failed)
}

/// Every offset the log claims reads back as the value appended there.
fn assert_reads_back(log: &Log, what: &str) {
    assert!(log.lowest_offset() <= log.next_offset(), "{what}: bounds crossed");
    for offset in log.lowest_offset()..log.next_offset() {
        match log.read(offset) {
            Ok(record) => assert_eq!(record.value, value(offset), "{what}: offset {offset}"),
            Err(e) => panic!("{what}: offset {offset} does not read back: {e}"),
        }
    }
    let stats = log.stats();
    assert!(stats.segments > 0, "{what}: no segment left");
}

/// The log is as it was (`unchanged`), or failed loudly; either way it
/// reads back, retention runs, and an append lands where `next_offset` says
/// or is refused.
fn assert_whole_or_failed(log: &Log, before: (u64, u64), what: &str) {
    assert_reads_back(log, what);
    assert!(
        log.enforce_retention(0).is_ok() || log.failure().is_some(),
        "{what}: retention"
    );
    match log.failure() {
        Some(why) => {
            assert!(!why.is_empty());
            let refused = log.append(b"late");
            assert!(matches!(refused, Err(LogError::WriterFailed(_))), "{what}: {refused:?}");
        }
        None => {
            assert_eq!(
                (log.lowest_offset(), log.next_offset()),
                before,
                "{what}: changed, yet not failed"
            );
            let next = log.next_offset();
            assert_eq!(log.append(&value(next)).unwrap(), next, "{what}: append after");
        }
    }
}

/// Reopens the directory: it opens, reads back, and keeps `[lowest, keep)`.
fn assert_reopens_keeping(dir: &Path, durability: Durability, lowest: u64, keep: u64, what: &str) {
    let log = Log::open(dir, config(durability)).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert_reads_back(&log, &format!("{what}, reopened"));
    assert!(log.lowest_offset() <= lowest, "{what}: lost records below {lowest}");
    assert!(log.next_offset() >= keep, "{what}: lost records below {keep}");
}

/// Runs `operation` on a fresh log once per step it makes, failing that
/// step, until it runs without reaching the failure. Returns how many steps
/// it made.
fn each_step_failed(
    name: &str,
    durability: Durability,
    records: u64,
    operation: impl Fn(&Log) -> distlog::log::Result<()>,
    check: impl Fn(Log, &TempDir, (u64, u64), &str),
) -> usize {
    for nth in 0.. {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(dir.path(), durability, records);
        let before = (log.lowest_offset(), log.next_offset());
        let (watch, failed) = fail_step(dir.path(), nth);
        let outcome = operation(&log);
        drop(watch);
        if !failed.load(Ordering::SeqCst) {
            outcome.unwrap_or_else(|e| panic!("{name}: fails with no step failed: {e}"));
            return nth;
        }
        let what = format!("{name}, step {nth} failed");
        if outcome.is_ok() {
            // A best-effort step (mapping the active store): the change went
            // through, and the log must work without it.
            assert_reads_back(&log, &what);
            let next = log.next_offset();
            assert_eq!(log.append(&value(next)).unwrap(), next, "{what}: append after");
            continue;
        }
        check(log, &dir, before, &what);
    }
    unreachable!()
}

#[test]
fn a_cut_that_fails_at_any_step_leaves_the_log_whole_or_failed() {
    for (cut, name) in [(37, "cut inside the active segment"), (9, "cut across segments")] {
        let steps = each_step_failed(
            name,
            Durability::Always,
            40,
            |log| log.cut_after(cut),
            |log, dir, before, what| {
                assert_whole_or_failed(&log, before, what);
                log.close().ok();
                log.close().ok();
                drop(log);
                assert_reopens_keeping(dir.path(), Durability::Always, 0, cut + 1, what);
            },
        );
        assert!(steps >= 3, "{name}: only {steps} steps");
        eprintln!("{name}: {steps} steps, each failed once");
    }
}

#[test]
fn a_reset_that_fails_at_any_step_leaves_the_log_whole_or_failed() {
    for (base, name) in [(0, "reset to an existing base"), (500, "reset past the end")] {
        let steps = each_step_failed(
            name,
            Durability::Never,
            40,
            |log| log.reset(base),
            |log, dir, before, what| {
                assert_whole_or_failed(&log, before, what);
                log.close().ok();
                log.close().ok();
                drop(log);
                // A reset may leave a prefix of the old log, or nothing.
                let reopened = Log::open(dir.path(), config(Durability::Never)).unwrap();
                assert_reads_back(&reopened, what);
            },
        );
        eprintln!("{name}: {steps} steps, each failed once");
    }
}

#[test]
fn a_purge_that_fails_at_any_step_leaves_the_log_whole_or_failed() {
    let steps = each_step_failed(
        "purge",
        Durability::Never,
        60,
        |log| log.purge_before(40).map(|_| ()),
        |log, dir, before, what| {
            // A purge that removed some segments before failing has moved
            // `lowest` on, consistently with what is left.
            assert_reads_back(&log, what);
            if log.failure().is_none() {
                assert_eq!(log.next_offset(), before.1, "{what}");
            }
            log.close().ok();
            drop(log);
            assert_reopens_keeping(dir.path(), Durability::Never, 40, before.1, what);
        },
    );
    assert!(steps >= 4, "purge: only {steps} steps");
}

#[test]
fn a_roll_that_fails_at_any_step_loses_nothing_acknowledged() {
    for durability in [Durability::Always, Durability::Never] {
        let name = format!("roll with {durability:?}");
        for nth in 0.. {
            let dir = tempfile::tempdir().unwrap();
            let log = log_with(dir.path(), durability, 0);
            let (watch, failed) = fail_step(dir.path(), nth);
            // Appends until a roll has happened, and a few more.
            let mut acknowledged = Vec::new();
            for offset in 0..30u64 {
                if let Ok(at) = log.append(&value(offset)) {
                    acknowledged.push((at, offset));
                }
            }
            drop(watch);
            let what = format!("{name}, step {nth} failed");
            if !failed.load(Ordering::SeqCst) {
                assert_eq!(acknowledged.len(), 30, "{what}");
                break;
            }
            let expected: Vec<u64> = (0..acknowledged.len() as u64).collect();
            let offsets: Vec<u64> = acknowledged.iter().map(|(at, _)| *at).collect();
            assert_eq!(offsets, expected, "{what}: acknowledged offsets are dense from 0");
            log.close().ok();
            drop(log);
            let reopened = Log::open(dir.path(), config(durability)).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                reopened.next_offset() >= acknowledged.len() as u64,
                "{what}: lost acknowledged records"
            );
            for (at, _) in &acknowledged {
                let record = reopened.read(*at).unwrap_or_else(|e| panic!("{what}: {at}: {e}"));
                assert!(record.value.starts_with(b"record "), "{what}: {at}");
            }
        }
    }
}

/// Runs `f` on another thread and fails the test if it takes longer than
/// `limit` (a hang), instead of hanging the test run.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("did not finish: it hangs")
}

#[test]
fn a_dead_committer_fails_every_durable_append_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), Durability::Always, 3);
    let _watch = fsops::watch(
        dir.path(),
        Arc::new(|step: &Step<'_>| {
            let on_committer = std::thread::current().name() == Some("distlog-commit");
            if on_committer && matches!(step, Step::SyncData(_)) {
                panic!("injected: the committer dies");
            }
            Ok(())
        }),
    );
    let appender = log.clone();
    let first = within(Duration::from_secs(10), move || appender.append(b"waits for a sync"));
    assert!(matches!(first, Err(LogError::WriterFailed(_))), "{first:?}");
    let why = log.failure().expect("the log says why it refuses appends");
    assert!(why.contains("group-commit thread died"), "{why}");
    let later = log.clone();
    let second = within(Duration::from_secs(10), move || later.append(b"after"));
    assert!(matches!(second, Err(LogError::WriterFailed(_))), "{second:?}");
    assert_eq!(log.read(2).unwrap().value, value(2), "reads go on");
}

#[test]
fn a_writer_that_panicked_under_the_lock_fails_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), Durability::Never, 3);
    let watch = fsops::watch(
        dir.path(),
        Arc::new(|step: &Step<'_>| match step {
            // A roll's first step, made under the writer lock.
            Step::SyncData(_) => panic!("injected: the writer panics mid-roll"),
            _ => Ok(()),
        }),
    );
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for offset in 3..40 {
            let _ = log.append(&value(offset));
        }
    }));
    assert!(panicked.is_err(), "the injected panic happened");
    drop(watch);
    let refused = log.append(b"after the panic");
    assert!(matches!(refused, Err(LogError::WriterFailed(_))), "{refused:?}");
    assert!(log.failure().is_some_and(|why| why.contains("panicked")));
    assert_eq!(log.read(0).unwrap().value, value(0), "reads go on");
}

#[test]
fn batches_fail_whole_when_the_committer_dies() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), Durability::Always, 0);
    let _watch = fsops::watch(
        dir.path(),
        Arc::new(|step: &Step<'_>| {
            if std::thread::current().name() == Some("distlog-commit") && matches!(step, Step::SyncData(_)) {
                panic!("injected: the committer dies");
            }
            Ok(())
        }),
    );
    let appenders: Vec<_> = (0..8)
        .map(|i| {
            let log = log.clone();
            std::thread::spawn(move || {
                let values = [value(i), value(i + 100)];
                let payloads: Vec<Payload> = values.iter().map(|v| Payload::new(v)).collect();
                log.append_batch(&payloads)
            })
        })
        .collect();
    for appender in appenders {
        let outcome = within(Duration::from_secs(10), move || appender.join().unwrap());
        assert!(matches!(outcome, Err(LogError::WriterFailed(_))), "{outcome:?}");
    }
}

#[test]
fn an_async_append_that_rolls_leaves_the_runtime_worker_free() {
    // One worker. The roll's first allocation waits until a task spawned
    // after the roll began has run: it can only run if the roll does not
    // hold the worker (`block_in_place` hands the worker's tasks on).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), Durability::Never, 0);
    let (rolling_tx, rolling_rx) = tokio::sync::oneshot::channel::<()>();
    let (freed_tx, freed_rx) = mpsc::channel::<()>();
    let rolling_tx = std::sync::Mutex::new(Some(rolling_tx));
    let freed_rx = std::sync::Mutex::new(freed_rx);
    let stuck = Arc::new(AtomicBool::new(false));
    let stuck_seen = stuck.clone();
    let _watch = fsops::watch(
        dir.path(),
        Arc::new(move |step: &Step<'_>| {
            let first_roll = matches!(step, Step::Allocate(..)) && rolling_tx.lock().unwrap().is_some();
            if first_roll {
                if let Some(tx) = rolling_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                let freed = freed_rx.lock().unwrap().recv_timeout(Duration::from_secs(5));
                stuck_seen.store(freed.is_err(), Ordering::SeqCst);
            }
            Ok(())
        }),
    );
    runtime.block_on(async move {
        let appender = tokio::spawn(async move {
            for offset in 0..40u64 {
                let v = value(offset);
                log.append_batch_async(&[Payload::new(&v)]).await.unwrap();
            }
        });
        rolling_rx.await.unwrap();
        let other_request = tokio::spawn(async move { freed_tx.send(()).unwrap() });
        other_request.await.unwrap();
        appender.await.unwrap();
    });
    assert!(!stuck.load(Ordering::SeqCst), "the roll held the only worker");
}

#[test]
fn an_append_whose_round_the_committer_died_in_is_told_the_writer_failed_not_closed() {
    for run in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(dir.path(), Durability::Never, 0);
        // Every async append is written by the committer; the first roll it
        // makes (a segment holds about three of these records) kills it.
        let _watch = fsops::watch(
            dir.path(),
            Arc::new(|step: &Step<'_>| {
                let on_committer = std::thread::current().name() == Some("distlog-commit");
                if on_committer && matches!(step, Step::Open(_)) {
                    panic!("injected: the committer dies while it rolls");
                }
                Ok(())
            }),
        );
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let value = "y".repeat(250);
        let outcome = within(Duration::from_secs(10), move || {
            runtime.block_on(async move {
                for _ in 0..10 {
                    log.append_batch_async(&[Payload::new(value.as_bytes())]).await?;
                }
                Ok(())
            })
        });
        assert!(
            matches!(outcome, Err(LogError::WriterFailed(_))),
            "run {run}: the append in the round the committer died in: {outcome:?}"
        );
    }
}

/// The third review (issue 19 item 15): `Log::sync` (what a cluster
/// snapshot runs with write caching) let appends go on after its sync
/// failed, where the committer's and a roll's failed sync fail the writer:
/// Linux may not report the loss again, so a later sync that succeeds
/// would vouch for records that never reached the disk.
#[test]
fn a_failed_explicit_sync_fails_the_writer_as_the_committers_does() {
    for durability in [Durability::Never, Durability::Always] {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(dir.path(), durability, 3);
        let watch = fsops::watch(
            dir.path(),
            Arc::new(|step: &Step<'_>| match step {
                Step::SyncData(_) | Step::SyncAll(_) | Step::FlushMap(_) => {
                    Err(io::Error::other("injected: the sync failed"))
                }
                _ => Ok(()),
            }),
        );
        let synced = log.sync();
        drop(watch);
        assert!(synced.is_err(), "{durability:?}: the sync failed");
        let refused = log.append(b"after the failed sync");
        assert!(
            matches!(refused, Err(LogError::WriterFailed(_))),
            "{durability:?}: {refused:?}"
        );
        assert!(log.failure().is_some_and(|why| why.contains("sync")), "{durability:?}");
        assert_eq!(log.read(0).unwrap().value, value(0), "reads go on");
    }
}
