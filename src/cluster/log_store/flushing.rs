//! The second half of an append: waiting for its sync. `append` returns
//! once the entries are written, so that openraft replicates them while
//! this node's own sync runs; one thread per store then waits for each
//! append's sync in the order they were written, raises the flushed mark
//! and tells openraft (`io_completed`). In order, because the log's
//! committer acknowledges syncs oldest first and a completion tells
//! openraft that everything before it is durable too.
//!
//! openraft takes its storage's work as one sequence: once a later vote,
//! truncation or purge is done, it takes every append before it as
//! durable (the flushed watermark; a follower then answers its leader).
//! So those wait here (`wait_for_syncs`) until the appends before them are
//! synced: only appends overlap their syncs with what follows. It also
//! means a truncation never cuts records whose sync is still awaited.

use std::io;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Instant;

use openraft::storage::IOFlushed;

use super::super::stages;
use super::super::types::{LogId, TypeConfig};
use super::{LogStore, Shared, io_error};
use crate::log::PendingSync;

/// A written append waiting for its sync.
pub(super) struct Written {
    pub sync: Option<PendingSync>,
    /// Sync the log before this append counts as flushed, whatever
    /// `--fsync` says (it holds a catalogue change: `catalogue`).
    pub must_sync: bool,
    pub last: Option<LogId>,
    pub callback: IOFlushed<TypeConfig>,
    pub written_at: Instant,
}

/// Hands written appends to the flushing thread.
#[derive(Debug)]
pub(super) struct Flusher {
    to_thread: Option<Sender<Written>>,
    progress: Arc<Progress>,
}

/// Appends handed to the thread and appends it has finished.
#[derive(Debug, Default)]
struct Progress {
    counts: Mutex<Counts>,
    finished_one: Condvar,
}

#[derive(Debug, Default)]
struct Counts {
    submitted: u64,
    finished: u64,
}

impl Progress {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Flusher {
    /// Starts the thread; it ends when the store is dropped (it holds the
    /// store weakly, and the store holds the only sender).
    pub(super) fn start(store: Weak<Shared>) -> io::Result<Flusher> {
        let (to_thread, from_store) = channel();
        let progress = Arc::new(Progress::default());
        let counted = progress.clone();
        std::thread::Builder::new()
            .name("raft-flush".to_string())
            .spawn(move || run(from_store, store, &counted))?;
        Ok(Flusher {
            to_thread: Some(to_thread),
            progress,
        })
    }

    /// A flusher that takes nothing (its thread could not start).
    pub(super) fn stopped() -> Flusher {
        Flusher {
            to_thread: None,
            progress: Arc::default(),
        }
    }

    /// Queues `written` behind the appends written before it.
    pub(super) fn submit(&self, written: Written) -> io::Result<()> {
        let Some(to_thread) = &self.to_thread else {
            return Err(io::Error::other("the Raft log's flushing thread did not start"));
        };
        let mut counts = self.progress.counts();
        match to_thread.send(written) {
            Ok(()) => {
                counts.submitted += 1;
                Ok(())
            }
            Err(_) => Err(io::Error::other("the Raft log's flushing thread stopped")),
        }
    }

    /// Blocks until every append queued so far is finished (synced, or
    /// failed and reported).
    pub(super) fn wait_for_syncs(&self) {
        let counts = self.progress.counts();
        let target = counts.submitted;
        let _finished = self
            .progress
            .finished_one
            .wait_while(counts, |c| c.finished < target)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

fn run(appends: Receiver<Written>, store: Weak<Shared>, progress: &Progress) {
    while let Ok(written) = appends.recv() {
        finish(written, &store);
        progress.counts().finished += 1;
        progress.finished_one.notify_all();
    }
}

/// Waits for one append's sync and tells openraft how it went. A panic on
/// the way is told as an error (which stops the Raft core) rather than
/// leaving openraft, and every `wait_for_syncs`, waiting forever.
fn finish(written: Written, store: &Weak<Shared>) {
    let Written {
        sync,
        must_sync,
        last,
        callback,
        written_at,
    } = written;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut synced = match sync {
            Some(sync) => sync.wait_blocking().map_err(io_error),
            None => Ok(()),
        };
        if must_sync && synced.is_ok() {
            synced = match store.upgrade() {
                Some(shared) => shared.log.sync().map_err(io_error),
                None => Ok(()),
            };
        }
        stages::record(stages::LOG_SYNC, written_at);
        synced.and_then(|()| match (last, store.upgrade()) {
            (Some(last), Some(shared)) => LogStore { shared }.raise_flushed(last),
            _ => Ok(()),
        })
    }))
    .unwrap_or_else(|_| Err(io::Error::other("the Raft log's flushing thread panicked")));
    callback.io_completed(outcome);
}
