//! Finding a place by time (`Log::offset_at_time`) against a model (the
//! first user record stamped at or after the time, by a linear walk),
//! across segment boundaries, after retention purged old segments, among
//! control frames stamped 0, and timestamps that never go backwards
//! whatever the clock does, across a reopen too.

use distlog::log::{Durability, Log, LogConfig, ManualClock, Payload, attributes, encode_frame};

use crate::fixtures::index_bytes;

fn small_config(clock: &ManualClock) -> LogConfig {
    LogConfig {
        max_segment_bytes: 1024,
        max_index_bytes: index_bytes(16),
        max_record_bytes: 512,
        durability: Durability::Never,
        clock: clock.clock(),
        ..LogConfig::default()
    }
}

/// `(offset, is user record, timestamp)` of every record the log holds.
fn stamps(log: &Log) -> Vec<(u64, bool, u64)> {
    (log.lowest_offset()..log.next_offset())
        .map(|offset| {
            let record = log.read(offset).unwrap();
            (
                offset,
                record.attributes & attributes::CONTROL == 0,
                record.timestamp_ms,
            )
        })
        .collect()
}

/// What the lookup must answer for every time around the stamps held.
fn assert_lookups_match_the_model(log: &Log) {
    let held = stamps(log);
    let newest = held.iter().map(|(_, _, t)| *t).max().unwrap_or(0);
    for time in 0..=newest + 2 {
        let expected = held
            .iter()
            .find(|(_, user, t)| *user && *t >= time)
            .map_or(log.next_offset(), |(offset, _, _)| *offset);
        assert_eq!(log.offset_at_time(time).unwrap(), expected, "time {time}");
    }
}

#[test]
fn lookups_across_many_segments_find_the_first_record_at_or_after_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1000);
    let log = Log::open(dir.path(), small_config(&clock)).unwrap();
    assert_eq!(log.offset_at_time(0).unwrap(), 0, "an empty log");
    for i in 0..300u64 {
        // Runs of equal stamps, some across a segment boundary.
        clock.set(1000 + 10 * (i / 7));
        log.append(format!("{{\"i\":{i}}}").as_bytes()).unwrap();
    }
    assert!(log.stats().segments > 10, "{:?}", log.stats());
    assert_lookups_match_the_model(&log);
    assert_eq!(log.offset_at_time(u64::MAX).unwrap(), 300);
    assert_eq!(log.offset_at_time(1000 + 10 * 7).unwrap(), 49, "the first of a run");
}

#[test]
fn after_retention_purged_old_segments_an_early_time_starts_at_the_lowest_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1000);
    let config = LogConfig {
        retention_bytes: Some(2048),
        ..small_config(&clock)
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..200u64 {
        clock.set(1000 + i);
        log.append(format!("{{\"i\":{i}}}").as_bytes()).unwrap();
    }
    log.enforce_retention(distlog::log::now_ms()).unwrap();
    let lowest = log.lowest_offset();
    assert!(lowest > 0, "retention purged segments");
    assert_eq!(log.offset_at_time(0).unwrap(), lowest);
    assert_eq!(
        log.offset_at_time(1000).unwrap(),
        lowest,
        "a time whose records are gone"
    );
    assert_lookups_match_the_model(&log);
    drop(log);
    let log = Log::open(dir.path(), small_config(&clock)).unwrap();
    assert_eq!(log.offset_at_time(0).unwrap(), lowest, "after a reopen too");
    assert_lookups_match_the_model(&log);
}

/// Frames as a cluster stores them: user records with the leader's stamps,
/// and Raft's own entries as control frames stamped 0, some at the ends of
/// segments and one run filling a whole segment.
#[test]
fn control_frames_stamped_zero_do_not_mislead_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let log = Log::open(dir.path(), small_config(&clock)).unwrap();
    let mut time = 100;
    for offset in 0..240u64 {
        let control = offset % 11 == 0 || offset % 13 == 5 || (100..130).contains(&offset);
        let (attributes, stamp) = match control {
            true => (attributes::CONTROL, 0),
            false => {
                time += offset % 3;
                (0, time)
            }
        };
        let mut frame = Vec::new();
        let value = format!("{{\"o\":{offset},\"pad\":\"{}\"}}", "p".repeat(20));
        encode_frame(
            &mut frame,
            offset,
            stamp,
            0,
            Payload::with(attributes, value.as_bytes()),
        );
        assert_eq!(log.append_frames(&frame).unwrap(), 1);
    }
    assert!(log.stats().segments > 5, "{:?}", log.stats());
    assert_lookups_match_the_model(&log);
}

#[test]
fn a_clock_stepped_back_stamps_no_record_earlier_than_the_one_before_even_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(5000);
    let log = Log::open(dir.path(), small_config(&clock)).unwrap();
    log.append(b"1").unwrap();
    clock.set(1000);
    log.append_batch(&[Payload::new(b"2"), Payload::new(b"3")]).unwrap();
    clock.set(6000);
    log.append(b"4").unwrap();
    clock.set(10);
    log.append(b"5").unwrap();
    let times: Vec<u64> = stamps(&log).iter().map(|(_, _, t)| *t).collect();
    assert_eq!(times, [5000, 5000, 5000, 6000, 6000]);
    assert_lookups_match_the_model(&log);
    drop(log);

    // Reopened behind the newest stamp: it goes on from there.
    let log = Log::open(dir.path(), small_config(&clock)).unwrap();
    log.append(b"6").unwrap();
    assert_eq!(log.read(5).unwrap().timestamp_ms, 6000);
    assert_eq!(log.newest_stamp(), 6000);
}

/// A cluster's log may end with a control frame stamped 0: the writer must
/// go on from the newest user record's stamp, not from that 0 (it did:
/// the open took the last frame's stamp).
#[test]
fn a_log_that_ends_with_a_control_frame_reopens_at_its_newest_user_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let log = Log::open(dir.path(), small_config(&clock)).unwrap();
    let mut frames = Vec::new();
    encode_frame(&mut frames, 0, 7000, 0, Payload::new(b"\"user\""));
    let control = Payload::with(attributes::CONTROL, b"{}");
    encode_frame(&mut frames, 1, 0, 0, control);
    log.append_frames(&frames).unwrap();
    drop(log);
    clock.set(2000);
    let log = Log::open(dir.path(), small_config(&clock)).unwrap();
    assert_eq!(log.newest_stamp(), 7000);
    log.append(b"\"after\"").unwrap();
    assert_eq!(log.read(2).unwrap().timestamp_ms, 7000);
}
