//! Appends: checked, encoded and written by the one writer (or handed to
//! the committer with `Durability::Always`), rolling to a new segment when
//! the active one is full, then made visible as the durability allows.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::super::config::Durability;
use super::super::error::{LogError, Result};
use super::super::group_commit::{Ack, Submitted};
use super::super::record::{
    EncodedBatch, FLAG_BATCH_CONTINUES, FrameError, FrameSpan, Frames, MAX_STORED_FRAME, Payload, encode_frame,
    encode_unstamped,
};
use super::super::segment::Segment;
use super::writer::Writer;
use super::{Appended, Log};

/// Checks every replicated frame (checksum, and dense offsets from
/// `expected`) and says where each lies.
fn replicated_spans(frames: &[u8], expected: u64) -> Result<Vec<FrameSpan>> {
    Frames::new(frames, Some(expected), MAX_STORED_FRAME)
        .map(|frame| match frame {
            Ok((at, view)) => Ok(FrameSpan {
                start: at,
                end: at + view.frame_len,
                timestamp_ms: view.timestamp_ms,
            }),
            Err((_, FrameError::WrongOffset { expected, found })) => Err(LogError::OffsetMismatch { expected, found }),
            Err((at, e)) => Err(LogError::Corrupt {
                file: PathBuf::from("<replicated frames>"),
                position: at as u64,
                offset: None,
                reason: e.to_string(),
            }),
        })
        .collect()
}

/// Every record of a batch but the last says that the batch goes on.
fn batch_flags(i: usize, len: usize) -> u8 {
    if i + 1 < len { FLAG_BATCH_CONTINUES } else { 0 }
}

impl Log {
    pub fn append(&self, value: &[u8]) -> Result<u64> {
        self.append_batch(&[Payload::new(value)])
    }

    /// Appends all records or none, returning the first one's offset. The
    /// batch lands in one segment, and recovery cuts a batch that did not
    /// reach the disk whole.
    pub fn append_batch(&self, payloads: &[Payload]) -> Result<u64> {
        if self.shared.config.durability != Durability::Always {
            return self.write_batch(payloads).map(|(first, _)| first);
        }
        let acked = self.submit(payloads, None)?;
        self.acked(acked.blocking_recv().ok())
    }

