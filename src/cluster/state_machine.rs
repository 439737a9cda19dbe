//! The state machine is the log itself: applying an entry only makes it
//! visible to readers (`Log::set_visible_cap`), answers the client waiting
//! for it with its offset, and keeps small tables:
//!
//! - the membership, as openraft needs it;
//! - batches, whole or never: which offsets readers may see, and which
//!   belong to a batch a leader change cut short (the rules: `tables`);
//! - idempotent producers and the last record's offset, by which an
//!   append's guard is decided as it is applied: a refused append is
//!   hidden like an aborted batch, and its client hears why (`tables`);
//! - consumer positions, changed by their control entries (`consumers`).
//!
//! A snapshot is these tables (`Tables`), not the records: a node that
//! installs one whose last entry its log lacks starts its log over after
//! it, loudly (see `install_snapshot`). The tables are written to
//! `<data dir>/raft/state` whenever an abort or a membership change is
//! applied (before readers can see past it) and otherwise at most every
//! `TABLES_EVERY`: entries applied since are applied again after a restart.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};

use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::catalogue::CatalogueChange;
use super::durable::Durable;
use super::log_store::LogStore;
use super::tables::{Tables, open_batch_from};
use super::types::{LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::log::attributes::CONTROL;

const STATE: &str = "state";
const SNAPSHOT: &str = "snapshot";
const TABLES_EVERY: Duration = Duration::from_millis(200);

/// A snapshot as stored: its metadata and tables.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    tables: Tables,
}

