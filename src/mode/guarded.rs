//! A standalone node's guarded appends: those with producer headers or an
//! expected last offset (a member's are decided by its state machine, see
//! `cluster::tables`).
//!
//! A producer's appends are decided one at a time: its own lock (`turns`)
//! is held from the table's check, through the append, to noting it in
//! the table (`log::producers`), so a retry cannot pass the check while
//! its first try is still being written; other producers do not wait for
//! it (with shared locks they did, and an fsync round took fewer appends). An expected last offset is held
//! by the log's one writer as it places the batch (`Log::append_batch_at`),
//! so no other append comes in between. Appends without a guard take no
//! lock and never wait for a guarded one.
//!
//! The first record of every producer's append carries its guard in its
//! frame (`log::Guard`), and `open` rebuilds the table from the log's
//! frames. Before retention deletes segments, `save` writes the table as
//! it stands, with the offset it covers, to `<data dir>/producers/table`
//! (a `cluster::Durable` document: checksummed, replaced atomically), and
//! `open` starts from that and reads only the frames after it: deleting a
//! producer's records does not make the log forget the producer.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::cluster::Durable;
use crate::log::producers::{Producers, Refusal};
use crate::log::{Frames, Guard, Log, LogError, MAX_STORED_FRAME, Payload};

/// Where the table is saved, under the data directory, and its document.
const DIR: &str = "producers";
const TABLE: &str = "table";

/// The table as saved: it holds every guarded append below `covered`.
#[derive(Serialize, Deserialize)]
struct Saved {
    covered: u64,
    producers: Producers,
}

/// Bytes of frames read at a time while the table is rebuilt.
const REBUILD_CHUNK: u64 = 4 << 20;

/// What an append came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Appended from this offset on.
    Created { first: u64 },
    /// A retry of an append already in the log at these offsets: nothing appended.
    Duplicate { first: u64, last: u64 },
}

/// See the module doc.
#[derive(Debug)]
pub struct GuardedAppends {
    table: Mutex<Producers>,
    /// The lock of each producer with an append under way, dropped with its last user.
    turns: Turns,
    /// Held (shared) by every guarded append, and alone by `save`.
    gate: tokio::sync::RwLock<()>,
    /// Where `save` writes (none: an in-memory table, for tests).
    saved: Option<Durable>,
}

impl Default for GuardedAppends {
    fn default() -> Self {
        GuardedAppends::with(Producers::default(), None)
    }
}

/// Why a guarded append was not appended (a duplicate is not an error).
#[derive(Debug)]
pub enum GuardedError {
    Refused(Refusal),
    Log(LogError),
}

impl GuardedAppends {
    fn with(table: Producers, saved: Option<Durable>) -> GuardedAppends {
        GuardedAppends {
            table: Mutex::new(table),
            turns: Mutex::new(HashMap::new()),
            gate: tokio::sync::RwLock::new(()),
            saved,
        }
    }

    /// Rebuilds the producers table: the one last saved, then the guards
    /// of `log`'s frames after what it covers.
    pub fn open(log: &Log) -> Result<GuardedAppends, LogError> {
        let durable = Durable::open(log.dir().join(DIR))?;
        let (lowest, end) = (log.lowest_offset(), log.next_offset());
        let (table, from) = match durable.read::<Saved>(TABLE)? {
            // A log cut or reset below what was saved: the saved table
            // would hold appends the log no longer has.
            Some(saved) if saved.covered <= end => (saved.producers, saved.covered.max(lowest)),
            _ => (Producers::default(), lowest),
        };
        let table = Self::replay(log, table, from, end)?;
        if !table.is_empty() {
            tracing::info!(producers = table.len(), "idempotent producers rebuilt from the log");
        }
        Ok(GuardedAppends::with(table, Some(durable)))
    }

    /// Saves the table as it stands (see the module doc); a no-op for an
    /// in-memory one.
    pub async fn save(&self, log: &Log) -> io::Result<()> {
        let Some(durable) = self.saved.clone() else {
            return Ok(());
        };
        // No guarded append is between its write and its note in the table
        // while the gate is held alone: the table holds every guarded
        // append below the log's end.
        let alone = self.gate.write().await;
        let saved = Saved {
            covered: log.next_offset(),
            producers: self.table().clone(),
        };
        drop(alone);
        tokio::task::spawn_blocking(move || durable.write(TABLE, &saved, true))
            .await
            .map_err(io::Error::other)?
    }

