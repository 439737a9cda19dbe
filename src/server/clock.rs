//! Where one HTTP/1.1 connection is in its life, for its timeouts:
//!
//! - idle: no request in flight and no byte of the next one seen; the
//!   idle timeout runs from the moment the last answer ended;
//! - reading a head: bytes came on an idle connection, the request has not
//!   reached the service yet; the header timeout runs from the first byte
//!   (from accept for the first request: a new connection that sends
//!   nothing is closed after the header timeout);
//! - busy: a request reached the service and its answer's body is not done
//!   (a long poll, an event stream): no connection timeout applies. A
//!   stalled request body is the body timeout's business (`bodies`).
//!
//! The IO, the service and the bodies report here; the connection task
//! looks only when its timer fires, so a request costs a few relaxed atomic
//! operations and two clock reads, and the timer is re-armed at most once
//! per timeout period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// No byte of a next request seen.
const NO_HEAD: u64 = u64::MAX;

#[derive(Debug)]
pub(super) struct ConnClock {
    born: Instant,
    /// Requests handed to the service whose answer is not done.
    busy: AtomicU32,
    /// Milliseconds after `born` when the connection last went idle.
    idle_since: AtomicU64,
    /// Milliseconds after `born` when the first byte of the next request
    /// came, or `NO_HEAD`.
    head_since: AtomicU64,
    /// A request body stalled past the body timeout (its answer becomes a 408).
    body_timed_out: AtomicBool,
}

/// What the connection task should do when its timer fires.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// Look again then.
    At(Instant),
    /// Close the connection: it was idle too long.
    IdleExpired,
    /// Close the connection: a request head took too long.
    HeadExpired,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

impl ConnClock {
    pub fn new() -> Arc<ConnClock> {
        Arc::new(ConnClock {
            born: Instant::now(),
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes us its first request head at once.
            head_since: AtomicU64::new(0),
            body_timed_out: AtomicBool::new(false),
        })
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.born).as_millis() as u64
    }

    /// The IO read some bytes.
    pub fn bytes_arrived(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 && self.head_since.load(Ordering::Relaxed) == NO_HEAD {
            self.head_since.store(self.millis(Instant::now()), Ordering::Relaxed);
        }
    }

    /// A request reached the service; the guard marks its answer done when dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NO_HEAD, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }

    pub fn body_timed_out(&self) {
        self.body_timed_out.store(true, Ordering::Relaxed);
    }

    /// Whether a request body timed out since the last call.
    pub fn take_body_timed_out(&self) -> bool {
        self.body_timed_out.load(Ordering::Relaxed) && self.body_timed_out.swap(false, Ordering::Relaxed)
    }

    pub fn check(&self, timeouts: Timeouts, now: Instant) -> Check {
        if self.is_busy() {
            return Check::At(now + timeouts.header.min(timeouts.idle));
        }
        let head_since = self.head_since.load(Ordering::Relaxed);
        let (since, limit, expired) = if head_since != NO_HEAD {
            (head_since, timeouts.header, Check::HeadExpired)
        } else {
            (
                self.idle_since.load(Ordering::Relaxed),
                timeouts.idle,
                Check::IdleExpired,
            )
        };
        let deadline = self.born + Duration::from_millis(since) + limit;
        if now >= deadline { expired } else { Check::At(deadline) }
    }
}

/// One request in flight, from the service call until its answer's body is
/// done or dropped.
#[derive(Debug)]
pub(super) struct InFlight(Arc<ConnClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        // Idle from now; a next request's bytes already read ahead (pipelining)
        // then get the idle timeout rather than the header timeout.
        clock.idle_since.store(clock.millis(Instant::now()), Ordering::Relaxed);
        clock.head_since.store(NO_HEAD, Ordering::Relaxed);
        clock.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn a_new_connection_owes_its_first_head_within_the_header_timeout() {
        let clock = ConnClock::new();
        assert_eq!(clock.check(T, clock.born), Check::At(clock.born + T.header));
        assert_eq!(clock.check(T, clock.born + T.header), Check::HeadExpired);
    }

    #[test]
    fn an_idle_connection_expires_after_the_idle_timeout() {
        let clock = ConnClock::new();
        drop(clock.request_started());
        let Check::At(deadline) = clock.check(T, clock.born) else {
            panic!("just went idle")
        };
        assert!(deadline >= clock.born + T.idle);
        assert_eq!(clock.check(T, deadline), Check::IdleExpired);
    }

    #[test]
    fn a_started_head_expires_after_the_header_timeout() {
        let clock = ConnClock::new();
        drop(clock.request_started());
        clock.bytes_arrived();
        let Check::At(deadline) = clock.check(T, clock.born) else {
            panic!("not expired yet")
        };
        assert!(deadline <= Instant::now() + T.header);
        assert_eq!(clock.check(T, deadline), Check::HeadExpired);
    }

    #[test]
    fn a_request_in_flight_never_expires_and_its_end_restarts_the_idle_timeout() {
        let clock = ConnClock::new();
        clock.bytes_arrived();
        let request = clock.request_started();
        let much_later = clock.born + T.idle * 10;
        assert!(matches!(clock.check(T, much_later), Check::At(_)));
        clock.bytes_arrived(); // body bytes: not a new head
        drop(request);
        let Check::At(deadline) = clock.check(T, clock.born) else {
            panic!("just went idle")
        };
        assert!(deadline >= clock.born + T.idle);
        assert!(!clock.is_busy());
    }
}
