//! Raft entries as log frames, and append-entries on the wire.
//!
//! An entry at index `i` is the frame at offset `i` (layout in
//! `log::record`). A user record keeps its value, timestamp and attributes;
//! a control entry (blank, membership) is a frame with
//! `log::attributes::CONTROL`, timestamp 0 and a small JSON value. A
//! consumer position change is a control frame too, but a record to Raft
//! (`EntryPayload::Normal` with `CONTROL`; see `consumers`). The term is
//! not in the frame but in the term file (`terms`).
//!
//! Append-entries body (`POST /raft/append`):
//!
//! ```text
//! | header_len u32 LE | header JSON (AppendHeader) | frames of the entries |
//! ```
//!
//! JSON for the small parts, the log's own checked frames for the entries:
//! serde would write a value's bytes as an array of numbers (~3.9x).

use bytes::{Buf, Bytes};
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

use super::consumers::is_consumer_entry;
use super::terms::Terms;
use super::types::{Entry, LogId, Member, Membership, UserRecord, Vote, log_id, term_of};
use crate::log::attributes::CONTROL;
use crate::log::{EncodedBatch, Guard, MAX_STORED_FRAME, Payload, split_checked};

/// What a control entry's value says: `{"raft":"blank"}` or
/// `{"raft":"membership","membership":{...}}`. A plain struct, not an
/// internally tagged enum: serde buffers those, and a buffered map loses
/// its integer keys (node ids) to strings.
#[derive(Serialize, Deserialize)]
struct Control {
    raft: ControlKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    membership: Option<Membership>,
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ControlKind {
    Blank,
    Membership,
}

impl Control {
    const BLANK: Control = Control {
        raft: ControlKind::Blank,
        membership: None,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("bad frames: {0}")]
    Frames(String),
    #[error("bad control entry at index {index}: {reason}")]
    Control { index: u64, reason: String },
    #[error("no term known for index {0}")]
    NoTerm(u64),
    #[error("bad append-entries body: {0}")]
    Body(String),
}

/// Encodes entries as frames at the batch's next offsets (the entries'
/// indexes). A record that carries its frame for this index is copied as
/// it is.
pub fn encode_entries<'a>(batch: &mut EncodedBatch, entries: impl IntoIterator<Item = &'a Entry>) {
    for entry in entries {
        debug_assert_eq!(entry.log_id.index, batch.next_offset(), "entries are dense");
        match &entry.payload {
            EntryPayload::Normal(record) => {
                if !record.frame.as_ref().is_some_and(|frame| batch.push_frame(frame)) {
                    let guard = record.guard.encode();
                    // `CONTROL` stays only on a consumer entry: a user's
                    // record never hides itself.
                    let control = record.attributes & CONTROL != 0 && is_consumer_entry(&record.value);
                    let attributes = if control {
                        record.attributes
                    } else {
                        record.attributes & !CONTROL
                    };
                    let payload = Payload {
                        attributes,
                        value: &record.value,
                        guard: &guard,
                    };
                    batch.push(record.timestamp_ms, 0, payload);
                }
            }
            EntryPayload::Blank => encode_control(batch, &Control::BLANK),
            EntryPayload::Membership(m) => encode_control(
                batch,
                &Control {
                    raft: ControlKind::Membership,
                    membership: Some(m.clone()),
                },
            ),
        }
    }
}

fn encode_control(batch: &mut EncodedBatch, control: &Control) {
    // Serializing our own plain types into memory cannot fail.
    let value = serde_json::to_vec(control).unwrap_or_default();
    let payload = Payload::with(CONTROL, &value);
    batch.push(0, 0, payload);
}

/// Checks frames (dense offsets from `first`) and decodes them into
/// entries, taking each entry's term from `terms`. Each record keeps its
/// checked frame.
pub fn decode_entries(frames: Bytes, first: u64, terms: &Terms) -> Result<Vec<Entry>, CodecError> {
    let frames = split_checked(frames, first, MAX_STORED_FRAME)
        .map_err(|(at, offset, e)| CodecError::Frames(format!("frame at byte {at} (offset {offset}): {e}")))?;
    frames
        .into_iter()
        .map(|frame| {
            let r = frame.record();
            let term = terms.term_at(r.offset).ok_or(CodecError::NoTerm(r.offset))?;
            let payload = if r.attributes & CONTROL != 0 && !is_consumer_entry(&r.value) {
                control_payload(r.offset, &r.value)?
            } else {
                let guard = Guard::decode(frame.guard()).map_err(|reason| CodecError::Control {
                    index: r.offset,
                    reason: format!("bad guard: {reason}"),
                })?;
                EntryPayload::Normal(UserRecord {
                    attributes: r.attributes,
                    timestamp_ms: r.timestamp_ms,
                    value: r.value.clone(),
                    guard,
                    frame: Some(frame.clone()),
                    trace: None,
                    proposed_at: None,
                })
            };
            Ok(Entry {
                log_id: log_id(term, r.offset),
                payload,
            })
        })
        .collect()
}

