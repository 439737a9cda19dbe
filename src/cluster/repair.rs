//! Storage faults on one node must not lose acknowledged records.
//!
//! Raft assumes a node never forgets what it acknowledged; disks do (a
//! zeroed or truncated tail, a flipped bit in a sealed segment). Before
//! openraft starts, a cluster node checks its log against what it had
//! recorded:
//! - `flushed`: the last entry it made durable (written after every append,
//!   so it is what the node may have acknowledged to a leader), never past
//!   what the log has synced (`Log::synced_offset`);
//! - `committed`: the last entry it knew committed;
//! - every frame's checksum (the engine checks only the last record of a
//!   sealed segment on open, the rest when read; a sealed segment that
//!   fails that check at open is moved aside with those after it, where a
//!   live leader can supply them again: `quarantine`, `Fault::MovedAside`);
//! - where the log starts: at the entry after the purged id (or the
//!   snapshot), not past it.
//!
//! A log that ends below either mark, holds a bad frame, or lost segments
//! at its front, is *faulty* (but for a bad frame a power cut tore under
//! write caching, cut keeping the id: `is_torn_tail`):
//! its node may have voted for, or counted towards, records it no longer
//! has. Such a node is repaired the way "Protocol-Aware Recovery for
//! Consensus-Based Storage" (FAST '18) asks, by never voting or leading on
//! the faulty log: it keeps the sound prefix (cut before a bad frame),
//! takes a **new node id**, and joins again as a learner (`formation`),
//! catching up from the others; once caught up it becomes a voter in its
//! old id's place (`membership::join` replaces the member at its URL). Its
//! old id stays a silent voter until then, so a cluster that lost a
//! majority of sound copies waits rather than electing a leader without
//! the records.
//!
//! Both marks trail what the log has synced, not what it has written: with
//! `--fsync never|interval` a power cut loses the unsynced tail on every
//! node that shares the power, and marks that had followed the writes
//! would take each such node for a faulty disk (a new id each, and with a
//! majority of them no leader ever again). They are written without a sync
//! (a sync per append would double the fsyncs): they survive a process
//! crash, not a power cut, which may leave them a little behind the log.

use std::io;

use super::last_run::LastRun;
use super::log_store::LogStore;
use super::quarantine;
use super::starting::{StartProgress, StartStep};
use super::state_machine;
use super::types::LogId;
use crate::log::LogError;

/// How a log fell short of what its node had recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The log ends before an entry the node had made durable.
    Short {
        mark: &'static str,
        recorded: LogId,
        log_end: u64,
    },
    /// The log holds that entry with another term (overwritten on disk).
    Changed { mark: &'static str, recorded: LogId },
    /// A frame fails its checksum.
    Corrupt { offset: u64, reason: String },
    /// The leader had this node holding an entry past its log's end (a
    /// directory restored from an older copy: `recovery`).
    BehindLeader { leader: String, matched: u64, log_end: u64 },
    /// The log starts past the first entry it should hold (the one after
    /// the purged id, or after the snapshot): segments at its front are
    /// gone, and the node would claim entries it cannot serve.
    MissingFront { expected: u64, lowest: u64 },
    /// A sealed segment failed its check at open: it and the segments
    /// after it were moved to `dir` (see `quarantine`).
    MovedAside { base: u64, dir: String, reason: String },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Short {
                mark,
                recorded,
                log_end,
            } => write!(
                f,
                "the log ends at index {log_end}, below the {mark} entry {recorded} this node had recorded"
            ),
            Fault::Changed { mark, recorded } => {
                write!(f, "the {mark} entry {recorded} is no longer in the log as it was")
            }
            Fault::Corrupt { offset, reason } => write!(f, "the frame at offset {offset} is corrupt: {reason}"),
            Fault::BehindLeader {
                leader,
                matched,
                log_end,
            } => write!(
                f,
                "the leader {leader} had this node holding index {matched}, and the log ends at index {log_end} \
                 (a data directory restored from an older copy?)"
            ),
            Fault::MissingFront { expected, lowest } => write!(
                f,
                "the log starts at index {lowest}, and should start at {expected}: segments at its front are missing"
            ),
            Fault::MovedAside { base, dir, reason } => {
                write!(f, "the segments from offset {base} on were moved to {dir}: {reason}")
            }
        }
    }
}

