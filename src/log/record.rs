//! Records and their frames: the unit the store writes, the index points at and
//! replication ships verbatim.
//!
//! Frame layout, every integer little-endian:
//!
//! ```text
//! | len u32 | crc u32 | version u8 | flags u8 | attributes u8 | offset u64 | timestamp_ms u64 | value |
//! ```
//!
//! `len` counts the bytes after the `crc` field (header rest + value) and `crc`
//! is CRC32 over exactly those bytes, so a frame is checked without knowing
//! anything else. `version` leaves room for later layouts (a key, headers, a
//! term); `flags` are the log's own bits; `attributes` belong to the callers
//! and are stored verbatim. Every bit of both is in one table (`bits`).
//!
//! Version 2 (`FRAME_VERSION_GUARDED`) adds a guard between the header and
//! the value, written on the first record of an append that carried
//! producer headers or an expected last offset (layout in `guard`):
//!
//! ```text
//! | len u32 | crc u32 | 2 u8 | flags u8 | attributes u8 | offset u64 | timestamp_ms u64 | guard_len u16 | guard | value |
//! ```
//!
//! Every other record is still written as version 1, and version-1 frames
//! written before version 2 existed read as they always did: a reader of
//! records never sees the guard, only the value. The guard is encoded once
//! (by a standalone appender, or by a cluster's leader) and then copied
//! verbatim, so frames stay byte-identical on every node.

mod bits;
mod encoded;
mod guard;

use bytes::Bytes;

pub use bits::{FLAG_BATCH_CONTINUES, attributes};
pub use encoded::{EncodedBatch, Frame, FrameSpan, split_checked};
pub use guard::{Guard, MAX_GUARD_BYTES, MAX_PRODUCER_ID, ProducerStamp};

/// Bytes before the checksummed part: `len` and `crc`.
pub const FRAME_PREFIX: usize = 8;
/// Fixed bytes of every frame before its value.
pub const FRAME_HEADER: usize = FRAME_PREFIX + 1 + 1 + 1 + 8 + 8;
/// The plain layout: what every record without a guard is written as.
pub const FRAME_VERSION: u8 = 1;
/// The layout with a guard before the value (see the module doc).
pub const FRAME_VERSION_GUARDED: u8 = 2;
/// Bytes of a guarded frame's guard length field.
const GUARD_LEN_BYTES: usize = 2;

/// The largest value any log accepts (`max_record_bytes` is capped to it).
pub const MAX_RECORD_CEILING: u64 = u32::MAX as u64 / 2;
/// The longest frame trusted when reading what is already stored or
/// replicated. It does not follow `max_record_bytes`, which only limits new
/// appends: lowering that setting must not make stored records unreadable.
pub const MAX_STORED_FRAME: usize = FRAME_HEADER + MAX_RECORD_CEILING as usize;

/// A record as read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: u64,
    pub attributes: u8,
    pub value: Bytes,
}

/// A record borrowed from where it is stored (see `Log::read_with`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub timestamp_ms: u64,
    pub attributes: u8,
    pub value: &'a [u8],
}

impl Record {
    pub fn borrowed(&self) -> RecordRef<'_> {
        RecordRef {
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            attributes: self.attributes,
            value: &self.value,
        }
    }
}

/// What a caller appends: a value, the caller's attribute bits, and an
/// encoded guard (`Guard::encode`; empty for none, most records).
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a> {
    pub attributes: u8,
    pub value: &'a [u8],
    pub guard: &'a [u8],
}

impl<'a> Payload<'a> {
    pub fn new(value: &'a [u8]) -> Self {
        Payload::with(0, value)
    }

    /// A record without a guard.
    pub fn with(attributes: u8, value: &'a [u8]) -> Self {
        Payload {
            attributes,
            value,
            guard: &[],
        }
    }

    /// Bytes its frame takes.
    pub fn frame_len(&self) -> usize {
        match self.guard.len() {
            0 => frame_len(self.value.len()),
            guard => frame_len(self.value.len()) + GUARD_LEN_BYTES + guard,
        }
    }
}

