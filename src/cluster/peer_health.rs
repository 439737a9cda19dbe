//! Whether each peer answered its last RPC, logged when that changes: one
//! WARN line when a peer stops answering ("peer N (URL) unreachable: why"),
//! one INFO line when it answers again ("reachable again after N s").
//! openraft logs a failed RPC at every heartbeat (ten a second with one peer
//! down); its per-RPC lines are at debug (see `cli::logging`), this is what
//! an operator reads instead. Also the `distlog_raft_peer_up` gauge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::types::NodeId;

pub const PEER_UP: &str = "distlog_raft_peer_up";

/// Shared by every `Peer` the network makes (openraft makes one per
/// replication stream, heartbeat worker and election, and remakes them).
#[derive(Clone, Debug, Default)]
pub struct PeerHealth(Arc<Mutex<HashMap<NodeId, Seen>>>);

#[derive(Clone, Copy, Debug)]
enum Seen {
    Reachable,
    /// Unreachable since then.
    Unreachable(Instant),
}

impl PeerHealth {
    /// `peer` answered an RPC.
    pub fn answered(&self, peer: NodeId, url: &str) {
        let before = self.set(peer, Seen::Reachable);
        metrics::gauge!(PEER_UP, "peer" => peer.to_string(), "peer_url" => url.to_string()).set(1.0);
        if let Some(Seen::Unreachable(since)) = before {
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
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(map.get(&peer), Some(Seen::Unreachable(_))) {
            return;
        }
        map.insert(peer, Seen::Unreachable(Instant::now()));
        drop(map);
        metrics::gauge!(PEER_UP, "peer" => peer.to_string(), "peer_url" => url.to_string()).set(0.0);
        let why = root_cause(why);
        tracing::warn!(peer, peer_url = url, "peer {peer} ({url}) unreachable: {why}");
    }

    fn set(&self, peer: NodeId, seen: Seen) -> Option<Seen> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(peer, seen)
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
    fn a_peer_is_marked_unreachable_once_and_reachable_again_once() {
        let health = PeerHealth::default();
        let why = std::io::Error::other("down");
        health.failed(1, "http://a", &why);
        let first = health.0.lock().unwrap().get(&1).copied();
        health.failed(1, "http://a", &why);
        let second = health.0.lock().unwrap().get(&1).copied();
        // The first failure's time is kept: "unreachable since" does not move.
        match (first, second) {
            (Some(Seen::Unreachable(a)), Some(Seen::Unreachable(b))) => assert_eq!(a, b),
            other => panic!("{other:?}"),
        }
        health.answered(1, "http://a");
        assert!(matches!(health.0.lock().unwrap().get(&1), Some(Seen::Reachable)));
    }
}