/// Frame bytes read at a time by the checksum scan.
const SCAN_BYTES: u64 = 8 << 20;

/// `check_telling` with nobody listening (a named log's group, the
/// store's unit tests).
pub fn check(store: &LogStore) -> io::Result<Option<Fault>> {
    check_telling(store, &StartProgress::default())
}

/// Checks the log against the node's marks and every frame's checksum
/// not checked at an earlier start (`verified`), saying in `progress` how
/// many segments it has read.
pub fn check_telling(store: &LogStore, progress: &StartProgress) -> io::Result<Option<Fault>> {
    if let Some(fault) = missing_front(store)? {
        return Ok(Some(fault));
    }
    if let Some(fault) = scan_checksums(store, verified_until(store)?, progress)? {
        return Ok(Some(fault));
    }
    // Only a hint: a start on a full disk goes on without it.
    if let Err(e) = remember_verified(store) {
        tracing::warn!(error = %e, "could not record which segments were checked: the next start checks them again");
    }
    for (mark, recorded) in [("flushed", store.flushed()), ("committed", store.committed())] {
        let Some(recorded) = recorded else { continue };
        if recorded.index < store.first_index() {
            continue;
        }
        if recorded.index >= store.next_index() {
            return Ok(Some(Fault::Short {
                mark,
                recorded,
                log_end: store.next_index(),
            }));
        }
        if !store.holds(&recorded) {
            return Ok(Some(Fault::Changed { mark, recorded }));
        }
    }
    Ok(None)
}

/// A log must hold every entry from the one after the purged id, or after
/// the snapshot (a crash between a snapshot's install and the purge that
/// follows it leaves the purged id behind): one that starts later lost
/// segments at its front, and Raft would be told it holds them.
fn missing_front(store: &LogStore) -> io::Result<Option<Fault>> {
    let expected = expected_start(store)?;
    let lowest = store.log().lowest_offset();
    Ok((lowest > expected).then_some(Fault::MissingFront { expected, lowest }))
}

/// The first entry the log must hold: the one after the purged id or the
/// snapshot, whichever is later.
fn expected_start(store: &LogStore) -> io::Result<u64> {
    let snapshot = state_machine::snapshot_last(store.durable())?;
    let covered = [store.purged(), snapshot]
        .into_iter()
        .flatten()
        .map(|id| id.index)
        .max();
    Ok(covered.map_or(0, |index| index + 1))
}

/// Where the checksum scan starts: past the sealed segments an earlier
/// start checked, while the log still holds the last entry it checked.
///
/// Sealed segments are never appended to, and every way frames below that
/// entry could change (a cut before a bad frame, a truncation, a reset)
/// takes that entry out of the log: a truncation rewrites from a conflict,
/// and by Raft's log matching a log holding the same entry at the same
/// index and term holds the same entries before it. So a start reads each
/// sealed segment once, not the whole log every time (a log of tens of GiB
/// would outlast a start-up probe); later rot in a checked segment is
/// caught when the frame is read.
fn verified_until(store: &LogStore) -> io::Result<u64> {
    let first = store.first_index();
    store.forget_verified_unless_held()?;
    Ok(match store.verified() {
        Some(verified) if store.holds(&verified) => verified.index.saturating_add(1).max(first),
        _ => first,
    })
}

/// Records the last entry of the sealed segments (all checked by now).
/// Written without a sync: a lost record costs one more full scan.
fn remember_verified(store: &LogStore) -> io::Result<()> {
    let sealed_end = store.log().active_base().min(store.next_index());
    match sealed_end.checked_sub(1).and_then(|last| store.id_at(last)) {
        Some(last) => store.remember_verified(last),
        None => Ok(()),
    }
}

/// Where each segment that holds entries from `from` on ends, the log
/// ending at `end`: what the scan counts its progress in.
fn segment_ends(bases: &[u64], from: u64, end: u64) -> Vec<u64> {
    let ends = bases.iter().skip(1).copied().chain(std::iter::once(end));
    ends.filter(|e| *e > from).collect()
}

