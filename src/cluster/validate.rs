//! Peer messages held to Raft's own rules before openraft sees them.
//! openraft trusts its peers: a message that breaks those rules (a log id
//! from a term above the sender's vote, entries that do not follow
//! `prev_log_id`, terms that go down, a snapshot newer than the leader that
//! sends it) can trip an `assert!` in its core and stop the node until a
//! restart. Here such a message is refused (400 `bad_rpc`): a bug or a
//! hostile sender costs one request, not the node. The checks are the
//! invariants every honest sender keeps, so they never refuse one.

use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};

use super::types::{LogId, SnapshotMeta, TypeConfig, Vote, term_of};

/// Offsets stay below this (the log's offsets are u64, but an index near
/// the top would overflow openraft's `index + 1`).
pub(super) const MAX_INDEX: u64 = u64::MAX / 2;

fn vote_term(vote: &Vote) -> u64 {
    vote.leader_id.term
}

/// A log id no newer than the vote that sends it, and with a sane index.
fn within(what: &str, id: Option<&LogId>, vote: &Vote) -> Result<(), String> {
    let Some(id) = id else { return Ok(()) };
    if term_of(id) > vote_term(vote) {
        return Err(format!(
            "{what} is from term {}, above the sender's term {}",
            term_of(id),
            vote_term(vote)
        ));
    }
    if id.index > MAX_INDEX {
        return Err(format!("{what} has index {}, past any log", id.index));
    }
    Ok(())
}

/// From a committed leader vote, entries dense after `prev_log_id`, their
/// terms never going down nor above the vote's.
pub(super) fn append(request: &AppendEntriesRequest<TypeConfig>) -> Result<(), String> {
    let vote = &request.vote;
    if !vote.committed {
        return Err("append-entries from a vote that is not a leader's (not committed)".into());
    }
    within("prev_log_id", request.prev_log_id.as_ref(), vote)?;
    within("leader_commit", request.leader_commit.as_ref(), vote)?;
    let first = request.prev_log_id.map_or(0, |p| p.index + 1);
    let mut term = request.prev_log_id.as_ref().map_or(0, term_of);
    for (expected, entry) in (first..).zip(&request.entries) {
        within("an entry's log id", Some(&entry.log_id), vote)?;
        if entry.log_id.index != expected {
            return Err(format!(
                "entry at index {} where {expected} follows prev_log_id",
                entry.log_id.index
            ));
        }
        if term_of(&entry.log_id) < term {
            return Err(format!(
                "entry {} has term {}, below the term {term} before it",
                entry.log_id.index,
                term_of(&entry.log_id)
            ));
        }
        term = term_of(&entry.log_id);
    }
    Ok(())
}

/// A candidate's last log id no newer than its vote.
pub(super) fn vote(request: &VoteRequest<TypeConfig>) -> Result<(), String> {
    within(
        "the candidate's last_log_id",
        request.last_log_id.as_ref(),
        &request.vote,
    )
}

/// From a committed leader vote, of a log no newer than that vote, its
/// membership no newer than its last entry.
pub(super) fn snapshot(vote: &Vote, meta: &SnapshotMeta) -> Result<(), String> {
    if !vote.committed {
        return Err("a snapshot from a vote that is not a leader's (not committed)".into());
    }
    within("the snapshot's last_log_id", meta.last_log_id.as_ref(), vote)?;
    let membership = meta.last_membership.log_id().as_ref();
    within("the snapshot's membership", membership, vote)?;
    if membership.is_some() && membership > meta.last_log_id.as_ref() {
        return Err("the snapshot's membership is newer than its last entry".into());
    }
    Ok(())
}

/// From a leader's vote, with a sane last log id (openraft sends it to
/// every voter, not only the one it names).
pub(super) fn transfer(request: &TransferLeaderRequest<TypeConfig>) -> Result<(), String> {
    if !request.from_leader().committed {
        return Err("a leadership transfer from a vote that is not a leader's".into());
    }
    within("last_log_id", request.last_log_id(), request.from_leader())
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;
    use openraft::impls::Vote as RaftVote;

    use super::super::types::{Entry, log_id};
    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn request(term: u64, prev: Option<LogId>, entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: RaftVote::new_committed(term, 1),
            prev_log_id: prev,
            leader_commit: None,
            entries,
        }
    }

    #[test]
    fn an_honest_append_passes() {
        assert_eq!(append(&request(3, None, vec![entry(1, 0), entry(3, 1)])), Ok(()));
        assert_eq!(
            append(&request(3, Some(log_id(2, 4)), vec![entry(2, 5), entry(3, 6)])),
            Ok(())
        );
        assert_eq!(append(&request(3, Some(log_id(2, 4)), vec![])), Ok(()));
    }

    #[test]
    fn appends_that_break_raft_rules_are_refused() {
        let gap = append(&request(3, Some(log_id(2, 4)), vec![entry(3, 7)]));
        assert!(gap.is_err_and(|e| e.contains("where 5 follows")));
        assert!(
            append(&request(3, None, vec![entry(4, 0)])).is_err(),
            "term above the vote"
        );
        assert!(
            append(&request(3, None, vec![entry(3, 0), entry(2, 1)])).is_err(),
            "terms go down"
        );
        assert!(
            append(&request(3, Some(log_id(5, 1)), vec![])).is_err(),
            "prev above the vote"
        );
        let mut uncommitted = request(3, None, vec![]);
        uncommitted.vote = RaftVote::new(3, 1);
        assert!(append(&uncommitted).is_err());
        let mut commit_ahead = request(3, None, vec![]);
        commit_ahead.leader_commit = Some(log_id(9, 0));
        assert!(append(&commit_ahead).is_err());
        assert!(append(&request(3, Some(log_id(2, u64::MAX - 1)), vec![])).is_err());
    }

    #[test]
    fn a_snapshot_newer_than_its_sender_is_refused() {
        let meta = |term| SnapshotMeta {
            last_log_id: Some(log_id(term, 10)),
            last_membership: Default::default(),
        };
        assert_eq!(snapshot(&RaftVote::new_committed(5, 1), &meta(5)), Ok(()));
        assert!(snapshot(&RaftVote::new_committed(5, 1), &meta(6)).is_err());
        assert!(snapshot(&RaftVote::new(7, 1), &meta(5)).is_err());
    }

    #[test]
    fn a_candidate_with_a_log_above_its_vote_is_refused() {
        let ask = |last| VoteRequest::<TypeConfig>::new(RaftVote::new(4, 2), last);
        assert_eq!(vote(&ask(Some(log_id(4, 9)))), Ok(()));
        assert!(vote(&ask(Some(log_id(5, 9)))).is_err());
    }
}
