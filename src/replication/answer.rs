//! What a follower may believe of its leader's answer to one pull (wire
//! format in `crate::wire`): nothing it has not checked. Offsets in headers
//! and in the 404 body are bounded by `wire::MAX_OFFSET` before any
//! arithmetic; frames are decoded one by one (length, checksum, version)
//! and must carry dense offsets from the one asked for; and the pull
//! advances by the frames found, the `x-distlog-next-offset` header being
//! only cross-checked against them.

use bytes::Bytes;
use reqwest::header::HeaderMap;

use crate::log::{FrameError, Frames, MAX_STORED_FRAME};
use crate::wire::{LOG_NEXT_OFFSET, LOWEST_OFFSET, MAX_OFFSET, NEXT_OFFSET, bounds_field};

/// Why an answer from the leader cannot be used. Each is the leader's
/// fault (or a broken network): the follower retries the pull.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the leader's answer has no usable {0} header")]
    MissingHeader(&'static str),
    #[error("the leader claims {what} = {value}, beyond any real log (at most {MAX_OFFSET})")]
    AbsurdOffset { what: &'static str, value: u64 },
    #[error("the leader says offset {from} is outside its log, yet its bounds [{lowest}, {next}) hold it")]
    ContradictoryBounds { from: u64, lowest: u64, next: u64 },
    #[error("the leader's frame for offset {offset} is unusable: {reason}")]
    BadFrame { offset: u64, reason: FrameError },
    #[error("the leader's {NEXT_OFFSET} header says {claimed}, but its frames end at {found}")]
    NextMismatch { claimed: u64, found: u64 },
}

/// The leader's log bounds, as it stated them when `from` was outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub lowest: u64,
    pub next: u64,
}

/// The checked frames of one pull.
#[derive(Debug)]
pub struct Pulled {
    pub frames: Bytes,
    /// The offset after the last frame: where the next pull starts.
    pub next: u64,
}

/// The headers of a 200 answer, each bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramesHeaders {
    pub next: u64,
    pub lowest: u64,
    pub log_next: u64,
}

fn bounded(what: &'static str, value: u64) -> Result<u64, ProtocolError> {
    if value > MAX_OFFSET {
        return Err(ProtocolError::AbsurdOffset { what, value });
    }
    Ok(value)
}

fn offset_header(headers: &HeaderMap, name: &'static str) -> Result<u64, ProtocolError> {
    let value = headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(ProtocolError::MissingHeader(name))?;
    bounded(name, value)
}

impl FramesHeaders {
    pub fn read(headers: &HeaderMap) -> Result<FramesHeaders, ProtocolError> {
        Ok(FramesHeaders {
            next: offset_header(headers, NEXT_OFFSET)?,
            lowest: offset_header(headers, LOWEST_OFFSET)?,
            log_next: offset_header(headers, LOG_NEXT_OFFSET)?,
        })
    }
}

impl Bounds {
    /// The bounds in a 404 body, or `None` if it has none (a 404 from
    /// something that is not a distlog node).
    pub fn from_body(body: &[u8]) -> Option<Result<Bounds, ProtocolError>> {
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        let lowest = json[bounds_field::LOWEST_OFFSET].as_u64()?;
        let next = json[bounds_field::NEXT_OFFSET].as_u64()?;
        Some(Bounds::checked(lowest, next))
    }

    fn checked(lowest: u64, next: u64) -> Result<Bounds, ProtocolError> {
        let lowest = bounded(bounds_field::LOWEST_OFFSET, lowest)?;
        let next = bounded(bounds_field::NEXT_OFFSET, next)?;
        if lowest > next {
            return Err(ProtocolError::AbsurdOffset {
                what: bounds_field::LOWEST_OFFSET,
                value: lowest,
            });
        }
        Ok(Bounds { lowest, next })
    }

    /// A 404 for `from` is only believable if `from` really is outside.
    pub fn check_excludes(self, from: u64) -> Result<Bounds, ProtocolError> {
        if (self.lowest..=self.next).contains(&from) {
            return Err(ProtocolError::ContradictoryBounds {
                from,
                lowest: self.lowest,
                next: self.next,
            });
        }
        Ok(self)
    }
}

/// Checks that `frames` are whole, sound frames with dense offsets from
/// `from` on, and that the leader's `next` header agrees with them.
pub fn check_frames(frames: Bytes, from: u64, headers: FramesHeaders) -> Result<Pulled, ProtocolError> {
    let next = frames_end(&frames, from)?;
    if next != headers.next {
        return Err(ProtocolError::NextMismatch {
            claimed: headers.next,
            found: next,
        });
    }
    Ok(Pulled { frames, next })
}