fn scan_checksums(store: &LogStore, from: u64, progress: &StartProgress) -> io::Result<Option<Fault>> {
    let log = store.log();
    let (mut cursor, end) = (from, store.next_index());
    let ends = segment_ends(&log.segment_bases(), from, end);
    let tell = |cursor: u64| {
        let checked = ends.iter().filter(|e| **e <= cursor).count();
        progress.set(StartStep::CheckingLog {
            checked,
            of: ends.len(),
        });
    };
    tell(cursor);
    let started = std::time::Instant::now();
    while cursor < end {
        let count = u32::try_from(end - cursor).unwrap_or(u32::MAX);
        match log.read_frames_written(cursor, count, SCAN_BYTES) {
            Ok((_, 0)) => break,
            Ok((_, n)) => {
                cursor += u64::from(n);
                tell(cursor);
            }
            Err(LogError::Corrupt { offset, reason, .. }) => {
                return Ok(Some(Fault::Corrupt {
                    offset: offset.unwrap_or(cursor),
                    reason,
                }));
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
    }
    if started.elapsed().as_secs() >= 1 {
        tracing::info!(entries = end.saturating_sub(from), took = ?started.elapsed(), "checked every frame not checked before");
    }
    Ok(None)
}

/// Whether a frame found corrupt at `offset` is taken for a write a power
/// cut tore rather than rot: the previous run cached writes (`--fsync
/// never|interval`) and the machine went down since (`last_run`: without a
/// reboot the page cache finished every write, so a bad frame is rot), and
/// the frame is in the active segment, past everything this node recorded
/// as durable (its `flushed` and `committed` marks) and past its snapshot
/// and purged id (both synced the log up to them). Pages of an unsynced
/// batch written back out of order leave a bad frame before good ones; if
/// a power cut left one on every node, none would find a leader to license
/// a cut and the cluster would never elect again (issue 19 item 3). It is
/// cut keeping the id, what follows copied aside.
///
/// The marks trail syncs (they move with appends and commits, capped to
/// what was synced then), so a frame past them may have been synced and
/// acknowledged: after a power cut under write caching that is a loss the
/// modes accept (one node's power cut and one other failure). With `--fsync
/// always` (the previous run's mode) a bad frame is always a storage fault
/// (`quarantine::allow_cut`).
pub fn is_torn_tail(store: &LogStore, offset: u64, previous: Option<&LastRun>) -> io::Result<bool> {
    let log = store.log();
    let past_marks = store
        .flushed()
        .max(store.committed())
        .is_none_or(|mark| offset > mark.index);
    Ok(previous.is_some_and(LastRun::may_have_torn_writes)
        && offset >= log.active_base()
        && past_marks
        && offset >= expected_start(store)?)
}

/// Keeps the sound prefix of a faulty log: cut before a corrupt frame;
/// empty when its front is missing.
pub fn keep_sound_prefix(store: &LogStore, fault: &Fault) -> io::Result<()> {
    match fault {
        Fault::Corrupt { offset, .. } => {
            // What the cut takes is kept, as a moved segment is.
            let to = quarantine::dir_now(store.log().dir());
            let copied = store.log().copy_tail_aside(*offset, &to).map_err(io::Error::other)?;
            tracing::warn!(files = copied.len(), to = %to.display(),
                "the log is cut before the bad frame; what follows was copied aside (delete it once the node has caught up)");
            store.keep_before(*offset)
        }
        // Nothing the log holds can be served as Raft expects: it starts
        // over, empty, where Raft expects it, and the node catches up.
        Fault::MissingFront { expected, .. } => store.reset_to(*expected),
        // What is left ends where the moved segments began, or below the
        // entries Raft expects (the first segment moved: an open of an
        // empty directory starts a log at 0): it starts over there.
        Fault::MovedAside { .. } => match expected_start(store)? {
            expected if store.next_index() < expected => store.reset_to(expected),
            _ => store.forget_marks_past_log(),
        },
        _ => store.forget_marks_past_log(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_the_segments_that_hold_entries_to_check() {
        // Segments at 0, 10, 20; the active one ends at 25.
        assert_eq!(segment_ends(&[0, 10, 20], 0, 25), [10, 20, 25]);
        // Checked up to 14 before: the first segment is not read again.
        assert_eq!(segment_ends(&[0, 10, 20], 14, 25), [20, 25]);
        assert_eq!(segment_ends(&[0, 10, 20], 10, 25), [20, 25]);
        assert_eq!(segment_ends(&[20], 20, 20), Vec::<u64>::new());
    }

    /// A store of `records` records on 1 KiB segments with a byte flipped
    /// halfway through the frames of segment `nth` (by base), and the bad
    /// frame's offset.
    fn store_with_a_bad_frame(dir: &std::path::Path, records: u64, nth: usize) -> (LogStore, u64) {
        use crate::cluster::log_store::test_support::{small_segments, write_records_synced};
        use crate::log::Log;

        let open = || {
            let log = Log::open(dir, small_segments()).expect("log opens");
            LogStore::open(
                log,
                super::super::durable::Durable::open(dir.join("raft")).expect("raft"),
            )
            .expect("store")
        };
        let store = open();
        write_records_synced(&store, records);
        let base = store.log().segment_bases()[nth];
        store.log().close().expect("closed");
        drop(store);
        let segment = dir.join(format!("{base:020}.store"));
        let mut bytes = std::fs::read(&segment).expect("read");
        let written = bytes.iter().rposition(|&b| b != 0).expect("frames");
        bytes[written / 2] ^= 0x5a;
        std::fs::write(&segment, bytes).expect("write");
        let store = open();
        let Ok(Some(Fault::Corrupt { offset, .. })) = check(&store) else {
            panic!("a bad frame inside is found");
        };
        (store, offset)
    }

    fn run(write_caching: bool, boot: Option<&str>) -> LastRun {
        LastRun {
            boot_id: boot.map(str::to_string),
            write_caching,
        }
    }

    /// A bad frame between good ones in the active segment, past every mark
    /// and the snapshot, found after the machine went down since a run that
    /// cached writes (a power cut's out-of-order write-back of an unsynced
    /// batch) is a torn write, not a storage fault that needs a leader (else
    /// a cluster whose every node lost power would never elect again). In
    /// the same boot (the page cache finished every write), after a run
    /// with `--fsync always`, with no run recorded, at or below a mark, or
    /// in a sealed segment it is one.
    #[test]
    fn only_a_bad_frame_a_power_cut_could_have_torn_is_a_torn_write() {
        use crate::cluster::types::log_id;

        if LastRun::now(true).boot_id.is_none() {
            eprintln!("SKIPPED: no boot id here");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, offset) = store_with_a_bad_frame(dir.path(), 5, 0);
        assert!((1..4).contains(&offset), "a frame between good ones: {offset}");
        let torn = |previous: Option<LastRun>| is_torn_tail(&store, offset, previous.as_ref()).expect("checked");
        assert!(
            torn(Some(run(true, Some("another boot")))),
            "write caching, rebooted, no mark"
        );
        assert!(!torn(Some(LastRun::now(true))), "the same boot: rot");
        assert!(!torn(Some(run(false, Some("another boot")))), "--fsync always: rot");
        assert!(!torn(Some(run(true, None))), "no boot id recorded");
        assert!(!torn(None), "no run recorded");
        let mut marked = store.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime
            .block_on(async {
                openraft::storage::RaftLogStorage::save_committed(&mut marked, Some(log_id(1, offset))).await
            })
            .expect("committed");
        assert!(
            !torn(Some(run(true, Some("another boot")))),
            "at the committed mark: rot"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let (store, offset) = store_with_a_bad_frame(dir.path(), 60, 0);
        assert!(store.log().segment_bases().len() > 1, "several segments");
        assert_eq!(
            (store.flushed(), store.committed()),
            (None, None),
            "no mark: only the segment decides"
        );
        let rebooted = run(true, Some("another boot"));
        assert!(
            !is_torn_tail(&store, offset, Some(&rebooted)).expect("checked"),
            "a sealed segment: rot"
        );
    }
}