    /// `table` with the guards of `log`'s frames `[from, end)` noted.
    fn replay(log: &Log, mut table: Producers, from: u64, end: u64) -> Result<Producers, LogError> {
        let limits = log.config().producers;
        let mut at = from;
        while at < end {
            let (frames, count) = log.read_frames(at, u32::MAX, REBUILD_CHUNK)?;
            if count == 0 {
                break;
            }
            for frame in Frames::new(&frames, Some(at), MAX_STORED_FRAME) {
                let (_, view) = frame.map_err(|(position, e)| LogError::Corrupt {
                    file: log.dir().to_path_buf(),
                    position: position as u64,
                    offset: None,
                    reason: e.to_string(),
                })?;
                if view.guard.is_empty() {
                    continue;
                }
                let guard = Guard::decode(view.guard).map_err(|reason| LogError::Corrupt {
                    file: log.dir().to_path_buf(),
                    position: 0,
                    offset: Some(view.offset),
                    reason,
                })?;
                if let Some(p) = guard.producer {
                    table.record(&p, view.offset, view.timestamp_ms, &limits);
                }
            }
            at += u64::from(count);
        }
        Ok(table)
    }

    fn table(&self) -> MutexGuard<'_, Producers> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `payloads` (the first carrying `guard` encoded) if `guard`
    /// allows it.
    pub async fn append(&self, log: &Log, payloads: &[Payload<'_>], guard: &Guard) -> Result<Appended, GuardedError> {
        let limits = log.config().producers;
        let _not_saving = self.gate.read().await;
        let _one_at_a_time = match &guard.producer {
            Some(p) => Some(Turn::take(&self.turns, &p.id).await),
            None => None,
        };
        let now = log.config().clock.now_ms();
        if let Some(p) = &guard.producer {
            match self.table().check(p, now, &limits) {
                None => {}
                Some(Refusal::Duplicate { first, last }) => return Ok(Appended::Duplicate { first, last }),
                Some(why) => return Err(GuardedError::Refused(why)),
            }
        }
        let appended = match guard.expected_last {
            Some(last) => {
                let expect_next = u64::try_from(last.saturating_add(1)).unwrap_or(0);
                log.append_batch_at(payloads, expect_next).await
            }
            None => log.append_batch_async(payloads).await,
        };
        let first = appended.map_err(|e| match e {
            LogError::NotNext { next, .. } => GuardedError::Refused(Refusal::OffsetMismatch {
                last: next.checked_sub(1),
            }),
            e => GuardedError::Log(e),
        })?;
        if let Some(p) = &guard.producer {
            self.table().record(p, first, now, &limits);
        }
        Ok(Appended::Created { first })
    }
}

/// The producers with an append under way: each one's lock, and how many
/// of its appends hold or wait for it.
type Turns = Mutex<HashMap<String, (Arc<tokio::sync::Mutex<()>>, usize)>>;

/// A producer's turn to append: its lock, held. Dropped (or given up while
/// waiting), the producer's entry goes once no other append of it is there.
struct Turn<'a> {
    turns: &'a Turns,
    id: &'a str,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'a> Turn<'a> {
    async fn take(turns: &'a Turns, id: &'a str) -> Turn<'a> {
        let lock = {
            let mut all = locked(turns);
            let (lock, users) = all.entry(id.to_string()).or_default();
            *users += 1;
            lock.clone()
        };
        // Counted before the wait, so that a cancelled wait is uncounted.
        let mut turn = Turn { turns, id, held: None };
        turn.held = Some(lock.lock_owned().await);
        turn
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.held.take();
        let mut all = locked(self.turns);
        if let Some((_, users)) = all.get_mut(self.id) {
            *users -= 1;
            if *users == 0 {
                all.remove(self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_producers_turns_are_one_at_a_time_and_leave_nothing_behind() {
        let turns = Turns::default();
        let first = Turn::take(&turns, "p").await;
        let other = Turn::take(&turns, "q").await;
        let mut second = Box::pin(Turn::take(&turns, "p"));
        assert!(
            futures_util::poll!(&mut second).is_pending(),
            "p's second turn waits for its first"
        );
        drop(other);
        assert_eq!(locked(&turns).len(), 1, "q's lock is gone with its turn");
        drop(first);
        let second = second.await;
        let mut given_up = Box::pin(Turn::take(&turns, "p"));
        assert!(futures_util::poll!(&mut given_up).is_pending());
        drop(given_up);
        drop(second);
        assert!(
            locked(&turns).is_empty(),
            "nothing is left behind, a wait given up included"
        );
    }
}
