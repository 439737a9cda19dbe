//! Where an append goes: the local log (standalone), nowhere (a replica is
//! read-only), or through Raft to the cluster's leader (a member).
//!
//! A standalone node's log writer stamps the time; a member's leader
//! stamps it once, as it hands the entries to Raft (`cluster::node`), so
//! every member stores the same bytes and stamps never go backwards in
//! log order. A member's batch of several records marks all but its last
//! `BATCH_OPEN`: the cluster shows it whole or never.
//!
//! An append's guard (producer headers, an expected last offset) rides on
//! its first record's frame; a standalone node decides it as it appends
//! (`guarded`), a member's state machine as it applies the entry.

use bytes::Bytes;

use super::Mode;
use super::guarded::{Appended, GuardedError};
use crate::cluster::{Applied, ClusterError, UserRecord};
use crate::log::attributes::BATCH_OPEN;
use crate::log::producers::Refusal;
use crate::log::{Guard, Log, LogError, Payload};
use crate::replication::FollowerStatus;
use crate::telemetry;

/// Why an append was not taken, or may not have been.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// This node copies `leader`'s log; writes go there.
    #[error("this node is a read-only replica of {leader}")]
    ReadOnlyReplica { leader: String },
    /// Not the leader, no leader, or an outcome Raft could not tell.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Log(#[from] LogError),
    /// The append's guard refused it (never `Refusal::Duplicate`, which is
    /// answered as `Appended::Duplicate`).
    #[error("the append was refused: {0:?}")]
    Refused(Refusal),
}

impl From<GuardedError> for AppendError {
    fn from(e: GuardedError) -> Self {
        match e {
            GuardedError::Refused(why) => AppendError::Refused(why),
            GuardedError::Log(e) => AppendError::Log(e),
        }
    }
}

impl Mode {
    /// Whether this node takes writes now, asked before a request's body is
    /// read so that a writer is sent on at once. A member that leads may
    /// still lose its leadership before the append: Raft refuses it then.
    pub fn check_writable(&self) -> Result<(), AppendError> {
        match self {
            Mode::Standalone(_) => Ok(()),
            Mode::Replica(status) => Err(read_only(status)),
            Mode::Member(cluster) => Ok(cluster.must_lead()?),
        }
    }

    /// Appends `records` (attributes, value) as one batch, whole or not at
    /// all, if `guard` allows it, and answers the first one's offset once
    /// they are durable (standalone, as `--fsync` says) or committed and
    /// visible (member); or the original offsets of a retry.
    pub async fn append(&self, log: &Log, records: &[(u8, Bytes)], guard: &Guard) -> Result<Appended, AppendError> {
        debug_assert!(!records.is_empty(), "an append holds at least one record");
        match self {
            Mode::Standalone(guarded) => {
                let span = telemetry::span(|| tracing::info_span!("append", records = records.len()));
                if !guard.is_none() {
                    let encoded = guard.encode();
                    let appended = match records {
                        // One record needs no vector.
                        [one] => telemetry::in_span(span, guarded.append(log, &[payload(one, &encoded)], guard)).await,
                        _ => {
                            let payloads: Vec<Payload> = records
                                .iter()
                                .enumerate()
                                .map(|(i, record)| payload(record, if i == 0 { &encoded } else { &[] }))
                                .collect();
                            telemetry::in_span(span, guarded.append(log, &payloads, guard)).await
                        }
                    };
                    return Ok(appended?);
                }
                let first = match records {
                    // One record needs no vector.
                    [one] => telemetry::in_span(span, log.append_batch_async(&[payload(one, &[])])).await?,
                    _ => {
                        let payloads: Vec<Payload> = records.iter().map(|record| payload(record, &[])).collect();
                        telemetry::in_span(span, log.append_batch_async(&payloads)).await?
                    }
                };
                Ok(Appended::Created { first })
            }
            Mode::Replica(status) => Err(read_only(status)),
            Mode::Member(cluster) => {
                let applied = cluster.write(member_batch(records, guard)).await?;
                answered(applied, records.len())
            }
        }
    }
}

fn payload<'a>((attributes, value): &'a (u8, Bytes), guard: &'a [u8]) -> Payload<'a> {
    Payload {
        attributes: *attributes,
        value,
        guard,
    }
}

/// What a member's client hears of its batch of `count` records.
fn answered(applied: Applied, count: usize) -> Result<Appended, AppendError> {
    match applied.refused {
        None => Ok(Appended::Created { first: applied.offset }),
        Some(Refusal::Duplicate { first, last }) => {
            debug_assert_eq!(last - first + 1, count as u64, "a retry is the same batch");
            Ok(Appended::Duplicate { first, last })
        }
        Some(why) => Err(AppendError::Refused(why)),
    }
}

fn read_only(status: &FollowerStatus) -> AppendError {
    AppendError::ReadOnlyReplica {
        leader: status.leader.clone(),
    }
}

/// The entries of a member's batch, every record but the last marked
/// `BATCH_OPEN`, the first carrying the guard. Not stamped yet: the leader
/// stamps them all alike.
fn member_batch(records: &[(u8, Bytes)], guard: &Guard) -> Vec<UserRecord> {
    let timestamp_ms = 0;
    let last = records.len().saturating_sub(1);
    records
        .iter()
        .enumerate()
        .map(|(i, (attributes, value))| {
            let attributes = if i < last { attributes | BATCH_OPEN } else { *attributes };
            let mut record = UserRecord::new(attributes, timestamp_ms, value.clone());
            if i == 0 {
                record.guard = guard.clone();
            }
            record
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_batch_is_open_until_its_last_record() {
        let records = vec![
            (0, Bytes::from_static(b"1")),
            (1, Bytes::from_static(b"2")),
            (0, Bytes::from_static(b"3")),
        ];
        let batch = member_batch(&records, &Guard::default());
        let attributes: Vec<u8> = batch.iter().map(|r| r.attributes).collect();
        assert_eq!(attributes, vec![BATCH_OPEN, 1 | BATCH_OPEN, 0]);
        let one = member_batch(&records[..1], &Guard::default());
        assert_eq!(one[0].attributes, 0, "a single record is never open");
    }
}
