//! Whether each peer answers, logged when that changes: one WARN line when
//! a peer has answered nothing for a second ("peer N (URL) unreachable:
//! why"), one INFO line when it answers again ("reachable again after N s").
//! openraft logs a failed RPC at every heartbeat (ten a second with one peer
//! down); its per-RPC lines are at debug (see `cli::logging`), this is what
//! an operator reads instead. Also the `distlog_raft_peer_up` gauge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::types::NodeId;

pub const PEER_UP: &str = "distlog_raft_peer_up";

/// How long a peer must fail every RPC, with no answer in between, before
/// it is called unreachable: on a loaded machine a lone heartbeat times out
/// now and then, and that is not worth a line.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(1);

/// Shared by every `Peer` the network makes (openraft makes one per
/// replication stream, heartbeat worker and election, and remakes them).
#[derive(Clone, Debug, Default)]
pub struct PeerHealth(Arc<Mutex<HashMap<NodeId, Seen>>>);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    Reachable,
    /// Every RPC since then failed; `warned` once that lasted
    /// `UNREACHABLE_AFTER` and was logged.
    Failing {
        since: Instant,
        warned: bool,
    },
}

impl PeerHealth {
    /// `peer` answered an RPC.
    pub fn answered(&self, peer: NodeId, url: &str) {
        let before = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer, Seen::Reachable);
        if before == Some(Seen::Reachable) {
            return;
        }
        metrics::gauge!(PEER_UP, "peer" => peer.to_string(), "peer_url" => url.to_string()).set(1.0);
        if let Some(Seen::Failing { since, warned: true }) = before {
            tracing::info!(
                peer,
                peer_url = url,
                "peer {peer} ({url}) reachable again after {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// `peer` did not answer an RPC, because of `why`.
    pub fn failed(&self, peer: NodeId, url: &str, why: &dyn std::error::Error) {
        self.failed_at(peer, url, why, Instant::now());
    }

    fn failed_at(&self, peer: NodeId, url: &str, why: &dyn std::error::Error, now: Instant) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let since = match map.get(&peer) {
            Some(Seen::Failing { warned: true, .. }) => return,
            Some(Seen::Failing { since, .. }) => *since,
            Some(Seen::Reachable) | None => now,
        };
        let warn = now.saturating_duration_since(since) >= UNREACHABLE_AFTER;
        map.insert(peer, Seen::Failing { since, warned: warn });
        drop(map);
        if warn {
            metrics::gauge!(PEER_UP, "peer" => peer.to_string(), "peer_url" => url.to_string()).set(0.0);
            let why = root_cause(why);
            tracing::warn!(peer, peer_url = url, "peer {peer} ({url}) unreachable: {why}");
        }
    }
}

/// The innermost cause of `error` (reqwest's chain repeats the URL at every
/// level and ends at what happened: "Connection refused (os error 111)"),
/// with the outermost line when it says more than the URL.
fn root_cause(error: &dyn std::error::Error) -> String {
    let Some(mut innermost) = error.source() else {
        return error.to_string();
    };
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let outer = error.to_string();
    match outer.starts_with("error sending request") {
        true => innermost.to_string(),
        false => format!("{outer}: {innermost}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request for url (http://x/raft/append)")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_reason_is_the_innermost_cause() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(root_cause(&Outer(refused)), "Connection refused");
        let alone = std::io::Error::other("timed out");
        assert_eq!(root_cause(&alone), "timed out");
    }

    #[test]
    fn a_peer_is_unreachable_once_it_failed_for_a_second_and_reachable_again_once() {
        let health = PeerHealth::default();
        let why = std::io::Error::other("down");
        let seen = || health.0.lock().unwrap().get(&1).copied();
        let start = Instant::now();
        health.failed_at(1, "http://a", &why, start);
        health.failed_at(1, "http://a", &why, start + Duration::from_millis(500));
        assert_eq!(
            seen(),
            Some(Seen::Failing {
                since: start,
                warned: false
            }),
            "a blip is not a state"
        );
        health.failed_at(1, "http://a", &why, start + UNREACHABLE_AFTER);
        assert_eq!(
            seen(),
            Some(Seen::Failing {
                since: start,
                warned: true
            })
        );
        // Further failures change nothing: the time it went away is kept.
        health.failed_at(1, "http://a", &why, start + Duration::from_secs(5));
        assert_eq!(
            seen(),
            Some(Seen::Failing {
                since: start,
                warned: true
            })
        );
        health.answered(1, "http://a");
        assert_eq!(seen(), Some(Seen::Reachable));
        // A failure, an answer: the next failure starts counting anew.
        let later = start + Duration::from_secs(10);
        health.failed_at(1, "http://a", &why, later);
        assert_eq!(
            seen(),
            Some(Seen::Failing {
                since: later,
                warned: false
            })
        );
    }
}
