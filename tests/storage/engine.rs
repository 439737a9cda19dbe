//! The storage engine through its public API: appends, reads, rolls,
//! reopen, cutting, retention, snapshots, and readers racing a writer.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use distlog::log::{Durability, Log, LogConfig, LogError, Payload, attributes, encode_frame};

use crate::fixtures::{INDEX_ENTRY, index_bytes, index_name, store_name};

fn small_config() -> LogConfig {
    LogConfig {
        max_segment_bytes: 1024,
        max_index_bytes: index_bytes(16),
        max_record_bytes: 512,
        durability: Durability::Never,
        ..LogConfig::default()
    }
}

fn value(i: u64) -> Vec<u8> {
    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat((i % 40) as usize)).into_bytes()
}

#[test]
fn appends_get_dense_offsets_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..100 {
        assert_eq!(log.append(&value(i)).unwrap(), i);
    }
    for i in 0..100 {
        let record = log.read(i).unwrap();
        assert_eq!((record.offset, &record.value[..]), (i, &value(i)[..]));
    }
    assert!(log.stats().segments > 1, "small segments must roll");
    match log.read(100) {
        Err(LogError::OutOfRange {
            offset: 100,
            lowest: 0,
            next: 100,
        }) => {}
        other => panic!("expected out of range, got {other:?}"),
    }
}

#[test]
fn batches_are_contiguous_and_validated_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    log.append(b"first").unwrap();
    let values: Vec<Vec<u8>> = (0..5).map(value).collect();
    let payloads: Vec<Payload> = values.iter().map(|v| Payload::new(v)).collect();
    assert_eq!(log.append_batch(&payloads).unwrap(), 1);
    let too_big = vec![0u8; 513];
    let bad = [Payload::new(b"ok"), Payload::new(&too_big)];
    assert!(matches!(log.append_batch(&bad), Err(LogError::TooLarge { .. })));
    assert!(matches!(log.append_batch(&[]), Err(LogError::EmptyBatch)));
    assert_eq!(log.next_offset(), 6, "a refused batch appends nothing");
}

#[test]
fn range_reads_respect_count_and_byte_budget_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..60 {
        log.append(&value(i)).unwrap();
    }
    let all = log.read_range(0, 1000, u64::MAX).unwrap();
    assert_eq!(all.len(), 60);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, r)| r.offset == i as u64 && r.value[..] == value(i as u64)[..])
    );
    assert_eq!(log.read_range(10, 7, u64::MAX).unwrap().len(), 7);
    let budgeted = log.read_range(0, 1000, 200).unwrap();
    assert!(
        !budgeted.is_empty() && budgeted.len() < 10,
        "{} records for 200 bytes",
        budgeted.len()
    );
    assert_eq!(
        log.read_range(0, 10, 1).unwrap().len(),
        1,
        "the first record always comes"
    );
    assert!(log.read_range(60, 10, 1000).unwrap().is_empty());
    assert!(matches!(log.read_range(61, 10, 1000), Err(LogError::OutOfRange { .. })));
    let (frames, count) = log.read_frames(5, 20, u64::MAX).unwrap();
    assert_eq!(count, 20);
    let parsed = distlog::log::split_frames(frames, 5, 1 << 20).unwrap();
    assert_eq!(parsed.len(), 20);
}

#[test]
fn reopen_keeps_everything_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        for i in 0..50 {
            log.append(&value(i)).unwrap();
        }
        log.close().unwrap();
    }
    let index_sizes: Vec<u64> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert!(
        index_sizes
            .iter()
            .all(|s| s % INDEX_ENTRY == 0 && *s <= index_bytes(16)),
        "{index_sizes:?}"
    );
    assert!(
        index_sizes.iter().any(|s| *s < index_bytes(15)),
        "the active index is cut to its entries: {index_sizes:?}"
    );
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_offset(), 50);
    assert_eq!(log.append(b"more").unwrap(), 50);
    for i in 0..50 {
        assert_eq!(log.read(i).unwrap().value[..], value(i)[..]);
    }
}

#[test]
fn a_second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), small_config()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), small_config()),
        Err(LogError::Locked(_))
    ));
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_index_bytes: 1,
        ..LogConfig::default()
    };
    let err = Log::open(dir.path(), config).unwrap_err().to_string();
    assert!(err.contains("max_index_bytes") && err.contains("= 1"), "{err}");
}

