//! Per-request observation: a request id (the client's `x-request-id`, or
//! one made here) echoed on the answer, one structured log line, and the
//! `distlog_http_*` metrics labelled by route template, never raw path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

const REQUEST_ID: &str = "x-request-id";

pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Only standard methods become label values: a client must not be able
    // to mint new metric series.
    let method = match *request.method() {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::HEAD | Method::OPTIONS | Method::PATCH => {
            request.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| v.len() <= 128 && v.to_str().is_ok_and(|s| !s.is_empty()))
        .cloned()
        .unwrap_or_else(new_request_id);

    let mut response = next.run(request).await;

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    response.headers_mut().insert(REQUEST_ID, request_id.clone());
    let labels = [
        ("method", method.clone()),
        ("route", route.clone()),
        ("status", status.to_string()),
    ];
    metrics::counter!("distlog_http_requests_total", &labels).increment(1);
    metrics::histogram!("distlog_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    tracing::info!(
        target: "distlog::http",
        method = %method,
        route = %route,
        status,
        latency_us = elapsed.as_micros() as u64,
        request_id = request_id.to_str().unwrap_or("-"),
        "request"
    );
    response
}

/// `<process start in hex>-<counter>`: unique within and across restarts.
fn new_request_id() -> HeaderValue {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let boot = BOOT.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{boot:x}-{n}")).unwrap_or_else(|_| HeaderValue::from_static("-"))
}
