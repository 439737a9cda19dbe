//! Consumer positions in a cluster: a change (`log::consumers::Change`) is
//! a control entry in the Raft log, replicated like a record and applied
//! on every node into `Tables::consumers`, which the tables file and
//! snapshots carry (so a retention purge of the entries loses nothing).
//!
//! Entry format: a frame with `log::attributes::CONTROL` (readers and
//! `--follow` replicas skip it), stamped by the leader like a record, whose
//! value is
//!
//! ```text
//! {"raft":"consumer","change":{"set":{"name":..,"offset":..,"expected":..,"max":..,"at_ms":0}}}
//! ```
//!
//! Whether a change is made is decided when it is applied, from the table
//! and the entry alone (its `at_ms` is the entry's stamp, its `max` the
//! proposing leader's `--max-consumers`): deterministic on every node, so
//! two racing conditional changes have exactly one winner. The proposer
//! learns the decision from `Outcomes`, kept by index as entries apply.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::ClusterError;
use super::node::Cluster;
use super::tables::Tables;
use super::types::UserRecord;
use crate::log::attributes::CONTROL;
use crate::log::consumers::{Change, Position, Positions, Refusal};

/// What applying a change gave: the position stored (`None`: deleted), or
/// why it was refused.
pub type Outcome = Result<Option<Position>, Refusal>;

/// Outcomes kept for proposers to collect; older ones are dropped (their
/// proposer gave up long ago, or it was another node's).
const OUTCOMES_KEPT: usize = 4096;

/// The `raft` word of a consumer entry (see `codec::ControlKind`).
const KIND: &str = "consumer";

#[derive(Serialize, Deserialize)]
struct Entry {
    raft: String,
    change: Change,
}

/// The control entry that proposes `change`; the leader stamps it.
fn entry(change: Change) -> UserRecord {
    let entry = Entry {
        raft: KIND.to_string(),
        change,
    };
    // Serializing our own plain types into memory cannot fail.
    let value = serde_json::to_vec(&entry).unwrap_or_default();
    UserRecord::new(CONTROL, 0, Bytes::from(value))
}

/// The change a record carries, if it is a consumer entry.
fn change_of(record: &UserRecord) -> Option<Change> {
    if record.attributes & CONTROL == 0 {
        return None;
    }
    let entry: Entry = serde_json::from_slice(&record.value).ok()?;
    (entry.raft == KIND).then_some(entry.change)
}

/// Whether a control frame's value is an entry the tables apply, a
/// consumer's or the catalogue's (`codec` keeps those as records, not as
/// Raft's own entries).
pub(super) fn is_consumer_entry(value: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Kind {
        raft: String,
    }
    serde_json::from_slice::<Kind>(value).is_ok_and(|k| k.raft == KIND || k.raft == super::catalogue::KIND)
}

/// Applies the record at `index` to the tables if it is a consumer entry,
/// and keeps the outcome for its proposer. Returns whether it was one.
pub(super) fn apply(tables: &mut Tables, outcomes: &Outcomes, index: u64, record: &UserRecord) -> bool {
    let Some(mut change) = change_of(record) else {
        return false;
    };
    if let Change::Set { at_ms, .. } = &mut change {
        *at_ms = record.timestamp_ms;
    }
    let outcome = tables.consumers.apply(&change);
    outcomes.keep(index, outcome);
    true
}

/// Outcomes of applied entries (consumer or catalogue changes), by index,
/// the newest `OUTCOMES_KEPT`.
#[derive(Debug)]
pub(super) struct Outcomes<T = Outcome>(Mutex<(BTreeMap<u64, T>, VecDeque<u64>)>);

impl<T> Default for Outcomes<T> {
    fn default() -> Self {
        Outcomes(Mutex::new((BTreeMap::new(), VecDeque::new())))
    }
}