/// A decoded frame borrowing its value from the buffer it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameView<'a> {
    pub flags: u8,
    pub attributes: u8,
    pub offset: u64,
    pub timestamp_ms: u64,
    /// The encoded guard of a version-2 frame; empty in a version-1 one.
    pub guard: &'a [u8],
    pub value: &'a [u8],
    /// Length of the whole frame, prefix included.
    pub frame_len: usize,
}

impl FrameView<'_> {
    /// Where the value starts in the frame.
    pub fn value_start(&self) -> usize {
        self.frame_len - self.value.len()
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ends before the frame does: a torn write, or a read too short.
    Short {
        needed: usize,
    },
    /// The length field cannot describe a frame of this log.
    BadLength {
        len: u64,
    },
    BadChecksum,
    BadVersion {
        version: u8,
    },
    /// A sound frame, but not the record expected at this place.
    WrongOffset {
        expected: u64,
        found: u64,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Short { needed } => write!(f, "frame cut short ({needed} bytes needed)"),
            FrameError::BadLength { len } => write!(f, "impossible frame length {len}"),
            FrameError::BadChecksum => write!(f, "checksum mismatch"),
            FrameError::BadVersion { version } => write!(f, "unknown frame version {version}"),
            FrameError::WrongOffset { expected, found } => {
                write!(f, "frame holds offset {found} where {expected} was expected")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Length of the leading run of checked frames in `frames` that ends with
/// a finished batch (a frame without `FLAG_BATCH_CONTINUES`). A frame that
/// runs past the buffer or does not check out ends the run.
pub fn finished_batches_len(frames: &[u8]) -> usize {
    Frames::new(frames, None, MAX_STORED_FRAME)
        .map_while(Result::ok)
        .filter(|(_, view)| view.flags & FLAG_BATCH_CONTINUES == 0)
        .last()
        .map_or(0, |(at, view)| at + view.frame_len)
}

/// The checked frames of a buffer of frames back to back, each with its
/// position: the one walk over frames that recovery, batch scanning and
/// replication share. With an expected first offset, offsets must also be
/// dense from it. The first frame that does not check out ends the walk
/// with its position and why.
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    buf: &'a [u8],
    at: usize,
    expected: Option<u64>,
    max_frame_len: usize,
    done: bool,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8], first_offset: Option<u64>, max_frame_len: usize) -> Self {
        Frames {
            buf,
            at: 0,
            expected: first_offset,
            max_frame_len,
            done: false,
        }
    }

    /// Where the frames checked so far end.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<(usize, FrameView<'a>), (usize, FrameError)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.at >= self.buf.len() {
            return None;
        }
        let at = self.at;
        let rest = self.buf.get(at..).unwrap_or_default();
        let checked = decode_frame(rest, self.max_frame_len).and_then(|view| match self.expected {
            Some(expected) if view.offset != expected => Err(FrameError::WrongOffset {
                expected,
                found: view.offset,
            }),
            _ => Ok(view),
        });
        match checked {
            Ok(view) => {
                self.at += view.frame_len;
                self.expected = self.expected.map(|e| e + 1);
                Some(Ok((at, view)))
            }
            Err(e) => {
                self.done = true;
                Some(Err((at, e)))
            }
        }
    }
}

/// The body length a frame's length field declares (0 when `prefix` is
/// shorter than the field). Not checked: callers bound it.
pub fn frame_body_len(prefix: &[u8]) -> u32 {
    prefix.first_chunk::<4>().map_or(0, |b| u32::from_le_bytes(*b))
}

/// Bytes a frame of a value of `value_len` bytes takes on disk.
pub fn frame_len(value_len: usize) -> usize {
    FRAME_HEADER + value_len
}

/// Appends one encoded frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, offset: u64, timestamp_ms: u64, flags: u8, payload: Payload) {
    let start = out.len();
    encode_unstamped(out, flags, payload);
    if let Some(frame) = out.get_mut(start..) {
        stamp_frame(frame, offset, timestamp_ms);
    }
}

