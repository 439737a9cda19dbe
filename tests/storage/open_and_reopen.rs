//! Opens that race or fail (the lock file and the segments another open
//! holds are never removed) and reopens of unusual layouts (a reactivated
//! sealed segment, an active store without its index) (issue 10, points 1,
//! 2 and 9).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use distlog::log::fsops::{self, Step};
use distlog::log::{Durability, Log, LogConfig, LogError, Payload};

use crate::fixtures::{index_name, store_name};

fn small(durability: Durability) -> LogConfig {
    LogConfig {
        max_segment_bytes: 4096,
        max_record_bytes: 1024,
        durability,
        ..LogConfig::default()
    }
}

/// The outcome of an open tried from inside a failed open's removal step.
#[derive(Debug, PartialEq)]
enum Meanwhile {
    NotTried,
    /// The failed open still held the lock: nothing it removes can be
    /// another open's.
    Locked,
    GotIn,
}

/// A failed open that let go of the lock before it removed what it created
/// (as the merge did) lets another open take the lock in between (a second
/// process started at the same moment, a supervisor's restart with
/// corrected flags); that open then has its lock file unlinked under it,
/// and a third open takes a fresh lock file: two writers on one data
/// directory. Whatever the failed open removes, no other open holds the
/// lock then, and after it one open at a time holds the directory.
#[test]
fn a_failed_open_never_unlinks_a_lock_file_another_open_holds() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let lock = dir.join("LOCK");
    let other: Arc<Mutex<Option<Log>>> = Arc::new(Mutex::new(None));
    let meanwhile = Arc::new(Mutex::new(Meanwhile::NotTried));
    let _watch = {
        let (dir, lock, other, meanwhile) = (dir.clone(), lock.clone(), other.clone(), meanwhile.clone());
        fsops::watch(
            parent.path(),
            Arc::new(move |step: &Step<'_>| {
                // The failed open is about to unlink the lock file: another
                // open tries to get in first.
                if *step != Step::Remove(&lock) || *meanwhile.lock().unwrap() != Meanwhile::NotTried {
                    return Ok(());
                }
                // Not under `meanwhile`'s lock: this open's own steps come here too.
                let tried = match Log::open(&dir, small(Durability::Never)) {
                    Ok(log) => {
                        log.append(b"written by the open that holds the lock").unwrap();
                        *other.lock().unwrap() = Some(log);
                        Meanwhile::GotIn
                    }
                    Err(LogError::Locked(_)) => Meanwhile::Locked,
                    Err(e) => panic!("unexpected: {e}"),
                };
                *meanwhile.lock().unwrap() = tried;
                Ok(())
            }),
        )
    };
    // Refused by the free-space check, after it took the lock.
    let huge = LogConfig {
        max_segment_bytes: 1 << 40,
        ..LogConfig::default()
    };
    assert!(matches!(Log::open(&dir, huge), Err(LogError::Config { .. })));
    match &*meanwhile.lock().unwrap() {
        Meanwhile::NotTried => panic!("the failed open did not remove the lock file it created"),
        // Not in the window: it opens now, and must hold the directory alone.
        Meanwhile::Locked => *other.lock().unwrap() = Some(Log::open(&dir, small(Durability::Never)).unwrap()),
        Meanwhile::GotIn => {}
    }
    assert!(
        lock.exists(),
        "the lock file held by the open log was unlinked by the failed open"
    );
    match Log::open(&dir, small(Durability::Never)) {
        Err(LogError::Locked(_)) => {}
        Ok(_) => panic!("a third open locked the directory while another open log holds it"),
        Err(e) => panic!("unexpected: {e}"),
    }
}

