//! Frames this process vouches for: a `Frame` that this module encoded or
//! checked, and an `EncodedBatch` of frames back to back that the log
//! appends without walking and checksumming them again
//! (`Log::append_encoded_unsynced`).
//!
//! Bytes from anywhere else (a peer, the disk) become a `Frame` only
//! through the one check (`split_checked`), so a frame is checksummed once
//! wherever it came from, and a caller never needs to know where a field
//! lies in the bytes.

use bytes::Bytes;

use super::{FrameView, Frames, Payload, Record, SplitError, encode_frame, read_sound_frame};

/// One sound frame: encoded here, or checked once when it was read.
/// Cloning shares its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
    /// The frame's fields, its value a slice of `bytes`.
    record: Record,
    /// The frame's guard (version 2; empty otherwise), a slice of `bytes`.
    guard: Bytes,
}

impl Frame {
    /// `bytes` hold exactly the frame that `view` was read from.
    fn new(bytes: Bytes, view: &FrameView) -> Frame {
        debug_assert_eq!(bytes.len(), view.frame_len, "a frame's bytes are the whole frame");
        let value_start = view.value_start().min(bytes.len());
        let guard_start = value_start - view.guard.len().min(value_start);
        let record = Record {
            offset: view.offset,
            timestamp_ms: view.timestamp_ms,
            attributes: view.attributes,
            value: bytes.slice(value_start..),
        };
        let guard = bytes.slice(guard_start..value_start);
        Frame { bytes, record, guard }
    }

    /// The frame's encoded guard (`Guard::decode`), empty for none.
    pub fn guard(&self) -> &[u8] {
        &self.guard
    }

    pub fn offset(&self) -> u64 {
        self.record.offset
    }

    /// The record the frame holds, its value shared with the frame.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The frame's bytes, as stored and sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Checks the frames of `buf` (offsets dense from `first_offset`) and
/// splits them into `Frame`s without copying.
pub fn split_checked(buf: Bytes, first_offset: u64, max_frame_len: usize) -> Result<Vec<Frame>, SplitError> {
    let mut frames = Vec::new();
    for checked in Frames::new(&buf, Some(first_offset), max_frame_len) {
        let expected = first_offset + frames.len() as u64;
        let (at, view) = checked.map_err(|(at, e)| (at, expected, e))?;
        frames.push(Frame::new(buf.slice(at..at + view.frame_len), &view));
    }
    Ok(frames)
}

/// Where one frame lies in its buffer, and its timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpan {
    pub start: usize,
    pub end: usize,
    pub timestamp_ms: u64,
}

/// Frames back to back with offsets dense from `first_offset`, each
/// encoded here or copied from a `Frame`, with where each lies. The frames
/// may follow a header of the caller's (an append-entries body), which is
/// not theirs: spans count from where the frames begin.
#[derive(Debug)]
pub struct EncodedBatch {
    buf: Vec<u8>,
    /// Where the frames begin in `buf`.
    start: usize,
    first_offset: u64,
    spans: Vec<FrameSpan>,
}

impl EncodedBatch {
    pub fn new(first_offset: u64) -> EncodedBatch {
        EncodedBatch::after(Vec::new(), first_offset)
    }

    /// A batch whose frames follow `header` in one buffer.
    pub fn after(header: Vec<u8>, first_offset: u64) -> EncodedBatch {
        EncodedBatch {
            start: header.len(),
            buf: header,
            first_offset,
            spans: Vec::new(),
        }
    }

