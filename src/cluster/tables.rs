//! The state machine's tables (`Tables`): what it knows beyond the log, and
//! a snapshot's data. Serialised as JSON in `<data dir>/raft/state`.
//!
//! Two rules make a batch whole or never. Every record of a batch but its
//! last carries `log::attributes::BATCH_OPEN`: a batch is visible only once
//! its last record is applied (`open_batch_from` holds readers below its
//! first offset until then). A batch still open when a control entry
//! follows (a new leader's blank entry, or a membership change) can never
//! finish: its offsets are aborted, hidden from every reader on every node,
//! forever. Both are functions of the log alone, so every node that applies
//! the same entries shows the same records.
//!
//! The same holds for an append's guard (`log::Guard`, carried by its first
//! entry): when that entry is applied, the append is decided against the
//! producers table (`log::producers`) and the last record's offset, as the
//! log stands at that point on every node; a refused append (a duplicate,
//! a sequence gap, a fenced epoch, a failed `Expected-Last-Offset`) is
//! hidden like an aborted batch once its last entry is applied, and its
//! waiting client hears why. A producer is noted only once its append's
//! last entry is applied, so a batch a leader change cuts short is never
//! answered as a duplicate later. The leader's stamp is the clock the
//! producers' time limit is measured by, the same on every node.

use std::io;

use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

use super::log_store::LogStore;
use super::types::{Applied, LogId, Member, StoredMembership, UserRecord};
use crate::log::ProducerStamp;
use crate::log::attributes::BATCH_OPEN;
use crate::log::producers::{ProducerLimits, Producers, Refusal};

/// What the state machine knows beyond the log; also a snapshot's data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The first offset of a batch whose last record is not applied yet.
    pub open_batch_from: Option<u64>,
    /// Aborted offsets as `[from, to)` ranges, ascending.
    pub aborted: Vec<(u64, u64)>,
    /// Idempotent producers as the applied appends left them.
    #[serde(default)]
    pub producers: Producers,
    /// The offset of the last record readers see (what `Expected-Last-Offset` is held to).
    #[serde(default)]
    pub last_record: Option<u64>,
    /// How the append being applied was decided at its first entry.
    #[serde(default)]
    pub deciding: Option<Decided>,
    /// Consumer positions (see `consumers`); absent from tables written
    /// before they existed.
    #[serde(default)]
    pub consumers: crate::log::consumers::Positions,
    /// Named logs (group 0 only; see `catalogue`); absent from tables
    /// written before they existed.
    #[serde(default)]
    pub catalogue: super::catalogue::Catalogue,
}

/// How an append was decided when its first entry was applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decided {
    /// Appended; the producer to note once its last entry is applied.
    Appended(Option<ProducerStamp>),
    Refused(Refusal),
}

impl Tables {
    /// Readers see offsets below this.
    pub fn visible_end(&self) -> u64 {
        self.open_batch_from
            .unwrap_or_else(|| self.applied.map_or(0, |a| a.index + 1))
    }

    /// Whether `offset` belongs to an aborted batch.
    pub fn aborted(&self, offset: u64) -> bool {
        let i = self.aborted.partition_point(|(from, _)| *from <= offset);
        i.checked_sub(1)
            .and_then(|i| self.aborted.get(i))
            .is_some_and(|(_, to)| offset < *to)
    }

