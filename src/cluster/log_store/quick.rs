//! Appends written on the Raft core's own task. Handing an append to a
//! blocking thread and waking the core again costs two thread hops, which
//! on a busy machine are most of a small append's write time, and both the
//! leader (before it sends the entries) and each follower (before its sync
//! starts) pay them on every write's path. An append is written in place
//! when nothing in it can block for long: it is small, goes at the log's
//! end in the term the log already ends in (no durable rewrite of the term
//! runs, which syncs), goes into the active segment as a plain copy (a
//! roll syncs the sealed segment and makes files; growing the file
//! allocates or writes zeros ahead), and the disk is not full (a full disk
//! waits for room). Anything else goes to a blocking thread as before; so does
//! the rest of a quick append that meets a full disk, from where it got.

use std::io;

use super::super::types::{Entry, LogId, term_of};
use super::room::is_full;
use super::{LogStore, blocking, check_dense, encode, lock};
use crate::log::{EncodedBatch, PendingSync};

/// The most frame bytes written in place: a few tens of microseconds of
/// copying into the page cache at most.
const QUICK_BYTES: usize = 64 * 1024;

/// Whether the records' values alone (their frames are larger) pass `limit`.
fn values_exceed(entries: &[Entry], limit: usize) -> bool {
    let mut bytes = 0usize;
    entries.iter().any(|entry| {
        if let openraft::EntryPayload::Normal(record) = &entry.payload {
            bytes = bytes.saturating_add(record.value.len());
        }
        bytes > limit
    })
}

impl LogStore {
    /// Writes dense `entries` from index `first` (as `write_entries`), in
    /// place when the write is quick, else on a blocking thread.
    pub(super) async fn write_entries_soon(
        &self,
        first: u64,
        entries: Vec<Entry>,
    ) -> io::Result<(Option<LogId>, Option<PendingSync>)> {
        if values_exceed(&entries, QUICK_BYTES) {
            // Surely not quick: encoded (a copy of every byte) on the
            // blocking thread too, not on the core's task.
            let store = self.clone();
            return blocking(move || store.write_entries(first, entries)).await;
        }
        check_dense(first, &entries)?;
        let batch = encode(first, &entries);
        let mut appending = false;
        if self.writes_quickly(first, &entries, &batch) {
            let started = std::time::Instant::now();
            match self.store_batch(first, &entries, &batch, &mut appending) {
                Ok(pending) => {
                    super::super::stages::record(super::super::stages::LOG_WRITE, started);
                    return Ok(self.keep_written(entries, batch, pending));
                }
                Err(e) if !is_full(&e) => return Err(e),
                // Waits for room on a blocking thread, going on from what
                // was written (`appending`).
                Err(_) => {}
            }
        }
        let store = self.clone();
        blocking(move || store.store_encoded(first, entries, batch, appending)).await
    }

    /// Whether nothing in writing `batch` can block for long (see above).
    fn writes_quickly(&self, first: u64, entries: &[Entry], batch: &EncodedBatch) -> bool {
        let log = &self.shared.log;
        let (Some(head), Some(count)) = (entries.first(), u32::try_from(entries.len()).ok()) else {
            return false;
        };
        let term = term_of(&head.log_id);
        batch.frames().len() <= QUICK_BYTES
            && !self.disk_full()
            && first == log.written_offset()
            && first > log.lowest_offset()
            && entries.iter().all(|e| term_of(&e.log_id) == term)
            && self.continues_last_run(first, term)
            && log.appends_in_place(batch.frames().len() as u64, count)
    }

    /// Whether entries of `term` from `first` on extend the last term run
    /// as it is saved: noting them changes nothing, so nothing is written.
    fn continues_last_run(&self, first: u64, term: u64) -> bool {
        if self.shared.terms_unsaved.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let terms = lock(&self.shared.terms);
        terms
            .runs()
            .last()
            .is_some_and(|(last_term, from)| *last_term == term && *from < first)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::EntryPayload;

    use super::super::test_support::small_segments;
    use super::super::{Durable, LogStore, encode};
    use super::QUICK_BYTES;
    use crate::cluster::types::{Entry, UserRecord, log_id};
    use crate::log::{Durability, Log, LogConfig};

    fn entry_with(term: u64, index: u64, value: &'static [u8]) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(UserRecord::new(0, 1, Bytes::from_static(value))),
        }
    }

