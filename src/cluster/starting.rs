//! How far a cluster node's start has got, for the HTTP layer to say while
//! it runs: the listener answers from the first moment (`/healthz` 200,
//! `/readyz` 503 with `StartProgress::describe` as its reason), because
//! checking a log that was not checked before can outlast a start-up probe
//! (see `repair`).
//!
//! One shared step, set by the start as it goes and read by each probe.

use std::sync::{Arc, Mutex, PoisonError};

/// A step of a cluster node's start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartStep {
    /// The log's segments are being opened.
    #[default]
    OpeningLog,
    /// The frames of segments no earlier start checked are being read:
    /// `checked` of `of` segments are done.
    CheckingLog { checked: usize, of: usize },
    /// The leader is asked what this node holds (see `recovery`), and a
    /// faulty log is repaired.
    AskingTheLeader,
    /// The Raft core is being built.
    StartingRaft,
}

impl std::fmt::Display for StartStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartStep::OpeningLog => write!(f, "opening the log"),
            StartStep::CheckingLog { checked, of } => write!(f, "checking the log: {checked} of {of} segments"),
            StartStep::AskingTheLeader => write!(f, "asking the leader what this node holds"),
            StartStep::StartingRaft => write!(f, "starting Raft"),
        }
    }
}

/// The step a start is at; clones share it.
#[derive(Clone, Debug, Default)]
pub struct StartProgress(Arc<Mutex<StartStep>>);

impl StartProgress {
    pub fn set(&self, step: StartStep) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = step;
    }

    pub fn step(&self) -> StartStep {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The step, as `/readyz` says it.
    pub fn describe(&self) -> String {
        self.step().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_says_how_many_segments_it_has_read() {
        let progress = StartProgress::default();
        assert_eq!(progress.describe(), "opening the log");
        progress.clone().set(StartStep::CheckingLog { checked: 3, of: 12 });
        assert_eq!(progress.describe(), "checking the log: 3 of 12 segments");
    }
}