/// Appends a frame whose offset, timestamp and checksum are still zero:
/// an appender encodes its batch before it knows where it goes, and the
/// group-commit writer `stamp_frames` it.
pub fn encode_unstamped(out: &mut Vec<u8>, flags: u8, payload: Payload) {
    let body_len = payload.frame_len() - FRAME_PREFIX;
    debug_assert!(body_len <= u32::MAX as usize, "frame length must fit its u32 field");
    debug_assert!(payload.guard.len() <= MAX_GUARD_BYTES, "a guard fits its u16 length");
    out.reserve(payload.frame_len());
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let guarded = !payload.guard.is_empty();
    out.push(if guarded { FRAME_VERSION_GUARDED } else { FRAME_VERSION });
    out.push(flags);
    out.push(payload.attributes);
    out.extend_from_slice(&[0; 16]);
    if guarded {
        out.extend_from_slice(&(payload.guard.len() as u16).to_le_bytes());
        out.extend_from_slice(payload.guard);
    }
    out.extend_from_slice(payload.value);
}

/// Sets the offset and timestamp of the one frame `frame` holds, and its checksum.
fn stamp_frame(frame: &mut [u8], offset: u64, timestamp_ms: u64) {
    debug_assert!(frame.len() >= FRAME_HEADER);
    let Some((prefix, body)) = frame.split_at_mut_checked(FRAME_PREFIX) else {
        return;
    };
    if let Some((stamped, _)) = body.split_at_mut_checked(FRAME_HEADER - FRAME_PREFIX) {
        let [_, _, _, stamps @ ..] = stamped else { return };
        let (offset_bytes, timestamp_bytes) = stamps.split_at_mut(8);
        offset_bytes.copy_from_slice(&offset.to_le_bytes());
        timestamp_bytes.copy_from_slice(&timestamp_ms.to_le_bytes());
    }
    let crc = crc32fast::hash(body);
    if let Some((_, crc_bytes)) = prefix.split_first_chunk_mut::<4>() {
        crc_bytes.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Stamps consecutive frames made by `encode_unstamped` with offsets from
/// `first` on and `timestamp_ms`. Returns how many frames there were.
pub fn stamp_frames(frames: &mut [u8], first: u64, timestamp_ms: u64) -> u32 {
    let (mut at, mut count) = (0, 0u32);
    while at + FRAME_PREFIX <= frames.len() {
        let body_len = frame_body_len(frames.get(at..).unwrap_or_default()) as usize;
        let end = (at + FRAME_PREFIX + body_len).min(frames.len());
        if let Some(frame) = frames.get_mut(at..end) {
            stamp_frame(frame, first + u64::from(count), timestamp_ms);
        }
        at = end;
        count += 1;
    }
    debug_assert_eq!(at, frames.len(), "only whole frames are stamped");
    count
}

/// Decodes the frame at the start of `buf`, refusing frames longer than
/// `max_frame_len` before reading them, and checking the checksum.
pub fn decode_frame(buf: &[u8], max_frame_len: usize) -> Result<FrameView<'_>, FrameError> {
    let Some((len, rest)) = buf.split_first_chunk::<4>() else {
        return Err(FrameError::Short { needed: FRAME_PREFIX });
    };
    let body_len = u32::from_le_bytes(*len) as usize;
    let frame_len = FRAME_PREFIX + body_len;
    if frame_len < FRAME_HEADER || frame_len > max_frame_len {
        return Err(FrameError::BadLength { len: body_len as u64 });
    }
    let Some((crc, body)) = rest.split_first_chunk::<4>() else {
        return Err(FrameError::Short { needed: frame_len });
    };
    let Some(body) = body.get(..body_len) else {
        return Err(FrameError::Short { needed: frame_len });
    };
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err(FrameError::BadChecksum);
    }
    read_body(body, frame_len)
}

/// The fields of a frame this module already knows sound (it encoded or
/// checked it): `decode_frame` without the checksum pass.
fn read_sound_frame(frame: &[u8]) -> Result<FrameView<'_>, FrameError> {
    let body = frame
        .get(FRAME_PREFIX..)
        .ok_or(FrameError::Short { needed: FRAME_PREFIX })?;
    read_body(body, frame.len())
}