    /// Applies one entry; returns whether the tables must be written now
    /// (an abort, a refusal or a membership change, which readers and a
    /// restart must not miss), and what the entry's client is told.
    pub(super) fn apply(
        &mut self,
        id: LogId,
        attributes: u8,
        payload: &EntryPayload<UserRecord, u64, Member>,
        limits: &ProducerLimits,
    ) -> (bool, Applied) {
        debug_assert!(
            self.applied.is_none_or(|a| a.index < id.index),
            "entries apply in order"
        );
        let mut urgent = false;
        let mut refused = None;
        match payload {
            EntryPayload::Normal(record) => {
                if self.open_batch_from.is_none() {
                    self.deciding = Some(self.decide(record, limits));
                }
                if let Some(Decided::Refused(why)) = &self.deciding {
                    refused = Some(why.clone());
                }
                if attributes & BATCH_OPEN != 0 {
                    self.open_batch_from.get_or_insert(id.index);
                } else {
                    let from = self.open_batch_from.take().unwrap_or(id.index);
                    urgent |= self.close(from, id.index, record.timestamp_ms, limits);
                }
            }
            EntryPayload::Blank | EntryPayload::Membership(_) => {
                self.deciding = None;
                if let Some(from) = self.open_batch_from.take() {
                    tracing::warn!(from, to = id.index, "a batch cut short by a leader change is aborted");
                    self.hide(from, id.index);
                    urgent = true;
                }
                if let EntryPayload::Membership(m) = payload {
                    self.membership = StoredMembership::new(Some(id), m.clone());
                    urgent = true;
                }
            }
        }
        self.applied = Some(id);
        let applied = Applied {
            offset: id.index,
            refused,
        };
        (urgent, applied)
    }

    /// Applies an entry that is neither a record nor Raft's own (a consumer
    /// position's change): only `applied` moves.
    pub(super) fn pass(&mut self, id: LogId) -> (bool, Applied) {
        debug_assert!(
            self.applied.is_none_or(|a| a.index < id.index),
            "entries apply in order"
        );
        debug_assert!(self.open_batch_from.is_none(), "a batch's entries are consecutive");
        self.applied = Some(id);
        let applied = Applied {
            offset: id.index,
            refused: None,
        };
        (false, applied)
    }

    /// How the append whose first entry is `record` is decided, as the log
    /// stands now.
    fn decide(&self, record: &UserRecord, limits: &ProducerLimits) -> Decided {
        let guard = &record.guard;
        if let Some(why) = guard
            .producer
            .as_ref()
            .and_then(|p| self.producers.check(p, record.timestamp_ms, limits))
        {
            return Decided::Refused(why);
        }
        if let Some(expected) = guard.expected_last {
            let last = self.last_record;
            if last.and_then(|l| i64::try_from(l).ok()).unwrap_or(-1) != expected {
                return Decided::Refused(Refusal::OffsetMismatch { last });
            }
        }
        Decided::Appended(guard.producer.clone())
    }

    /// The append `[from, to]` is whole: shown (and its producer noted), or
    /// hidden if it was refused. Returns whether the tables must be written now.
    fn close(&mut self, from: u64, to: u64, stamp: u64, limits: &ProducerLimits) -> bool {
        match self.deciding.take() {
            Some(Decided::Refused(_)) => {
                self.hide(from, to + 1);
                true
            }
            Some(Decided::Appended(producer)) => {
                if let Some(p) = producer {
                    self.producers.record(&p, from, stamp, limits);
                }
                self.last_record = Some(to);
                false
            }
            // Decided before a restart that lost it (`forget_applied_past_log`): shown as it was.
            None => {
                self.last_record = Some(to);
                false
            }
        }
    }

    /// Forgets the hidden ranges wholly below `first`, the first entry the
    /// log holds: no read reaches them again (a log only ever starts later,
    /// or over at a snapshot, whose tables come with it). Returns whether
    /// any went. Without this the table grows with every aborted batch,
    /// duplicate and failed condition for as long as the cluster lives.
    pub(super) fn forget_hidden_below(&mut self, first: u64) -> bool {
        let before = self.aborted.len();
        self.aborted.retain(|(_, to)| *to > first);
        self.aborted.len() != before
    }