#[test]
fn truncate_drops_whole_segments_below() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..80 {
        log.append(&value(i)).unwrap();
    }
    let before = log.stats().segments;
    let dropped = log.purge_before(40).unwrap();
    assert!(dropped > 0);
    assert_eq!(log.stats().segments, before - dropped);
    let lowest = log.lowest_offset();
    assert!(lowest > 0 && lowest <= 40, "lowest {lowest}");
    assert!(matches!(log.read(lowest - 1), Err(LogError::OutOfRange { .. })));
    assert_eq!(log.read(40).unwrap().value[..], value(40)[..]);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.lowest_offset(), lowest);
}

#[test]
fn truncate_after_cuts_the_tail_and_offsets_continue_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..80 {
        log.append(&value(i)).unwrap();
    }
    log.cut_after(24).unwrap();
    assert_eq!(log.next_offset(), 25);
    assert!(log.read(25).is_err());
    assert_eq!(log.append(b"replacement").unwrap(), 25);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_offset(), 26);
    assert_eq!(&log.read(25).unwrap().value[..], b"replacement");
    assert_eq!(log.read(24).unwrap().value[..], value(24)[..]);
}

#[test]
fn retention_by_bytes_and_age_keeps_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(2048),
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..200 {
        log.append(&value(i)).unwrap();
    }
    log.enforce_retention(distlog::log::now_ms()).unwrap();
    let stats = log.stats();
    assert!(
        stats.size_bytes <= 2048 + 1024,
        "size {} after retention",
        stats.size_bytes
    );
    assert_eq!(stats.next_offset, 200);
    drop(log);

    let config = LogConfig {
        retention_ms: Some(60_000),
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(
        log.enforce_retention(distlog::log::now_ms()).unwrap(),
        0,
        "nothing is a minute old"
    );
    log.enforce_retention(distlog::log::now_ms() + 3_600_000).unwrap();
    assert_eq!(log.stats().segments, 1, "an hour later only the active segment stays");
    assert_eq!(log.read(199).unwrap().value[..], value(199)[..]);
}

/// A cluster stores Raft's own entries (a new leader's blank entry, a
/// membership change) as control frames stamped 0. They say nothing of a
/// segment's age: time-based retention judged a segment that ended with one
/// infinitely old and purged records written a moment before.
#[test]
fn time_retention_judges_a_segment_by_its_user_records_not_its_control_frames() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: Some(60_000),
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    let now = distlog::log::now_ms();
    // 16 records a segment (the index's capacity): the first segment holds
    // only control frames, the later ones a user record then a control frame
    // in turn, so that each ends with a control frame.
    for offset in 0..80u64 {
        let (timestamp_ms, attributes) = match offset {
            16.. if offset % 2 == 0 => (now, 0),
            _ => (0, attributes::CONTROL),
        };
        let mut frame = Vec::new();
        let value: &[u8] = b"{}";
        encode_frame(&mut frame, offset, timestamp_ms, 0, Payload::with(attributes, value));
        log.append_frames(&frame).unwrap();
    }
    assert_eq!(log.stats().segments, 5);
    assert_ne!(
        log.read(31).unwrap().attributes & attributes::CONTROL,
        0,
        "a segment ends with a control frame"
    );
    assert_eq!(
        log.retention_point(now).unwrap(),
        None,
        "no user record is a minute old"
    );
    assert_eq!(log.enforce_retention(now).unwrap(), 0);
    assert_eq!(log.lowest_offset(), 0);
    log.enforce_retention(now + 3_600_000).unwrap();
    assert_eq!(log.stats().segments, 1, "an hour later only the active segment stays");
}

#[test]
fn reset_restarts_empty_at_a_base() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..30 {
        log.append(&value(i)).unwrap();
    }
    log.reset(1000).unwrap();
    assert_eq!((log.lowest_offset(), log.next_offset()), (1000, 1000));
    assert_eq!(log.append(b"x").unwrap(), 1000);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!((log.lowest_offset(), log.next_offset()), (1000, 1001));
}

#[test]
fn snapshot_streams_every_store_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..70 {
        log.append(&value(i)).unwrap();
    }
    let mut snapshot = Vec::new();
    log.snapshot_reader().unwrap().read_to_end(&mut snapshot).unwrap();
    let records = distlog::log::split_frames(snapshot.into(), 0, 1 << 20).unwrap();
    assert_eq!(records.len(), 70);
    assert_eq!(records[69].value[..], value(69)[..]);
}