/// Same window, worse outcome: a failed open that found no segment when it
/// locked (`fresh_log`) removes every segment file it finds; had it let go
/// of the lock first (as the merge did), those included the ones an open
/// that got in meanwhile wrote. Here the failed open's own first segment could not be removed
/// by `Segment::create` (one failed sync, then one failed removal), which
/// gives the hook a step to run in; in production the window is the same
/// few system calls, without a hook.
#[test]
fn a_failed_open_never_removes_segments_another_open_wrote_after_it_let_go() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let store = dir.join(store_name(0));
    let index = dir.join(index_name(0));
    let syncs_failed = Arc::new(AtomicBool::new(false));
    let removals_failed = Arc::new(AtomicBool::new(false));
    let other_opened = Arc::new(AtomicBool::new(false));
    let meanwhile = Arc::new(Mutex::new(Meanwhile::NotTried));
    let _watch = {
        let (dir, store, index) = (dir.clone(), store.clone(), index.clone());
        let (syncs_failed, removals_failed, other_opened, meanwhile) = (
            syncs_failed.clone(),
            removals_failed.clone(),
            other_opened.clone(),
            meanwhile.clone(),
        );
        fsops::watch(
            parent.path(),
            Arc::new(move |step: &Step<'_>| match step {
                Step::SyncDir(_) if !syncs_failed.swap(true, Ordering::SeqCst) => Err(io::Error::other("injected")),
                Step::Remove(p) if (*p == store || *p == index) && !removals_failed.swap(true, Ordering::SeqCst) => {
                    Err(io::Error::other("injected"))
                }
                // The failed open removes "its" segment files: another open
                // tries to get in first and write a record.
                Step::Remove(p) if (*p == store || *p == index) && !other_opened.swap(true, Ordering::SeqCst) => {
                    *meanwhile.lock().unwrap() = match Log::open(&dir, small(Durability::Never)) {
                        Ok(log) => {
                            log.append(b"precious").unwrap();
                            log.close().unwrap();
                            Meanwhile::GotIn
                        }
                        Err(LogError::Locked(_)) => Meanwhile::Locked,
                        Err(e) => panic!("unexpected: {e}"),
                    };
                    Ok(())
                }
                _ => Ok(()),
            }),
        )
    };
    assert!(Log::open(&dir, small(Durability::Never)).is_err());
    let meanwhile = std::mem::replace(&mut *meanwhile.lock().unwrap(), Meanwhile::NotTried);
    let log = Log::open(&dir, small(Durability::Never)).unwrap();
    match meanwhile {
        Meanwhile::NotTried => panic!("the failed open removed no segment file"),
        Meanwhile::GotIn => assert_eq!(
            log.next_offset(),
            1,
            "a record another open wrote and closed cleanly was removed by the failed open"
        ),
        // Still locked while it removed: what it removed was its own.
        Meanwhile::Locked => assert_eq!(log.next_offset(), 0),
    }
}

/// A sealed segment opened at startup gets an index of exactly its
/// records (`Index::open_sealed`). A reset onto its base (`--follow-reset`
/// does `reset(0)`) or a cut that keeps none of its records makes it the
/// active, empty segment with that small capacity. An empty segment takes
/// any batch the limits allow (`write_frames`, checked against
/// `LogConfig::index_capacity`), so the store takes the batch's frames and
/// then the index runs out: the append fails half-written, the store holds
/// frames no offset was given for, and the writer's `next` and the
/// segment's disagree.
#[test]
fn a_reactivated_sealed_segment_takes_a_batch_the_limits_allow() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::Never);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    // 1000-byte records: three per 4 KiB segment.
    for _ in 0..7 {
        log.append(&[b'v'; 1000]).unwrap();
    }
    assert!(log.stats().segments >= 3);
    drop(log);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    log.reset(0).unwrap();
    assert_eq!((log.lowest_offset(), log.next_offset()), (0, 0));
    // Ten records of 10 bytes: 370 bytes and 10 entries, well within a
    // 4 KiB segment's 151 entries.
    let values: Vec<Vec<u8>> = (0..10).map(|i| format!("record {i:02}").into_bytes()).collect();
    let batch: Vec<Payload> = values.iter().map(|v| Payload::new(v)).collect();
    let first = log.append_batch(&batch);
    assert!(first.is_ok(), "a batch the limits allow was refused: {first:?}");
    assert_eq!(log.next_offset(), 10);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.next_offset(), 10);
    assert_eq!(log.read(9).unwrap().value, &values[9][..]);
}

/// The index is a function of the store: a store whose index is missing
/// opens, its index rebuilt (the cut and purge orders rely on it: "a store
/// without its index opens"). The active index is now sized from
/// `--max-segment-bytes` alone, so a store written with a larger segment
/// size than the one it is reopened with holds more records than the
/// rebuilt index has room for, and the open fails ("index ... is full")
/// instead of sizing the index to what recovery finds. Before the merge the
/// index was sized from `--max-index-bytes` (a million entries by default)
/// and this opened.
#[test]
fn an_active_store_without_its_index_reopens_with_a_smaller_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let large = LogConfig {
        max_segment_bytes: 1 << 20,
        max_record_bytes: 1024,
        durability: Durability::Never,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), large).unwrap();
    for i in 0..1000u32 {
        log.append(&i.to_le_bytes()).unwrap();
    }
    assert_eq!(log.stats().segments, 1);
    drop(log);
    std::fs::remove_file(dir.path().join(index_name(0))).unwrap();
    // 4 KiB segments: 151 index entries, the store holds 1000 records.
    let log = Log::open(dir.path(), small(Durability::Never)).expect("a store without its index opens");
    assert_eq!(log.next_offset(), 1000);
    assert_eq!(log.read(999).unwrap().value, &999u32.to_le_bytes()[..]);
    assert_eq!(log.append(b"next").unwrap(), 1000, "and rolls");
}
