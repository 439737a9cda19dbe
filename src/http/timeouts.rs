//! Where one HTTP/1.1 connection is in its life, for its timeouts:
//!
//! - idle: no answer under way and no byte of the next request seen; the
//!   idle timeout runs from the moment the last answer was flushed;
//! - reading a head: bytes came on an idle connection, the request has not
//!   reached the service yet; the header timeout runs from the first byte
//!   (from accept for the first request: a new connection that sends
//!   nothing is closed after the header timeout);
//! - busy: a request reached the service and its answer is not yet all
//!   written to the socket (a long poll, an event stream, or a large answer
//!   a slow client is still reading): no connection timeout applies, but
//!   while the handler waits for request body bytes that do not come, the
//!   body timeout runs from when it started waiting (the time between two
//!   reads, as nginx's `client_body_timeout`, so a large body on a slow but
//!   moving link is not cut). When it expires the body fails (`bodies`)
//!   and the answer becomes a 408.
//!
//! The busy/flush rule: hyper drops an answer's body (our `InFlight`) as
//! soon as it has *queued* the last chunk, which for a range answer can be
//! MiBs still waiting for the client to read them. So an answer counts as
//! under way from `request_started` until the IO sees hyper flush with no
//! request in flight (`flushed`: hyper flushes the socket only once its
//! write buffer is empty); only then does the connection go idle. Bytes
//! that arrive meanwhile are read-ahead of a pipelined request, not the
//! start of a slow head.
//!
//! In every state, the send timeout: bytes of ours are queued and the
//! socket has accepted none of them for that long (the client reads
//! nothing: a slow-read slowloris holding a large answer). Then nothing can
//! be answered, and the connection is closed. It runs from the first write
//! the socket refused (`write_blocked`) and stops at any byte it accepts
//! (`write_progressed`), or at the client reading from the kernel's send
//! buffer while our writes wait on it (`send_queue`, looked at by the
//! connection task), so a slow reader that keeps reading is never cut;
//! a connection with nothing queued (an event stream or a long poll with
//! no new record) is not stalled.
//!
//! Re-arming: the connection task has one timer and looks at this clock
//! when it fires, and also when the clock reports a change that moves a
//! deadline earlier: the answer was flushed (idle timeout from now), the
//! first byte of a next head came (header timeout from now), or a write
//! was refused after progress (send timeout from now). Those wake the task
//! through an `AtomicWaker` (two per request, plus one per time the
//! client's window fills),
//! so a request costs a few relaxed atomic operations and two or three
//! clock reads, no timer of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

/// No byte of a next request seen; no request body waited for.
const NEVER: u64 = u64::MAX;

#[derive(Debug)]
pub(super) struct ConnClock {
    born: Instant,
    /// Requests handed to the service whose answer's body is not done.
    busy: AtomicU32,
    /// A request reached the service and its answer is not all flushed to
    /// the socket yet (see the busy/flush rule above).
    answer_unflushed: AtomicBool,
    /// Milliseconds after `born` when the connection last went idle.
    idle_since: AtomicU64,
    /// Milliseconds after `born` when the first byte of the next request
    /// came, or `NEVER`.
    head_since: AtomicU64,
    /// Milliseconds after `born` since when a request body is waited for
    /// and no byte came, or `NEVER`.
    body_waiting_since: AtomicU64,
    /// Milliseconds after `born` since when the socket has refused our
    /// bytes and accepted none, or `NEVER`.
    write_blocked_since: AtomicU64,
    /// The body timeout expired: the waiting body fails at its next poll.
    body_expired: AtomicBool,
    /// A request body failed for the body timeout (its answer becomes a 408).
    body_timed_out: AtomicBool,
    /// A deadline moved earlier since the connection task last looked.
    changed: AtomicBool,
    /// The connection task, to wake on a change.
    task: AtomicWaker,
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
    /// Close the connection: the client read none of our bytes too long.
    SendExpired,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub body: Duration,
    pub send: Duration,
}

