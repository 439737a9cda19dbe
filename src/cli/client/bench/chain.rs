//! The records `distlog bench` writes and how it checks them: each
//! producer's records form a hash chain, so a reader can tell a lost,
//! duplicated, reordered or altered record from the records alone.
//!
//! A record is one JSON line: `{"p":P,"s":S,"t":T,"h":"H","x":"xxx..."}`,
//! P the producer, S its sequence number from 0, T the intended send time
//! (µs since the Unix epoch, for end-to-end latency), H 16 hex digits: the
//! first 8 bytes of SHA-256(H of record S-1, P, S) (zeros before record 0),
//! and `x` padding up to the record size asked for.

use std::collections::HashMap;

use serde::Deserialize;

use crate::api::push_decimal;

type Hash = [u8; 8];

fn link(previous: &Hash, producer: u32, seq: u64) -> Hash {
    let mut input = [0u8; 20];
    input[..8].copy_from_slice(previous);
    input[8..12].copy_from_slice(&producer.to_be_bytes());
    input[12..].copy_from_slice(&seq.to_be_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut hash = [0u8; 8];
    hash.copy_from_slice(&digest.as_ref()[..8]);
    hash
}

fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// One producer's next records.
pub struct Chain {
    producer: u32,
    seq: u64,
    previous: Hash,
    padding: String,
}

impl Chain {
    /// Records of about `record_bytes` bytes (never less than the fields).
    pub fn new(producer: u32, record_bytes: usize) -> Chain {
        let fields =
            format!(r#"{{"p":{producer},"s":0,"t":1000000000000000,"h":"0000000000000000","x":""}}"#).len() + 4;
        Chain {
            producer,
            seq: 0,
            previous: [0; 8],
            padding: "x".repeat(record_bytes.saturating_sub(fields)),
        }
    }

    /// Appends the next record (and a newline) to `out`, byte by byte
    /// rather than through `write!`: this runs for every record the bench
    /// sends, at the rates of the server it is measuring.
    pub fn next_line(&mut self, sent_us: u64, out: &mut Vec<u8>) {
        let hash = link(&self.previous, self.producer, self.seq);
        out.extend_from_slice(br#"{"p":"#);
        push_decimal(out, u64::from(self.producer));
        out.extend_from_slice(br#","s":"#);
        push_decimal(out, self.seq);
        out.extend_from_slice(br#","t":"#);
        push_decimal(out, sent_us);
        out.extend_from_slice(br#","h":""#);
        for byte in hash {
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        }
        out.extend_from_slice(br#"","x":""#);
        out.extend_from_slice(self.padding.as_bytes());
        out.extend_from_slice(b"\"}\n");
        self.previous = hash;
        self.seq += 1;
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[derive(Deserialize)]
struct Fields {
    p: u32,
    s: u64,
    t: u64,
    h: String,
}

/// What a reader found wrong, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Faults {
    /// Sequence numbers skipped.
    pub lost: u64,
    /// Records at or below a sequence number already seen.
    pub duplicated: u64,
    /// Records whose hash is not the link from the one before.
    pub broken: u64,
    /// Records that are not the bench's.
    pub foreign: u64,
}

impl Faults {
    /// Whether the log lost, repeated, reordered or altered a record.
    pub fn failed(&self) -> bool {
        self.lost + self.duplicated + self.broken > 0
    }
}

/// Checks records in log order.
#[derive(Default)]
pub struct Verifier {
    chains: HashMap<u32, (u64, Hash)>,
    pub faults: Faults,
    pub records: u64,
}

impl Verifier {
    /// Checks one record; returns its intended send time (µs) if it is
    /// the bench's.
    pub fn check(&mut self, value: Option<&serde_json::Value>) -> Option<u64> {
        self.records += 1;
        let Some(fields) = value.and_then(|v| Fields::deserialize(v).ok()) else {
            self.faults.foreign += 1;
            return None;
        };
        let (next, previous) = self.chains.entry(fields.p).or_insert((0, [0; 8]));
        if fields.s < *next {
            self.faults.duplicated += 1;
            return Some(fields.t);
        }
        if fields.s > *next {
            // After a gap the chain goes on from what the record says.
            self.faults.lost += fields.s - *next;
            *previous = parse_hex(&fields.h).unwrap_or_default();
        } else {
            let expected = link(previous, fields.p, fields.s);
            if hex(&expected) != fields.h {
                self.faults.broken += 1;
            }
            *previous = expected;
        }
        *next = fields.s + 1;
        Some(fields.t)
    }

    /// Records each producer is known to have written that were not seen:
    /// `written[p]` records of producer p.
    pub fn missing_tails(&self, written: &[u64]) -> u64 {
        written
            .iter()
            .enumerate()
            .map(|(p, &w)| w.saturating_sub(self.chains.get(&(p as u32)).map_or(0, |(next, _)| *next)))
            .sum()
    }
}

fn parse_hex(text: &str) -> Option<Hash> {
    let mut hash = [0u8; 8];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(chain: &mut Chain, n: usize) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for _ in 0..n {
            chain.next_line(7, &mut out);
        }
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn a_whole_chain_passes_and_records_have_the_size_asked_for() {
        let mut chain = Chain::new(3, 200);
        let mut out = Vec::new();
        chain.next_line(1_700_000_000_000_000, &mut out);
        assert!((195..=205).contains(&out.len()), "{}", out.len());
        let mut verifier = Verifier::default();
        for record in records(&mut Chain::new(3, 100), 50) {
            assert_eq!(verifier.check(Some(&record)), Some(7));
        }
        assert_eq!(verifier.faults, Faults::default());
    }

    #[test]
    fn a_deleted_a_repeated_and_a_swapped_record_are_each_caught() {
        let all = records(&mut Chain::new(0, 60), 10);
        let mut deleted = Verifier::default();
        for (i, record) in all.iter().enumerate() {
            if i != 4 {
                deleted.check(Some(record));
            }
        }
        assert_eq!((deleted.faults.lost, deleted.faults.broken), (1, 0));
        assert!(deleted.faults.failed());

        let mut repeated = Verifier::default();
        for record in all.iter().chain(&all[9..]) {
            repeated.check(Some(record));
        }
        assert_eq!(repeated.faults.duplicated, 1);

        let mut swapped = Verifier::default();
        for i in [0, 1, 3, 2, 4] {
            swapped.check(Some(&all[i]));
        }
        assert!(swapped.faults.failed());
        assert_eq!(swapped.missing_tails(&[10]), 5);

        let mut altered = Verifier::default();
        let mut forged = all[1].clone();
        forged["h"] = "0123456789abcdef".into();
        for record in [&all[0], &forged, &all[2]] {
            altered.check(Some(record));
        }
        assert_eq!(altered.faults.broken, 1);
        altered.check(Some(&serde_json::json!({"other": 1})));
        assert_eq!(altered.faults.foreign, 1);
    }
}
