//! Per-request observation: a request id (the client's `x-request-id`, or
//! one made here) echoed on the answer, one structured log line at info on
//! the target `ACCESS_LOG` (off unless asked for, see the binary), and the
//! `distlog_http_*` metrics labelled by route template, never raw path.
//! It also turns a panicking handler into a JSON 500. With traces on, the
//! request gets a server span (see `telemetry::http_span`), entered while
//! the handler runs.

use std::cell::Cell;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::error::ApiError;
use super::render::write_decimal;
use super::request_metrics::{self, Kind};
use super::route_template;
use crate::telemetry::Starts;

/// The tracing target of the one line per request (the access log).
pub const ACCESS_LOG: &str = "distlog::access";

/// A constant name: a `&str` would be parsed on every lookup and insert.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps the router (see `api::app`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

/// A hand-written service rather than `middleware::from_fn`, which boxes
/// and clones the inner service on every request: that showed up as a
/// twentieth of a small request's CPU time. Routes are labelled by
/// template from the path (`route_template`), so the router need not
/// attach its matched path to every request.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let method = method_label(request.method());
        let route = route_template(request.uri().path());
        let kind = request_kind(&request, route);
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .filter(|v| v.len() <= 128 && v.to_str().is_ok_and(|s| !s.is_empty()))
            .cloned()
            .unwrap_or_else(new_request_id);
        let starts = match route {
            super::routes::RAFT_APPEND | super::routes::RAFT_GROUP_APPEND => Starts::No,
            _ => Starts::Yes,
        };
        let span = crate::telemetry::http_span(method, route, request.headers(), starts);
        Observed {
            inner: self.inner.call(request),
            span,
            started,
            method,
            route,
            kind,
            request_id: Some(request_id),
        }
    }
}

/// Reads that wait on purpose are timed apart (see `request_metrics`).
fn request_kind(request: &Request, route: &str) -> Kind {
    if route != super::routes::ROOT || request.method() != Method::GET {
        return Kind::Plain;
    }
    // The same test the read handler makes (`read::read_range`).
    if super::media::prefers(request.headers(), "text/event-stream") {
        return Kind::EventStream;
    }
    match request.uri().query() {
        Some(query) if query.split('&').any(|p| p.starts_with("wait_ms=")) => Kind::LongPoll,
        _ => Kind::Plain,
    }
}

pin_project! {
    /// The inner response future; once it is ready, the answer gets its
    /// request id and the request is counted and logged.
    pub struct Observed<F> {
        #[pin]
        inner: F,
        // The disabled span unless traces are on.
        span: tracing::Span,
        started: Instant,
        method: &'static str,
        route: &'static str,
        kind: Kind,
        request_id: Option<HeaderValue>,
    }
}

impl<F, E> Future for Observed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // A panicking handler answers 500 and the connection goes on; the
        // inner future is not polled again after its panic.
        let polled = if this.span.is_none() {
            panic::catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll(cx)))
        } else {
            let _entered = this.span.enter();
            panic::catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll(cx)))
        };
        let mut response = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => result?,
            Err(_) => panicked(),
        };
        let status = response.status().as_u16();
        crate::telemetry::record_status(this.span, status);
        let elapsed = this.started.elapsed();
        request_metrics::record(this.method, this.route, status, *this.kind, elapsed.as_nanos() as u64);
        let request_id = this.request_id.take().unwrap_or_else(new_request_id);
        tracing::info!(
            target: ACCESS_LOG,
            method = *this.method,
            route = *this.route,
            status,
            latency_us = elapsed.as_micros() as u64,
            request_id = request_id.to_str().unwrap_or("-"),
            "request"
        );
        response.headers_mut().insert(REQUEST_ID, request_id);
        Poll::Ready(Ok(response))
    }
}

fn panicked() -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Internal("the request failed unexpectedly".into()).into_response()
}

/// Only standard methods become label values: a client must not be able to
/// mint new metric series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// `<process start in hex>-<thread>-<counter>`: unique within and across
/// restarts. Each thread counts on its own, so making one touches no
/// shared cache line.
fn new_request_id() -> HeaderValue {
    thread_local! {
        static PREFIX: Box<[u8]> = request_id_prefix();
        static COUNTER: Cell<u64> = const { Cell::new(0) };
    }
    let n = COUNTER.with(|c| {
        let n = c.get();
        c.set(n + 1);
        n
    });
    PREFIX.with(|prefix| {
        let mut id = [0u8; 64];
        let start = prefix.len().min(id.len() - 20);
        id[..start].copy_from_slice(&prefix[..start]);
        let len = start + write_decimal(&mut id[start..], n);
        HeaderValue::from_bytes(&id[..len]).unwrap_or_else(|_| HeaderValue::from_static("-"))
    })
}

fn request_id_prefix() -> Box<[u8]> {
    static BOOT: OnceLock<u64> = OnceLock::new();
    static THREADS: AtomicU64 = AtomicU64::new(0);
    let boot = BOOT.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    });
    let thread = THREADS.fetch_add(1, Ordering::Relaxed);
    format!("{boot:x}-{thread}-").into_bytes().into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A route whose handler panics while it runs.
    struct Panicking;

    impl Service<Request> for Panicking {
        type Response = Response;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            Box::pin(std::future::poll_fn(|_| panic!("handler bug")))
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_a_request_id() {
        let mut service = ObserveLayer.layer(Panicking);
        let request = Request::builder()
            .uri("/7")
            .header("x-request-id", "abc")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = service.call(request).await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["x-request-id"], "abc");
    }

    #[test]
    fn request_ids_differ_across_threads_and_calls() {
        let mut ids: Vec<String> = (0..3)
            .map(|_| std::thread::spawn(|| [new_request_id(), new_request_id()]))
            .flat_map(|t| t.join().unwrap())
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        ids.push(new_request_id().to_str().unwrap().to_string());
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "{ids:?}");
        assert!(ids.iter().all(|id| id.split('-').count() == 3));
    }
}