/// The offset after the last of `frames`, which must start at `from`.
fn frames_end(frames: &[u8], from: u64) -> Result<u64, ProtocolError> {
    let mut next = from;
    for frame in Frames::new(frames, Some(from), MAX_STORED_FRAME) {
        match frame {
            Ok(_) => next = bounded(NEXT_OFFSET, next.saturating_add(1))?,
            Err((_, reason)) => return Err(ProtocolError::BadFrame { offset: next, reason }),
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Payload, encode_frame};

    fn frames(from: u64, count: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for offset in from..from + count {
            encode_frame(&mut out, offset, 7, 0, Payload::new(b"value"));
        }
        out
    }

    fn headers(next: u64) -> FramesHeaders {
        FramesHeaders {
            next,
            lowest: 0,
            log_next: next,
        }
    }

    fn check(frames: Vec<u8>, from: u64, next: u64) -> Result<u64, ProtocolError> {
        check_frames(Bytes::from(frames), from, headers(next)).map(|pulled| pulled.next)
    }

    #[test]
    fn sound_frames_advance_by_their_count() {
        assert_eq!(check(frames(5, 3), 5, 8).unwrap(), 8);
        assert_eq!(check(Vec::new(), 5, 5).unwrap(), 5, "an empty answer stays put");
    }

    #[test]
    fn a_next_header_that_disagrees_with_the_frames_is_refused() {
        for claimed in [7, 9, u64::MAX] {
            match check(frames(5, 3), 5, claimed) {
                Err(ProtocolError::NextMismatch { claimed: c, found: 8 }) => assert_eq!(c, claimed),
                other => panic!("{claimed}: {other:?}"),
            }
        }
    }

    #[test]
    fn frames_must_start_at_from_and_be_dense() {
        assert!(matches!(
            check(frames(6, 2), 5, 7),
            Err(ProtocolError::BadFrame {
                offset: 5,
                reason: FrameError::WrongOffset { expected: 5, found: 6 }
            })
        ));
        let mut gap = frames(5, 1);
        gap.extend(frames(7, 1));
        assert!(matches!(
            check(gap, 5, 7),
            Err(ProtocolError::BadFrame { offset: 6, .. })
        ));
    }

    #[test]
    fn corrupt_or_cut_frames_are_refused() {
        let mut corrupt = frames(5, 2);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(matches!(
            check(corrupt, 5, 7),
            Err(ProtocolError::BadFrame {
                offset: 6,
                reason: FrameError::BadChecksum
            })
        ));
        let mut cut = frames(5, 2);
        cut.pop();
        assert!(matches!(
            check(cut, 5, 7),
            Err(ProtocolError::BadFrame {
                offset: 6,
                reason: FrameError::Short { .. }
            })
        ));
    }

    #[test]
    fn offsets_beyond_max_offset_are_refused() {
        let mut map = HeaderMap::new();
        for (name, value) in [(NEXT_OFFSET, "3"), (LOWEST_OFFSET, "0"), (LOG_NEXT_OFFSET, "3")] {
            map.insert(name, value.parse().unwrap());
        }
        assert_eq!(FramesHeaders::read(&map).unwrap(), headers(3));
        map.insert(LOG_NEXT_OFFSET, u64::MAX.to_string().parse().unwrap());
        assert!(matches!(
            FramesHeaders::read(&map),
            Err(ProtocolError::AbsurdOffset {
                what: LOG_NEXT_OFFSET,
                value: u64::MAX
            })
        ));
        map.remove(NEXT_OFFSET);
        assert!(matches!(
            FramesHeaders::read(&map),
            Err(ProtocolError::MissingHeader(NEXT_OFFSET))
        ));
        let body = format!(r#"{{"lowest_offset":{0},"next_offset":{0}}}"#, u64::MAX);
        assert!(matches!(
            Bounds::from_body(body.as_bytes()),
            Some(Err(ProtocolError::AbsurdOffset { .. }))
        ));
        assert!(Bounds::from_body(b"not json").is_none());
    }

    #[test]
    fn a_404_is_believed_only_for_offsets_outside_the_bounds_it_gives() {
        let bounds = Bounds::checked(10, 20).unwrap();
        assert_eq!(bounds.check_excludes(9).unwrap(), bounds);
        assert_eq!(bounds.check_excludes(21).unwrap(), bounds);
        for inside in [10, 15, 20] {
            assert!(bounds.check_excludes(inside).is_err(), "{inside}");
        }
        assert!(Bounds::checked(20, 10).is_err(), "lowest above next");
    }
}