    /// `append_batch` for async callers: the batch is handed to the
    /// committer thread, which writes it (and with `Durability::Always`
    /// syncs it) and says so; the wait yields. An async appender thus never
    /// waits for the writer lock, or for a roll, on the runtime's thread,
    /// where every other task on that thread would wait with it.
    pub async fn append_batch_async(&self, payloads: &[Payload<'_>]) -> Result<u64> {
        let acked = self.submit(payloads, None)?;
        self.acked(acked.await.ok())
    }

    /// `append_batch_async` that appends only if the batch's first record
    /// gets offset `expect_next`, decided by the one writer as it places
    /// the batch (so no other append can come in between); else nothing
    /// is written and the error is `LogError::NotNext`.
    pub async fn append_batch_at(&self, payloads: &[Payload<'_>], expect_next: u64) -> Result<u64> {
        let acked = self.submit(payloads, Some(expect_next))?;
        self.acked(acked.await.ok())
    }

    /// Hands a batch to the committer as `append_batch_async` (or, with
    /// `expect_next`, `append_batch_at`) does, and returns at once: the
    /// batch is written whatever becomes of the returned `PendingAppend`,
    /// so a caller that must learn its outcome even if it is itself
    /// dropped (the producers table, `mode::guarded`) keeps the pending
    /// append and waits for it elsewhere.
    pub fn submit_batch(&self, payloads: &[Payload<'_>], expect_next: Option<u64>) -> Result<PendingAppend> {
        self.submit(payloads, expect_next).map(PendingAppend)
    }

    /// The outcome of a batch from `submit_batch`: its first offset once
    /// it is durable as `--fsync` says, or why it was not appended.
    pub async fn submitted_outcome(&self, pending: &mut PendingAppend) -> Result<u64> {
        self.acked((&mut pending.0).await.ok())
    }

    /// `submitted_outcome` outside any async runtime (it blocks).
    pub fn submitted_outcome_blocking(&self, pending: PendingAppend) -> Result<u64> {
        self.acked(pending.0.blocking_recv().ok())
    }

    /// Checks and encodes a batch and hands it to the committer, which
    /// writes it, syncs it if the durability says so, and then acknowledges
    /// it (see `group_commit`).
    fn submit(&self, payloads: &[Payload], expect_next: Option<u64>) -> Result<oneshot::Receiver<Ack>> {
        let (count, bytes) = self.check_batch(payloads)?;
        self.check_writable()?;
        let mut frames = Vec::with_capacity(bytes as usize);
        for (i, payload) in payloads.iter().enumerate() {
            encode_unstamped(&mut frames, batch_flags(i, payloads.len()), *payload);
        }
        let (ack, acked) = oneshot::channel();
        self.shared.committer.submit(Submitted {
            frames,
            count,
            expect_next,
            ack,
        });
        Ok(acked)
    }

    /// What the committer said of a batch (`None`: it went away).
    pub(super) fn acked(&self, told: Option<Ack>) -> Result<u64> {
        match (told, self.shared.failed.get()) {
            (Some(Ok(first)), _) => Ok(first),
            (Some(Err(Some(error))), _) => Err(error),
            (_, Some(why)) => Err(LogError::WriterFailed(why.clone())),
            // Nobody answered although the log is open: the committer died
            // with this batch in hand, and fails the writer just after.
            (None, None) if !self.shared.closed.load(Ordering::Acquire) => Err(LogError::WriterFailed(
                "the group-commit thread stopped without answering".to_string(),
            )),
            (_, None) => Err(LogError::Closed),
        }
    }

    /// A batch's record count and frame bytes, if the limits allow it.
    fn check_batch(&self, payloads: &[Payload]) -> Result<(u32, u64)> {
        let config = &self.shared.config;
        if payloads.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let mut bytes = 0u64;
        for p in payloads {
            if p.value.len() as u64 > config.max_record_bytes {
                return Err(LogError::TooLarge {
                    what: "record",
                    size: p.value.len() as u64,
                    max: config.max_record_bytes,
                });
            }
            bytes += p.frame_len() as u64;
        }
        let count = u32::try_from(payloads.len()).unwrap_or(u32::MAX);
        if count > config.index_capacity() || bytes > config.max_segment_bytes {
            return Err(LogError::TooLarge {
                what: "batch",
                size: bytes,
                max: config.max_segment_bytes,
            });
        }
        Ok((count, bytes))
    }

    /// Writes a batch and makes it visible as the durability policy allows
    /// without waiting for a sync. Returns its first offset and the offset
    /// after it.
    fn write_batch(&self, payloads: &[Payload]) -> Result<(u64, u64)> {
        let (count, bytes) = self.check_batch(payloads)?;
        let mut w = self.lock_writer()?;
        let first = w.next;
        let timestamp = w.next_stamp();
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        for (i, payload) in payloads.iter().enumerate() {
            encode_frame(
                &mut buf,
                first + i as u64,
                timestamp,
                batch_flags(i, payloads.len()),
                *payload,
            );
        }
        let written = w.write_frames(&buf, count);
        w.buf = buf;
        let segment = written?;
        let next = w.next;
        w.finish(count, bytes, None);
        // Outside the writer lock (see `Store::work_ahead`).
        if segment.wants_work_ahead() {
            self.nudge_background();
        }
        Ok((first, next))
    }

    /// Appends frames made by another log (replication), keeping their
    /// offsets and timestamps. Every frame is checked, and the first must
    /// carry `next_offset`. Returns how many records were appended.
    pub fn append_frames(&self, frames: &[u8]) -> Result<u32> {
        let w = self.lock_writer()?;
        let spans = replicated_spans(frames, w.next)?;
        self.append_spans(w, frames, &spans)
    }

    /// `append_frames` for frames this process encoded or already checked
    /// (the batch's type vouches for them, so they are not walked and
    /// checksummed a second time), returning once they are written, before
    /// they are synced: `read_frames_written` reads them at once, and the
    /// `PendingSync` says when they are durable (the cluster's leader sends
    /// entries to its followers while its own sync runs).
    pub fn append_encoded_unsynced(&self, batch: &EncodedBatch) -> Result<(u32, PendingSync)> {
        let w = self.lock_writer()?;
        if batch.is_empty() {
            return Ok((0, PendingSync::done(self)));
        }
        if batch.first_offset() != w.next {
            return Err(LogError::OffsetMismatch {
                expected: w.next,
                found: batch.first_offset(),
            });
        }
        debug_assert_eq!(
            batch.spans().last().map(|span| span.end),
            Some(batch.frames().len()),
            "the spans tile the frames"
        );
        self.append_spans_unsynced(w, batch.frames(), batch.spans())
    }

    /// Writes frames whose spans are known, from `next_offset` on, and
    /// makes them visible as the durability allows.
    fn append_spans(&self, w: Writer<'_>, frames: &[u8], spans: &[FrameSpan]) -> Result<u32> {
        let (count, pending) = self.append_spans_unsynced(w, frames, spans)?;
        pending.wait_blocking()?;
        Ok(count)
    }

    /// `append_spans` up to the sync, which the `PendingSync` waits for. A
    /// write that fails partway returns its error once the pieces before
    /// it are synced.
    fn append_spans_unsynced(
        &self,
        mut w: Writer<'_>,
        frames: &[u8],
        spans: &[FrameSpan],
    ) -> Result<(u32, PendingSync)> {
        let first = w.next;
        // A piece that cannot be written (a roll that fails) ends the call
        // with its error, but the pieces before it are written: they are
        // finished as a whole append would be, so that `next_offset` is where
        // the replica's next pull starts.
        let written = w.write_replicated(frames, spans);
        let count = u32::try_from(w.next - first).unwrap_or(u32::MAX);
        let stored = spans.get(..count as usize).unwrap_or_default();
        if let Some(newest) = stored.iter().map(|span| span.timestamp_ms).max() {
            w.note_stamp(newest);
        }
        let mut pending = PendingSync::done(self);
        if count > 0 {
            let bytes = spans.get(count as usize - 1).map_or(frames.len(), |span| span.end) as u64;
            if self.shared.config.durability == Durability::Always {
                let (ack, acked) = oneshot::channel();
                w.finish(count, bytes, Some((first, ack)));
                pending.acked = Some(acked);
            } else {
                w.finish(count, bytes, None);
            }
            // Outside the writer lock (see `Store::work_ahead`): the file is
            // prepared ahead of replicated appends too, not by their writer.
            if self.active().is_ok_and(|active| active.wants_work_ahead()) {
                self.nudge_background();
            }
        }
        match written {
            Ok(()) => Ok((count, pending)),
            Err(e) => {
                pending.wait_blocking()?;
                Err(e)
            }
        }
    }
}

/// A batch handed to the committer by `Log::submit_batch`, its outcome not
/// yet heard (`Log::submitted_outcome`).
#[derive(Debug)]
pub struct PendingAppend(oneshot::Receiver<Ack>);

/// Written records waiting for the sync that makes them durable (see
/// `Log::append_encoded_unsynced`); with a durability other than `Always`
/// they are as durable as they will be at once.
#[derive(Debug)]
#[must_use = "written records are not durable until the sync is waited for"]
pub struct PendingSync {
    log: Log,
    acked: Option<oneshot::Receiver<Ack>>,
}

impl PendingSync {
    fn done(log: &Log) -> PendingSync {
        PendingSync {
            log: log.clone(),
            acked: None,
        }
    }

    /// Waits on this thread (not a runtime's) until the records are durable.
    pub fn wait_blocking(self) -> Result<()> {
        match self.acked {
            Some(acked) => self.log.acked(acked.blocking_recv().ok()).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// What only the writer may do: write frames, roll, and finish an append.
impl Writer<'_> {
    /// Writes replicated frames in pieces that fit the active segment,
    /// rolling between them.
    fn write_replicated(&mut self, frames: &[u8], spans: &[FrameSpan]) -> Result<()> {
        let log = self.log();
        let piece = |from: usize, to: usize| {
            frames
                .get(from..to)
                .ok_or_else(|| LogError::Io(std::io::Error::other("a frame span outside its buffer")))
        };
        let mut piece_start = 0;
        let mut piece_count = 0u32;
        for (i, span) in spans.iter().enumerate() {
            let piece_bytes = (span.end - piece_start) as u64;
            let active = log.active()?;
            if piece_count > 0 && !active.has_room(piece_bytes, piece_count + 1, log.shared.config.max_segment_bytes) {
                self.write_frames(piece(piece_start, span.start)?, piece_count)?;
                piece_start = span.start;
                piece_count = 0;
            }
            piece_count += 1;
            if i + 1 == spans.len() {
                self.write_frames(piece(piece_start, span.end)?, piece_count)?;
            }
        }
        Ok(())
    }

    /// Writes `count` frames into the active segment, rolling first if they
    /// do not fit. An empty segment takes them whatever their size, so that a
    /// batch (checked against the limits before) is never split.
    /// Returns the segment written to.
    pub(super) fn write_frames(&mut self, frames: &[u8], count: u32) -> Result<Arc<Segment>> {
        let log = self.log();
        let mut active = log.active()?;
        if !active.is_empty() && !active.has_room(frames.len() as u64, count, log.shared.config.max_segment_bytes) {
            active = self.roll()?;
        }
        active.append(frames, count)?;
        self.next += u64::from(count);
        debug_assert_eq!(
            self.next,
            active.next_offset(),
            "the writer and the active segment agree"
        );
        Ok(active)
    }

    /// Seals the active segment and starts the next. The sealed segment is
    /// synced first, whatever the durability: once the new segment's name
    /// is on disk, a sealed segment that lost its tail to a power cut would
    /// leave a gap that no open could get past.
    fn roll(&self) -> Result<Arc<Segment>> {
        let log = self.log();
        let old = log.active()?;
        let generation = log.shared.synced.generation();
        if let Err(e) = old.sync() {
            // As with the committer's own syncs: Linux may not report the
            // loss again, so records written before the roll are not trusted.
            log.fail_writer(&format!("a sync failed: {e}"));
            return Err(e);
        }
        log.shared.synced.advance(self.next, generation);
        old.seal()?;
        let new = match Segment::create(&log.shared.dir, self.next, &log.shared.config) {
            Ok(new) => Arc::new(new),
            Err(e) => {
                // A new segment's file left behind would end the log at its
                // base on the next open, behind records appended meanwhile.
                if matches!(e, LogError::PartlyCreated { .. }) {
                    log.fail_writer(&e.to_string());
                }
                return Err(e);
            }
        };
        self.push_segment(new.clone());
        // Only now: while `old` was still the active segment, a failed
        // create would have left it taking appends into its index.
        old.trim_index();
        tracing::debug!(base = self.next, "rolled to a new segment");
        Ok(new)
    }

    /// Makes written records visible as the durability policy allows: at
    /// once, or (`Always`) once the committer has synced them.
    /// A `waiter` (the records' first offset and whom to tell) is told once
    /// the sync covers its records; it is queued under the writer lock, so
    /// the queue is in offset order.
    pub(super) fn finish(mut self, count: u32, bytes: u64, waiter: Option<(u64, oneshot::Sender<Ack>)>) {
        let log = self.log();
        self.appended.add(count, bytes);
        let next = self.next;
        match log.shared.config.durability {
            Durability::Always => {
                if let Some((first, ack)) = waiter {
                    log.shared.committer.wait_for_sync([(first, next, ack)]);
                }
                log.shared.bounds.note_written(next);
                log.shared.committer.note_written(next);
            }
            Durability::Interval(_) | Durability::Never => log.publish_unsynced(next),
        }
        drop(self);
    }
}

impl Log {
    /// Makes records below `next` readable without a sync (`Interval`,
    /// `Never`); the interval syncer will sync them.
    pub(super) fn publish_unsynced(&self, next: u64) {
        if matches!(self.shared.config.durability, Durability::Interval(_)) {
            self.shared.dirty.store(true, std::sync::atomic::Ordering::Release);
        }
        self.publish(next);
    }

    /// Records and bytes appended since open.
    pub fn appended(&self) -> Appended {
        self.lock_writer_unchecked().appended
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::super::super::config::{Durability, LogConfig};
    use super::super::super::error::LogError;
    use super::super::Log;
    use super::Payload;

    /// An appender on an async runtime must not wait for the writer lock on
    /// the runtime's thread: while a writer is slow (a fault, a roll, or
    /// just the CPU taken from it), every other task on that thread would
    /// wait too, which is what made the tail of `--fsync never` appends
    /// several times that of `--fsync always` ones.
    #[test]
    fn async_appends_leave_the_runtime_free_while_the_writer_is_busy() {
        for durability in [Durability::Never, Durability::Interval(Duration::from_millis(50))] {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                durability,
                ..LogConfig::default()
            };
            let log = Log::open(dir.path(), config).unwrap();
            let released = Arc::new(AtomicBool::new(false));
            let (held_tx, held_rx) = std::sync::mpsc::channel();
            let holder = {
                let (log, released) = (log.clone(), released.clone());
                std::thread::spawn(move || {
                    let writer = log.lock_writer_unchecked();
                    held_tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(500));
                    released.store(true, Ordering::SeqCst);
                    drop(writer);
                })
            };
            held_rx.recv().unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let (appended, ticked_while_held) = runtime.block_on(async {
                let ticker = tokio::spawn({
                    let released = released.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        !released.load(Ordering::SeqCst)
                    }
                });
                let appended = log.append_batch_async(&[Payload::new(b"{}")]).await;
                (appended, ticker.await.unwrap())
            });
            holder.join().unwrap();
            assert_eq!(appended.unwrap(), 0);
            assert!(
                ticked_while_held,
                "{durability:?}: the runtime stalled behind the writer lock"
            );
            assert_eq!(log.read(0).unwrap().value, &b"{}"[..], "acknowledged means readable");
        }
    }

    /// A conditional append is placed by the one writer: in a round of
    /// batches submitted together, each expectation is held to where the
    /// batches before it in the round leave the log.
    #[test]
    fn an_append_at_an_expected_offset_is_written_only_there() {
        for durability in [Durability::Always, Durability::Never] {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                durability,
                ..LogConfig::default()
            };
            let log = Log::open(dir.path(), config).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let two = [Payload::new(b"1"), Payload::new(b"2")];
                assert_eq!(log.append_batch_at(&two, 0).await.unwrap(), 0);
                let refused = log.append_batch_at(&two, 1).await.unwrap_err();
                assert!(
                    matches!(refused, LogError::NotNext { expected: 1, next: 2 }),
                    "{refused:?}"
                );
                let (at_two, again_at_two, at_three) = tokio::join!(
                    log.append_batch_at(&two[..1], 2),
                    log.append_batch_at(&two[..1], 2),
                    log.append_batch_at(&two[..1], 3),
                );
                let mut placed = [at_two.ok(), again_at_two.ok()];
                placed.sort();
                assert_eq!(placed, [None, Some(2)], "one of two racing appends at 2");
                assert_eq!(at_three.ok(), Some(3), "submitted after it, it finds the log at 3");
            });
            assert_eq!(log.next_offset(), 4, "{durability:?}: nothing refused was written");
        }
    }
}
