//! The Raft type configuration: what an entry carries, what a node is,
//! and the leader-id mode (one leader per term, so that a log id is
//! `(term, index)` and the term file can rebuild it; see `terms`).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::log::Guard;
use crate::log::producers::Refusal;

/// A user record as the leader stamped it. The leader sets the timestamp
/// once (`Cluster::commit`), so every node writes byte-identical frames.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    /// The API's attribute bits, plus `log::attributes::BATCH_OPEN` on every
    /// record of a batch but its last.
    pub attributes: u8,
    pub timestamp_ms: u64,
    pub value: Bytes,
    /// What the append said of itself (producer, expected last offset), on
    /// the first record of an append that said anything: the state machine
    /// decides by it when it applies the entry (see `tables`).
    #[serde(default, skip_serializing_if = "Guard::is_none")]
    pub guard: Guard,
    /// The record's frame, once it has one (encoded for the log, or read
    /// from the log or a peer and checked once): encoding it again is a
    /// copy, not a new checksum, and the log appends it unchecked (see
    /// `codec::encode_entries`, `Log::append_encoded_unsynced`). Never on the wire
    /// as such.
    #[serde(skip)]
    pub frame: Option<crate::log::Frame>,
    /// The span of the write that made this entry, while traces are on
    /// (see `telemetry`): in memory only, for the leader's append-entries.
    #[serde(skip)]
    pub trace: Option<crate::telemetry::EntryTrace>,
    /// When the leader handed this record to its Raft core: in memory
    /// only, for the commit path's milestones (`stages`).
    #[serde(skip)]
    pub proposed_at: Option<std::time::Instant>,
}

impl UserRecord {
    pub fn new(attributes: u8, timestamp_ms: u64, value: Bytes) -> UserRecord {
        UserRecord {
            attributes,
            timestamp_ms,
            value,
            guard: Guard::default(),
            frame: None,
            trace: None,
            proposed_at: None,
        }
    }
}

/// Records are equal by content; a cached frame is only a copy of it.
impl PartialEq for UserRecord {
    fn eq(&self, other: &Self) -> bool {
        (self.attributes, self.timestamp_ms, &self.value, &self.guard)
            == (other.attributes, other.timestamp_ms, &other.value, &other.guard)
    }
}

impl Eq for UserRecord {}

impl fmt::Display for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record of {} bytes", self.value.len())
    }
}

/// A member as the membership stores it: where clients (and, without a
/// `peer_url`, peers) reach it; where peers reach it when it serves them on
/// a port of their own (`--peer-listen`); and its `--max-record-bytes` as
/// it said when it was added (members that disagree take or refuse the
/// same record depending on who leads; `GET /cluster` shows it). The two
/// optional fields are absent from memberships written before them.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_url: Option<String>,
}

impl Member {
    /// Where peers send this member Raft's messages and membership changes.
    pub fn peer_base(&self) -> &str {
        self.peer_url.as_deref().unwrap_or(&self.url)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

pub type NodeId = u64;

/// What applying an entry tells the client waiting for it: the entry's
/// offset, and whether its append was refused (every entry of a refused
/// append says why; it is hidden from readers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub offset: u64,
    pub refused: Option<Refusal>,
}

openraft::declare_raft_types!(
    /// distlog's Raft types.
    pub TypeConfig:
        D = UserRecord,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Member>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// The log id of an entry of `term` at `index`.
pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(openraft::vote::leader_id_std::CommittedLeaderId::new(term), index)
}

/// The term of a log id.
pub fn term_of(id: &LogId) -> u64 {
    id.committed_leader_id().term
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_recorded_before_peer_urls_is_reached_at_its_url() {
        let old: Member = serde_json::from_str(r#"{"url":"http://a:1","max_record_bytes":5}"#).expect("old record");
        assert_eq!(old.peer_url, None);
        assert_eq!(old.peer_base(), "http://a:1");
        let new = Member {
            peer_url: Some("http://a:2".into()),
            ..old.clone()
        };
        assert_eq!(new.peer_base(), "http://a:2");
        let written = serde_json::to_string(&old).expect("JSON");
        assert!(
            !written.contains("peer_url"),
            "records without one stay as they were: {written}"
        );
    }
}
