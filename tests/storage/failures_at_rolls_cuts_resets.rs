//! A step that fails at a roll, a cut, a reset or a sync: the follower is
//! not wedged, the writer hears of it, and no record that was not synced
//! shows (issue 9: crash-safe, race-free cuts, purges, resets and rolls).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use distlog::log::fsops::{self, Step};
use distlog::log::{Durability, Log, LogConfig, Payload};

use crate::fixtures::{index_bytes, index_name, store_name};

fn small(durability: Durability) -> LogConfig {
    LogConfig {
        max_segment_bytes: 1024,
        max_index_bytes: index_bytes(16),
        max_record_bytes: 300,
        durability,
        ..LogConfig::default()
    }
}

fn roomy(durability: Durability) -> LogConfig {
    LogConfig {
        max_segment_bytes: 64 * 1024,
        max_index_bytes: index_bytes(1024),
        max_record_bytes: 1000,
        durability,
        ..LogConfig::default()
    }
}

fn value(offset: u64) -> Vec<u8> {
    format!("record {offset} {}", "x".repeat((offset % 70) as usize)).into_bytes()
}

fn leader_with(dir: &Path, records: u64) -> Log {
    let leader = Log::open(dir, small(Durability::Never)).unwrap();
    for offset in 0..records {
        assert_eq!(leader.append(&value(offset)).unwrap(), offset);
    }
    leader
}

/// `append_frames` writes replicated frames in pieces, rolling between them.
/// If a roll fails after a first piece was written (a full disk when the
/// next segment is created: a plain error, the writer is not failed), the
/// writer's `next` has moved past the first piece but nothing was published:
/// `next_offset()` stays behind. The follower retries from `next_offset()`
/// (`fetch_loop`), and `append_frames` refuses those frames with
/// `OffsetMismatch` (it checks them against the writer's `next`), on every
/// retry, until a restart, although the disk is fine again.
#[test]
fn replicated_frames_that_fail_at_a_roll_do_not_wedge_the_follower() {
    let mut stuck = Vec::new();
    for durability in [Durability::Never, Durability::Always] {
        let leader_dir = tempfile::tempdir().unwrap();
        let leader = leader_with(leader_dir.path(), 40);
        let (frames, count) = leader.read_frames(0, u32::MAX, u64::MAX).unwrap();
        assert_eq!(count, 40);

        let dir = tempfile::tempdir().unwrap();
        let follower = Log::open(dir.path(), small(durability)).unwrap();
        let full_disk = fsops::watch(
            dir.path(),
            Arc::new(|step: &Step<'_>| match step {
                Step::Open(_) => Err(io::Error::other("injected: no room for a new segment")),
                _ => Ok(()),
            }),
        );
        let first = follower.append_frames(&frames);
        drop(full_disk);
        assert!(first.is_err(), "{durability:?}: the roll was failed, yet {first:?}");

        // What the follower's fetch loop does next: pull from next_offset() and append.
        let from = follower.next_offset();
        let (rest, _) = leader.read_frames(from, u32::MAX, u64::MAX).unwrap();
        let retried = follower.append_frames(&rest);
        if follower.failure().is_none() && retried.is_err() {
            stuck.push(format!(
                "{durability:?}: after a failed roll, next_offset() is {from} and the retry from there is refused \
                 ({retried:?}); the writer is not failed, so replication is stuck until a restart"
            ));
        }
    }
    assert!(stuck.is_empty(), "{stuck:#?}");
}

