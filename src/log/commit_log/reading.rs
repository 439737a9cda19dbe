//! Reads: a record, a range, or the raw frames (replication), only of
//! offsets readers may see (`bounds`), looking again when a cut moved the
//! records under them; and a snapshot stream of every store.
//!
//! The read path is a type: a `Reader` holds what readers may touch, the
//! bounds and the segment list's read side (and the writer lock only to
//! wait for a cut to end), so that the compiler checks that a read takes no
//! lock but those and changes nothing.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::super::error::{LogError, Result};
use super::super::record::{Record, RecordRef};
use super::super::segment::{Chunk, Segment};
use super::super::snapshot::SnapshotReader;
use super::Log;
use super::bounds::Bounds;
use super::writer::{SegmentList, WriterLock};

/// The lock-free read path of a log (see the module doc).
#[derive(Clone, Copy)]
pub(super) struct Reader<'a> {
    bounds: &'a Bounds,
    segments: &'a SegmentList,
    /// Taken only to wait for a cut or a reset to end (`wait_for_cut`).
    writer: &'a WriterLock,
}

impl Log {
    /// The read path (see `Reader`).
    pub(super) fn reader(&self) -> Reader<'_> {
        Reader {
            bounds: &self.shared.bounds,
            segments: &self.shared.segments,
            writer: &self.shared.writer,
        }
    }

    pub(super) fn out_of_range(&self, offset: u64) -> LogError {
        self.reader().out_of_range(offset)
    }

    pub fn read(&self, offset: u64) -> Result<Record> {
        self.noting_corruption(self.reader().read(offset))
    }

    /// Like `read`, but hands `f` the record where it lies when it can
    /// (see `Segment::read_with`): one copy fewer for a reader that
    /// only renders it.
    pub fn read_with<R>(&self, offset: u64, f: impl FnOnce(RecordRef<'_>) -> R) -> Result<R> {
        self.noting_corruption(self.reader().read_with(offset, f))
    }

    /// Records from `from` on, oldest first, at most `max_records` and about
    /// `max_bytes` of frames (the first record comes whatever its size).
    /// `from == next_offset` gives nothing; outside [lowest, next] is an error.
    pub fn read_range(&self, from: u64, max_records: u32, max_bytes: u64) -> Result<Vec<Record>> {
        self.noting_corruption(self.reader().read_range(from, max_records, max_bytes))
    }

    /// Like `read_range`, but the checked frames themselves, for replication.
    /// Returns the frames and how many records they hold.
    pub fn read_frames(&self, from: u64, max_records: u32, max_bytes: u64) -> Result<(Bytes, u32)> {
        let bounds = &self.shared.bounds;
        self.noting_corruption(
            self.reader()
                .frames_below(|| bounds.next(), from, max_records, max_bytes),
        )
    }

    /// Like `read_frames`, past the visibility cap up to where written
    /// records end: a cluster node's Raft log reader, which must see
    /// entries before they commit.
    pub fn read_frames_written(&self, from: u64, max_records: u32, max_bytes: u64) -> Result<(Bytes, u32)> {
        let bounds = &self.shared.bounds;
        self.noting_corruption(
            self.reader()
                .frames_below(|| bounds.written(), from, max_records, max_bytes),
        )
    }
}