impl<T> Outcomes<T> {
    pub(super) fn keep(&self, index: u64, outcome: T) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (by_index, order) = &mut *kept;
        if by_index.insert(index, outcome).is_none() {
            order.push_back(index);
        }
        while order.len() > OUTCOMES_KEPT {
            if let Some(old) = order.pop_front() {
                by_index.remove(&old);
            }
        }
    }

    pub(super) fn take(&self, index: u64) -> Option<T> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.0.remove(&index)
    }
}

impl Cluster {
    /// Proposes `change` and answers how it was decided once it is applied
    /// here (see the module doc). Errors are a write's: not the leader, an
    /// unknown outcome.
    pub async fn change_position(&self, change: Change) -> Result<Outcome, ClusterError> {
        let index = self.write(vec![entry(change)]).await?.offset;
        self.inner.visibility.take_outcome(index).ok_or_else(|| {
            ClusterError::OutcomeUnknown(format!(
                "the change was applied at index {index}, but its outcome was no longer kept"
            ))
        })
    }

    /// Reads the positions as this node applied them.
    pub fn positions<R>(&self, read: impl FnOnce(&Positions) -> R) -> R {
        self.inner.visibility.positions(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::consumers::Expect;

    fn set(name: &str, offset: u64) -> Change {
        Change::Set {
            name: name.into(),
            offset,
            expected: Expect::Anything,
            max: 10,
            at_ms: 0,
        }
    }

    #[test]
    fn an_entry_is_a_control_record_applied_with_its_stamp() {
        let mut record = entry(set("a", 4));
        assert_eq!(record.attributes, CONTROL);
        assert!(is_consumer_entry(&record.value));
        record.timestamp_ms = 1234;
        let (mut tables, outcomes) = (Tables::default(), Outcomes::default());
        apply(&mut tables, &outcomes, 9, &record);
        let stored = Position {
            offset: 4,
            updated_ms: 1234,
        };
        assert_eq!(tables.consumers.get("a"), Some(stored));
        assert_eq!(outcomes.take(9), Some(Ok(Some(stored))));
        assert_eq!(outcomes.take(9), None, "an outcome is collected once");
    }

    #[test]
    fn raft_entries_and_records_are_not_consumer_entries() {
        assert!(!is_consumer_entry(br#"{"raft":"blank"}"#));
        let (mut tables, outcomes) = (Tables::default(), Outcomes::default());
        let plain = UserRecord::new(
            0,
            1,
            serde_json::to_vec(&Entry {
                raft: KIND.into(),
                change: set("a", 1),
            })
            .unwrap()
            .into(),
        );
        apply(&mut tables, &outcomes, 1, &plain);
        assert!(tables.consumers.is_empty(), "a user's record is never a change");
    }

    /// A snapshot's tables travel in one `POST /raft/snapshot` body, which
    /// the API reads with axum's default limit of 2 MiB: the largest table
    /// (`--max-consumers` at its default, the longest names and offsets)
    /// must fit with room for the rest of the tables.
    #[test]
    fn the_largest_default_table_fits_a_snapshot_body() {
        use crate::log::consumers::{DEFAULT_MAX_CONSUMERS, MAX_NAME_BYTES};
        let mut tables = Tables::default();
        for i in 0..DEFAULT_MAX_CONSUMERS {
            let change = Change::Set {
                name: format!("{i:0>width$}", width = MAX_NAME_BYTES),
                offset: u64::MAX,
                expected: Expect::Anything,
                max: DEFAULT_MAX_CONSUMERS,
                at_ms: 9_999_999_999_999,
            };
            tables.consumers.apply(&change).unwrap();
        }
        let bytes = serde_json::to_vec(&tables).unwrap().len();
        assert!(bytes < 2 * 1024 * 1024 - 64 * 1024, "{bytes} bytes");
    }

    #[test]
    fn only_the_newest_outcomes_are_kept() {
        let outcomes: Outcomes = Outcomes::default();
        for i in 0..(OUTCOMES_KEPT as u64 + 10) {
            outcomes.keep(i, Ok(None));
        }
        assert_eq!(outcomes.take(0), None);
        assert_eq!(outcomes.take(OUTCOMES_KEPT as u64 + 9), Some(Ok(None)));
    }
}
