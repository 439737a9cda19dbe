//! What a follower knows of its leader, for `/status` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    Connecting,
    Streaming,
    Retrying,
    Diverged,
}

impl ReplicationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationState::Connecting => "connecting",
            ReplicationState::Streaming => "streaming",
            ReplicationState::Retrying => "retrying",
            ReplicationState::Diverged => "diverged",
        }
    }
}

#[derive(Debug)]
pub struct FollowerStatus {
    /// The leader's base URL, as given.
    pub leader: String,
    /// The leader's `next_offset` as last seen, plus one (0 = never seen).
    leader_next_plus_one: AtomicU64,
    state: Mutex<(ReplicationState, Option<String>)>,
}

/// One consistent reading of the status.
#[derive(Clone, Debug)]
pub struct StatusSnapshot {
    pub leader_next_offset: Option<u64>,
    pub lag: Option<u64>,
    pub state: &'static str,
    pub error: Option<String>,
}

impl FollowerStatus {
    pub fn new(leader: String) -> Self {
        FollowerStatus {
            leader,
            leader_next_plus_one: AtomicU64::new(0),
            state: Mutex::new((ReplicationState::Connecting, None)),
        }
    }

    /// `next` is bounded by the caller (`wire::MAX_OFFSET`); saturating
    /// keeps a caller that forgot from panicking here.
    pub fn saw_leader_next(&self, next: u64) {
        self.leader_next_plus_one
            .store(next.saturating_add(1), Ordering::Release);
    }

    pub fn leader_next(&self) -> Option<u64> {
        self.leader_next_plus_one.load(Ordering::Acquire).checked_sub(1)
    }

    /// Records a new state; returns whether it changed, so that callers log
    /// state changes once rather than every retry.
    pub fn set_state(&self, state: ReplicationState, error: Option<String>) -> bool {
        let mut current = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = current.0 != state;
        *current = (state, error);
        changed
    }

    pub fn state(&self) -> ReplicationState {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    pub fn snapshot(&self, own_next: u64) -> StatusSnapshot {
        let (state, error) = self.state.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let leader_next_offset = self.leader_next();
        StatusSnapshot {
            leader_next_offset,
            lag: leader_next_offset.map(|leader| leader.saturating_sub(own_next)),
            state: state.as_str(),
            error,
        }
    }
}
