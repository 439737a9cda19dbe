//! Writer combining: the committer writes every batch submitted since its
//! last round with as few writes as the active segment allows, before (with
//! `Durability::Always`) it syncs them all at once; otherwise each batch is
//! made readable and acknowledged as soon as it is written. Small batches are
//! copied into one buffer and written with one call; a batch of
//! `WRITE_ALONE` bytes or more is written from its own buffer, since
//! copying it would cost more than the system call it saves.

use std::io;

use super::super::config::Durability;
use super::super::error::LogError;
use super::super::group_commit::{Ack, Submitted};
use super::super::record::stamp_frames;
use super::Log;
use super::writer::Writer;

/// Batches at least this large are written by themselves, not copied.
const WRITE_ALONE: usize = 32 << 10;

/// Batches stamped and copied into one buffer, not yet written.
struct Combined {
    frames: Vec<u8>,
    count: u32,
    /// Each batch's first offset and whom to tell.
    batches: Vec<(u64, u32, tokio::sync::oneshot::Sender<Ack>)>,
}

impl Log {
    /// Writes `submitted` in order under one writer lock, stamping offsets
    /// and one timestamp, and queues each batch's appender for the coming
    /// sync. A batch that cannot be written is refused to its appender
    /// alone (its error); the batches after it still get their turn.
    pub(super) fn write_submitted(&self, submitted: Vec<Submitted>) {
        let mut w = match self.lock_writer() {
            Ok(w) => w,
            Err(e) => {
                for batch in submitted {
                    let _ = batch.ack.send(Err(Some(duplicate(&e))));
                }
                return;
            }
        };
        let timestamp = w.next_stamp();
        let mut combined = Combined {
            frames: std::mem::take(&mut w.buf),
            count: 0,
            batches: Vec::with_capacity(submitted.len()),
        };
        combined.frames.clear();
        for mut batch in submitted {
            let alone = batch.frames.len() >= WRITE_ALONE;
            if combined.count > 0 && (alone || !self.fits_with(&combined, &batch)) {
                w.write_combined(&mut combined);
            }
            let first = w.next + u64::from(combined.count);
            if let Some(expected) = batch.expect_next.filter(|expected| *expected != first) {
                let _ = batch.ack.send(Err(Some(LogError::NotNext { expected, next: first })));
                continue;
            }
            let stamped = stamp_frames(&mut batch.frames, first, timestamp);
            debug_assert_eq!(stamped, batch.count, "a submitted batch holds whole frames");
            if alone {
                debug_assert_eq!(combined.count, 0, "what came before is written first");
                let acks = [(first, batch.count, batch.ack)];
                w.write_batches(&batch.frames, batch.count, acks);
                continue;
            }
            combined.frames.extend_from_slice(&batch.frames);
            combined.count += batch.count;
            combined.batches.push((first, batch.count, batch.ack));
        }
        w.write_combined(&mut combined);
        w.buf = combined.frames;
        if self.shared.config.durability == Durability::Always {
            // Under the writer lock: a cut between unlocking and this would
            // see its reset undone by a stale `next`.
            self.shared.committer.note_written(w.next);
        }
        drop(w);
        // Outside the writer lock (see `Store::work_ahead`).
        if self.active().is_ok_and(|active| active.wants_work_ahead()) {
            self.nudge_background();
        }
    }

    /// Whether `batch` joins the combined write without overfilling the
    /// active segment (a batch alone always gets a segment: see `write_frames`).
    fn fits_with(&self, combined: &Combined, batch: &Submitted) -> bool {
        let bytes = (combined.frames.len() + batch.frames.len()) as u64;
        self.active().is_ok_and(|active| {
            active.has_room(
                bytes,
                combined.count + batch.count,
                self.shared.config.max_segment_bytes,
            )
        })
    }
}

/// Writing what the committer combined: only under the writer lock.
impl Writer<'_> {
    /// Writes what is combined and queues its appenders for the sync, or
    /// tells them why it could not be written. Leaves `combined` empty.
    fn write_combined(&mut self, combined: &mut Combined) {
        if combined.count == 0 {
            return;
        }
        let batches = combined.batches.drain(..);
        self.write_batches(&combined.frames, combined.count, batches);
        combined.frames.clear();
        combined.count = 0;
    }

    /// Writes `count` stamped frames of whole batches and queues the
    /// batches' appenders for the sync, or tells them why they could not be
    /// written.
    fn write_batches(
        &mut self,
        frames: &[u8],
        count: u32,
        batches: impl IntoIterator<Item = (u64, u32, tokio::sync::oneshot::Sender<Ack>)>,
    ) {
        let log = self.log();
        // A failed sync (during a roll) refuses what comes after it in this round too.
        let written = match log.check_writable() {
            Ok(()) => self.write_frames(frames, count).map(drop),
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {
                self.appended.add(count, frames.len() as u64);
                if log.shared.config.durability == Durability::Always {
                    let waiting = batches
                        .into_iter()
                        .map(|(first, count, ack)| (first, first + u64::from(count), ack));
                    log.shared.committer.wait_for_sync(waiting);
                } else {
                    // Readable before anyone hears that it is written.
                    log.publish_unsynced(self.next);
                    for (first, _, ack) in batches {
                        let _ = ack.send(Ok(first));
                    }
                }
            }
            Err(e) => {
                for (_, _, ack) in batches {
                    let _ = ack.send(Err(Some(duplicate(&e))));
                }
            }
        }
    }
}

/// The same error for another appender: I/O errors keep their kind (a full
/// disk stays a full disk), the rest their message.
fn duplicate(error: &LogError) -> LogError {
    match error {
        LogError::Io(e) => LogError::Io(io::Error::new(e.kind(), e.to_string())),
        LogError::TooLarge { what, size, max } => LogError::TooLarge {
            what,
            size: *size,
            max: *max,
        },
        LogError::Closed => LogError::Closed,
        LogError::WriterFailed(why) => LogError::WriterFailed(why.clone()),
        other => LogError::Io(io::Error::other(other.to_string())),
    }
}