#[test]
fn corruption_in_a_sealed_segment_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..60 {
        log.append(&value(i)).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let first_store = dir.path().join(store_name(0));
    let mut bytes = std::fs::read(&first_store).unwrap();
    bytes[60] ^= 0xff; // inside record 1: record 0 takes bytes 0..43
    std::fs::write(&first_store, &bytes).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    match log.read(1) {
        Err(LogError::Corrupt {
            file, offset: Some(1), ..
        }) => assert_eq!(file, first_store),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(log.read(0).is_ok(), "neighbours stay readable");
}

#[test]
fn durable_appends_from_many_threads_get_distinct_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::Always,
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    // Single records and batches of three from 8 threads: the committer
    // combines them into shared writes, across segment rolls.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut written = Vec::new();
                for i in 0..50 {
                    let key = t * 1000 + i * 10;
                    if i % 5 == 0 {
                        let values = [value(key), value(key + 1), value(key + 2)];
                        let payloads: Vec<Payload> = values.iter().map(|v| Payload::new(v)).collect();
                        let first = log.append_batch(&payloads).unwrap();
                        written.extend((0..3).map(|j| (first + j, key + j)));
                    } else {
                        written.push((log.append(&value(key)).unwrap(), key));
                    }
                }
                written
            })
        })
        .collect();
    let written: Vec<(u64, u64)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let mut offsets: Vec<u64> = written.iter().map(|(offset, _)| *offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..560).collect::<Vec<_>>());
    assert!(log.stats().segments > 1, "the writes rolled segments");
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    for (offset, key) in written {
        assert_eq!(log.read(offset).unwrap().value[..], value(key)[..], "offset {offset}");
    }
}

#[test]
fn readers_never_see_a_partial_record_while_the_writer_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    let next = log.next_offset();
                    if next == 0 {
                        continue;
                    }
                    let offset = reads % next;
                    let record = log.read(offset).unwrap();
                    assert_eq!(record.value[..], value(offset)[..]);
                    let range = log.read_range(offset, 50, 4096).unwrap();
                    assert!(range.iter().all(|r| r.value[..] == value(r.offset)[..]));
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 0..3000 {
        log.append(&value(i)).unwrap();
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
}

#[test]
fn replicated_frames_fill_segments_to_their_limit_not_beyond() {
    let (source_dir, copy_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let big = LogConfig {
        max_segment_bytes: 1 << 20,
        ..small_config()
    };
    let source = Log::open(source_dir.path(), big).unwrap();
    for i in 0..200 {
        source.append(&value(i)).unwrap();
    }
    let (frames, count) = source.read_frames(0, 1000, u64::MAX).unwrap();
    assert_eq!(count, 200);
    let copy = Log::open(copy_dir.path(), small_config()).unwrap();
    assert_eq!(copy.append_frames(&frames).unwrap(), 200);
    let sizes: Vec<u64> = std::fs::read_dir(copy_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "store"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert!(
        sizes.len() > 5 && sizes.iter().all(|s| *s <= 1024),
        "segments: {sizes:?}"
    );
    assert_eq!(
        copy.read_range(0, 1000, u64::MAX).unwrap(),
        source.read_range(0, 1000, u64::MAX).unwrap()
    );
}

#[test]
fn lowering_max_record_bytes_keeps_larger_stored_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_record_bytes: 4096,
        max_segment_bytes: 1 << 20,
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    log.append(b"small").unwrap();
    log.append(&vec![b'7'; 3000]).unwrap();
    drop(log);
    let lowered = LogConfig {
        max_record_bytes: 100,
        ..config
    };
    let log = Log::open(dir.path(), lowered).unwrap();
    assert_eq!(log.next_offset(), 2, "the large record at the tail is not cut");
    assert_eq!(log.read(1).unwrap().value.len(), 3000);
    assert!(
        matches!(log.append(&[b'x'; 101]), Err(LogError::TooLarge { .. })),
        "new appends obey the new limit"
    );
}

#[test]
fn a_gap_of_zeroed_index_entries_is_rebuilt_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_segment_bytes: 1 << 20,
        max_index_bytes: index_bytes(4096),
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..1000 {
        log.append(&value(i)).unwrap();
    }
    log.sync().unwrap();
    // A crash image whose index lost a run of pages in the middle (a power
    // cut that wrote index pages out of order).
    let image = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "LOCK" {
            std::fs::copy(&path, image.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let index_path = image.path().join(index_name(0));
    let mut index = std::fs::read(&index_path).unwrap();
    index[100 * 12..340 * 12].fill(0);
    std::fs::write(&index_path, &index).unwrap();
    drop(log);

    let log = Log::open(image.path(), config).unwrap();
    assert_eq!(log.next_offset(), 1000);
    for i in [0, 99, 100, 150, 339, 340, 999] {
        assert_eq!(log.read(i).unwrap().value[..], value(i)[..], "offset {i}");
    }
}

#[test]
fn borrowed_reads_match_owned_reads_in_sealed_and_active_segments() {
    for durability in [Durability::Never, Durability::Always] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            durability,
            ..small_config()
        };
        let log = Log::open(dir.path(), config).unwrap();
        for i in 0..60 {
            log.append(&value(i)).unwrap();
        }
        assert!(log.stats().segments > 2, "sealed segments and an active one");
        for offset in 0..60 {
            let owned = log.read(offset).unwrap();
            let borrowed = log
                .read_with(offset, |r| (r.offset, r.timestamp_ms, r.attributes, r.value.to_vec()))
                .unwrap();
            assert_eq!(
                borrowed,
                (owned.offset, owned.timestamp_ms, owned.attributes, owned.value.to_vec())
            );
            assert_eq!(borrowed.3, value(offset));
        }
        assert!(matches!(
            log.read_with(60, |_| ()),
            Err(LogError::OutOfRange { next: 60, .. })
        ));
    }
}

