//! How a record looks on the wire:
//! `{"offset": N, "timestamp": MS, "value": <the JSON as posted>}`, or
//! `"value_base64": "..."` for a binary record. JSON values were checked when
//! they were appended and are checksummed on disk, so they are copied into
//! the answer as they are, not parsed again.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::log::attributes::BINARY;
use crate::log::{Record, RecordRef};

pub fn write_record(out: &mut Vec<u8>, record: RecordRef<'_>) {
    out.extend_from_slice(b"{\"offset\":");
    push_decimal(out, record.offset);
    out.extend_from_slice(b",\"timestamp\":");
    push_decimal(out, record.timestamp_ms);
    if record.attributes & BINARY != 0 {
        out.extend_from_slice(b",\"value_base64\":\"");
        out.extend_from_slice(STANDARD.encode(record.value).as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(b",\"value\":");
        out.extend_from_slice(record.value);
    }
    out.push(b'}');
}

/// Appends `n` in decimal: answers write several numbers each, and the
/// formatting machinery costs more than the digits.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let len = write_decimal(&mut digits, n);
    out.extend_from_slice(&digits[..len]);
}

/// Writes `n` in decimal at the start of `out` (20 bytes suffice) and
/// returns how many bytes that took.
pub fn write_decimal(out: &mut [u8], mut n: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out[..len].copy_from_slice(&digits[i..]);
    len
}

pub fn record_json(record: RecordRef<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.value.len() + 64);
    write_record(&mut out, record);
    out
}

/// `{"records": [...], "next_offset": K}`
pub fn range_json(records: &[Record], next_offset: u64) -> Vec<u8> {
    let size: usize = records.iter().map(|r| r.value.len() + 64).sum();
    let mut out = Vec::with_capacity(size + 64);
    out.extend_from_slice(b"{\"records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_record(&mut out, record.borrowed());
    }
    out.extend_from_slice(b"],\"next_offset\":");
    push_decimal(&mut out, next_offset);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn decimals_are_written_in_full() {
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn json_and_binary_records_render_as_valid_json() {
        let json = Record {
            offset: 3,
            timestamp_ms: 99,
            attributes: 0,
            value: Bytes::from_static(b"{\"a\": [1, 2]}"),
        };
        let binary = Record {
            attributes: BINARY,
            value: Bytes::from_static(&[0, 159, 146, 150]),
            ..json.clone()
        };
        let parsed: serde_json::Value = serde_json::from_slice(&range_json(&[json, binary], 4)).unwrap();
        assert_eq!(parsed["records"][0]["value"]["a"][1], 2);
        assert_eq!(parsed["records"][1]["value_base64"], "AJ+Slg==");
        assert_eq!(parsed["next_offset"], 4);
    }
}
