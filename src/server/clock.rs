//! Where one HTTP/1.1 connection is in its life, for its timeouts:
//!
//! - idle: no request in flight and no byte of the next one seen; the
//!   idle timeout runs from the moment the last answer ended;
//! - reading a head: bytes came on an idle connection, the request has not
//!   reached the service yet; the header timeout runs from the first byte
//!   (from accept for the first request: a new connection that sends
//!   nothing is closed after the header timeout);
//! - busy: a request reached the service and its answer's body is not done
//!   (a long poll, an event stream): no connection timeout applies, but
//!   while the handler waits for request body bytes that do not come, the
//!   body timeout runs from when it started waiting (the time between two
//!   reads, as nginx's `client_body_timeout`, so a large body on a slow but
//!   moving link is not cut). When it expires the body fails (`bodies`)
//!   and the answer becomes a 408.
//!
//! The IO, the service and the bodies report here; the connection task
//! looks only when its one timer fires, so a request costs a few relaxed
//! atomic operations and two or three clock reads, no timer of its own,
//! and the timer is re-armed at most once per timeout period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// No byte of a next request seen; no request body waited for.
const NEVER: u64 = u64::MAX;

#[derive(Debug)]
pub(super) struct ConnClock {
    born: Instant,
    /// Requests handed to the service whose answer is not done.
    busy: AtomicU32,
    /// Milliseconds after `born` when the connection last went idle.
    idle_since: AtomicU64,
    /// Milliseconds after `born` when the first byte of the next request
    /// came, or `NEVER`.
    head_since: AtomicU64,
    /// Milliseconds after `born` since when a request body is waited for
    /// and no byte came, or `NEVER`.
    body_waiting_since: AtomicU64,
    /// The body timeout expired: the waiting body fails at its next poll.
    body_expired: AtomicBool,
    /// A request body failed for the body timeout (its answer becomes a 408).
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
    /// Fail the request body that waited too long (then look again).
    BodyExpired,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub body: Duration,
}

impl ConnClock {
    pub fn new() -> Arc<ConnClock> {
        Arc::new(ConnClock {
            born: Instant::now(),
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes us its first request head at once.
            head_since: AtomicU64::new(0),
            body_waiting_since: AtomicU64::new(NEVER),
            body_expired: AtomicBool::new(false),
            body_timed_out: AtomicBool::new(false),
        })
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.born).as_millis() as u64
    }

    /// The IO read some bytes.
    pub fn bytes_arrived(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 && self.head_since.load(Ordering::Relaxed) == NEVER {
            self.head_since.store(self.millis(Instant::now()), Ordering::Relaxed);
        }
    }

    /// A request reached the service; the guard marks its answer done when dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NEVER, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }

    /// The request body has no byte ready: the body timeout runs, unless
    /// it already does. Whether it expired.
    pub fn body_waiting(&self) -> bool {
        if self.body_waiting_since.load(Ordering::Relaxed) == NEVER {
            self.body_waiting_since
                .store(self.millis(Instant::now()), Ordering::Relaxed);
        }
        self.body_expired.load(Ordering::Relaxed)
    }

    /// Request body bytes came, or the body is done or dropped.
    pub fn body_moved(&self) {
        if self.body_waiting_since.load(Ordering::Relaxed) != NEVER {
            self.body_waiting_since.store(NEVER, Ordering::Relaxed);
        }
    }

    /// The body timeout expired (the connection task saw it).
    pub fn expire_body(&self) {
        self.body_expired.store(true, Ordering::Relaxed);
    }

    /// Whether the waiting body should fail now; once it has, its answer
    /// becomes a 408.
    pub fn take_body_expiry(&self) -> bool {
        if !self.body_expired.swap(false, Ordering::Relaxed) {
            return false;
        }
        self.body_waiting_since.store(NEVER, Ordering::Relaxed);
        self.body_timed_out.store(true, Ordering::Relaxed);
        true
    }

    /// Whether a request body timed out since the last call.
    pub fn take_body_timed_out(&self) -> bool {
        self.body_timed_out.load(Ordering::Relaxed) && self.body_timed_out.swap(false, Ordering::Relaxed)
    }

    pub fn check(&self, timeouts: Timeouts, now: Instant) -> Check {
        if self.is_busy() {
            // A body may start waiting; the connection task looks at least
            // once per body timeout anyway.
            let again = now + timeouts.body;
            let waiting_since = self.body_waiting_since.load(Ordering::Relaxed);
            if waiting_since == NEVER || self.body_expired.load(Ordering::Relaxed) {
                return Check::At(again);
            }
            let deadline = self.born + Duration::from_millis(waiting_since) + timeouts.body;
            return if now >= deadline {
                Check::BodyExpired
            } else {
                Check::At(deadline.min(again))
            };
        }
        let head_since = self.head_since.load(Ordering::Relaxed);
        let (since, limit, expired) = if head_since != NEVER {
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
        clock.head_since.store(NEVER, Ordering::Relaxed);
        clock.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        body: Duration::from_secs(30),
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

    #[test]
    fn a_body_waited_for_too_long_expires_once_and_bytes_restart_its_timeout() {
        let clock = ConnClock::new();
        let _request = clock.request_started();
        assert!(!clock.body_waiting());
        let Check::At(deadline) = clock.check(T, clock.born) else {
            panic!("just started waiting")
        };
        assert!(deadline <= Instant::now() + T.body);
        clock.body_moved();
        assert!(
            matches!(clock.check(T, deadline), Check::At(_)),
            "bytes came: no expiry"
        );
        clock.body_waiting();
        let late = Instant::now() + T.body;
        assert_eq!(clock.check(T, late), Check::BodyExpired);
        clock.expire_body();
        assert!(clock.body_waiting(), "the body learns it expired");
        assert!(clock.take_body_expiry());
        assert!(!clock.take_body_expiry(), "only once");
        assert!(clock.take_body_timed_out());
        assert!(matches!(clock.check(T, late), Check::At(_)));
    }
}