/// The last entry the stored snapshot covers, if there is one; its
/// tables are skipped, not kept (a start asks before the state machine
/// opens: see `repair`).
pub(super) fn snapshot_last(durable: &Durable) -> io::Result<Option<LogId>> {
    #[derive(Deserialize)]
    struct MetaOnly {
        meta: SnapshotMeta,
    }
    Ok(durable.read::<MetaOnly>(SNAPSHOT)?.and_then(|s| s.meta.last_log_id))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct Shared {
    store: LogStore,
    durable: Durable,
    tables: RwLock<Tables>,
    snapshot: Mutex<Option<StoredSnapshot>>,
    /// Bumped whenever the tables change, for the writer behind.
    changed: watch::Sender<u64>,
    /// Held while the tables are copied and written (see `write_tables`).
    writing: Mutex<()>,
    /// How consumer changes were decided, for their proposers.
    outcomes: super::consumers::Outcomes,
    /// How catalogue changes were decided, for their proposers.
    catalogue_outcomes: super::consumers::Outcomes<super::catalogue::Outcome>,
    /// Bumped once a catalogue change is applied and written (or a
    /// snapshot installed): named logs follow it.
    catalogue_changed: watch::Sender<u64>,
    /// The catalogue as the tables on disk hold it: what the node acts on
    /// (never a change a restart could forget; `tables` has it earlier).
    published: RwLock<super::catalogue::Catalogue>,
}

/// The state machine; clones share it, and `Visibility` reads it.
#[derive(Clone, Debug)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

/// What HTTP readers ask of the state machine.
#[derive(Clone, Debug)]
pub struct Visibility {
    shared: Arc<Shared>,
}

impl Visibility {
    /// Whether any offset in `[from, to)` belongs to an aborted batch.
    pub fn any_aborted(&self, from: u64, to: u64) -> bool {
        self.shared
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .aborted
            .iter()
            .any(|(a, b)| *a < to && *b > from)
    }

    /// Whether `offset` is hidden from readers (an aborted batch's record).
    pub fn aborted(&self, offset: u64) -> bool {
        self.shared
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .aborted(offset)
    }

    /// Reads the consumer positions as applied.
    pub fn positions<R>(&self, read: impl FnOnce(&crate::log::consumers::Positions) -> R) -> R {
        read(
            &self
                .shared
                .tables
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .consumers,
        )
    }

    /// How the consumer change at `index` was decided, once.
    pub fn take_outcome(&self, index: u64) -> Option<super::consumers::Outcome> {
        self.shared.outcomes.take(index)
    }

    /// How the catalogue change at `index` was decided, once.
    pub fn take_catalogue_outcome(&self, index: u64) -> Option<super::catalogue::Outcome> {
        self.shared.catalogue_outcomes.take(index)
    }

    /// The catalogue as applied and written (`published`).
    pub fn catalogue(&self) -> super::catalogue::Catalogue {
        self.shared
            .published
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Log `name` as the catalogue places it.
    pub fn placed(&self, name: &str) -> Option<super::catalogue::PlacedLog> {
        self.with_placed(name, Clone::clone)
    }

    /// `f` of log `name` as the catalogue places it, without a copy.
    pub fn with_placed<T>(&self, name: &str, f: impl FnOnce(&super::catalogue::PlacedLog) -> T) -> Option<T> {
        let published = self.shared.published.read().unwrap_or_else(PoisonError::into_inner);
        published.logs.get(name).map(f)
    }

    pub fn catalogue_changes(&self) -> watch::Receiver<u64> {
        self.shared.catalogue_changed.subscribe()
    }
}

impl StateMachine {
    /// Opens the tables and makes visible what they say was applied.
    pub fn open(store: LogStore, durable: Durable) -> io::Result<StateMachine> {
        let tables = durable.read::<Tables>(STATE)?.unwrap_or_default();
        let snapshot = durable.read::<StoredSnapshot>(SNAPSHOT)?;
        let sm = StateMachine {
            shared: Arc::new(Shared {
                store,
                durable,
                tables: RwLock::new(tables),
                snapshot: Mutex::new(snapshot),
                changed: watch::Sender::new(0),
                writing: Mutex::new(()),
                outcomes: Default::default(),
                catalogue_outcomes: Default::default(),
                catalogue_changed: watch::Sender::new(0),
                published: RwLock::new(Default::default()),
            }),
        };
        sm.publish();
        sm.publish_catalogue();
        sm.write_tables_behind();
        Ok(sm)
    }

    /// After a storage fault: the log no longer holds what the tables say
    /// was applied. The tables go back to the last state this node kept
    /// whole, its snapshot (or the empty tables of a log purged of
    /// nothing), and openraft applies the entries after it again: every
    /// table (producers, the last record, consumer positions, batches) is
    /// then what the entries the log holds make it. Keeping the producer
    /// table while applying lost entries again took each of their records
    /// for a duplicate and hid it, on this node alone. A snapshot past the
    /// log's end is the state a crash inside `install_snapshot` leaves,
    /// which openraft's purge up to it finishes.
    pub fn forget_applied_past_log(&self) -> io::Result<()> {
        let store = &self.shared.store;
        let mut tables = self.shared.tables.write().unwrap_or_else(PoisonError::into_inner);
        let Some(applied) = tables.applied else {
            return Ok(());
        };
        if applied.index < store.first_index() || store.holds(&applied) {
            return Ok(());
        }
        let last = store.last_id();
        match self.kept_whole(store) {
            Some(kept) => {
                tracing::warn!(?applied, log_end = ?last, from = ?kept.applied,
                    "the log lost applied entries: the tables go back to this node's snapshot and what follows is applied again");
                *tables = kept;
            }
            None => {
                // No snapshot, yet a purged log: nothing to go back to (a
                // snapshot file lost). Applying goes on from the log's end.
                tracing::error!(?applied, log_end = ?last,
                    "the log lost applied entries and this node has no snapshot to go back to: applying again from the log's end; its producer and consumer tables may differ from the other nodes'");
                tables.applied = last;
                tables.deciding = None;
                tables.open_batch_from = match last {
                    Some(last) => open_batch_from(store, last.index)?,
                    None => None,
                };
                tables
                    .aborted
                    .retain(|(from, _)| last.is_some_and(|l| *from <= l.index));
            }
        }
        drop(tables);
        self.write_tables_with_room()?;
        self.publish();
        self.publish_catalogue();
        Ok(())
    }

    /// The tables as of this node's snapshot, or empty ones if its log was
    /// never purged (every entry since the first is then still held).
    fn kept_whole(&self, store: &LogStore) -> Option<Tables> {
        match lock(&self.shared.snapshot).clone() {
            Some(snapshot) => {
                let mut tables = snapshot.tables;
                tables.applied = snapshot.meta.last_log_id;
                tables.membership = snapshot.meta.last_membership;
                Some(tables)
            }
            None => (store.first_index() == 0).then(Tables::default),
        }
    }

    pub fn visibility(&self) -> Visibility {
        Visibility {
            shared: self.shared.clone(),
        }
    }

    pub fn tables(&self) -> Tables {
        self.shared
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The tables, once the hidden ranges the log no longer reaches are
    /// forgotten (`Tables::forget_hidden_below`): what is written and what
    /// a snapshot carries.
    fn tables_pruned(&self) -> Tables {
        // Readers reach from the log's first segment's base, which a purge
        // inside a segment leaves below `first_index` (purged + 1).
        let first = self.shared.store.log().lowest_offset();
        let mut tables = self.shared.tables.write().unwrap_or_else(PoisonError::into_inner);
        tables.forget_hidden_below(first);
        tables.clone()
    }

    /// Readers see what is applied (whole batches only) and written.
    /// Applies the record at `index` to the catalogue if it is a
    /// catalogue entry, and keeps the outcome for its proposer. Returns
    /// whether it was one.
    /// whether it was one, and if so whether it changed the catalogue; an
    /// entry that cannot be applied alike on every node stops the core.
    fn apply_catalogue(
        &self,
        tables: &mut Tables,
        id: LogId,
        record: &super::types::UserRecord,
    ) -> io::Result<Option<bool>> {
        let Some(change) = super::catalogue::change_of(record) else {
            return Ok(None);
        };
        let index = id.index;
        let members = tables.membership.membership().nodes().map(|(id, _)| *id).collect();
        let outcome = tables
            .catalogue
            .apply_at((id.leader_id.term, index), change.as_ref(), &members)
            .map_err(|why| {
                tracing::error!(index, %why, "a catalogue entry cannot be applied here: stopping");
                io::Error::new(io::ErrorKind::InvalidData, why)
            })?;
        let changed = match (&outcome, &change) {
            (Ok((made, placed)), Ok(CatalogueChange::Create { .. })) => {
                tracing::info!(index, ?change, group = placed.group, made, "catalogue: create");
                *made
            }
            (Ok((_, placed)), _) => {
                tracing::info!(index, ?change, group = placed.group, "catalogue changed");
                true
            }
            (Err(why), _) => {
                tracing::info!(index, ?change, %why, "catalogue change refused");
                false
            }
        };
        self.shared.catalogue_outcomes.keep(index, outcome);
        Ok(Some(changed))
    }

    /// Makes the catalogue as the tables now hold it the one the node acts
    /// on; called once they are written.
    fn publish_catalogue(&self) {
        let catalogue = self.tables().catalogue;
        *self.shared.published.write().unwrap_or_else(PoisonError::into_inner) = catalogue;
        self.shared.catalogue_changed.send_modify(|n| *n += 1);
    }

    fn publish(&self) {
        let end = self
            .shared
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .visible_end();
        let log = self.shared.store.log();
        log.set_visible_cap(end.min(log.written_offset()));
    }

    /// Writes the tables as they are now. Taking the copy and writing it
    /// happen under one lock, so that a slow writer never lands an older
    /// copy after a newer one.
    /// With `--fsync always` they are written only once every entry they
    /// name is synced (appends return before their sync; every entry the
    /// copy names was appended before the wait). With write caching
    /// nothing syncs those entries, and syncing the log for every tables
    /// write would undo the mode: tables may then name entries a power cut
    /// takes, and the next start finds the log short of them and goes back
    /// to the snapshot (`forget_applied_past_log`).
    fn write_tables(&self) -> io::Result<()> {
        let _one_at_a_time = lock(&self.shared.writing);
        let tables = self.tables_pruned();
        self.shared.store.wait_for_syncs();
        self.shared.durable.write(STATE, &tables, true)
    }

    /// `write_tables` where its failure would stop the Raft core (an
    /// apply that must record them, a snapshot installed): a full disk
    /// gives back the reserve and waits instead (see `log_store::room`).
    /// The copy written behind only warns, and leaves the reserve alone.
    fn write_tables_with_room(&self) -> io::Result<()> {
        self.shared.store.with_room(|| self.write_tables())
    }

    fn write_tables_behind(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut changes = self.shared.changed.subscribe();
        let sm = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            while changes.changed().await.is_ok() {
                changes.borrow_and_update();
                let Some(shared) = sm.upgrade() else { return };
                let sm = StateMachine { shared };
                let written = tokio::task::spawn_blocking(move || sm.write_tables()).await;
                if let Ok(Err(e)) | Err(e) = written.map_err(io::Error::other) {
                    tracing::warn!(error = %e, "could not record the state machine's tables");
                }
                tokio::time::sleep(TABLES_EVERY).await;
            }
        });
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Tables;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let t = self.tables();
        Ok((t.applied, t.membership))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut answers = Vec::new();
        let mut urgent = false;
        let mut catalogue_changed = false;
        let limits = self.shared.store.log().config().producers;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            super::stages::reached(super::stages::APPLIED, [&entry]);
            let attributes = match &entry.payload {
                EntryPayload::Normal(r) => r.attributes & !CONTROL,
                _ => CONTROL,
            };
            let index = entry.log_id.index;
            let mut tables = self.shared.tables.write().unwrap_or_else(PoisonError::into_inner);
            // A consumer or catalogue entry changes its table only: it is
            // no record (not the last one `Expected-Last-Offset` is held
            // to) and no producer's append.
            let consumer = match &entry.payload {
                EntryPayload::Normal(record) => match self.apply_catalogue(&mut tables, entry.log_id, record)? {
                    Some(changed) => {
                        catalogue_changed |= changed;
                        true
                    }
                    None => super::consumers::apply(&mut tables, &self.shared.outcomes, index, record),
                },
                _ => false,
            };
            let (must_write, applied) = match consumer {
                true => tables.pass(entry.log_id),
                false => tables.apply(entry.log_id, attributes, &entry.payload, &limits),
            };
            drop(tables);
            // A node acts on a catalogue change (makes or deletes a log's
            // files) only once a restart cannot forget it.
            urgent |= must_write || catalogue_changed;
            if let Some(responder) = responder {
                answers.push((responder, applied));
            }
        }
        if urgent {
            // Readers must not see past an abort before every restart knows it.
            let sm = self.clone();
            tokio::task::spawn_blocking(move || {
                // A node acts on a catalogue change (makes or removes a
                // replica's files): with write caching the entry itself is
                // synced first, so that no power cut takes it back after.
                if catalogue_changed {
                    sm.shared.store.sync_appended()?;
                }
                sm.write_tables_with_room()
            })
            .await
            .map_err(io::Error::other)??;
        } else {
            self.shared.changed.send_modify(|n| *n += 1);
        }
        self.publish();
        if catalogue_changed {
            self.publish_catalogue();
        }
        for (responder, applied) in answers {
            responder.send(applied);
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        Some(self.clone())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, tables: Tables) -> Result<(), io::Error> {
        let store = self.shared.store.clone();
        let mut installed = tables;
        installed.applied = meta.last_log_id;
        installed.membership = meta.last_membership.clone();
        // A log that keeps what follows the snapshot (below) may hold
        // entries whose hidden ranges the sender had forgotten: its own
        // ranges, made from the same entries, stay.
        let own = self.tables().aborted;
        installed.keep_hidden_of(&own);
        *self.shared.tables.write().unwrap_or_else(PoisonError::into_inner) = installed.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            tables: installed,
        };
        // The snapshot and the tables are on disk before the log is reset:
        // a crash in between restarts with applied past the log's end, and
        // openraft then purges up to the snapshot, which resets the log the
        // same way (`LogStore::purge`). The other order would restart with
        // tables that expect entries the reset deleted.
        let sm = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = &sm.shared.store;
            store.with_room(|| sm.shared.durable.write(SNAPSHOT, &stored, true))?;
            *lock(&sm.shared.snapshot) = Some(stored);
            sm.write_tables_with_room()
        })
        .await
        .map_err(io::Error::other)??;
        // Only a log that does not reach the snapshot's last entry, holds
        // another entry at its index, or starts past the entry after it,
        // starts over; one that purged it (retention purges up to a
        // snapshot) keeps what follows it.
        let starts_over = |last: &LogId| {
            last.index >= store.next_index()
                || store.first_index() > last.index + 1
                || store.id_at(last.index).is_some_and(|held| held != *last)
        };
        if let Some(last) = meta.last_log_id.filter(starts_over) {
            let last = last.index;
            tracing::warn!(
                snapshot_last = last,
                log_from = store.first_index(),
                log_to = store.next_index(),
                "installing a snapshot this log does not reach: the log starts over after it, records before are not kept here"
            );
            let reset = store.clone();
            tokio::task::spawn_blocking(move || reset.reset_to(last + 1))
                .await
                .map_err(io::Error::other)??;
        }
        self.publish();
        self.publish_catalogue();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::type_config::alias::SnapshotOf<TypeConfig, Tables>>, io::Error> {
        Ok(lock(&self.shared.snapshot).clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: s.tables,
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Tables;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::type_config::alias::SnapshotOf<TypeConfig, Tables>, io::Error> {
        // Applied entries may not be synced yet (appends return before
        // their sync, or write caching): a snapshot naming one, kept through a power cut
        // that took the entry, would make the next start reset the log
        // past it. The copy first, then the wait: every entry the copy
        // names was appended before the wait (apply runs meanwhile).
        let tables = self.tables_pruned();
        // On a full disk the sync waits for room as the documents below do
        // (an error here would stop the Raft core until a restart).
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || store.with_room(|| store.sync_appended()))
            .await
            .map_err(io::Error::other)??;
        let meta = SnapshotMeta {
            last_log_id: tables.applied,
            last_membership: tables.membership.clone(),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            tables: tables.clone(),
        };
        let sm = self.clone();
        let to_store = stored.clone();
        tokio::task::spawn_blocking(move || {
            let store = &sm.shared.store;
            store.with_room(|| sm.shared.durable.write(SNAPSHOT, &to_store, true))
        })
        .await
        .map_err(io::Error::other)??;
        *lock(&self.shared.snapshot) = Some(stored);
        Ok(Snapshot { meta, snapshot: tables })
    }
}