/// The fields of a frame's body (what follows `crc`), its length already
/// bounded (at least the fixed header's rest).
fn read_body(body: &[u8], frame_len: usize) -> Result<FrameView<'_>, FrameError> {
    let bad_length = FrameError::BadLength { len: body.len() as u64 };
    let Some(([version, flags, attributes], rest)) = body.split_first_chunk::<3>() else {
        return Err(bad_length);
    };
    if *version != FRAME_VERSION && *version != FRAME_VERSION_GUARDED {
        return Err(FrameError::BadVersion { version: *version });
    }
    let Some((offset, rest)) = rest.split_first_chunk::<8>() else {
        return Err(bad_length);
    };
    let Some((timestamp_ms, rest)) = rest.split_first_chunk::<8>() else {
        return Err(bad_length);
    };
    let (guard, value) = match *version {
        FRAME_VERSION => (&[][..], rest),
        _ => {
            let Some((guard_len, rest)) = rest.split_first_chunk::<GUARD_LEN_BYTES>() else {
                return Err(bad_length);
            };
            let guard_len = usize::from(u16::from_le_bytes(*guard_len));
            if guard_len == 0 || guard_len > MAX_GUARD_BYTES {
                return Err(bad_length);
            }
            let Some((guard, value)) = rest.split_at_checked(guard_len) else {
                return Err(bad_length);
            };
            (guard, value)
        }
    };
    Ok(FrameView {
        flags: *flags,
        attributes: *attributes,
        offset: u64::from_le_bytes(*offset),
        timestamp_ms: u64::from_le_bytes(*timestamp_ms),
        guard,
        value,
        frame_len,
    })
}

/// What a frame's fixed header says of its record, read without its value
/// (no checksum: the value is not there to check). For finding a place by
/// time, where the records read from there are checked as every read is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStamps {
    pub attributes: u8,
    pub offset: u64,
    pub timestamp_ms: u64,
}

/// The stamps of the frame whose header starts `header` (at least
/// `FRAME_HEADER` bytes), if its version is one this log reads.
pub fn frame_stamps(header: &[u8]) -> Option<FrameStamps> {
    let rest = header.get(FRAME_PREFIX..FRAME_HEADER)?;
    let ([version, _flags, attributes], rest) = rest.split_first_chunk::<3>()?;
    let (offset, rest) = rest.split_first_chunk::<8>()?;
    let (timestamp_ms, _) = rest.split_first_chunk::<8>()?;
    (*version == FRAME_VERSION || *version == FRAME_VERSION_GUARDED).then(|| FrameStamps {
        attributes: *attributes,
        offset: u64::from_le_bytes(*offset),
        timestamp_ms: u64::from_le_bytes(*timestamp_ms),
    })
}

/// Where a buffer of frames went wrong: byte position in the buffer, the offset
/// expected there, and why.
pub type SplitError = (usize, u64, FrameError);

