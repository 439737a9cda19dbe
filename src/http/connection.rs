//! Serving one accepted connection: HTTP/1.1 (keep-alive, pipelining) with
//! hyper, under the header, idle, body and send timeouts (see `clock`, `bodies`),
//! with the caller's `PeerInfo` on each request when the auth guard needs
//! it, protocol errors answered as JSON (see `conn_io`), and a graceful end
//! when the server stops: the request in flight finishes, then the
//! connection closes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::bodies::{TimedBody, TrackedBody};
use super::conn_io::{ConnIo, protocol_error};
use super::send_queue::SendQueue;
use super::timeouts::{Check, ConnClock, InFlight, Timeouts};
use crate::api::{ApiError, App};
use crate::auth::PeerInfo;

/// What every connection of a server shares.
pub(super) struct ConnSettings {
    pub app: App,
    pub timeouts: Timeouts,
    /// Attach `PeerInfo` to every request (only the auth guard reads it).
    pub with_peer: bool,
}

/// Serves `io` until the client or a timeout closes it, or the server stops.
///
/// `send_queue` is the socket under `io` (for the send timeout).
pub(super) async fn serve<I>(
    io: I,
    send_queue: SendQueue,
    peer: PeerInfo,
    settings: Arc<ConnSettings>,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = ConnClock::new();
    let remote = peer.remote;
    let service = ConnService {
        app: settings.app.clone(),
        peer: settings.with_peer.then_some(peer),
        clock: clock.clone(),
        body_timeout: settings.timeouts.body,
    };
    let io = TokioIo::new(ConnIo::new(io, clock.clone()));
    let mut conn = http1::Builder::new().serve_connection(io, service);
    let timeouts = settings.timeouts;
    // The timer fires at least once per body timeout, so that a body that
    // starts waiting is noticed within it; the clock says when else to look.
    let at_the_latest = |now: Instant| now + timeouts.body;
    let timer = tokio::time::sleep_until(at_the_latest(Instant::now()).min(Instant::now() + timeouts.header));
    tokio::pin!(timer);
    let stop = stopping.wait_for(|stop| *stop);
    tokio::pin!(stop);
    let mut stopping_seen = false;
    // When the current write stall began and what the socket held then.
    let mut stall: Option<(u64, u64)> = None;
    let ended = loop {
        tokio::select! {
            biased;
            ended = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break ended,
            _ = &mut timer => {}
            // The answer was flushed, a head began or a write was refused:
            // a deadline moved earlier than the timer may be set for.
            _ = std::future::poll_fn(|cx| clock.poll_changed(cx)) => {}
            _ = &mut stop, if !stopping_seen => {
                stopping_seen = true;
                Pin::new(&mut conn).graceful_shutdown();
                continue;
            }
        }
        // A stall wakes this task as it begins: what the socket holds then
        // is the mark the client must read below to count as reading.
        if let Some(since) = clock.write_blocked_since()
            && stall.is_none_or(|(seen, _)| seen != since)
        {
            stall = send_queue.unacknowledged().map(|queued| (since, queued));
        }
        if look_at_clock(&clock, timeouts, &send_queue, stall, timer.as_mut(), remote) == Flow::Close {
            return;
        }
    };
    let io = conn.into_parts().io.into_inner();
    let answer = ended.err().and_then(|e| protocol_error(&e, io.held_status()));
    io.finish(answer).await;
}

/// Whether a connection goes on after a look at its clock.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Acts on what the clock says: sets the timer for the next deadline,
/// answers a stalled body with 408, or closes a connection whose idle,
/// head or send timeout expired. `stall` is when the current write stall
/// began and what the socket held then.
fn look_at_clock(
    clock: &ConnClock,
    timeouts: Timeouts,
    send_queue: &SendQueue,
    stall: Option<(u64, u64)>,
    timer: Pin<&mut Sleep>,
    remote: SocketAddr,
) -> Flow {
    let at_the_latest = |now: Instant| now + timeouts.body;
    match clock.check(timeouts, Instant::now().into_std()) {
        Check::At(next) => timer.reset(Instant::from_std(next).min(at_the_latest(Instant::now()))),
        // Dropping the connection closes it: there is nothing in flight.
        Check::IdleExpired => {
            tracing::debug!(%remote, "idle connection closed");
            return Flow::Close;
        }
        Check::HeadExpired => {
            tracing::debug!(%remote, "request head timed out; connection closed");
            return Flow::Close;
        }
        // The client reads nothing: no answer can reach it.
        Check::SendExpired => match (stall, send_queue.unacknowledged()) {
            (Some((_, before)), Some(queued)) if queued < before => {
                // The kernel's buffer drains: the client reads. Look again
                // at once, from a new mark.
                clock.restart_send_timeout();
                timer.reset(Instant::now());
            }
            _ => {
                tracing::debug!(%remote, "client read nothing for the send timeout; connection closed");
                return Flow::Close;
            }
        },
        Check::BodyExpired => {
            tracing::debug!(%remote, "request body stalled; answering 408");
            clock.expire_body();
            timer.reset(at_the_latest(Instant::now()));
        }
    }
    Flow::Continue
}

/// The API as hyper calls it on one connection.
struct ConnService {
    app: App,
    peer: Option<PeerInfo>,
    clock: Arc<ConnClock>,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Answer<<App as Service<Request<Body>>>::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.clock.request_started();
        let clock = self.clock.clone();
        let body_timeout = self.body_timeout;
        let mut request = request.map(|body| Body::new(TimedBody::new(body, body_timeout, clock)));
        if let Some(peer) = &self.peer {
            request.extensions_mut().insert(ConnectInfo(peer.clone()));
        }
        // The router is always ready (axum documents `poll_ready` as a no-op),
        // as axum's own server also assumes.
        let mut app = self.app.clone();
        Answer {
            inner: app.call(request),
            in_flight: Some(in_flight),
            clock: self.clock.clone(),
            body_timeout,
        }
    }
}

pin_project! {
    /// The API's answer, its body tracked; a 408 in its place if the
    /// request body stalled.
    struct Answer<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        clock: Arc<ConnClock>,
        body_timeout: Duration,
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if this.clock.take_body_timed_out() {
            response = ApiError::BodyTimeout {
                after_ms: this.body_timeout.as_millis() as u64,
            }
            .into_response();
            // The rest of the body is still on the wire.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let in_flight = this.in_flight.take().unwrap_or_else(|| this.clock.request_started());
        Poll::Ready(Ok(response.map(|body| TrackedBody::new(body, in_flight))))
    }
}
