//! Cutting the log: whole segments from the front (`purge_before`,
//! retention), the tail after an offset (`cut_after`), or everything
//! (`reset`).
//!
//! Each is a sequence of steps that a crash or an error can interrupt, so
//! each is ordered for the state left in between to open as a valid log:
//! - Segment files go one segment at a time, the index before the store (a
//!   store without its index opens; the index is rebuilt), and the directory
//!   is synced after each segment, so that no later removal reaches the disk
//!   before an earlier one and leaves a hole.
//! - A purge removes the oldest first: what is left is a suffix of the log.
//! - A cut and a reset remove the newest first: what is left is a prefix.
//!   A cut makes those removals durable before it shortens the kept segment,
//!   so a power cut never brings a removed segment back behind a shortened
//!   one.
//! - A reset never leaves the segment list empty. To a new base it creates
//!   the new segment first, then removes the old ones newest first; a crash
//!   in between leaves a prefix of the old log next to an empty segment that
//!   does not continue it, which the next open drops (`opening`). To the
//!   base of an old segment it removes the later ones newest first, cuts
//!   that one to nothing, then removes the earlier ones oldest first; a
//!   crash leaves a prefix, or a suffix ending at the base. Either way the
//!   log opens as a contiguous part of the old one or as the new empty one,
//!   and a replica finds out again that it must reset.
//!
//! An error after the first change fails the writer (`fail_writer`: appends
//! refused until a restart, reads go on, `/readyz` not ready), and the
//! in-memory segment list still matches the files: a segment leaves it only
//! once its files are gone.

use std::sync::Arc;

use super::super::error::Result;
use super::super::fsops;
use super::super::record::attributes::CONTROL;
use super::super::segment::Segment;
use super::Log;
use super::writer::Writer;

impl Log {
    /// Deletes whole sealed segments whose records are all below `lowest`.
    /// Returns how many segments went.
    pub fn purge_before(&self, lowest: u64) -> Result<usize> {
        let w = self.lock_writer()?;
        let doomed = {
            let segments = self.read_segments();
            let sealed = segments.len().saturating_sub(1);
            segments
                .iter()
                .take(sealed)
                .take_while(|s| s.next_offset() <= lowest)
                .count()
        };
        w.purge_oldest(doomed)
    }