/// Splits a buffer of whole frames into records without copying values.
/// `first_offset` is what the first frame must carry; offsets must be dense.
pub fn split_frames(buf: Bytes, first_offset: u64, max_frame_len: usize) -> Result<Vec<Record>, SplitError> {
    let mut records = Vec::new();
    for frame in Frames::new(&buf, Some(first_offset), max_frame_len) {
        let expected = first_offset + records.len() as u64;
        let (at, view) = frame.map_err(|(at, e)| (at, expected, e))?;
        records.push(Record {
            offset: view.offset,
            timestamp_ms: view.timestamp_ms,
            attributes: view.attributes,
            value: buf.slice(at + view.value_start()..at + view.frame_len),
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: u64, value: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_frame(&mut buf, offset, 1234, 0, Payload::new(value));
        buf
    }

    #[test]
    fn round_trips_a_frame() {
        let buf = frame(7, b"hello");
        assert_eq!(buf.len(), frame_len(5));
        let view = decode_frame(&buf, 1 << 20).unwrap();
        assert_eq!((view.offset, view.timestamp_ms, view.value), (7, 1234, &b"hello"[..]));
        assert_eq!(view.frame_len, buf.len());
    }

    #[test]
    fn stamped_frames_equal_frames_encoded_in_place() {
        let mut unstamped = Vec::new();
        let values: [&[u8]; 3] = [b"a", b"", b"third value"];
        let mut expected = Vec::new();
        for (i, value) in values.iter().enumerate() {
            encode_unstamped(&mut unstamped, i as u8, Payload::new(value));
            encode_frame(&mut expected, 40 + i as u64, 99, i as u8, Payload::new(value));
        }
        assert!(decode_frame(&unstamped, 1 << 20).is_err(), "not valid before stamping");
        assert_eq!(stamp_frames(&mut unstamped, 40, 99), 3);
        assert_eq!(unstamped, expected);
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let good = frame(3, b"some value bytes");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(decode_frame(&bad, 1 << 20).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn every_cut_is_short() {
        let good = frame(3, b"abc");
        for cut in 0..good.len() {
            let err = decode_frame(&good[..cut], 1 << 20).unwrap_err();
            assert!(matches!(err, FrameError::Short { .. }), "cut at {cut}: {err:?}");
        }
    }

    #[test]
    fn lengths_beyond_the_limit_are_refused_before_reading() {
        let mut buf = frame(0, &[0u8; 100]);
        assert!(matches!(decode_frame(&buf, 50), Err(FrameError::BadLength { .. })));
        buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_frame(&buf, 1 << 20), Err(FrameError::BadLength { .. })));
    }

    #[test]
    fn finished_batches_stop_before_an_open_batch() {
        let mut buf = frame(0, b"alone");
        let done = buf.len();
        encode_frame(&mut buf, 1, 0, FLAG_BATCH_CONTINUES, Payload::new(b"first of two"));
        assert_eq!(finished_batches_len(&buf), done);
        encode_frame(&mut buf, 2, 0, 0, Payload::new(b"second of two"));
        assert_eq!(finished_batches_len(&buf), buf.len());
        assert_eq!(
            finished_batches_len(&buf[..buf.len() - 1]),
            done,
            "a cut frame is not finished"
        );
        let mut garbled = buf.clone();
        garbled[done + 12] ^= 1;
        assert_eq!(finished_batches_len(&garbled), done, "nor is a garbled one");
    }

    #[test]
    fn stamps_are_read_from_the_header_alone() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 9, 4321, 0, Payload::with(3, b"value"));
        let stamps = frame_stamps(&buf[..FRAME_HEADER]).unwrap();
        assert_eq!(
            stamps,
            FrameStamps {
                attributes: 3,
                offset: 9,
                timestamp_ms: 4321
            }
        );
        assert_eq!(frame_stamps(&buf[..FRAME_HEADER - 1]), None, "a cut header");
        buf[FRAME_PREFIX] = FRAME_VERSION_GUARDED + 1;
        assert_eq!(frame_stamps(&buf), None, "a version this log does not read");
    }

    #[test]
    fn split_checks_dense_offsets() {
        let mut buf = frame(5, b"a");
        buf.extend(frame(6, b"bb"));
        let records = split_frames(Bytes::from(buf.clone()), 5, 1 << 20).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(&records[1].value[..], b"bb");
        let err = split_frames(Bytes::from(buf), 4, 1 << 20).unwrap_err();
        assert!(matches!(err.2, FrameError::WrongOffset { expected: 4, found: 5 }));
    }

    #[test]
    fn a_guarded_frame_keeps_its_guard_apart_from_its_value() {
        let mut buf = frame(1, b"plain");
        let plain_len = buf.len();
        let payload = Payload {
            attributes: 0,
            value: b"{\"a\":1}",
            guard: b"guard bytes",
        };
        encode_frame(&mut buf, 2, 55, 0, payload);
        assert_eq!(buf.len() - plain_len, payload.frame_len());
        assert_eq!(buf[plain_len + FRAME_PREFIX], FRAME_VERSION_GUARDED);
        let view = decode_frame(&buf[plain_len..], 1 << 20).unwrap();
        assert_eq!((view.guard, view.value), (&b"guard bytes"[..], &b"{\"a\":1}"[..]));
        let records = split_frames(Bytes::from(buf.clone()), 1, 1 << 20).unwrap();
        assert_eq!(&records[1].value[..], b"{\"a\":1}", "readers get the value alone");
        assert_eq!(
            decode_frame(&buf, 1 << 20).unwrap().guard,
            b"",
            "a version-1 frame has none"
        );
        for i in plain_len..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(decode_frame(&bad[plain_len..], 1 << 20).is_err(), "flip at byte {i}");
        }
    }
}