/// A cut only lowers the index's `len`; slots past it keep their old
/// entries, and `cut_from` flushes them to disk. Records appended after the
/// cut are synced (`Always`) but their index entries are not flushed. After a
/// power cut the on-disk index can hold the stale entries; `recover_tail`
/// accepts the consistent prefix of them and checks only the LAST entry
/// against the store. When that one happens to point at a real frame with the
/// right offset (records of the same total size before it), the stale
/// entries before it are trusted and acknowledged records read as corrupt.
#[test]
fn records_appended_after_a_cut_read_back_after_a_power_cut() {
    let config = roomy(Durability::Always);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let v = |len: usize, byte: u8| vec![byte; len];
    // Frames of 57, 77 and 67 bytes after record 0.
    for (offset, len, byte) in [(0, 10, b'a'), (1, 30, b'b'), (2, 50, b'c'), (3, 40, b'd')] {
        assert_eq!(log.append(&v(len, byte)).unwrap(), offset);
    }
    log.cut_after(0).unwrap();
    let index = dir.path().join(index_name(0));
    let store = dir.path().join(store_name(0));
    // What the cut flushed (`cut_from` ends with `index.flush()`).
    let index_as_flushed = fs::read(&index).unwrap();
    // The same total size in another order: 77 + 57 + 67 bytes.
    let appended = [v(50, b'e'), v(30, b'f'), v(40, b'g')];
    for (i, value) in appended.iter().enumerate() {
        // Acknowledged with `Always`: synced before this returns.
        assert_eq!(log.append(value).unwrap(), 1 + i as u64);
    }
    // A power cut now: the store is as synced; the index pages dirtied
    // since its last flush may not have reached the disk.
    let image = tempfile::tempdir().unwrap();
    fs::write(image.path().join(store_name(0)), fs::read(&store).unwrap()).unwrap();
    fs::write(image.path().join(index_name(0)), &index_as_flushed).unwrap();
    drop(log);

    let reopened = Log::open(image.path(), config).unwrap();
    assert_eq!(reopened.next_offset(), 4);
    let expected = [
        v(10, b'a'),
        appended[0].clone(),
        appended[1].clone(),
        appended[2].clone(),
    ];
    let wrong: Vec<String> = (0u64..4)
        .filter_map(|offset| match reopened.read(offset) {
            Ok(record) if record.value[..] == expected[offset as usize][..] => None,
            Ok(_) => Some(format!("offset {offset}: another value")),
            Err(e) => Some(format!("offset {offset}: {e}")),
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "acknowledged (synced) records do not read back after a power cut: {wrong:#?}"
    );
}

/// A reset first hides every record (`visible = lowest`) and tells every
/// waiting appender it failed. If the reset then fails (here: its new
/// segment cannot be created), `reset` sets `visible` to the segments' end,
/// which with `Always` includes records written but never synced (their
/// sync is still running), whose appenders were just told they failed.
#[test]
fn a_reset_that_fails_shows_no_record_that_was_not_synced() {
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = leader_with(leader_dir.path(), 8);
    let (frames, _) = leader.read_frames(5, 3, u64::MAX).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), roomy(Durability::Always)).unwrap();
    for offset in 0..5 {
        assert_eq!(log.append(&value(offset)).unwrap(), offset);
    }
    // (held, released): the committer's next fdatasync waits for `released`.
    let gate = Arc::new((Mutex::new((false, false)), Condvar::new()));
    let hold = Arc::new(AtomicBool::new(true));
    let watch = {
        let (gate, hold) = (gate.clone(), hold.clone());
        fsops::watch(
            dir.path(),
            Arc::new(move |step: &Step<'_>| match step {
                Step::SyncData(_) if hold.swap(false, Ordering::SeqCst) => {
                    let (lock, cv) = &*gate;
                    let mut state = lock.lock().unwrap();
                    state.0 = true;
                    cv.notify_all();
                    while !state.1 {
                        state = cv.wait(state).unwrap();
                    }
                    Ok(())
                }
                Step::Open(path) if path.to_string_lossy().contains("00000000000000001000") => {
                    Err(io::Error::other("injected: cannot create the reset's segment"))
                }
                _ => Ok(()),
            }),
        )
    };
    let appender = {
        let log = log.clone();
        thread::spawn(move || log.append_frames(&frames))
    };
    {
        let (lock, cv) = &*gate;
        let mut state = lock.lock().unwrap();
        while !state.0 {
            state = cv.wait(state).unwrap();
        }
    }
    // Records 5..8 are written; their sync has not completed.
    assert_eq!(log.next_offset(), 5, "not visible before their sync");
    let reset = log.reset(1000);
    let visible = log.next_offset();
    {
        let (lock, cv) = &*gate;
        lock.lock().unwrap().1 = true;
        cv.notify_all();
    }
    let told = appender.join().unwrap();
    drop(watch);
    assert!(reset.is_err(), "the reset's segment could not be created");
    assert!(
        visible <= 5,
        "after the failed reset readers see up to {visible}, but records 5..8 were never synced \
         (and their appender was told {told:?})"
    );
}

/// `append_batch_async` (the HTTP append path without `Always`) syncs the
/// full segment before a roll and ignores the result
/// (`appending.rs`: `let _ = full.store().sync();`). The engine's own rule
/// (`Shared::failed`, `roll`) is that a failed sync fails the writer,
/// because Linux reports a lost write-back once per file: the roll's own
/// sync of the same file right after then succeeds, the segment is sealed
/// and the new one named on disk, and the lost pages leave a hole that the
/// next open cannot get past (or lose records silently).
#[test]
fn a_failed_sync_before_an_async_roll_fails_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(Durability::Never)).unwrap();
    // 16 records fill the 16-entry index: the next append rolls.
    for offset in 0..16 {
        assert_eq!(log.append(b"0123456789").unwrap(), offset);
    }
    let failed_once = Arc::new(AtomicBool::new(false));
    let watch = {
        let failed_once = failed_once.clone();
        fsops::watch(
            dir.path(),
            Arc::new(move |step: &Step<'_>| match step {
                Step::SyncData(_) if !failed_once.swap(true, Ordering::SeqCst) => Err(io::Error::other(
                    "injected: write-back of the full segment failed (EIO)",
                )),
                _ => Ok(()),
            }),
        )
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let appended = runtime.block_on(log.append_batch_async(&[Payload::new(b"0123456789")]));
    drop(watch);
    assert!(failed_once.load(Ordering::SeqCst), "a sync was made and failed");
    assert!(
        log.failure().is_some(),
        "an fdatasync of the segment failed, yet the writer goes on (append: {appended:?}, segments: {})",
        log.stats().segments
    );
}
