//! How far the log is known to be on disk: every record below
//! `Synced::offset` was fsynced by this log (at a sync, a roll or a cut, or
//! at open, which syncs what it found). With `Durability::Always` it keeps
//! up with what appenders are told; with `Interval` and `Never` it trails
//! the written end by what the next sync or roll covers. Whoever records
//! what this node holds (the cluster's marks) records no more than this,
//! so that a power cut in the write-caching modes, which loses exactly the
//! unsynced tail, never looks like a faulty disk.
//!
//! A cut or a reset lowers it and starts a new generation: a sync that
//! began before the cut (it read its end before the cut and syncs after)
//! cannot raise it past the cut.

use std::sync::Mutex;

#[derive(Debug)]
pub(super) struct Synced(Mutex<State>);

#[derive(Debug, Clone, Copy)]
struct State {
    offset: u64,
    generation: u64,
}

impl Synced {
    pub(super) fn new(offset: u64) -> Synced {
        Synced(Mutex::new(State { offset, generation: 0 }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn offset(&self) -> u64 {
        self.state().offset
    }

    /// Taken with the end a sync is about to cover, under the writer lock.
    pub(super) fn generation(&self) -> u64 {
        self.state().generation
    }

    /// A sync begun in `generation` covered the records below `upto`.
    pub(super) fn advance(&self, upto: u64, generation: u64) {
        let mut state = self.state();
        if state.generation == generation && upto > state.offset {
            state.offset = upto;
        }
    }

    /// The log now ends at `end` (a cut or a reset): nothing at or past it
    /// is synced, and syncs begun before do not count.
    pub(super) fn lower_to(&self, end: u64) {
        let mut state = self.state();
        state.offset = state.offset.min(end);
        state.generation += 1;
    }

    /// The log is empty from `base` on (a reset): nothing below it exists
    /// to be unsynced.
    pub(super) fn restart_at(&self, base: u64) {
        let mut state = self.state();
        state.offset = base;
        state.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_begun_before_a_cut_does_not_count_past_it() {
        let synced = Synced::new(10);
        let before = synced.generation();
        synced.lower_to(5);
        synced.advance(20, before);
        assert_eq!(synced.offset(), 5);
        synced.advance(8, synced.generation());
        assert_eq!(synced.offset(), 8);
        synced.advance(6, synced.generation());
        assert_eq!(synced.offset(), 8, "never goes back on a sync");
        synced.restart_at(100);
        assert_eq!(synced.offset(), 100);
    }
}