    fn entry_of(term: u64, index: u64) -> Entry {
        entry_with(term, index, b"{}")
    }

    fn store(dir: &std::path::Path, config: LogConfig) -> LogStore {
        let log = Log::open(dir, config).expect("log opens");
        let durable = Durable::open(dir.join("raft")).expect("raft dir");
        LogStore::open(log, durable).expect("store opens")
    }

    fn quick(store: &LogStore, entries: &[Entry]) -> bool {
        let first = entries.first().map_or(0, |e| e.log_id.index);
        store.writes_quickly(first, entries, &encode(first, entries))
    }

    fn write(store: &LogStore, entries: Vec<Entry>) {
        let first = entries.first().map_or(0, |e| e.log_id.index);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let (_, sync) = runtime
            .block_on(store.write_entries_soon(first, entries))
            .expect("written");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
    }

    /// Only appends that cannot block for long are written on the Raft
    /// core's task: one that starts a term (a synced rewrite of the term
    /// runs), starts the log, or does not continue its end goes to a
    /// blocking thread.
    #[test]
    fn only_small_appends_that_continue_the_last_term_are_written_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(
            dir.path(),
            LogConfig {
                durability: Durability::Always,
                ..LogConfig::default()
            },
        );
        assert!(
            !quick(&store, &[entry_of(1, 0)]),
            "the first entry starts the log and its term"
        );
        write(&store, vec![entry_of(1, 0), entry_of(1, 1)]);
        assert!(quick(&store, &[entry_of(1, 2), entry_of(1, 3)]));
        assert!(!quick(&store, &[entry_of(2, 2)]), "a new term rewrites the term runs");
        assert!(
            !quick(&store, &[entry_of(1, 2), entry_of(2, 3)]),
            "a new term inside the append"
        );
        assert!(!quick(&store, &[entry_of(1, 3)]), "not at the log's end");
        let big: &'static [u8] = Box::leak(vec![b'x'; QUICK_BYTES].into_boxed_slice());
        assert!(!quick(&store, &[entry_with(1, 2, big)]), "past the in-place bytes");
        write(&store, vec![entry_of(1, 2), entry_of(1, 3)]);
        write(&store, vec![entry_of(2, 4)]);
        assert!(
            quick(&store, &[entry_of(2, 5)]),
            "the new term's run is saved: its next entries are quick"
        );
        write(&store, vec![entry_of(2, 5)]);
        let held: Vec<u64> = (0..6).filter_map(|i| store.id_at(i)).map(|id| id.index).collect();
        assert_eq!(held, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(store.terms().term_at(3), Some(1));
        assert_eq!(store.terms().term_at(5), Some(2));
    }

    /// With write caching the segment's file is allocated and faulted in
    /// ahead of the writer by the log's background thread, woken by the
    /// writer when it nears the end of what was done ahead: Raft appends
    /// must wake it too, or their writer allocates and faults every page
    /// in itself (and no append is ever quick).
    #[test]
    fn with_write_caching_raft_appends_have_the_file_prepared_ahead_of_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(
            dir.path(),
            LogConfig {
                durability: Durability::Never,
                ..LogConfig::default()
            },
        );
        write(&store, vec![entry_of(1, 0), entry_of(1, 1)]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !quick(&store, &[entry_of(1, 2)]) {
            assert!(
                std::time::Instant::now() < deadline,
                "no room was prepared ahead of the writer within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// An append that would roll the active segment (a sync of the sealed
    /// one, new files) is not written in place; once rolled, written on a
    /// blocking thread, the next small ones are again.
    #[test]
    fn an_append_that_rolls_the_segment_is_not_written_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(dir.path(), small_segments());
        write(&store, vec![entry_of(1, 0)]);
        let mut next = 1;
        while quick(&store, &[entry_of(1, next)]) {
            write(&store, vec![entry_of(1, next)]);
            next += 1;
            assert!(next < 1_000, "a 1 KiB segment fills");
        }
        let segments = store.log().stats().segments;
        write(&store, vec![entry_of(1, next)]);
        assert_eq!(
            store.log().stats().segments,
            segments + 1,
            "the append that was not quick rolled"
        );
        assert!(quick(&store, &[entry_of(1, next + 1)]));
    }
}
