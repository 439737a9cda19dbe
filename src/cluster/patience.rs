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
//! peer's request with a body of some size (its time at that rate at least
//! the soft TTL) times out anyway that doubles (up to `MAX_FACTOR`, and to
//! no more than `MAX_STRETCHED` in all), and an answer that came within
//! half its stretch halves it again, so a link slower than the floor is
//! waited for too, after a few lost tries. Waiting longer costs only this peer's replication:
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

/// What one request was allowed, and what its answer or timeout says.
#[derive(Clone, Copy, Debug)]
pub(super) struct Allowance {
    /// How long the request is waited for.
    pub(super) timeout: Duration,
    soft_ttl: Duration,
    /// Its body's time at the floor rate.
    at_the_floor: Duration,
    /// The peer's factor it was sent with.
    factor: u32,
}

impl Allowance {
    /// Whether the body is large enough for its answer or timeout to say
    /// something of the link (a heartbeat's says nothing).
    fn tells(&self) -> bool {
        self.at_the_floor >= self.soft_ttl
    }
}

impl Patience {
    /// The wait for a request of `bytes` (with the bytes the peer must take
    /// before it: requests in flight ahead of it on other connections).
    pub(super) fn allow(&self, soft_ttl: Duration, bytes: usize) -> Allowance {
        let factor = self.factor.load(Ordering::Relaxed);
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let at_the_floor = Duration::from_nanos(bytes.saturating_mul(1_000_000_000 / MIN_BYTES_PER_SEC));
        let stretched = at_the_floor.saturating_mul(factor);
        Allowance {
            timeout: soft_ttl.saturating_add(stretched.min(MAX_STRETCHED.max(at_the_floor))),
            soft_ttl,
            at_the_floor,
            factor,
        }
    }

    /// A request of `allowance` was answered after `took`: had it needed
    /// no more than half its stretch, the factor halves. Only as sent (a
    /// change another request made meanwhile stands) and only for a body
    /// that tells: small answers would undo a slow link's stretch between
    /// two full batches, and every other one would time out.
    pub(super) fn answered(&self, allowance: &Allowance, took: Duration) {
        let stretch = allowance.timeout.saturating_sub(allowance.soft_ttl);
        if allowance.factor > 1 && allowance.tells() && took <= allowance.soft_ttl + stretch / 2 {
            let _ = self.factor.compare_exchange(
                allowance.factor,
                allowance.factor / 2,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// A request of `allowance` timed out (not while connecting: that says
    /// the peer is away, not that the link is slow): the next is allowed
    /// twice as long a byte. Only as sent, so that requests timing out
    /// together double it once.
    pub(super) fn timed_out(&self, allowance: &Allowance) {
        if allowance.factor < MAX_FACTOR && allowance.tells() {
            let _ = self.factor.compare_exchange(
                allowance.factor,
                (allowance.factor * 2).min(MAX_FACTOR),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(75);
    const FULL: usize = 4 << 20;

    /// Seconds a MiB is allowed now.
    fn per_mib(p: &Patience) -> u128 {
        (p.allow(Duration::ZERO, 1 << 20).timeout.as_millis() + 500) / 1000
    }

    #[test]
    fn a_heartbeat_is_waited_for_the_soft_ttl_and_a_full_batch_about_a_second_a_mib() {
        let patience = Patience::default();
        assert!(patience.allow(TTL, 200).timeout < TTL + Duration::from_millis(1));
        let full = patience.allow(TTL, FULL).timeout;
        assert!(
            full >= Duration::from_secs(4) && full < Duration::from_secs(5),
            "{full:?}"
        );
        assert_eq!(
            patience.allow(TTL, usize::MAX).timeout,
            TTL + Duration::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn timeouts_double_the_allowance_up_to_the_cap_and_quick_answers_halve_it() {
        let patience = Patience::default();
        for _ in 0..2 {
            patience.timed_out(&patience.allow(TTL, FULL));
        }
        assert_eq!(per_mib(&patience), 4);
        for _ in 0..10 {
            patience.timed_out(&patience.allow(TTL, FULL));
        }
        assert_eq!(patience.factor.load(Ordering::Relaxed), MAX_FACTOR);
        // Stretched no further than MAX_STRETCHED in all...
        assert_eq!(per_mib(&patience), u128::from(MAX_STRETCHED.as_secs()));
        // ...unless the body's own allowance is more (a 40 MiB record).
        assert_eq!(patience.allow(Duration::ZERO, 40 << 20).timeout.as_secs(), 39);
        for _ in 0..10 {
            patience.answered(&patience.allow(TTL, FULL), Duration::from_millis(100));
        }
        assert_eq!(per_mib(&patience), 1);
    }

    #[test]
    fn a_slow_answer_small_requests_and_stale_allowances_leave_the_factor() {
        let patience = Patience::default();
        patience.timed_out(&patience.allow(TTL, FULL));
        patience.timed_out(&patience.allow(TTL, FULL));
        let sent = patience.allow(TTL, FULL);
        // Needed more than half its stretch: the link is that slow.
        patience.answered(&sent, Duration::from_secs(12));
        // Heartbeats and small appends say nothing of the link.
        patience.answered(&patience.allow(TTL, 200), Duration::from_millis(1));
        patience.timed_out(&patience.allow(TTL, 200));
        assert_eq!(patience.factor.load(Ordering::Relaxed), 4);
        // Requests sent together, timing out together, double it once.
        let (a, b) = (patience.allow(TTL, FULL), patience.allow(TTL, FULL));
        patience.timed_out(&a);
        patience.timed_out(&b);
        assert_eq!(patience.factor.load(Ordering::Relaxed), 8);
        // An answer to a request sent before that does not undo it.
        patience.answered(&sent, Duration::from_millis(100));
        assert_eq!(patience.factor.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn clones_share_one_patience() {
        let patience = Patience::default();
        let clone = patience.clone();
        clone.timed_out(&clone.allow(TTL, FULL));
        assert_eq!(patience.factor.load(Ordering::Relaxed), 2);
    }
}
