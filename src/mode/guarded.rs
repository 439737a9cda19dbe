//! A standalone node's guarded appends: those with producer headers or an
//! expected last offset (a member's are decided by its state machine, see
//! `cluster::tables`).
//!
//! A producer's appends are decided one at a time: the lock of its id's
//! stripe is held from the table's check, through the append, to noting it
//! in the table (`log::producers`), so a retry cannot pass the check while
//! its first try is still being written. An expected last offset is held
//! by the log's one writer as it places the batch (`Log::append_batch_at`),
//! so no other append comes in between. Appends without a guard take no
//! lock and never wait for a guarded one.
//!
//! The table is not stored apart: the first record of every producer's
//! append carries its guard in its frame (`log::Guard`), and `open`
//! rebuilds the table from the log's frames. Retention that deletes a
//! producer's last appends forgets it, as `--producer-ttl-ms` would.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::log::producers::{Producers, Refusal};
use crate::log::{Frames, Guard, Log, LogError, MAX_STORED_FRAME, Payload};

/// Stripes of producer locks: two producers share one at times, which only
/// makes one wait for the other's append.
const STRIPES: usize = 64;
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
    stripes: Box<[tokio::sync::Mutex<()>]>,
}

impl Default for GuardedAppends {
    fn default() -> Self {
        GuardedAppends::with(Producers::default())
    }
}

/// Why a guarded append was not appended (a duplicate is not an error).
#[derive(Debug)]
pub enum GuardedError {
    Refused(Refusal),
    Log(LogError),
}

impl GuardedAppends {
    fn with(table: Producers) -> GuardedAppends {
        GuardedAppends {
            table: Mutex::new(table),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// Rebuilds the producers table from the guards of `log`'s frames.
    pub fn open(log: &Log) -> Result<GuardedAppends, LogError> {
        let limits = log.config().producers;
        let mut table = Producers::default();
        let (mut at, end) = (log.lowest_offset(), log.next_offset());
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
        if !table.is_empty() {
            tracing::info!(producers = table.len(), "idempotent producers rebuilt from the log");
        }
        Ok(GuardedAppends::with(table))
    }

    fn table(&self) -> MutexGuard<'_, Producers> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `payloads` (the first carrying `guard` encoded) if `guard`
    /// allows it.
    pub async fn append(&self, log: &Log, payloads: &[Payload<'_>], guard: &Guard) -> Result<Appended, GuardedError> {
        let limits = log.config().producers;
        let _one_at_a_time = match &guard.producer {
            Some(p) => Some(self.stripe(&p.id).lock().await),
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

    fn stripe(&self, id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(id);
        let i = (hash % self.stripes.len() as u64) as usize;
        debug_assert!(i < self.stripes.len());
        &self.stripes[i]
    }
}
