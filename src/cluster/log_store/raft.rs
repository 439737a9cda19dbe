//! openraft's log storage traits over `LogStore`, as the contract in the
//! parent's doc says.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds, RangeInclusive};
use std::sync::atomic::Ordering;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::super::types::{Entry, LogId, TypeConfig, Vote, log_id};
use super::flushing::Written;
use super::{APPEND_BUDGET_BYTES, LogStore, PURGED, TERMS, VOTE, blocking, io_error, lock};

fn range_of(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = range_of(&range);
        self.read_entries(start, end, u64::MAX).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(*lock(&self.shared.vote))
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        self.read_entries(start, end, APPEND_BUDGET_BYTES).await
    }

    /// The last entry of each term in `range`, which openraft asks for as
    /// a group starts, from the terms table. Its default searches the log
    /// for them an entry at a time (a read on a blocking thread each): a
    /// named log's group elects at each restart of its nodes, so after a
    /// few dozen restarts each replica's start read as many entries, a
    /// thousand replicas a node.
    async fn get_key_log_ids(&mut self, range: RangeInclusive<LogId>) -> Result<Vec<LogId>, io::Error> {
        let (first, last) = (range.start(), range.end());
        let terms = self.terms();
        let keys: Vec<LogId> = terms
            .last_of_each_term(first.index, last.index)
            .into_iter()
            .map(|(term, index)| log_id(term, index))
            .collect();
        // Both ends come from the same table (`id_at`, `read_entries`).
        if keys.last() != Some(last) || terms.term_at(first.index) != Some(first.leader_id.term) {
            return Err(io::Error::other(format!(
                "the terms table does not hold the range {first}..={last} openraft asks about"
            )));
        }
        Ok(keys)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = *lock(&self.shared.purged);
        let last = self.last_id().or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let store = self.clone();
        let to_write = *vote;
        blocking(move || {
            store.wait_for_syncs();
            store.with_room(|| store.shared.durable.write(VOTE, &to_write, true))
        })
        .await?;
        *lock(&self.shared.vote) = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.shared.commit_now.set(committed);
        let seen = committed.and_then(|c| self.cap_to_log(c));
        let committed = seen.and_then(|c| self.cap_to_synced(c));
        self.note_seen_committed(seen, committed);
        if committed <= self.committed() {
            return Ok(());
        }
        // One small write in place, not synced (see `marks`).
        lock(&self.shared.committed).set(committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.committed())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        super::super::stages::reached(super::super::stages::QUEUED, &entries);
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            // Even nothing is done after the appends before it (in order).
            return self.shared.flusher.submit(Written {
                sync: None,
                must_sync: false,
                last: None,
                callback,
                written_at: std::time::Instant::now(),
            });
        };
        debug_assert!(
            entries.windows(2).all(|w| w[0].log_id.index + 1 == w[1].log_id.index),
            "entries are dense"
        );
        // With write caching a catalogue change is still made durable on a
        // majority before it commits: nodes act on it (make or remove a
        // replica's files), and a power cut must not take it back.
        let must_sync = self.shared.log.config().durability != crate::log::Durability::Always
            && entries.iter().any(super::super::catalogue::is_catalogue_entry);
        let (last, sync) = self.write_entries_soon(first, entries).await?;
        self.shared.flusher.submit(Written {
            sync,
            must_sync,
            last,
            callback,
            written_at: std::time::Instant::now(),
        })
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let keep = last.map_or(0, |l| l.index + 1);
        let store = self.clone();
        blocking(move || {
            store.wait_for_syncs();
            let log = &store.shared.log;
            if keep >= log.written_offset() {
                return Ok(());
            }
            store.truncating(|| store.with_room(|| store.truncate_from(keep)))
        })
        .await
    }

    async fn purge(&mut self, id: LogId) -> Result<(), io::Error> {
        let store = self.clone();
        blocking(move || {
            store.wait_for_syncs();
            store.with_room(|| store.purge_to(id))?;
            store.purged_for_room();
            // What the purge freed goes to the reserve first (see `room`).
            store.make_reserve();
            Ok(())
        })
        .await
    }
}

impl LogStore {
    /// Purges entries up to `id` (see `purge`); a second try after a full
    /// disk finishes what the first began.
    fn purge_to(&self, id: LogId) -> Result<(), io::Error> {
        self.shared.durable.write(PURGED, &Some(id), true)?;
        *lock(&self.shared.purged) = Some(id);
        let log = &self.shared.log;
        let lowest = id.index + 1;
        if lowest >= log.written_offset() {
            // Nothing is left to keep: the log starts again after the
            // purged entry (a follower past a snapshot, or all purged).
            if log.written_offset() != lowest || log.lowest_offset() != lowest {
                log.reset(lowest).map_err(io_error)?;
            }
            lock(&self.shared.recent).clear();
        } else {
            log.purge_before(lowest).map_err(io_error)?;
            lock(&self.shared.recent).forget_below(lowest);
        }
        Ok(())
    }

    /// Takes back the entries from `keep` on (see `truncate_after`).
    /// Raft may take back entries this node acknowledged but nobody
    /// committed. The flushed mark comes down first: were the cut done
    /// first, a crash in between would look like a storage fault (the log
    /// ending below the mark) at the next start.
    /// The mark's lock is held to the end: an append's sync finishing
    /// meanwhile must not raise the mark to an entry this takes back (see
    /// `flushing`).
    pub(super) fn truncate_from(&self, keep: u64) -> Result<(), io::Error> {
        let log = &self.shared.log;
        let mut flushed = lock(&self.shared.flushed);
        if flushed.value.is_some_and(|f| f.index >= keep) {
            let kept = keep
                .checked_sub(1)
                .and_then(|i| self.id_at(i))
                .and_then(|id| self.cap_to_synced(id))
                .or(*lock(&self.shared.purged));
            flushed.set_synced(kept)?;
        }
        tracing::info!(keep, end = log.written_offset(), "truncating uncommitted Raft entries");
        self.forget_verified_from(keep)?;
        lock(&self.shared.recent).truncate_from(keep);
        if keep > log.lowest_offset() {
            log.cut_after(keep - 1).map_err(io_error)?;
        } else {
            log.reset(keep).map_err(io_error)?;
        }
        let mut terms = lock(&self.shared.terms);
        // A write that failed (a full disk) is made again on the next try.
        if terms.forget_from(keep) || self.shared.terms_unsaved.load(Ordering::Acquire) {
            self.shared.terms_unsaved.store(true, Ordering::Release);
            self.shared.durable.write(TERMS, &*terms, true)?;
            self.shared.terms_unsaved.store(false, Ordering::Release);
        }
        drop(flushed);
        Ok(())
    }
}