/// What the control entry at `index` says.
fn control_payload(index: u64, value: &[u8]) -> Result<EntryPayload<UserRecord, u64, Member>, CodecError> {
    let bad = |reason: String| CodecError::Control { index, reason };
    match serde_json::from_slice::<Control>(value) {
        Ok(Control {
            raft: ControlKind::Blank,
            ..
        }) => Ok(EntryPayload::Blank),
        Ok(Control {
            raft: ControlKind::Membership,
            membership: Some(m),
        }) => Ok(EntryPayload::Membership(m)),
        Ok(_) => Err(bad("a membership entry without its membership".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// The small part of an append-entries request.
#[derive(Serialize, Deserialize)]
pub struct AppendHeader {
    pub vote: Vote,
    pub prev_log_id: Option<LogId>,
    pub leader_commit: Option<LogId>,
    /// The entries' terms as runs: `(term, first index)`.
    pub terms: Vec<(u64, u64)>,
    /// Index of the first entry (when there are entries).
    pub first: Option<u64>,
}

/// The append-entries body for `request`.
pub fn encode_append(request: &openraft::raft::AppendEntriesRequest<super::types::TypeConfig>) -> Vec<u8> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for e in &request.entries {
        let term = term_of(&e.log_id);
        if runs.last().is_none_or(|(t, _)| *t != term) {
            runs.push((term, e.log_id.index));
        }
    }
    let header = AppendHeader {
        vote: request.vote,
        prev_log_id: request.prev_log_id,
        leader_commit: request.leader_commit,
        terms: runs,
        first: request.entries.first().map(|e| e.log_id.index),
    };
    let first = header.first.unwrap_or_default();
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut body = Vec::with_capacity(4 + header.len() + request.entries.len() * 64);
    body.extend_from_slice(&(header.len() as u32).to_le_bytes());
    body.extend_from_slice(&header);
    let mut frames = EncodedBatch::after(body, first);
    encode_entries(&mut frames, &request.entries);
    frames.into_inner()
}

/// The longest header an append-entries body may have.
const MAX_HEADER: usize = 1 << 20;

/// Decodes an append-entries body.
pub fn decode_append(
    mut body: Bytes,
) -> Result<openraft::raft::AppendEntriesRequest<super::types::TypeConfig>, CodecError> {
    if body.len() < 4 {
        return Err(CodecError::Body("shorter than its header length".into()));
    }
    let len = body.get_u32_le() as usize;
    if len > MAX_HEADER || len > body.len() {
        return Err(CodecError::Body(format!("header of {len} bytes")));
    }
    let header_bytes = body.split_to(len);
    let header: AppendHeader =
        serde_json::from_slice(&header_bytes).map_err(|e| CodecError::Body(format!("header: {e}")))?;
    let entries = match header.first {
        None if body.is_empty() => Vec::new(),
        None => return Err(CodecError::Body("frames without a first index".into())),
        Some(first) => {
            let terms = Terms::from_runs(header.terms).map_err(CodecError::Body)?;
            decode_entries(body, first, &terms)?
        }
    };
    Ok(openraft::raft::AppendEntriesRequest {
        vote: header.vote,
        prev_log_id: header.prev_log_id,
        leader_commit: header.leader_commit,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn entries() -> Vec<Entry> {
        let nodes: BTreeMap<u64, Member> = [
            (
                1576501073623818,
                Member {
                    url: "http://a".into(),
                    max_record_bytes: Some(1024),
                    peer_url: Some("http://a:7001".into()),
                },
            ),
            (
                7,
                Member {
                    url: "http://b".into(),
                    max_record_bytes: None,
                    peer_url: None,
                },
            ),
        ]
        .into();
        let voters: BTreeSet<u64> = nodes.keys().copied().collect();
        let membership = Membership::new(vec![voters], nodes).expect("membership");
        vec![
            Entry {
                log_id: log_id(1, 0),
                payload: EntryPayload::Membership(membership),
            },
            Entry {
                log_id: log_id(2, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 2),
                payload: EntryPayload::Normal(UserRecord::new(1, 1234, Bytes::from_static(b"{\"a\":1}"))),
            },
        ]
    }

    #[test]
    fn entries_survive_frames_and_the_term_file() {
        let entries = entries();
        let mut frames = EncodedBatch::new(0);
        encode_entries(&mut frames, &entries);
        let mut terms = Terms::default();
        for e in &entries {
            terms.note(term_of(&e.log_id), e.log_id.index);
        }
        let decoded = decode_entries(Bytes::from(frames.into_inner()), 0, &terms).expect("decodes");
        assert_eq!(decoded, entries);
    }

    #[test]
    fn a_consumer_entry_stays_a_control_frame_and_a_record_to_raft() {
        let change = br#"{"raft":"consumer","change":{"delete":{"name":"a"}}}"#;
        let entries = vec![
            Entry {
                log_id: log_id(1, 0),
                payload: EntryPayload::Normal(UserRecord::new(CONTROL, 99, Bytes::from_static(change))),
            },
            // A user's record never hides itself, whatever bits it came with.
            Entry {
                log_id: log_id(1, 1),
                payload: EntryPayload::Normal(UserRecord::new(CONTROL | 1, 99, Bytes::from_static(b"{}"))),
            },
        ];
        let mut frames = EncodedBatch::new(0);
        encode_entries(&mut frames, &entries);
        let frames = Bytes::from(frames.into_inner());
        let stored = crate::log::split_frames(frames.clone(), 0, MAX_STORED_FRAME).expect("frames");
        let attributes: Vec<u8> = stored.iter().map(|r| r.attributes).collect();
        assert_eq!(attributes, vec![CONTROL, 1]);
        let terms = Terms::from_runs(vec![(1, 0)]).expect("runs");
        let decoded = decode_entries(frames, 0, &terms).expect("decodes");
        assert_eq!(decoded[0], entries[0]);
    }

    #[test]
    fn a_record_that_carries_its_frame_encodes_to_the_same_bytes() {
        let entries = entries();
        let mut fresh = EncodedBatch::new(0);
        encode_entries(&mut fresh, &entries);
        let fresh = fresh.into_inner();
        let terms = Terms::from_runs(vec![(1, 0), (2, 1)]).expect("runs");
        let decoded = decode_entries(Bytes::from(fresh.clone()), 0, &terms).expect("decodes");
        assert!(matches!(&decoded[2].payload, EntryPayload::Normal(r) if r.frame.is_some()));
        let mut copied = EncodedBatch::new(0);
        encode_entries(&mut copied, &decoded);
        assert_eq!(copied.into_inner(), fresh);
    }

    #[test]
    fn an_append_request_survives_the_wire() {
        let request = openraft::raft::AppendEntriesRequest {
            vote: openraft::impls::Vote::new_committed(2, 7),
            prev_log_id: None,
            leader_commit: Some(log_id(1, 0)),
            entries: entries(),
        };
        let body = encode_append(&request);
        let decoded = decode_append(Bytes::from(body)).expect("decodes");
        assert_eq!(decoded.entries, request.entries);
        assert_eq!(decoded.vote, request.vote);
        assert_eq!(decoded.leader_commit, request.leader_commit);
    }

    proptest::proptest! {
        /// Any bytes, and honest bodies with bytes flipped, cut or spliced:
        /// decoding (and the checks after it) answers, never panics.
        #[test]
        fn any_append_body_decodes_or_is_refused_without_a_panic(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            flips in proptest::collection::vec((0usize..4096, 0u8..8), 0..8),
            cut in 0usize..4096,
        ) {
            let _ = decode_append(Bytes::from(noise.clone()));
            let mut body = encode_append(&openraft::raft::AppendEntriesRequest {
                vote: openraft::impls::Vote::new_committed(2, 7),
                prev_log_id: None,
                leader_commit: Some(log_id(1, 0)),
                entries: entries(),
            });
            for (at, bit) in flips {
                let at = at % body.len();
                body[at] ^= 1 << bit;
            }
            body.truncate(cut.max(4).min(body.len()));
            body.extend_from_slice(&noise[..noise.len().min(16)]);
            if let Ok(request) = decode_append(Bytes::from(body)) {
                let _ = super::super::validate::append(&request);
            }
        }
    }

    #[test]
    fn a_garbled_append_body_is_an_error_not_a_panic() {
        let body = encode_append(&openraft::raft::AppendEntriesRequest {
            vote: openraft::impls::Vote::new_committed(2, 7),
            prev_log_id: None,
            leader_commit: None,
            entries: entries(),
        });
        for cut in [0, 3, 4, 10, body.len() - 1] {
            assert!(
                decode_append(Bytes::copy_from_slice(&body[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = body.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        assert!(decode_append(Bytes::from(flipped)).is_err());
    }
}
