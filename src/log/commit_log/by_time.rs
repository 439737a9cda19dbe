//! Finding a place by time: the first offset whose record was stamped at
//! or after a time (`Log::offset_at_time`), by a binary search over the
//! segments and then over one segment's index, reading frame headers only
//! (`Segment::stamps_at`): about log2(segments) + log2(records in a
//! segment) headers, and no file of its own to keep, rebuild or trust.
//!
//! It relies on timestamps that never go backwards in log order: the
//! writer stamps `max(clock, last stamp)` (see `appending`), and a
//! cluster's leader stamps the same way before Raft copies the entry (see
//! `cluster::node`). Control frames (a cluster's Raft entries) are stamped
//! 0 and say nothing of time: a probe that lands on one judges by the next
//! user record in its segment, and a segment by its newest user record (or
//! the newest one before it), as retention judges a segment's age.

use std::sync::Arc;

use super::super::error::Result;
use super::super::record::attributes::CONTROL;
use super::super::segment::Segment;
use super::{Log, blocking};

/// The offsets of one segment that readers may see now.
#[derive(Clone, Copy)]
struct Visible {
    from: u64,
    to: u64,
}

impl Log {
    /// The offset of the first record stamped at or after `time_ms` (from
    /// which on every record is, stamps never going backwards): the lowest
    /// record for a time before the oldest kept, `next_offset` for one
    /// after the newest. Control frames are passed over, but a record of
    /// an aborted cluster batch (hidden by the cluster, not the log) may be
    /// the answer; readers skip it as they skip it anywhere.
    pub fn offset_at_time(&self, time_ms: u64) -> Result<u64> {
        let bounds = &self.shared.bounds;
        bounds.consistent_across_cuts(|| self.search_time(time_ms), || blocking(|| self.shared.writer.wait()))
    }

    fn search_time(&self, time_ms: u64) -> Result<u64> {
        let bounds = &self.shared.bounds;
        let (lowest, next) = (bounds.lowest(), bounds.next());
        // A copy of the list: a purge or a roll meanwhile does not move
        // the segments under the search, and a purged one still reads.
        let segments: Vec<Arc<Segment>> = self.read_segments().clone();
        let visible = |s: &Segment| Visible {
            from: s.base().max(lowest),
            to: s.next_offset().min(next),
        };
        // The first segment whose newest user record so far is late enough.
        let (mut lo, mut hi) = (0, segments.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let late_enough = newest_user_stamp_upto(segments.get(..=mid).unwrap_or_default(), visible)?
                .is_some_and(|t| t >= time_ms);
            if late_enough {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        match segments.get(lo) {
            Some(segment) => first_at_or_after(segment, visible(segment), time_ms),
            None => Ok(next),
        }
    }
}

/// The stamp of the newest user record of a log just opened (0 if none):
/// where its writer's stamps go on from, whatever the clock says.
pub(super) fn newest_user_stamp(segments: &[Arc<Segment>]) -> Result<u64> {
    let whole = |s: &Segment| Visible {
        from: s.base(),
        to: s.next_offset(),
    };
    Ok(newest_user_stamp_upto(segments, whole)?.unwrap_or(0))
}

/// The stamp of the newest user record in the last of `segments`, or in
/// the newest one before it that holds one.
fn newest_user_stamp_upto(segments: &[Arc<Segment>], visible: impl Fn(&Segment) -> Visible) -> Result<Option<u64>> {
    for segment in segments.iter().rev() {
        let Visible { from, to } = visible(segment);
        for offset in (from..to).rev() {
            let stamps = segment.stamps_at(offset)?;
            if stamps.attributes & CONTROL == 0 {
                return Ok(Some(stamps.timestamp_ms));
            }
        }
    }
    Ok(None)
}

/// The first user record of `segment` (within `range`) stamped at or
/// after `time_ms`. The segment's newest user record is late enough, so
/// the answer lies within it.
fn first_at_or_after(segment: &Segment, range: Visible, time_ms: u64) -> Result<u64> {
    let (mut lo, mut hi) = (range.from, range.to);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if next_user_record(segment, mid, range.to)?.is_none_or(|(_, t)| t >= time_ms) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    // Past the control frames before it, so that a page of one record holds it.
    Ok(next_user_record(segment, lo, range.to)?.map_or(lo, |(offset, _)| offset))
}

/// The offset and stamp of the first user record in `segment` from
/// `offset` to `to`.
fn next_user_record(segment: &Segment, offset: u64, to: u64) -> Result<Option<(u64, u64)>> {
    for at in offset..to {
        let stamps = segment.stamps_at(at)?;
        if stamps.attributes & CONTROL == 0 {
            return Ok(Some((at, stamps.timestamp_ms)));
        }
    }
    Ok(None)
}
