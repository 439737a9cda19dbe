//! How long a leader waits for a peer's answer to an RPC that carries
//! entries or a snapshot: openraft's soft TTL (3/4 of a heartbeat interval
//! for appends, of `install_snapshot_timeout` for snapshots) and time for
//! the body's bytes on top.
//!
//! The soft TTL alone is right for a heartbeat but too short for a full
//! batch (`APPEND_BUDGET_BYTES`) or a snapshot's tables over a slow link or
//! to a loaded follower: the request timed out every time, openraft sent
//! the same again, and a follower that had fallen behind never caught up.
//! A second per MiB is allowed at first (`MIN_BYTES_PER_SEC`); each time a
//! peer's request times out anyway that doubles (up to `MAX_FACTOR`, and
//! to no more than `MAX_STRETCHED` in all), and each answer halves it
//! again, so a link slower than the floor is waited for too, after a few
//! lost tries. Waiting longer costs only this peer's replication:
//! heartbeats go on their own connections and deadlines. The cost is after
//! a partition that left a connection open but dead (a firewall that
//! forgot it): the request in flight on it is waited for up to the
//! allowance before the leader sends again, `MAX_STRETCHED` at most once
//! timeouts have stretched it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The slowest a peer is assumed to take a body's bytes (sent, decoded,
/// written, synced) before it has timed out once.
const MIN_BYTES_PER_SEC: u64 = 1 << 20;

/// How far the allowance per byte grows: 64 times the floor's, 16 KiB/s.
const MAX_FACTOR: u32 = 64;

/// The most a stretched allowance comes to (the floor's own allowance for
/// a body, a large record's, is never cut).
const MAX_STRETCHED: Duration = Duration::from_secs(30);

/// One peer's patience (shared by the clones of its `Peer`).
#[derive(Clone, Debug)]
pub(super) struct Patience {
    factor: Arc<AtomicU32>,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            factor: Arc::new(AtomicU32::new(1)),
        }
    }
}

impl Patience {
    /// The wait for a request of `bytes` (with the bytes the peer must take
    /// before it: requests in flight ahead of it on other connections).
    pub(super) fn timeout(&self, soft_ttl: Duration, bytes: usize) -> Duration {
        let factor = u64::from(self.factor.load(Ordering::Relaxed));
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let at_the_floor = Duration::from_nanos(bytes.saturating_mul(1_000_000_000 / MIN_BYTES_PER_SEC));
        let stretched = at_the_floor.saturating_mul(u32::try_from(factor).unwrap_or(u32::MAX));
        soft_ttl + stretched.min(MAX_STRETCHED.max(at_the_floor))
    }

    /// The peer answered in time: half the extra allowance goes.
    pub(super) fn answered(&self) {
        let _ = self
            .factor
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| (f > 1).then_some(f / 2));
    }

    /// A request timed out: the next is allowed twice as long a byte.
    pub(super) fn timed_out(&self) {
        let _ = self.factor.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
            (f < MAX_FACTOR).then_some((f * 2).min(MAX_FACTOR))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(75);

    #[test]
    fn a_heartbeat_is_waited_for_the_soft_ttl_and_a_full_batch_about_a_second_a_mib() {
        let patience = Patience::default();
        assert!(patience.timeout(TTL, 200) < TTL + Duration::from_millis(1));
        let full = patience.timeout(TTL, 4 << 20);
        assert!(
            full >= Duration::from_secs(4) && full < Duration::from_secs(5),
            "{full:?}"
        );
        assert_eq!(patience.timeout(TTL, usize::MAX), TTL + Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn timeouts_double_the_allowance_up_to_the_cap_and_answers_halve_it() {
        let patience = Patience::default();
        let mib = |p: &Patience| (p.timeout(Duration::ZERO, 1 << 20).as_millis() + 500) / 1000;
        assert_eq!(mib(&patience), 1);
        patience.timed_out();
        patience.timed_out();
        assert_eq!(mib(&patience), 4);
        for _ in 0..10 {
            patience.timed_out();
        }
        assert_eq!(patience.factor.load(Ordering::Relaxed), MAX_FACTOR);
        // Stretched no further than MAX_STRETCHED in all...
        assert_eq!(mib(&patience), u128::from(MAX_STRETCHED.as_secs()));
        // ...unless the body's own allowance is more (a 40 MiB record).
        assert_eq!(patience.timeout(Duration::ZERO, 40 << 20).as_secs(), 39);
        for _ in 0..10 {
            patience.answered();
        }
        assert_eq!(mib(&patience), 1);
        patience.timed_out();
        patience.answered();
        assert_eq!(mib(&patience), 1);
    }

    #[test]
    fn clones_share_one_patience() {
        let patience = Patience::default();
        patience.clone().timed_out();
        assert_eq!(patience.factor.load(Ordering::Relaxed), 2);
    }
}
