//! The newest entries, kept in memory as they were appended: the leader's
//! replication to each follower and every node's apply read them again at
//! once, and reading them from the log would copy and checksum each record
//! again. Entries are cheap to clone (a record's value and frame are shared
//! `Bytes`). The cache mirrors the log's tail exactly: appends extend it,
//! a truncation or a reset cuts or clears it, and it forgets its oldest
//! entries past `MAX_BYTES`.

use std::collections::VecDeque;

use openraft::EntryPayload;

use super::types::Entry;

const MAX_BYTES: usize = 64 << 20;

/// What an entry costs to keep, roughly. A record's value is a slice of
/// its frame once it has one (`log_store::attach_frames`): counted once.
fn weight(entry: &Entry) -> usize {
    64 + match &entry.payload {
        EntryPayload::Normal(r) => r.frame.as_ref().map_or(r.value.len(), |f| f.len()),
        _ => 256,
    }
}

#[derive(Debug, Default)]
pub struct Recent {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Recent {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn end(&self) -> Option<u64> {
        self.entries.back().map(|e| e.log_id.index + 1)
    }

    /// Entries just appended to the log's end.
    pub fn push(&mut self, appended: &[Entry]) {
        let Some(first) = appended.first() else { return };
        if self.end().is_some_and(|end| end != first.log_id.index) {
            self.clear();
        }
        for entry in appended {
            debug_assert!(self.end().is_none_or(|end| end == entry.log_id.index), "dense");
            self.bytes += weight(entry);
            self.entries.push_back(entry.clone());
        }
        while self.bytes > MAX_BYTES && self.entries.len() > 1 {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= weight(&old);
            }
        }
    }

    /// Entries from `start` up to `end` (exclusive) and about `max_bytes`
    /// (one at least), if the cache holds `start`.
    pub fn get(&self, start: u64, end: u64, max_bytes: u64) -> Option<Vec<Entry>> {
        let first = self.first()?;
        if start < first || start >= self.end()? || start >= end {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let mut taken = Vec::new();
        let mut bytes = 0u64;
        for entry in self.entries.iter().skip(skip) {
            if entry.log_id.index >= end || (!taken.is_empty() && bytes >= max_bytes) {
                break;
            }
            bytes += weight(entry) as u64;
            taken.push(entry.clone());
        }
        Some(taken)
    }

    /// The log was cut: entries from `keep` on are gone.
    pub fn truncate_from(&mut self, keep: u64) {
        while self.end().is_some_and(|end| end > keep) {
            if let Some(gone) = self.entries.pop_back() {
                self.bytes -= weight(&gone);
            }
        }
    }

    /// The log now starts at `lowest`.
    pub fn forget_below(&mut self, lowest: u64) {
        while self.first().is_some_and(|first| first < lowest) {
            if let Some(gone) = self.entries.pop_front() {
                self.bytes -= weight(&gone);
            }
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::{UserRecord, log_id};

    fn entries(from: u64, to: u64) -> Vec<Entry> {
        (from..to)
            .map(|i| Entry {
                log_id: log_id(1, i),
                payload: EntryPayload::Normal(UserRecord::new(0, 1, bytes::Bytes::from_static(b"x"))),
            })
            .collect()
    }

    fn indexes(got: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        got.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn the_cache_mirrors_the_log_tail() {
        let mut recent = Recent::default();
        recent.push(&entries(5, 10));
        assert_eq!(
            indexes(recent.get(4, 10, u64::MAX)),
            None,
            "below the cache: read the log"
        );
        assert_eq!(indexes(recent.get(7, 100, u64::MAX)), Some(vec![7, 8, 9]));
        recent.truncate_from(8);
        assert_eq!(indexes(recent.get(7, 100, u64::MAX)), Some(vec![7]));
        recent.push(&entries(8, 9));
        assert_eq!(indexes(recent.get(5, 100, 0)), Some(vec![5]), "one entry at least");
        recent.forget_below(7);
        assert_eq!(indexes(recent.get(6, 100, u64::MAX)), None);
        recent.push(&entries(20, 21));
        assert_eq!(indexes(recent.get(7, 100, u64::MAX)), None, "a gap clears the cache");
        assert_eq!(indexes(recent.get(20, 100, u64::MAX)), Some(vec![20]));
    }

    /// Entries as a node caches them: each record's value a slice of its
    /// frame.
    fn framed(from: u64, to: u64, value_bytes: usize) -> Vec<Entry> {
        let mut batch = crate::log::EncodedBatch::new(from);
        let value = vec![b'7'; value_bytes];
        for _ in from..to {
            batch.push(1, 0, crate::log::Payload::new(&value));
        }
        batch
            .into_frames()
            .into_iter()
            .map(|frame| {
                let mut record = UserRecord::new(0, 1, frame.record().value.clone());
                let index = frame.offset();
                record.frame = Some(frame);
                Entry {
                    log_id: log_id(1, index),
                    payload: EntryPayload::Normal(record),
                }
            })
            .collect()
    }

    #[test]
    fn the_cache_holds_its_size_in_frames_counting_a_value_inside_its_frame_once() {
        let mut recent = Recent::default();
        // 48 MiB of frames: under the cache's 64 MiB, but over it if each
        // value were counted beside its frame.
        recent.push(&framed(0, 48, 1 << 20));
        assert_eq!(indexes(recent.get(0, 1, u64::MAX)), Some(vec![0]), "nothing forgotten");
        recent.push(&framed(48, 80, 1 << 20));
        assert!(recent.get(0, 1, u64::MAX).is_none(), "past 64 MiB the oldest go");
        assert!(recent.bytes <= MAX_BYTES, "{} bytes kept", recent.bytes);
    }
}
