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

use std::io;

use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

use super::log_store::LogStore;
use super::types::{LogId, Member, StoredMembership, UserRecord};
use crate::log::attributes::BATCH_OPEN;

/// What the state machine knows beyond the log; also a snapshot's data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The first offset of a batch whose last record is not applied yet.
    pub open_batch_from: Option<u64>,
    /// Aborted offsets as `[from, to)` ranges, ascending.
    pub aborted: Vec<(u64, u64)>,
    /// Consumer positions (see `consumers`); absent from tables written
    /// before they existed.
    #[serde(default)]
    pub consumers: crate::log::consumers::Positions,
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
    /// (an abort or a membership change, which readers and a restart must
    /// not miss).
    pub(super) fn apply(&mut self, id: LogId, attributes: u8, payload: &EntryPayload<UserRecord, u64, Member>) -> bool {
        debug_assert!(
            self.applied.is_none_or(|a| a.index < id.index),
            "entries apply in order"
        );
        let mut urgent = false;
        match payload {
            EntryPayload::Normal(_) if attributes & BATCH_OPEN != 0 => {
                self.open_batch_from.get_or_insert(id.index);
            }
            EntryPayload::Normal(_) => self.open_batch_from = None,
            EntryPayload::Blank | EntryPayload::Membership(_) => {
                if let Some(from) = self.open_batch_from.take() {
                    tracing::warn!(from, to = id.index, "a batch cut short by a leader change is aborted");
                    self.aborted.push((from, id.index));
                    urgent = true;
                }
                if let EntryPayload::Membership(m) = payload {
                    self.membership = StoredMembership::new(Some(id), m.clone());
                    urgent = true;
                }
            }
        }
        self.applied = Some(id);
        urgent
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
        let attributes = match &payload {
            EntryPayload::Normal(r) => r.attributes,
            _ => CONTROL,
        };
        t.apply(log_id(1, index), attributes, &payload)
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