#[test]
fn every_append_acknowledged_before_close_is_there_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::Always,
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let key = t * 100_000 + i;
                    match log.append(&value(key)) {
                        Ok(offset) => acknowledged.push((offset, key)),
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    while log.next_offset() < 200 {
        std::thread::yield_now();
    }
    log.close().unwrap();
    let acknowledged: Vec<(u64, u64)> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(acknowledged.len() >= 200);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    for (offset, key) in acknowledged {
        assert_eq!(log.read(offset).unwrap().value[..], value(key)[..], "offset {offset}");
    }
}

#[test]
fn dropping_the_last_handle_unlocks_the_directory_at_once() {
    // The committer and the interval syncer hold the log while they work a
    // round; dropping the last handle must still free the directory before
    // it returns, or a restart in the same process finds it locked.
    for durability in [
        Durability::Always,
        Durability::Interval(std::time::Duration::from_millis(1)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..30u64 {
            let log = Log::open(dir.path(), small_config_with(durability)).unwrap();
            let writers: Vec<_> = (0..4)
                .map(|_| {
                    let log = log.clone();
                    std::thread::spawn(move || {
                        for _ in 0..5 {
                            log.append(b"while the committer works").unwrap();
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.join().unwrap();
            }
            drop(log);
            let reopened = Log::open(dir.path(), small_config_with(durability));
            assert!(reopened.is_ok(), "{durability:?}, round {round}: {:?}", reopened.err());
        }
    }
}

fn small_config_with(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        ..small_config()
    }
}

/// What a node records as held (the cluster's marks) follows this, so it
/// must never claim a record a power cut could take: in `Never` mode it
/// moves at syncs and rolls only, comes down with a cut, and a reopen syncs
/// what it found.
#[test]
fn the_synced_offset_moves_at_syncs_and_rolls_not_at_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_segment_bytes: 1 << 20,
        max_index_bytes: index_bytes(64),
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.synced_offset(), 0);
    for i in 0..10 {
        log.append(&value(i)).unwrap();
    }
    assert_eq!(
        (log.written_offset(), log.synced_offset()),
        (10, 0),
        "written, not synced"
    );
    log.sync().unwrap();
    assert_eq!(log.synced_offset(), 10);
    for i in 10..20 {
        log.append(&value(i)).unwrap();
    }
    log.cut_after(14).unwrap();
    assert_eq!(
        log.synced_offset(),
        15,
        "a cut syncs what it keeps, and nothing past it"
    );
    log.cut_after(4).unwrap();
    assert_eq!(log.synced_offset(), 5);
    log.append(&value(5)).unwrap();
    assert_eq!(log.synced_offset(), 5);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.synced_offset(), 6, "a reopen syncs what it found");

    let rolls = tempfile::tempdir().unwrap();
    let log = Log::open(rolls.path(), small_config()).unwrap();
    for i in 0..100 {
        log.append(&value(i)).unwrap();
    }
    let synced = log.synced_offset();
    assert!(
        synced > 0 && synced < 100,
        "rolls synced the sealed segments only: {synced}"
    );
    assert!(log.stats().segments > 1);
}