    /// Takes in the hidden ranges of `kept` too (this node's own, for a
    /// snapshot installed over a log that still holds entries the sender
    /// had forgotten the ranges of: `forget_hidden_below`). Both were made
    /// from the same entries where they overlap, so the union is what
    /// applying them gives.
    pub(super) fn keep_hidden_of(&mut self, kept: &[(u64, u64)]) {
        let mut all: Vec<(u64, u64)> = self.aborted.iter().chain(kept).copied().collect();
        all.sort_unstable();
        let mut joined: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (from, to) in all {
            match joined.last_mut() {
                Some((_, end)) if *end >= from => *end = (*end).max(to),
                _ => joined.push((from, to)),
            }
        }
        self.aborted = joined;
    }

    /// Hides `[from, to)` from readers, joining a range it follows.
    fn hide(&mut self, from: u64, to: u64) {
        debug_assert!(from < to && self.aborted.last().is_none_or(|(_, end)| *end <= from));
        match self.aborted.last_mut() {
            Some((_, end)) if *end == from => *end = to,
            _ => self.aborted.push((from, to)),
        }
    }
}

/// Where the batch that the entry at `index` belongs to starts, if that
/// entry leaves it open.
pub(super) fn open_batch_from(store: &LogStore, index: u64) -> io::Result<Option<u64>> {
    let open_at = |i: u64| -> io::Result<bool> {
        let (frames, _) = store
            .log()
            .read_frames_written(i, 1, 0)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let records = crate::log::split_frames(frames, i, crate::log::MAX_STORED_FRAME)
            .map_err(|(_, _, e)| io::Error::other(e.to_string()))?;
        Ok(records.first().is_some_and(|r| r.attributes & BATCH_OPEN != 0))
    };
    if !open_at(index)? {
        return Ok(None);
    }
    let mut from = index;
    while from > store.first_index() && open_at(from - 1)? {
        from -= 1;
    }
    Ok(Some(from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::log_id;
    use crate::log::attributes::CONTROL;

    fn record(open: bool) -> EntryPayload<UserRecord, u64, Member> {
        EntryPayload::Normal(UserRecord::new(
            if open { BATCH_OPEN } else { 0 },
            1,
            bytes::Bytes::from_static(b"1"),
        ))
    }

    fn apply(t: &mut Tables, index: u64, payload: EntryPayload<UserRecord, u64, Member>) -> bool {
        apply_answer(t, index, payload).0
    }

    fn apply_answer(t: &mut Tables, index: u64, payload: EntryPayload<UserRecord, u64, Member>) -> (bool, Applied) {
        let attributes = match &payload {
            EntryPayload::Normal(r) => r.attributes,
            _ => CONTROL,
        };
        t.apply(log_id(1, index), attributes, &payload, &ProducerLimits::default())
    }

    fn guarded(
        open: bool,
        producer: Option<(u64, u32)>,
        expected_last: Option<i64>,
    ) -> EntryPayload<UserRecord, u64, Member> {
        let EntryPayload::Normal(mut record) = record(open) else {
            unreachable!()
        };
        record.guard = crate::log::Guard {
            producer: producer.map(|(seq, count)| ProducerStamp {
                id: "p".into(),
                epoch: 0,
                seq,
                count,
            }),
            expected_last,
        };
        EntryPayload::Normal(record)
    }

    #[test]
    fn a_retried_append_is_hidden_and_answered_with_the_original_offsets() {
        let mut t = Tables::default();
        apply(&mut t, 0, guarded(true, Some((0, 2)), None));
        apply(&mut t, 1, record(false));
        assert_eq!(t.visible_end(), 2);
        apply(&mut t, 2, guarded(true, Some((0, 2)), None));
        let (urgent, answer) = apply_answer(&mut t, 3, record(false));
        assert!(urgent, "a refusal is written at once");
        assert_eq!(answer.refused, Some(Refusal::Duplicate { first: 0, last: 1 }));
        assert_eq!(t.aborted, vec![(2, 4)]);
        assert_eq!(t.last_record, Some(1));
        let (_, answer) = apply_answer(&mut t, 4, guarded(false, Some((5, 1)), None));
        assert_eq!(answer.refused, Some(Refusal::SequenceGap { expected: 2 }));
        assert_eq!(t.aborted, vec![(2, 5)], "neighbouring hidden ranges join");
    }

    #[test]
    fn an_append_a_leader_change_cut_short_is_not_a_duplicate_later() {
        let mut t = Tables::default();
        apply(&mut t, 0, guarded(true, Some((0, 2)), None));
        apply(&mut t, 1, EntryPayload::Blank);
        let (_, answer) = apply_answer(&mut t, 2, guarded(true, Some((0, 2)), None));
        assert_eq!(answer.refused, None, "the retry is appended");
        apply(&mut t, 3, record(false));
        assert_eq!(t.visible_end(), 4);
        assert_eq!(t.aborted, vec![(0, 1)]);
    }

    #[test]
    fn an_expected_last_offset_is_held_to_the_last_shown_record() {
        let mut t = Tables::default();
        let (_, answer) = apply_answer(&mut t, 0, guarded(false, None, Some(-1)));
        assert_eq!(answer.refused, None, "-1: an empty log");
        apply(&mut t, 1, EntryPayload::Blank);
        let (_, answer) = apply_answer(&mut t, 2, guarded(false, None, Some(-1)));
        assert_eq!(answer.refused, Some(Refusal::OffsetMismatch { last: Some(0) }));
        let (_, answer) = apply_answer(&mut t, 3, guarded(false, None, Some(0)));
        assert_eq!(
            answer.refused, None,
            "control entries and hidden records are not records"
        );
        assert_eq!(t.last_record, Some(3));
    }

    #[test]
    fn a_batch_is_visible_only_once_its_last_record_is_applied() {
        let mut t = Tables::default();
        assert!(!apply(&mut t, 0, record(false)));
        assert_eq!(t.visible_end(), 1);
        apply(&mut t, 1, record(true));
        apply(&mut t, 2, record(true));
        assert_eq!(t.visible_end(), 1, "an open batch is not shown");
        apply(&mut t, 3, record(false));
        assert_eq!(t.visible_end(), 4);
        assert!(!t.aborted(1) && !t.aborted(3));
    }

    /// Issue 19 item 15: the hidden ranges only grew. Those wholly below
    /// the log's first entry go; one that reaches into the log stays; a
    /// snapshot's table takes back the ranges a log still holds.
    #[test]
    fn hidden_ranges_below_the_log_are_forgotten_and_a_kept_log_gets_its_own_back() {
        let mut t = Tables {
            aborted: vec![(2, 4), (6, 9), (12, 13)],
            ..Tables::default()
        };
        assert!(!t.forget_hidden_below(3), "(2, 4) holds offset 3, which the log holds");
        assert!(t.forget_hidden_below(4), "(2, 4) is wholly below 4");
        assert_eq!(t.aborted, vec![(6, 9), (12, 13)]);
        assert!(!t.forget_hidden_below(8), "(6, 9) holds offset 8");
        assert_eq!(t.aborted.len(), 2);
        t.keep_hidden_of(&[(2, 4), (6, 9), (10, 12)]);
        assert_eq!(t.aborted, vec![(2, 4), (6, 9), (10, 13)]);
        assert!(!t.aborted(5) && t.aborted(3) && t.aborted(11) && t.aborted(12));
    }

    #[test]
    fn a_batch_that_a_leader_change_interrupts_is_aborted_for_good() {
        let mut t = Tables::default();
        apply(&mut t, 0, record(false));
        apply(&mut t, 1, record(true));
        apply(&mut t, 2, record(true));
        assert!(apply(&mut t, 3, EntryPayload::Blank), "an abort is written at once");
        assert_eq!(t.visible_end(), 4);
        assert_eq!(t.aborted, vec![(1, 3)]);
        assert!(!t.aborted(0) && t.aborted(1) && t.aborted(2) && !t.aborted(3));
        apply(&mut t, 4, record(false));
        assert!(!t.aborted(4));
    }
}
