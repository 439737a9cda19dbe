//! A record's guard: what an append said about whether it may be appended
//! (the producer that sent it and where in its sequence it is, and the
//! offset the log's last record was expected at). Carried by the first
//! record of such an append, in a version-2 frame (see `log::record`), so
//! that whoever reads the log again (a restart, every node of a cluster
//! applying the same entry) decides the same way.
//!
//! Layout, integers little-endian:
//!
//! ```text
//! | parts u8 | producer? | expected_last i64? |
//! producer = | id_len u8 | id (id_len bytes) | epoch u32 | seq u64 | count u32 |
//! ```
//!
//! `parts` says which follow: `PRODUCER` (0b01) and `EXPECTED` (0b10);
//! any other bit, a part cut short, or bytes left over make the guard bad.

use serde::{Deserialize, Serialize};

/// The longest guard a frame may carry (checked before it is read).
pub const MAX_GUARD_BYTES: usize = 256;
/// The longest producer id (`Producer-Id`).
pub const MAX_PRODUCER_ID: usize = 64;

const PRODUCER: u8 = 0b01;
const EXPECTED: u8 = 0b10;

/// Who sent an append and which of its sequence numbers the append's
/// records take: `seq .. seq + count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStamp {
    pub id: String,
    pub epoch: u32,
    pub seq: u64,
    pub count: u32,
}

impl ProducerStamp {
    /// The sequence number after the append's last record.
    pub fn next_seq(&self) -> u64 {
        self.seq.saturating_add(u64::from(self.count))
    }
}

/// An append's conditions; `Default` is none (an unguarded append).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub producer: Option<ProducerStamp>,
    /// The offset the log's last record must be at (-1: no record yet).
    pub expected_last: Option<i64>,
}

impl Guard {
    pub fn is_none(&self) -> bool {
        self.producer.is_none() && self.expected_last.is_none()
    }

    /// The guard's bytes (empty for none).
    pub fn encode(&self) -> Vec<u8> {
        if self.is_none() {
            return Vec::new();
        }
        let id_len = self.producer.as_ref().map_or(0, |p| p.id.len().min(MAX_PRODUCER_ID));
        let mut out = Vec::with_capacity(1 + 1 + id_len + 16 + 8);
        let parts = self.producer.as_ref().map_or(0, |_| PRODUCER) | self.expected_last.map_or(0, |_| EXPECTED);
        out.push(parts);
        if let Some(p) = &self.producer {
            debug_assert!(p.id.len() <= MAX_PRODUCER_ID, "producer ids are checked before");
            out.push(p.id.len().min(MAX_PRODUCER_ID) as u8);
            out.extend_from_slice(
                p.id.as_bytes()
                    .get(..MAX_PRODUCER_ID.min(p.id.len()))
                    .unwrap_or_default(),
            );
            out.extend_from_slice(&p.epoch.to_le_bytes());
            out.extend_from_slice(&p.seq.to_le_bytes());
            out.extend_from_slice(&p.count.to_le_bytes());
        }
        if let Some(expected) = self.expected_last {
            out.extend_from_slice(&expected.to_le_bytes());
        }
        debug_assert!(out.len() <= MAX_GUARD_BYTES);
        out
    }

    /// Reads a guard; an empty one is none.
    pub fn decode(bytes: &[u8]) -> Result<Guard, String> {
        let Some((parts, mut rest)) = bytes.split_first() else {
            return Ok(Guard::default());
        };
        if parts & !(PRODUCER | EXPECTED) != 0 || *parts == 0 {
            return Err(format!("unknown guard parts {parts:#04b}"));
        }
        let cut = || "guard cut short".to_string();
        let mut take = |n: usize| -> Result<&[u8], String> {
            let (taken, left) = rest.split_at_checked(n).ok_or_else(cut)?;
            rest = left;
            Ok(taken)
        };
        let mut guard = Guard::default();
        if parts & PRODUCER != 0 {
            let id_len = usize::from(*take(1)?.first().ok_or_else(cut)?);
            let id = std::str::from_utf8(take(id_len)?).map_err(|e| format!("producer id: {e}"))?;
            if id.is_empty() || id.len() > MAX_PRODUCER_ID {
                return Err(format!("producer id of {} bytes", id.len()));
            }
            let id = id.to_string();
            let epoch = u32::from_le_bytes(take(4)?.try_into().map_err(|_| cut())?);
            let seq = u64::from_le_bytes(take(8)?.try_into().map_err(|_| cut())?);
            let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| cut())?);
            guard.producer = Some(ProducerStamp { id, epoch, seq, count });
        }
        if parts & EXPECTED != 0 {
            guard.expected_last = Some(i64::from_le_bytes(take(8)?.try_into().map_err(|_| cut())?));
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes after the guard", rest.len()));
        }
        Ok(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guards() -> Vec<Guard> {
        let producer = ProducerStamp {
            id: "orders-7.a_b".into(),
            epoch: 3,
            seq: u64::MAX - 4,
            count: 5,
        };
        vec![
            Guard::default(),
            Guard {
                producer: Some(producer.clone()),
                expected_last: None,
            },
            Guard {
                producer: None,
                expected_last: Some(-1),
            },
            Guard {
                producer: Some(producer),
                expected_last: Some(41),
            },
        ]
    }

    #[test]
    fn guards_round_trip() {
        for guard in guards() {
            assert_eq!(Guard::decode(&guard.encode()), Ok(guard.clone()), "{guard:?}");
        }
        assert!(Guard::default().encode().is_empty());
    }

    #[test]
    fn cut_or_padded_guards_are_refused() {
        for guard in guards().into_iter().filter(|g| !g.is_none()) {
            let bytes = guard.encode();
            for cut in 1..bytes.len() {
                assert!(Guard::decode(&bytes[..cut]).is_err(), "{guard:?} cut at {cut}");
            }
            let mut padded = bytes.clone();
            padded.push(0);
            assert!(Guard::decode(&padded).is_err());
        }
        assert!(Guard::decode(&[0b100]).is_err(), "an unknown part");
        assert!(Guard::decode(&[0]).is_err(), "no part at all");
    }
}