impl Reader<'_> {
    fn out_of_range(&self, offset: u64) -> LogError {
        LogError::OutOfRange {
            offset,
            lowest: self.bounds.lowest(),
            next: self.bounds.next(),
        }
    }

    pub(super) fn read(&self, offset: u64) -> Result<Record> {
        self.bounds.across_cuts(
            || {
                if offset < self.bounds.lowest() || offset >= self.bounds.next() {
                    return Err(self.out_of_range(offset));
                }
                let segment = self.segment_for(offset).ok_or_else(|| self.out_of_range(offset))?;
                segment.read(offset)
            },
            || self.wait_for_cut(),
        )
    }

    /// Like `read`, but hands `f` the record where it lies when it can
    /// (see `Segment::read_with`): one copy fewer for a reader that
    /// only renders it.
    pub(super) fn read_with<R>(&self, offset: u64, f: impl FnOnce(RecordRef<'_>) -> R) -> Result<R> {
        let mut f = Some(f);
        self.bounds.across_cuts(
            || {
                if offset < self.bounds.lowest() || offset >= self.bounds.next() {
                    return Err(self.out_of_range(offset));
                }
                let segment = self.segment_for(offset).ok_or_else(|| self.out_of_range(offset))?;
                // `f` is taken only once the record checked out: a read that got
                // that far succeeded, and one that failed before may run again.
                let rendered = segment.read_with(offset, |record| f.take().map(|f| f(record)))?;
                rendered.ok_or(LogError::Closed)
            },
            || self.wait_for_cut(),
        )
    }

    /// Records from `from` on, oldest first, at most `max_records` and about
    /// `max_bytes` of frames (the first record comes whatever its size).
    /// `from == next_offset` gives nothing; outside [lowest, next] is an error.
    pub(super) fn read_range(&self, from: u64, max_records: u32, max_bytes: u64) -> Result<Vec<Record>> {
        self.bounds.consistent_across_cuts(
            || {
                let mut records = Vec::new();
                let next = self.bounds.next();
                self.read_chunks(from, next, max_records, max_bytes, |chunk| {
                    records.extend(chunk.records)
                })?;
                Ok(records)
            },
            || self.wait_for_cut(),
        )
    }

    pub(super) fn frames_below(
        &self,
        end: impl Fn() -> u64,
        from: u64,
        max_records: u32,
        max_bytes: u64,
    ) -> Result<(Bytes, u32)> {
        self.bounds.consistent_across_cuts(
            || {
                let mut frames = BytesMut::new();
                let mut count = 0;
                self.read_chunks(from, end(), max_records, max_bytes, |chunk| {
                    count += chunk.records.len() as u32;
                    if frames.is_empty() {
                        frames = BytesMut::from(chunk.frames);
                    } else {
                        frames.extend_from_slice(&chunk.frames);
                    }
                })?;
                Ok((frames.freeze(), count))
            },
            || self.wait_for_cut(),
        )
    }

    fn read_chunks(
        &self,
        from: u64,
        next: u64,
        max_records: u32,
        max_bytes: u64,
        mut take: impl FnMut(Chunk),
    ) -> Result<()> {
        if from < self.bounds.lowest() || from > next {
            return Err(LogError::OutOfRange {
                offset: from,
                lowest: self.bounds.lowest(),
                next,
            });
        }
        let (mut cursor, mut records_left, mut bytes_left) = (from, max_records, max_bytes);
        while cursor < next && records_left > 0 {
            let Some(segment) = self.segment_for(cursor) else {
                return Err(self.out_of_range(cursor));
            };
            let first_chunk = cursor == from;
            let chunk = segment.read_chunk(cursor, next, records_left, bytes_left, first_chunk)?;
            let n = chunk.records.len() as u32;
            if n == 0 {
                break;
            }
            cursor += u64::from(n);
            records_left -= n;
            bytes_left = bytes_left.saturating_sub(chunk.frames.len() as u64);
            take(chunk);
        }
        Ok(())
    }

    fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        let i = segments.partition_point(|s| s.base() <= offset);
        i.checked_sub(1).and_then(|i| segments.get(i)).cloned()
    }

    /// Returns once no cut or reset is under way: they hold the writer lock
    /// from start to end, and taking it makes what they did visible here.
    /// A cut syncs while it holds that lock: an async reader (GET) tells
    /// the runtime it blocks.
    fn wait_for_cut(&self) {
        super::blocking(|| self.writer.wait());
    }
}

impl Log {
    /// Streams every store's bytes, oldest first, up to the records visible now.
    pub fn snapshot_reader(&self) -> Result<SnapshotReader> {
        // The writer lock (not `lock_writer`): a failed writer still serves reads.
        let _w = self.lock_writer_unchecked();
        let next = self.next_offset();
        let segments = self.read_segments().clone();
        let parts = segments
            .into_iter()
            .map(|segment| {
                let end = segment.bytes_below(next);
                (segment, end)
            })
            .collect();
        Ok(SnapshotReader::new(parts))
    }
}
