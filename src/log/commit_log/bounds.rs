//! What readers may see of the log: offsets in `[lowest, max(lowest, min(visible, cap)))`, where
//! written records end (`written`: the cluster's own Raft log reader reads up to there), the
//! watch that tells waiting readers (long polls, SSE, replication) when
//! `visible` grows, and the count of cuts that readers check to tell a
//! record cut under them from a corrupt one.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::super::error::{LogError, Result};

#[derive(Debug)]
pub(super) struct Bounds {
    lowest: AtomicU64,
    /// Readers see offsets below this; raised only once records are written
    /// (and, with `Durability::Always`, synced).
    visible: AtomicU64,
    /// Readers see nothing at or past this either: a cluster node writes
    /// entries before they are committed and raises the cap as they
    /// commit. `u64::MAX` (no cap) on a standalone log.
    cap: AtomicU64,
    /// Where written records end, synced or not: at least `visible`, and
    /// ahead of it while a `Durability::Always` sync is awaited.
    written: AtomicU64,
    appended: watch::Sender<u64>,
    /// Odd while a cut or a reset is under way (bumped before it changes
    /// anything and after it is done), as a seqlock's sequence.
    cuts: AtomicU64,
}

impl Bounds {
    pub(super) fn new(lowest: u64, next: u64) -> Self {
        Bounds {
            lowest: AtomicU64::new(lowest),
            visible: AtomicU64::new(next),
            cap: AtomicU64::new(u64::MAX),
            written: AtomicU64::new(next),
            appended: watch::Sender::new(next),
            cuts: AtomicU64::new(0),
        }
    }

    pub(super) fn lowest(&self) -> u64 {
        self.lowest.load(Ordering::Acquire)
    }

    /// Where readers' records end: never below `lowest`, even while the
    /// cap is (a cluster node that installed a snapshot taken mid-batch
    /// holds readers at the batch's first record, which its log starts
    /// after, until the batch's last record is applied): an empty log
    /// there, not one that ends before it starts.
    pub(super) fn next(&self) -> u64 {
        let seen = self
            .visible
            .load(Ordering::Acquire)
            .min(self.cap.load(Ordering::Acquire));
        seen.max(self.lowest())
    }

    /// Where the records readers may see end (written and, with
    /// `Durability::Always`, synced), whatever the cap.
    pub(super) fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// Where the written records end (synced or not), whatever the cap.
    pub(super) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Records below `next` are written, not yet synced (`Durability::Always`):
    /// readers do not see them yet, the Raft log reader does.
    pub(super) fn note_written(&self, next: u64) {
        self.written.fetch_max(next, Ordering::AcqRel);
    }

    /// Readers see nothing at or past `cap` from now on, and waiting readers
    /// hear where the log ends for them now.
    pub(super) fn set_cap(&self, cap: u64) {
        let before = self.next();
        self.cap.store(cap, Ordering::Release);
        if self.next() != before {
            self.announce();
        }
    }

    pub(super) fn set_lowest(&self, lowest: u64) {
        self.lowest.store(lowest, Ordering::Release);
    }

    /// Records below `next` are readable. Never lowers what readers see.
    pub(super) fn publish(&self, next: u64) {
        self.written.fetch_max(next, Ordering::AcqRel);
        let previous = self.visible.fetch_max(next, Ordering::AcqRel);
        let capped = next.min(self.cap.load(Ordering::Acquire));
        // Only upward: a cap raised meanwhile may have announced more, and
        // sending this older value over it would leave waiters asleep.
        if capped > previous && self.appended.receiver_count() > 0 {
            self.appended.send_if_modified(|seen| {
                let raised = capped > *seen;
                *seen = (*seen).max(capped);
                raised
            });
        }
    }

    /// Readers stop before `keep` (a cut), never seeing more than before.
    pub(super) fn lower_to(&self, keep: u64) {
        self.visible.fetch_min(keep, Ordering::AcqRel);
        self.written.fetch_min(keep, Ordering::AcqRel);
    }

    /// Readers see exactly `[lowest, next)` (a reset).
    pub(super) fn set(&self, lowest: u64, next: u64) {
        self.set_lowest(lowest);
        self.visible.store(next, Ordering::Release);
        self.written.store(next, Ordering::Release);
    }

    /// Tells waiting readers where the log ends now, even if it shrank.
    pub(super) fn announce(&self) {
        self.appended.send_replace(self.next());
    }

    /// A receiver told the new `next` whenever records become visible.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        let receiver = self.appended.subscribe();
        // Appends skip the notification while nobody listens: catch up now.
        self.appended.send_if_modified(|seen| {
            let now = self.next();
            let stale = *seen != now;
            *seen = now;
            stale
        });
        receiver
    }

    /// A cut or a reset is about to move records; they are done when the
    /// returned guard goes, whatever happened meanwhile.
    pub(super) fn begin_cut(&self) -> CutUnderWay<'_> {
        self.cuts.fetch_add(1, Ordering::AcqRel);
        CutUnderWay { bounds: self }
    }

    /// Runs a read again when it failed while a cut or a reset moved the
    /// records under it: a record cut away after the reader's range check
    /// is out of range, not corrupt, and one rewritten since reads anew.
    /// `wait_for_cut` returns once no cut is under way (and makes what it
    /// did visible to this thread: the writer lock).
    pub(super) fn across_cuts<T>(&self, read: impl FnMut() -> Result<T>, wait_for_cut: impl Fn()) -> Result<T> {
        self.retry_across_cuts(read, |outcome| outcome.is_ok(), wait_for_cut)
    }

    /// As `across_cuts`, for reads of several records (ranges): one that
    /// succeeded while a cut moved records may hold records from before
    /// and after it, so it is read again too.
    pub(super) fn consistent_across_cuts<T>(
        &self,
        read: impl FnMut() -> Result<T>,
        wait_for_cut: impl Fn(),
    ) -> Result<T> {
        self.retry_across_cuts(read, |_| false, wait_for_cut)
    }

    fn retry_across_cuts<T>(
        &self,
        mut read: impl FnMut() -> Result<T>,
        good: impl Fn(&Result<T>) -> bool,
        wait_for_cut: impl Fn(),
    ) -> Result<T> {
        const TRIES: usize = 8;
        let mut outcome = Err(LogError::Closed);
        for _ in 0..TRIES {
            let before = self.cuts.load(Ordering::Acquire);
            outcome = read();
            // What the read loaded comes before the second look at the count.
            std::sync::atomic::fence(Ordering::Acquire);
            let untouched = before.is_multiple_of(2) && self.cuts.load(Ordering::Acquire) == before;
            if good(&outcome) || untouched {
                return outcome;
            }
            wait_for_cut();
        }
        outcome
    }
}

/// A cut or a reset under way (see `Bounds::begin_cut`).
#[must_use = "the cut is over when this is dropped"]
pub(super) struct CutUnderWay<'a> {
    bounds: &'a Bounds,
}

impl Drop for CutUnderWay<'_> {
    fn drop(&mut self) {
        self.bounds.cuts.fetch_add(1, Ordering::AcqRel);
    }
}