    pub fn reserve(&mut self, bytes: usize, frames: usize) {
        self.buf.reserve(bytes);
        self.spans.reserve(frames);
    }

    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }

    /// The offset the next frame gets.
    pub fn next_offset(&self) -> u64 {
        self.first_offset + self.spans.len() as u64
    }

    /// How many frames the batch holds.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Encodes a frame at the next offset.
    pub fn push(&mut self, timestamp_ms: u64, flags: u8, payload: Payload) {
        let (at, offset) = (self.buf.len(), self.next_offset());
        encode_frame(&mut self.buf, offset, timestamp_ms, flags, payload);
        self.note(at, timestamp_ms);
        debug_assert_eq!(self.buf.len() - at, payload.frame_len());
    }

    /// Copies `frame` if it carries the next offset (true); else leaves
    /// the batch as it was (false), for the caller to encode the record.
    pub fn push_frame(&mut self, frame: &Frame) -> bool {
        if frame.offset() != self.next_offset() {
            return false;
        }
        let at = self.buf.len();
        self.buf.extend_from_slice(frame.as_bytes());
        self.note(at, frame.record.timestamp_ms);
        true
    }

    fn note(&mut self, at: usize, timestamp_ms: u64) {
        debug_assert!(
            self.spans.last().is_none_or(|s| s.end == at - self.start),
            "frames back to back"
        );
        self.spans.push(FrameSpan {
            start: at - self.start,
            end: self.buf.len() - self.start,
            timestamp_ms,
        });
    }

    /// The frames from `offset` on, as a batch of their own (a copy): what
    /// is left to append when a first try wrote the ones before. None when
    /// `offset` is not one of the batch's.
    pub fn tail_from(&self, offset: u64) -> Option<EncodedBatch> {
        let skip = usize::try_from(offset.checked_sub(self.first_offset)?).ok()?;
        let from = self.spans.get(skip)?.start;
        let mut tail = EncodedBatch::new(offset);
        tail.buf.extend_from_slice(self.frames().get(from..)?);
        tail.spans = self
            .spans
            .get(skip..)?
            .iter()
            .map(|s| FrameSpan {
                start: s.start - from,
                end: s.end - from,
                timestamp_ms: s.timestamp_ms,
            })
            .collect();
        debug_assert_eq!(tail.next_offset(), self.next_offset());
        Some(tail)
    }

    /// The frames, back to back (without the header).
    pub fn frames(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// Where each frame lies in `frames()`.
    pub(in crate::log) fn spans(&self) -> &[FrameSpan] {
        &self.spans
    }

    /// The whole buffer: the header, then the frames.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    /// Each frame, all sharing one buffer.
    pub fn into_frames(self) -> Vec<Frame> {
        let bytes = Bytes::from(self.buf);
        let frames = bytes.slice(self.start..);
        self.spans
            .iter()
            .filter_map(|span| {
                let frame = frames.slice(span.start..span.end);
                let view = read_sound_frame(&frame);
                debug_assert!(view.is_ok(), "an encoded frame reads back: {view:?}");
                Some(Frame::new(frame.clone(), &view.ok()?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Payload, encode_frame, split_frames};
    use super::*;

    #[test]
    fn the_tail_of_a_batch_is_its_frames_from_an_offset_on() {
        let mut batch = EncodedBatch::new(10);
        for i in 0..4u8 {
            batch.push(u64::from(i), 0, Payload::new(&[i; 3]));
        }
        let tail = batch.tail_from(12).expect("12 is in the batch");
        assert_eq!((tail.first_offset(), tail.len()), (12, 2));
        let frames = tail.into_frames();
        assert_eq!(frames.iter().map(Frame::offset).collect::<Vec<_>>(), vec![12, 13]);
        assert_eq!(frames[1].record().value.as_ref(), &[3u8; 3]);
        assert!(batch.tail_from(9).is_none());
        assert!(batch.tail_from(14).is_none());
    }

    #[test]
    fn a_batch_is_the_frames_encode_frame_makes_and_knows_where_each_lies() {
        let mut batch = EncodedBatch::after(b"header".to_vec(), 40);
        batch.push(7, 0, Payload::new(b"a"));
        batch.push(8, 0, Payload::with(3, b"second"));
        let mut expected = Vec::new();
        encode_frame(&mut expected, 40, 7, 0, Payload::new(b"a"));
        let first_end = expected.len();
        encode_frame(&mut expected, 41, 8, 0, Payload::with(3, b"second"));
        assert_eq!(batch.frames(), &expected[..]);
        assert_eq!(batch.next_offset(), 42);
        let ends: Vec<_> = batch.spans().iter().map(|s| (s.start, s.end, s.timestamp_ms)).collect();
        assert_eq!(ends, [(0, first_end, 7), (first_end, expected.len(), 8)]);
        let records = split_frames(Bytes::copy_from_slice(batch.frames()), 40, 1 << 20).unwrap();
        let frames = batch.into_frames();
        assert_eq!(frames.iter().map(|f| f.record().clone()).collect::<Vec<_>>(), records);
        assert_eq!(frames[1].as_bytes(), &expected[first_end..]);
    }

    #[test]
    fn a_frame_is_copied_only_at_its_own_offset() {
        let mut source = EncodedBatch::new(5);
        source.push(1, 0, Payload::new(b"five"));
        let frame = source.into_frames().remove(0);
        let mut elsewhere = EncodedBatch::new(6);
        assert!(!elsewhere.push_frame(&frame));
        assert!(elsewhere.is_empty());
        let mut here = EncodedBatch::new(5);
        assert!(here.push_frame(&frame));
        assert_eq!(here.frames(), frame.as_bytes());
    }

    #[test]
    fn split_checked_checks_every_frame() {
        let mut batch = EncodedBatch::new(0);
        batch.push(1, 0, Payload::new(b"one"));
        batch.push(1, 0, Payload::new(b"two"));
        let bytes = batch.frames().to_vec();
        let frames = split_checked(Bytes::from(bytes.clone()), 0, 1 << 20).unwrap();
        assert_eq!(frames, batch.into_frames());
        let mut garbled = bytes;
        let last = garbled.len() - 1;
        garbled[last] ^= 1;
        let (at, offset, _) = split_checked(Bytes::from(garbled), 0, 1 << 20).unwrap_err();
        assert_eq!((at, offset), (frames[0].len(), 1));
    }
}
