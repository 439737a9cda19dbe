//! Cutting the log: whole segments from the front (`truncate`, retention),
//! the tail after an offset (`truncate_after`), or everything (`reset`).

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::error::{LogError, Result};
use super::super::segment::Segment;
use super::Log;

impl Log {
    /// Deletes whole sealed segments whose records are all below `lowest`.
    /// Returns how many segments went.
    pub fn truncate(&self, lowest: u64) -> Result<usize> {
        let _w = self.lock_writer()?;
        let doomed = {
            let segments = self.read_segments();
            segments[..segments.len() - 1]
                .iter()
                .take_while(|s| s.next_offset() <= lowest)
                .count()
        };
        self.drop_oldest(doomed)?;
        Ok(doomed)
    }

    /// Applies retention: deletes the oldest sealed segments while the log is
    /// over `retention_bytes`, or while their newest record is older than
    /// `retention_ms` before `now_ms`. The active segment always stays.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<usize> {
        let config = &self.shared.config;
        if config.retention_bytes.is_none() && config.retention_ms.is_none() {
            return Ok(0);
        }
        let _w = self.lock_writer()?;
        let segments = self.read_segments().clone();
        let mut total: u64 = segments.iter().map(|s| s.size_bytes()).sum();
        let mut doomed = 0;
        for segment in &segments[..segments.len() - 1] {
            let over_size = config.retention_bytes.is_some_and(|max| total > max);
            let too_old = match config.retention_ms {
                Some(ms) => segment.read(segment.next_offset() - 1)?.timestamp_ms < now_ms.saturating_sub(ms),
                None => false,
            };
            if !(over_size || too_old) {
                break;
            }
            total -= segment.size_bytes();
            doomed += 1;
        }
        drop(segments);
        self.drop_oldest(doomed)?;
        Ok(doomed)
    }

    fn drop_oldest(&self, count: usize) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let doomed: Vec<_> = {
            let mut segments = self.write_segments();
            let doomed = segments.drain(..count).collect();
            self.shared.lowest.store(segments[0].base(), Ordering::Release);
            doomed
        };
        for segment in doomed {
            tracing::info!(base = segment.base(), next = segment.next_offset(), "deleting segment");
            segment.remove_files()?;
        }
        Ok(())
    }

    /// Cuts the tail so that `offset` is the last record kept. Everything
    /// after it is gone for readers at once and from disk before this returns.
    pub fn truncate_after(&self, offset: u64) -> Result<()> {
        let keep = offset.saturating_add(1);
        let mut w = self.lock_writer()?;
        if keep >= w.next {
            return Ok(());
        }
        if keep < self.lowest_offset() {
            return Err(self.out_of_range(offset));
        }
        // Readers stop at the cut first (never past what was visible: in
        // `Always` mode records below `keep` may not be synced yet), and a
        // sync already under way can no longer publish past it.
        self.shared.group.reset(keep, || {
            self.shared.visible.fetch_min(keep, Ordering::AcqRel);
        });
        let cut = self.cut_tail(keep);
        if cut.is_ok() {
            // The cut synced what it kept: its waiting appenders succeeded.
            self.publish(keep);
            self.release_waiters(keep, true);
        }
        self.release_waiters(u64::MAX, false);
        cut?;
        w.next = keep;
        self.shared.appended.send_replace(keep);
        Ok(())
    }

    /// Drops the segments at or after `keep` and cuts the last one kept so
    /// that it ends before `keep`, synced.
    fn cut_tail(&self, keep: u64) -> Result<()> {
        {
            let mut segments = self.write_segments();
            while segments.len() > 1 && segments.last().is_some_and(|s| s.base() >= keep) {
                if let Some(segment) = segments.pop() {
                    segment.remove_files()?;
                }
            }
            let last = segments.last().ok_or(LogError::Closed)?;
            last.truncate_before(keep)?;
        }
        File::open(&self.shared.dir)?.sync_all()?;
        Ok(())
    }

    /// Deletes every record and starts again, empty, at `base`: for a replica
    /// that must restart from its leader's lowest offset or resync from zero.
    pub fn reset(&self, base: u64) -> Result<()> {
        let mut w = self.lock_writer()?;
        let mut segments = self.write_segments();
        for segment in segments.drain(..) {
            segment.remove_files()?;
        }
        segments.push(Arc::new(Segment::create(&self.shared.dir, base, &self.shared.config)?));
        self.shared.lowest.store(base, Ordering::Release);
        self.release_waiters(u64::MAX, false);
        self.shared.group.reset(base, || {
            self.shared.visible.store(base, Ordering::Release);
        });
        w.next = base;
        self.shared.appended.send_replace(base);
        Ok(())
    }
}
