//! Per-request observation: a request id (the client's `x-request-id`, or
//! one made here) echoed on the answer, one structured log line, and the
//! `distlog_http_*` metrics labelled by route template, never raw path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

const REQUEST_ID: &str = "x-request-id";

pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().cloned();
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
    let route = route.as_ref().map(MatchedPath::as_str).unwrap_or("unmatched");
    record(method, route, status, elapsed.as_secs_f64());
    tracing::info!(
        target: "distlog::http",
        method,
        route,
        status,
        latency_us = elapsed.as_micros() as u64,
        request_id = request_id.to_str().unwrap_or("-"),
        "request"
    );
    response
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

struct Handles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Handles by (method, status), then by route template.
type HandleCache = HashMap<(&'static str, u16), HashMap<String, Handles>>;

thread_local! {
    /// Metric handles by (method, status) and route: registering labels on
    /// every request costs more than the request itself.
    static HANDLES: RefCell<HandleCache> = RefCell::new(HashMap::new());
}

fn record(method: &'static str, route: &str, status: u16, seconds: f64) {
    HANDLES.with_borrow_mut(|handles| {
        let by_route = handles.entry((method, status)).or_default();
        if !by_route.contains_key(route) {
            let labels = [
                ("method", method.to_string()),
                ("route", route.to_string()),
                ("status", status.to_string()),
            ];
            let created = Handles {
                requests: metrics::counter!("distlog_http_requests_total", &labels),
                duration: metrics::histogram!("distlog_http_request_duration_seconds", &labels),
            };
            by_route.insert(route.to_string(), created);
        }
        if let Some(handles) = by_route.get(route) {
            handles.requests.increment(1);
            handles.duration.record(seconds);
        }
    });
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