    /// Applies retention: deletes the oldest sealed segments while the log is
    /// over `retention_bytes`, or while their newest user record is older
    /// than `retention_ms` before `now_ms` (`newest_user_time`). The active
    /// segment always stays.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<usize> {
        if !self.has_retention() {
            return Ok(0);
        }
        let w = self.lock_writer()?;
        let segments = self.read_segments().clone();
        let doomed = self.retention_doomed(&segments, now_ms)?;
        w.purge_oldest(doomed)
    }

    /// Where retention would have the log start now (the first offset of
    /// the oldest segment it keeps), deleting nothing; `None` when it would
    /// delete nothing. A cluster purges through Raft up to there.
    pub fn retention_point(&self, now_ms: u64) -> Result<Option<u64>> {
        if !self.has_retention() {
            return Ok(None);
        }
        // One view of the list for counting and for the answer: a purge
        // between two reads would shift the count onto a kept segment.
        let segments = self.read_segments().clone();
        let doomed = self.retention_doomed(&segments, now_ms)?;
        Ok(doomed
            .checked_sub(1)
            .and_then(|last| segments.get(last))
            .map(|s| s.next_offset()))
    }

    /// Whether a retention limit is set (bytes or age): without one,
    /// `retention_point` is always `None`.
    pub fn has_retention(&self) -> bool {
        let retention = self.retention();
        retention.bytes.is_some() || retention.ms.is_some()
    }

    /// How many of the oldest sealed `segments` retention dooms now.
    fn retention_doomed(&self, segments: &[Arc<Segment>], now_ms: u64) -> Result<usize> {
        let retention = self.retention();
        let mut total: u64 = segments.iter().map(|s| s.size_bytes()).sum();
        let mut doomed = 0;
        for (i, segment) in segments.iter().enumerate().take(segments.len().saturating_sub(1)) {
            let over_size = retention.bytes.is_some_and(|max| total > max);
            let too_old = match retention.ms {
                Some(_) if over_size => true,
                Some(ms) => newest_user_time(segments.get(i..).unwrap_or_default())?
                    .is_some_and(|t| t < now_ms.saturating_sub(ms)),
                None => false,
            };
            if !(over_size || too_old) {
                break;
            }
            total = total.saturating_sub(segment.size_bytes());
            doomed += 1;
        }
        Ok(doomed)
    }

    /// Cuts the tail so that `offset` is the last record kept. Everything
    /// after it is gone for readers at once and from disk before this returns.
    pub fn cut_after(&self, offset: u64) -> Result<()> {
        let keep = offset.saturating_add(1);
        let mut w = self.lock_writer()?;
        if keep >= w.next {
            return Ok(());
        }
        if keep < self.lowest_offset() {
            return Err(self.out_of_range(offset));
        }
        // The one fallible step that changes nothing comes first, so that a
        // full disk leaves the log as it was.
        self.segment_kept_by_cut(keep)?.prepare_for_appends()?;
        let _cut = self.shared.bounds.begin_cut();
        // Readers stop at the cut first (never past what was visible: in
        // `Always` mode records below `keep` may not be synced yet), and a
        // sync already under way can no longer publish past it.
        self.shared.committer.reset(keep, || self.shared.bounds.lower_to(keep));
        self.shared.synced.lower_to(keep);
        let cut = w.cut_tail(keep);
        w.follow_segments(keep);
        match &cut {
            Ok(()) => {
                debug_assert_eq!(w.next, keep, "the cut log ends at the cut");
                // The cut synced what it kept: its waiting appenders succeeded.
                self.shared.synced.advance(keep, self.shared.synced.generation());
                self.publish(keep);
                self.shared.committer.release(keep, true);
            }
            Err(e) => self.fail_writer(&format!("a cut after offset {offset} failed half-way: {e}")),
        }
        self.shared.committer.release(u64::MAX, false);
        self.shared.bounds.announce();
        cut
    }

    /// The segment that ends the log after a cut that keeps records below
    /// `keep`: the last one starting below it, or the first.
    fn segment_kept_by_cut(&self, keep: u64) -> Result<Arc<Segment>> {
        let segments = self.read_segments();
        segments
            .iter()
            .rev()
            .find(|s| s.base() < keep)
            .or(segments.first())
            .cloned()
            .ok_or_else(|| self.writer_failed())
    }

    /// Deletes every record and starts again, empty, at `base`: for a replica
    /// that must restart from its leader's lowest offset or resync from zero.
    pub fn reset(&self, base: u64) -> Result<()> {
        let mut w = self.lock_writer()?;
        // A new base's segment is created before anything changes: if that
        // fails, the log is as it was.
        let named = self.read_segments().iter().any(|s| s.base() == base);
        let fresh = match named {
            true => None,
            false => Some(Arc::new(Segment::create(&self.shared.dir, base, &self.shared.config)?)),
        };
        // Not `written_offset`: that runs ahead of the sync.
        let visible_before = self.shared.bounds.visible();
        let _cut = self.shared.bounds.begin_cut();
        // Readers see nothing while the segments go.
        let lowest = self.lowest_offset();
        self.shared
            .committer
            .reset(lowest, || self.shared.bounds.set(lowest, lowest));
        self.shared.committer.release(u64::MAX, false);
        self.shared.synced.lower_to(lowest);
        let reset = match fresh {
            Some(fresh) => w.reset_onto_new(fresh),
            None => w.reset_onto_existing(base),
        };
        if reset.is_ok() {
            self.shared.synced.restart_at(base);
        }
        w.follow_segments(base);
        if let Err(e) = &reset {
            self.fail_writer(&format!("a reset to offset {base} failed half-way: {e}"));
        }
        let (lowest, mut next) = {
            let segments = self.read_segments();
            let lowest = segments.first().map_or(base, |s| s.base());
            (lowest, segments.last().map_or(base, |s| s.next_offset()))
        };
        debug_assert!(reset.is_err() || (lowest, next) == (base, base));
        if reset.is_err() {
            // What is left of the old log, but never a record readers could
            // not see before (written, not yet synced).
            next = next.min(visible_before).max(lowest);
        }
        self.shared
            .committer
            .reset(next, || self.shared.bounds.set(lowest, next));
        self.shared.bounds.announce();
        reset
    }
}