impl ConnClock {
    pub fn new() -> Arc<ConnClock> {
        Arc::new(ConnClock {
            born: Instant::now(),
            busy: AtomicU32::new(0),
            answer_unflushed: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            // A new connection owes us its first request head at once.
            head_since: AtomicU64::new(0),
            body_waiting_since: AtomicU64::new(NEVER),
            write_blocked_since: AtomicU64::new(NEVER),
            body_expired: AtomicBool::new(false),
            body_timed_out: AtomicBool::new(false),
            changed: AtomicBool::new(false),
            task: AtomicWaker::new(),
        })
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.born).as_millis() as u64
    }

    /// The IO read some bytes.
    pub fn bytes_arrived(&self) {
        if !self.is_busy() && self.head_since.load(Ordering::Relaxed) == NEVER {
            self.head_since.store(self.millis(Instant::now()), Ordering::Relaxed);
            // The header timeout may end before the timer fires.
            self.changed();
        }
    }

    /// The socket accepted none of the bytes we wrote: the send timeout
    /// runs, unless it already does.
    pub fn write_blocked(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) == NEVER {
            self.write_blocked_since
                .store(self.millis(Instant::now()), Ordering::Relaxed);
            // The send timeout may end before the timer fires.
            self.changed();
        }
    }

    /// The socket accepted some of our bytes.
    pub fn write_progressed(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) != NEVER {
            self.write_blocked_since.store(NEVER, Ordering::Relaxed);
        }
    }

    /// Since when (milliseconds after `born`) the socket has accepted none
    /// of our bytes, if it refuses them.
    pub fn write_blocked_since(&self) -> Option<u64> {
        let since = self.write_blocked_since.load(Ordering::Relaxed);
        (since != NEVER).then_some(since)
    }

    /// The client was seen reading although our writes still wait (the
    /// kernel's send buffer drains): the send timeout starts again now.
    pub fn restart_send_timeout(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) != NEVER {
            self.write_blocked_since
                .store(self.millis(Instant::now()), Ordering::Relaxed);
        }
    }

    /// A request reached the service; the guard marks its answer's body
    /// done when dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.answer_unflushed.store(true, Ordering::Relaxed);
        self.head_since.store(NEVER, Ordering::Relaxed);
        self.body_expired.store(false, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// hyper flushed the socket, which it does only with its write buffer
    /// empty: with no request in flight, the last answer is all written and
    /// the connection goes idle now.
    pub fn flushed(&self) {
        if self.answer_unflushed.load(Ordering::Relaxed) && self.busy.load(Ordering::Relaxed) == 0 {
            self.answer_unflushed.store(false, Ordering::Relaxed);
            self.idle_since.store(self.millis(Instant::now()), Ordering::Relaxed);
            self.head_since.store(NEVER, Ordering::Relaxed);
            // The idle timeout may end before the timer fires.
            self.changed();
        }
    }

    /// Whether an answer of ours is under way: its body not done, or its
    /// bytes not all written.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0 || self.answer_unflushed.load(Ordering::Relaxed)
    }

    fn changed(&self) {
        self.changed.store(true, Ordering::Relaxed);
        self.task.wake();
    }

    /// Ready when a deadline moved earlier since the last call: the
    /// connection task should `check` again and re-arm its timer.
    pub fn poll_changed(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.task.register(cx.waker());
        if self.changed.swap(false, Ordering::Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
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
        // Bytes came after all: an expiry not yet taken no longer holds.
        if self.body_expired.load(Ordering::Relaxed) {
            self.body_expired.store(false, Ordering::Relaxed);
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
        let blocked_since = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked_since == NEVER {
            return self.check_requests(timeouts, now);
        }
        let send_deadline = self.born + Duration::from_millis(blocked_since) + timeouts.send;
        if now >= send_deadline {
            return Check::SendExpired;
        }
        match self.check_requests(timeouts, now) {
            Check::At(next) => Check::At(next.min(send_deadline)),
            expired => expired,
        }
    }

    /// `check` for the header, idle and body timeouts.
    fn check_requests(&self, timeouts: Timeouts, now: Instant) -> Check {
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
        // The answer's bytes may still be queued in hyper: the connection
        // goes idle only once they are flushed (`flushed`), and a next
        // request's bytes already read ahead (pipelining) then get the idle
        // timeout rather than the header timeout.
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        body: Duration::from_secs(30),
        send: Duration::from_secs(30),
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
        clock.flushed();
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
        clock.flushed();
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
        clock.flushed();
        let Check::At(deadline) = clock.check(T, clock.born) else {
            panic!("just went idle")
        };
        assert!(deadline >= clock.born + T.idle);
        assert!(!clock.is_busy());
    }

    #[test]
    fn an_answer_not_yet_flushed_keeps_the_connection_busy() {
        let clock = ConnClock::new();
        drop(clock.request_started());
        // hyper dropped the body, its bytes are still queued.
        let much_later = clock.born + T.idle * 10;
        assert!(clock.is_busy());
        assert!(matches!(clock.check(T, much_later), Check::At(_)));
        clock.bytes_arrived(); // read-ahead during the flush: not a head
        assert_eq!(clock.head_since.load(Ordering::Relaxed), NEVER);
        clock.flushed();
        assert!(!clock.is_busy());
        let Check::At(deadline) = clock.check(T, clock.born) else {
            panic!("just went idle")
        };
        assert!(deadline >= clock.born + T.idle);
    }

    #[test]
    fn going_idle_and_starting_a_head_are_reported_once_each() {
        let clock = ConnClock::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(clock.poll_changed(&mut cx), Poll::Pending);
        let request = clock.request_started();
        drop(request);
        assert_eq!(clock.poll_changed(&mut cx), Poll::Pending, "bytes still queued");
        clock.flushed();
        clock.flushed(); // hyper flushes on every turn
        assert_eq!(clock.poll_changed(&mut cx), Poll::Ready(()));
        assert_eq!(clock.poll_changed(&mut cx), Poll::Pending);
        clock.bytes_arrived();
        clock.bytes_arrived();
        assert_eq!(clock.poll_changed(&mut cx), Poll::Ready(()));
        assert_eq!(clock.poll_changed(&mut cx), Poll::Pending);
    }

    #[test]
    fn bytes_after_an_expiry_not_yet_taken_cancel_it() {
        let clock = ConnClock::new();
        let _request = clock.request_started();
        clock.body_waiting();
        clock.expire_body();
        clock.body_moved();
        assert!(!clock.body_waiting(), "bytes came: the body goes on");
        assert!(!clock.take_body_expiry());
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

    #[test]
    fn a_write_refused_for_the_send_timeout_expires_and_progress_restarts_it() {
        let clock = ConnClock::new();
        let _request = clock.request_started();
        let much_later = clock.born + T.idle * 10;
        assert!(matches!(clock.check(T, much_later), Check::At(_)), "nothing queued");
        clock.write_blocked();
        let Check::At(deadline) = clock.check(T, clock.born) else {
            panic!("just blocked")
        };
        assert!(deadline <= Instant::now() + T.send);
        clock.write_blocked(); // still blocked: the timeout runs on
        assert_eq!(clock.check(T, deadline), Check::SendExpired);
        clock.write_progressed();
        assert!(matches!(clock.check(T, deadline), Check::At(_)), "the client read");
    }

    #[test]
    fn only_the_start_of_a_stall_is_reported() {
        let clock = ConnClock::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let _request = clock.request_started();
        assert_eq!(clock.poll_changed(&mut cx), Poll::Pending);
        clock.write_blocked();
        clock.write_blocked();
        assert_eq!(clock.poll_changed(&mut cx), Poll::Ready(()));
        assert_eq!(clock.poll_changed(&mut cx), Poll::Pending);
        clock.write_progressed();
        assert_eq!(clock.poll_changed(&mut cx), Poll::Pending, "a later deadline");
    }
}
