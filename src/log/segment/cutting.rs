//! Cutting a segment's tail: the record that will end the log is made the
//! end of its batch in place first (durably), then the index and the store
//! are cut back and synced, so that a crash between any two steps leaves a
//! segment that recovers to the records the cut keeps, or more (see
//! `commit_log::cutting` for the order across segments).

use super::super::error::Result;
use super::super::record::{FLAG_BATCH_CONTINUES, Payload, decode_frame, encode_frame};
use super::Segment;

/// The bytes of a frame's header that `end_batch_at` rewrites: crc, version, flags.
const HEADER_REWRITTEN: std::ops::Range<usize> = 4..10;

impl Segment {
    /// Makes a segment that may be sealed ready to take appends again (a cut
    /// is about to make it the last one): the fallible allocation comes
    /// before any change, so a full disk leaves the log as it was.
    pub fn prepare_for_appends(&self) -> Result<()> {
        Ok(self.index.reserve()?)
    }

    /// Cuts the segment so that it ends before `offset`, synced, and makes
    /// it the active one. Only the writer calls this, after
    /// `prepare_for_appends`. Readers of kept records are never shown a
    /// changing byte: the store is cut and the last frame rewritten while
    /// they are excluded (see `store`), and index slots are not zeroed.
    pub fn cut_from(&self, offset: u64) -> Result<()> {
        let written = self.index.len();
        let keep = offset
            .checked_sub(self.base)
            .and_then(|keep| u32::try_from(keep).ok())
            .filter(|keep| *keep <= written)
            .ok_or_else(|| self.corrupt(0, Some(offset), format!("a cut at {offset} is outside the segment")))?;
        let cut = if keep < written {
            self.index.slot(keep).1
        } else {
            self.store.size()
        };
        // The record that will end the log is made the end of its batch
        // first, durably: shortened first, a crash would leave a batch with
        // no end, which recovery drops whole, kept records and all.
        if let Some(last_kept) = keep.checked_sub(1) {
            self.end_batch_at(last_kept, cut)?;
        }
        self.index.cut_to(keep);
        // Slots past the cut point's own go back to zero before the index is
        // flushed: left stale on disk, recovery after a power cut could take
        // a run of them for entries of the records appended after the cut.
        // Slot `keep` stays: a reader of the last kept record reads its end
        // there, and the next append writes the same position into it.
        self.index.clear_slots(keep.saturating_add(1), written);
        self.store.cut_to(cut)?;
        self.store.sync()?;
        self.index.flush()?;
        // Best effort: without the maps appends and reads use positioned I/O.
        if let Err(e) = self.map_while_active() {
            tracing::warn!(error = %e, base = self.base, "cannot map the cut segment for appends");
        }
        Ok(())
    }

    /// After a cut inside a batch the last record kept would still say that
    /// the batch goes on, and recovery would take what is left of it for a
    /// torn write and drop it on the next open. Rewrites entry `i`'s frame,
    /// which ends at `end`, (flags and checksum, in place, with readers
    /// excluded) as the end of its batch, and syncs it.
    fn end_batch_at(&self, i: u32, end: u64) -> Result<()> {
        let pos = self.index.slot(i).1;
        let len = end.saturating_sub(pos) as usize;
        let buf = self.store.read_at(pos, len)?;
        // A frame that does not decode is left for recovery and readers to report.
        let Ok(view) = decode_frame(&buf, self.max_frame_len) else {
            return Ok(());
        };
        if view.flags & FLAG_BATCH_CONTINUES == 0 {
            return Ok(());
        }
        let mut frame = Vec::with_capacity(view.frame_len);
        let payload = Payload {
            attributes: view.attributes,
            value: view.value,
            guard: view.guard,
        };
        encode_frame(
            &mut frame,
            view.offset,
            view.timestamp_ms,
            view.flags & !FLAG_BATCH_CONTINUES,
            payload,
        );
        debug_assert_eq!(frame.len(), view.frame_len);
        // Only the checksum, version and flags differ.
        let changed = frame.get(HEADER_REWRITTEN).unwrap_or_default();
        self.store.rewrite_at(pos + HEADER_REWRITTEN.start as u64, changed)?;
        Ok(self.store.sync()?)
    }
}