#[cfg(test)]
mod review_tests {
    use bytes::Bytes;
    use openraft::EntryPayload;
    use openraft::storage::RaftLogStorage;

    use super::*;
    use crate::cluster::types::{Entry, UserRecord, log_id};
    use crate::log::attributes::BATCH_OPEN;
    use crate::log::{Durability, Log, LogConfig};

    fn entry(index: u64, payload: EntryPayload<UserRecord, u64, crate::cluster::types::Member>) -> Entry {
        Entry {
            log_id: log_id(1, index),
            payload,
        }
    }

    /// Review of `sealed` (issue 19 item 15): a purge that ends inside a
    /// segment (the apply margin, or readers' end) deletes only the whole
    /// segments below it, so readers (`Log::lowest_offset`) still reach the
    /// entries between that segment's base and the purged id. Pruning the
    /// hidden ranges below `first_index` (purged + 1) forgets the aborted
    /// batches there, and readers then see their records.
    #[test]
    fn a_purge_inside_a_segment_keeps_hiding_the_aborted_records_readers_still_reach() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = crate::cluster::log_store::test_support::small_segments();
        let log = Log::open(dir.path(), config).expect("log opens");
        let durable = Durable::open(dir.path().join("raft")).expect("raft dir");
        let store = LogStore::open(log, durable.clone()).expect("store opens");
        let record = |attributes| EntryPayload::Normal(UserRecord::new(attributes, 1, Bytes::from_static(b"{}")));
        // A batch at 51..53 that a new leader's blank entry (53) aborts.
        let entries: Vec<Entry> = (0..200)
            .map(|i| match i {
                51 | 52 => entry(i, record(BATCH_OPEN)),
                53 => entry(i, EntryPayload::Blank),
                _ => entry(i, record(0)),
            })
            .collect();
        let (_, sync) = store.write_entries(0, entries.clone()).expect("written");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
        let sm = StateMachine::open(store.clone(), durable).expect("state machine");
        {
            let mut tables = sm.shared.tables.write().expect("tables");
            for e in &entries {
                let attributes = match &e.payload {
                    EntryPayload::Normal(r) => r.attributes,
                    _ => CONTROL,
                };
                tables.apply(e.log_id, attributes, &e.payload, &Default::default());
            }
            assert_eq!(tables.aborted, vec![(51, 53)], "apply hid the aborted batch");
        }
        sm.publish();
        // The segment holding the batch, and a purge that ends inside it,
        // past the batch.
        let bases = store.log().segment_bases();
        let base = *bases.iter().filter(|b| **b <= 51).max().expect("a segment holds 51");
        let next = *bases.iter().find(|b| **b > 51).expect("a later segment");
        assert!(
            base < 51 && next > 55,
            "layout: the batch is inside segment [{base}, {next})"
        );
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(store.clone().purge(log_id(1, 54))).expect("purged");
        assert!(store.log().lowest_offset() <= 51, "readers still reach offset 51");
        store.log().read(51).expect("record 51 is still readable");
        sm.write_tables().expect("tables written");
        assert!(
            sm.visibility().aborted(51) && sm.visibility().aborted(52),
            "the aborted batch's records at 51 and 52 are readable (the log starts at {}) and no longer hidden",
            store.log().lowest_offset()
        );
    }

    /// Review of `sealed` (c878b6d): with no snapshot to go back to, a
    /// start whose log lost applied entries now applies again from the
    /// committed mark. The entries between that mark and the log's end were
    /// applied before, and the producer table (kept: nothing rebuilds it)
    /// already holds their sequences: applied again, each idempotent
    /// append is taken for a retry and hidden, on this node alone.
    #[test]
    fn applying_again_without_a_snapshot_does_not_hide_acknowledged_idempotent_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LogConfig {
            durability: Durability::Always,
            max_segment_bytes: 4096,
            max_record_bytes: 256,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config).expect("log opens");
        let durable = Durable::open(dir.path().join("raft")).expect("raft dir");
        let store = LogStore::open(log, durable.clone()).expect("store opens");
        let produced = |seq: u64| {
            let mut record = UserRecord::new(0, 1, Bytes::from_static(b"{}"));
            record.guard = crate::log::Guard {
                producer: Some(crate::log::ProducerStamp {
                    id: "p".into(),
                    epoch: 0,
                    seq,
                    count: 1,
                }),
                expected_last: None,
            };
            EntryPayload::Normal(record)
        };
        let entries: Vec<Entry> = (0..200).map(|i| entry(i, produced(i))).collect();
        let (_, sync) = store.write_entries(0, entries.clone()).expect("written");
        if let Some(sync) = sync {
            sync.wait_blocking().expect("synced");
        }
        let sm = StateMachine::open(store.clone(), durable).expect("state machine");
        let apply = |from: usize, to: usize| {
            let mut tables = sm.shared.tables.write().expect("tables");
            for e in &entries[from..to] {
                tables.apply(e.log_id, 0, &e.payload, &Default::default());
            }
        };
        apply(0, 200);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            let mut s = store.clone();
            s.save_committed(Some(log_id(1, 100))).await.expect("committed");
            s.purge(log_id(1, 9)).await.expect("purged");
        });
        // The log loses its tail (a repair cut) and the snapshot file is gone.
        store.keep_before(150).expect("cut");
        assert_eq!(store.committed(), Some(log_id(1, 100)));
        sm.forget_applied_past_log().expect("gone back");
        let from = sm.tables().applied.map_or(0, |a| a.index as usize + 1);
        // openraft applies what follows again.
        apply(from, 150);
        let hidden: Vec<u64> = (from as u64..150).filter(|o| sm.visibility().aborted(*o)).collect();
        assert!(
            hidden.is_empty(),
            "acknowledged records applied again from {from} are hidden on this node alone: {hidden:?}"
        );
    }
}
