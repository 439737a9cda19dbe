//! Reading a segment: a record (copied, or borrowed where it lies), or a
//! chunk of whole frames, located through the index and checked (checksum,
//! offset, a frame end the store holds) before anything is handed out. The
//! files are the segment's (see `segment`); nothing here changes them.

use bytes::{Buf, Bytes};

use super::super::error::Result;
use super::super::record::{
    FRAME_HEADER, FRAME_PREFIX, FrameStamps, FrameView, Record, RecordRef, decode_frame, frame_body_len, frame_stamps,
    split_frames,
};
use super::{Chunk, Segment};

impl Segment {
    /// Reads the record at `offset`, which must be below `next_offset`:
    /// one positioned read of exactly its frame, checked.
    pub fn read(&self, offset: u64) -> Result<Record> {
        let (pos, len) = self.frame_span(offset)?;
        let frame = Bytes::from(self.store.read_at(pos, len)?);
        let view = self.check_frame(&frame, pos, offset)?;
        let (timestamp_ms, attributes, value_start) = (view.timestamp_ms, view.attributes, view.value_start());
        // `advance` keeps the buffer as it is; `slice` would allocate a shared header.
        let mut value = frame;
        value.advance(value_start);
        Ok(Record {
            offset,
            timestamp_ms,
            attributes,
            value,
        })
    }

    /// Like `read`, but hands `f` the record where it lies (in the active
    /// segment's read map) instead of copying it out first.
    pub fn read_with<R>(&self, offset: u64, f: impl FnOnce(RecordRef<'_>) -> R) -> Result<R> {
        let (pos, len) = self.frame_span(offset)?;
        self.store.with_bytes(pos, len, |frame| {
            let view = self.check_frame(frame, pos, offset)?;
            Ok(f(RecordRef {
                offset,
                timestamp_ms: view.timestamp_ms,
                attributes: view.attributes,
                value: view.value,
            }))
        })?
    }

    /// The attributes and timestamp of the record at `offset` (below
    /// `next_offset`), from its frame's header alone: finding a place by
    /// time reads a few headers, not a few values (see `frame_stamps`).
    pub fn stamps_at(&self, offset: u64) -> Result<FrameStamps> {
        let missing = || self.corrupt(0, Some(offset), "record missing from the index".into());
        let i = offset
            .checked_sub(self.base)
            .and_then(|i| u32::try_from(i).ok())
            .filter(|i| *i < self.index.len())
            .ok_or_else(missing)?;
        let pos = self.slot_position(i)?;
        let stamps = self.store.with_bytes(pos, FRAME_HEADER, frame_stamps)?;
        match stamps {
            Some(stamps) if stamps.offset == offset => Ok(stamps),
            _ => Err(self.corrupt(pos, Some(offset), "no frame header of this offset here".into())),
        }
    }

    /// Where the frame of `offset`, which must be below `next_offset`, lies
    /// and how long it is.
    fn frame_span(&self, offset: u64) -> Result<(u64, usize)> {
        let published = self.index.len();
        let i = offset
            .checked_sub(self.base)
            .and_then(|i| u32::try_from(i).ok())
            .filter(|i| *i < published)
            .ok_or_else(|| self.corrupt(0, Some(offset), "record missing from the index".into()))?;
        let pos = self.slot_position(i)?;
        let end = self.end_of(i, published)?;
        // `end_of` checked that the frame ends after it starts and is not too long.
        Ok((pos, (end - pos) as usize))
    }

    /// Decodes the one frame `frame` must be: checksummed, and holding `offset`.
    fn check_frame<'a>(&self, frame: &'a [u8], pos: u64, offset: u64) -> Result<FrameView<'a>> {
        let view =
            decode_frame(frame, self.max_frame_len).map_err(|e| self.corrupt(pos, Some(offset), e.to_string()))?;
        if view.offset != offset || view.frame_len != frame.len() {
            let reason = format!(
                "frame at this position holds offset {} in {} bytes",
                view.offset, view.frame_len
            );
            return Err(self.corrupt(pos, Some(offset), reason));
        }
        Ok(view)
    }

    /// Reads records from `from`, stopping before `upto`, after `max_records`,
    /// or once `max_bytes` of frames are gathered. With `take_one`, the first
    /// record comes whatever its size, so that a reader makes progress.
    pub fn read_chunk(&self, from: u64, upto: u64, max_records: u32, max_bytes: u64, take_one: bool) -> Result<Chunk> {
        let published = self.index.len();
        let first = u32::try_from(from.saturating_sub(self.base)).unwrap_or(u32::MAX);
        let last_excl = upto.saturating_sub(self.base).min(u64::from(published)) as u32;
        if first >= last_excl || max_records == 0 {
            return Ok(Chunk::default());
        }
        let wanted = (last_excl - first).min(max_records);
        let start = self.slot_position(first)?;
        // The largest count whose frames stay within the budget: positions grow with offsets.
        let (mut lo, mut hi) = (u32::from(take_one), wanted);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.span_from(start, first + mid - 1, published)? <= max_bytes {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let count = lo;
        if count == 0 {
            return Ok(Chunk::default());
        }
        let len = self.span_from(start, first + count - 1, published)?;
        let buf = self.store.read_at(start, len as usize)?;
        let frames = Bytes::from(buf);
        let records = split_frames(frames.clone(), from, self.max_frame_len)
            .map_err(|(at, offset, err)| self.corrupt(start + at as u64, Some(offset), err.to_string()))?;
        debug_assert_eq!(records.len(), count as usize);
        Ok(Chunk { frames, records })
    }

    /// Bytes from `start` to the end of entry `i`'s frame, checked: an index
    /// whose positions do not grow is corrupt, not a reason to underflow.
    fn span_from(&self, start: u64, i: u32, published: u32) -> Result<u64> {
        let end = self.end_of(i, published)?;
        end.checked_sub(start).ok_or_else(|| {
            self.corrupt(
                start,
                Some(self.base + u64::from(i)),
                format!("index positions go backwards (frame ends at {end})"),
            )
        })
    }

    fn slot_position(&self, i: u32) -> Result<u64> {
        let (_, pos) = self.index.slot(i);
        if pos >= self.store.size() {
            return Err(self.corrupt(
                pos,
                Some(self.base + u64::from(i)),
                "index points past the store".into(),
            ));
        }
        Ok(pos)
    }

    /// Where the frame of entry `i` ends: the next entry's position, or for the
    /// newest entry its own length field, bounded before it is trusted.
    fn end_of(&self, i: u32, published: u32) -> Result<u64> {
        let pos = self.slot_position(i)?;
        let offset = Some(self.base + u64::from(i));
        let end = if i + 1 < published {
            self.index.slot(i + 1).1
        } else {
            let prefix = self.store.read_at(pos, FRAME_PREFIX)?;
            pos.saturating_add(FRAME_PREFIX as u64)
                .saturating_add(u64::from(frame_body_len(&prefix)))
        };
        if end <= pos || end - pos > self.max_frame_len as u64 || end > self.store.size() {
            return Err(self.corrupt(pos, offset, format!("impossible frame end {end}")));
        }
        Ok(end)
    }
}
