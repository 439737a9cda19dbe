//! The bodies around each request and answer on a connection:
//!
//! - `TimedBody`, a request body that fails once no byte came for the body
//!   timeout (the time between two reads, as nginx's `client_body_timeout`,
//!   so a large body on a slow but moving link is not cut). Its timer is
//!   made only when the body is not already there, which a small POST
//!   never needs.
//! - `TrackedBody`, an answer's body that holds the request's `InFlight`
//!   until it is done, so that a long poll or an event stream keeps its
//!   connection out of the idle timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::clock::{ConnClock, InFlight};

/// The error a stalled request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("no byte of the request body came for {0:?}")]
pub struct BodyTimedOut(pub Duration);

pub(super) struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    clock: Arc<ConnClock>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes came since the timer was last armed.
    moved: bool,
    failed: bool,
}

impl TimedBody {
    pub fn new(inner: Incoming, timeout: Duration, clock: Arc<ConnClock>) -> Self {
        TimedBody {
            inner,
            timeout,
            clock,
            sleep: None,
            moved: false,
            failed: false,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.moved = true;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if std::mem::take(&mut this.moved) {
            sleep.as_mut().reset(Instant::now() + timeout);
        }
        ready!(sleep.as_mut().poll(cx));
        this.failed = true;
        this.clock.body_timed_out();
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pub(super) struct TrackedBody {
    inner: Body,
    /// Dropped with the body: the answer is done.
    _in_flight: InFlight,
}

impl TrackedBody {
    pub fn new(inner: Body, in_flight: InFlight) -> Self {
        TrackedBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