/// The steps of purges, cuts and resets: only under the writer lock.
impl Writer<'_> {
    /// Removes up to `count` of the oldest segments, never the active one.
    pub(super) fn purge_oldest(&self, count: usize) -> Result<usize> {
        let log = self.log();
        let mut purged = 0;
        while purged < count {
            let oldest = {
                let segments = log.read_segments();
                match segments.first() {
                    Some(oldest) if segments.len() > 1 => oldest.clone(),
                    _ => break,
                }
            };
            tracing::info!(base = oldest.base(), next = oldest.next_offset(), "deleting segment");
            self.remove_segment_files(&oldest)?;
            self.remove_oldest_segment(oldest.next_offset());
            purged += 1;
        }
        Ok(purged)
    }

    /// Removes a segment's files and makes that durable. A failure fails the
    /// writer: the directory may no longer match what the log holds.
    fn remove_segment_files(&self, segment: &Segment) -> Result<()> {
        let log = self.log();
        let removed = segment
            .remove_files()
            .and_then(|()| Ok(fsops::sync_dir(&log.shared.dir)?));
        if let Err(e) = &removed {
            log.fail_writer(&format!("removing segment {} failed: {e}", segment.base()));
        }
        removed
    }

    /// Drops the segments at or after `keep`, newest first, then cuts the
    /// last one kept so that it ends before `keep`, synced.
    fn cut_tail(&self, keep: u64) -> Result<()> {
        self.remove_newest(|s| s.base() >= keep, Some(1))?;
        // The removals are durable (see `remove_segment_files`) before the
        // kept segment is shortened.
        self.log().active()?.cut_from(keep)
    }

    /// Removes segments from the newest back while `doomed` says so, leaving
    /// at least `spare` of them.
    fn remove_newest(&self, doomed: impl Fn(&Segment) -> bool, spare: Option<usize>) -> Result<()> {
        loop {
            let newest = {
                let segments = self.log().read_segments();
                let spared = spare.is_some_and(|n| segments.len() <= n);
                match segments.last() {
                    Some(newest) if !spared && doomed(newest) => newest.clone(),
                    _ => return Ok(()),
                }
            };
            self.remove_segment_files(&newest)?;
            self.pop_segment();
        }
    }

    /// `fresh` (a new segment at a base no segment has) takes the old
    /// segments' place: they go newest first. A crash in between leaves an
    /// empty segment that does not continue the log, which the next open
    /// drops. The list is never empty: `fresh` goes in before the last old
    /// segment leaves.
    fn reset_onto_new(&self, fresh: Arc<Segment>) -> Result<()> {
        self.remove_newest(|_| true, Some(1))?;
        let last_old = self.log().read_segments().last().cloned();
        if let Some(last_old) = last_old {
            self.remove_segment_files(&last_old)?;
        }
        self.replace_segments(vec![fresh]);
        Ok(())
    }

    /// `base` names a segment: the ones after it go newest first, it is cut
    /// to nothing, then the ones before it go oldest first.
    fn reset_onto_existing(&self, base: u64) -> Result<()> {
        self.remove_newest(|s| s.base() > base, Some(1))?;
        let kept = self.log().active()?;
        debug_assert_eq!(kept.base(), base);
        kept.prepare_for_appends()?;
        kept.cut_from(base)?;
        self.purge_oldest(usize::MAX)?;
        Ok(())
    }
}

/// The time of the newest user record in the first of `segments`, for
/// time-based retention. A cluster stores Raft's own entries (a leader's
/// blank entry, a membership change) as control frames stamped 0: they say
/// nothing of a segment's age, so a segment that ends with one is as old as
/// its newest user record. One that holds no user record is judged by the
/// newest user record of the next segment that has one (written after it,
/// clocks allowing); `None` when none does, and the segment is kept.
fn newest_user_time(segments: &[Arc<Segment>]) -> Result<Option<u64>> {
    for (n, segment) in segments.iter().enumerate() {
        match newest_user_time_in(segment) {
            Ok(Some(time)) => return Ok(Some(time)),
            Ok(None) => {}
            // A later segment that a cut shrinks while this runs without the
            // writer lock (`retention_point`): its age is unknown this time,
            // and the segments before it are kept.
            Err(_) if n > 0 => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn newest_user_time_in(segment: &Segment) -> Result<Option<u64>> {
    for offset in (segment.base()..segment.next_offset()).rev() {
        // The header alone: the value is not copied.
        let (attributes, timestamp_ms) = segment.read_with(offset, |r| (r.attributes, r.timestamp_ms))?;
        if attributes & CONTROL == 0 {
            return Ok(Some(timestamp_ms));
        }
    }
    Ok(None)
}
