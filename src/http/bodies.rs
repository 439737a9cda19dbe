//! The bodies around each request and answer on a connection:
//!
//! - `TimedBody`, a request body that tells the connection's clock when it
//!   waits for bytes, and fails once the clock says it waited longer than
//!   the body timeout (the clock's one timer per connection enforces it, so
//!   a request body costs no timer of its own);
//! - `TrackedBody`, an answer's body that holds the request's `InFlight`
//!   until it is done, so that a long poll or an event stream keeps its
//!   connection out of the idle timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use super::timeouts::{ConnClock, InFlight};

/// The error a stalled request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("no byte of the request body came for {0:?}")]
pub struct BodyTimedOut(pub Duration);

pub(super) struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    clock: Arc<ConnClock>,
    failed: bool,
}

impl TimedBody {
    pub fn new(inner: Incoming, timeout: Duration, clock: Arc<ConnClock>) -> Self {
        TimedBody {
            inner,
            timeout,
            clock,
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
            this.clock.body_moved();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        // The connection task polls the connection again, and so this body,
        // once it marked the body expired.
        if this.clock.body_waiting() && this.clock.take_body_expiry() {
            this.failed = true;
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        self.clock.body_moved();
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
