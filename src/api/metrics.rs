//! `GET /metrics`: Prometheus text format. The recorder is process-wide;
//! gauges describing the log are refreshed at each scrape. The HTTP request
//! series come from `request_metrics`, the `process_*` series and
//! `distlog_build_info` from `process_metrics`. Every family carries `# HELP` text
//! (`promtool check metrics` insists): each module describes the metrics it
//! records, all of them when the recorder is installed.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::process_metrics;
use super::request_metrics::{self, DURATION_BUCKETS};
use super::state::AppState;

/// The process-wide Prometheus recorder, installed on first use.
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), DURATION_BUCKETS)
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "histogram buckets refused; durations become summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only what this one sees");
        }
        describe_metrics();
        crate::log::describe_metrics();
        crate::log::producers::describe_metrics();
        crate::replication::describe_metrics();
        crate::auth::describe_metrics();
        crate::cluster::describe_metrics();
        handle
    })
}

const NEXT_OFFSET: &str = "distlog_log_next_offset";
const LOWEST_OFFSET: &str = "distlog_log_lowest_offset";
const SEGMENTS: &str = "distlog_log_segments";
const SIZE_BYTES: &str = "distlog_log_size_bytes";
const RECORDS_APPENDED: &str = "distlog_records_appended_total";
const BYTES_APPENDED: &str = "distlog_bytes_appended_total";
/// Set by the HTTP layer's accept loop (`crate::http`).
pub const OPEN_CONNECTIONS: &str = "distlog_http_open_connections";
pub(super) const SSE_SUBSCRIBERS: &str = "distlog_sse_subscribers";
const STORAGE_ERRORS: &str = "distlog_storage_errors_total";
const DISK_AVAILABLE: &str = "distlog_disk_available_bytes";
const DISK_SIZE: &str = "distlog_disk_size_bytes";
/// The `kind` labels of `STORAGE_ERRORS`.
const STORAGE_ERROR_KINDS: [&str; 3] = ["disk_full", "corrupt", "io"];

/// Counts a request the log failed (see `ApiError::from(LogError)`).
pub(super) fn storage_error(kind: &'static str) {
    metrics::counter!(STORAGE_ERRORS, "kind" => kind).increment(1);
}

/// HELP text for the log's series this page refreshes.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!(NEXT_OFFSET, "The offset the next appended record will get.");
    describe_gauge!(
        LOWEST_OFFSET,
        "The oldest offset still in the log (retention deletes below it)."
    );
    describe_gauge!(SEGMENTS, "Segment files the log holds.");
    describe_gauge!(
        SIZE_BYTES,
        Unit::Bytes,
        "Bytes of record frames in the log's segment stores (indexes not counted)."
    );
    describe_counter!(RECORDS_APPENDED, "Records appended since the log was opened.");
    describe_counter!(
        BYTES_APPENDED,
        Unit::Bytes,
        "Bytes of record frames (header and value) appended since the log was opened."
    );
    describe_gauge!(
        OPEN_CONNECTIONS,
        "HTTP connections being served (those refused beyond --max-connections not counted)."
    );
    describe_gauge!(SSE_SUBSCRIBERS, "Event streams (Accept: text/event-stream) open now.");
    describe_counter!(
        STORAGE_ERRORS,
        "Requests the log failed: kind disk_full (the disk is full), corrupt (a record failed its checksum), io (any other storage error; answered 503 storage_unavailable)."
    );
    describe_gauge!(
        DISK_AVAILABLE,
        Unit::Bytes,
        "Bytes still available to distlog on the data directory's filesystem."
    );
    describe_gauge!(DISK_SIZE, Unit::Bytes, "Size of the data directory's filesystem.");
    metrics::gauge!(OPEN_CONNECTIONS).increment(0.0);
    metrics::gauge!(SSE_SUBSCRIBERS).increment(0.0);
    for kind in STORAGE_ERROR_KINDS {
        metrics::counter!(STORAGE_ERRORS, "kind" => kind).increment(0);
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.log.stats();
    metrics::gauge!(NEXT_OFFSET).set(stats.next_offset as f64);
    metrics::gauge!(LOWEST_OFFSET).set(stats.lowest_offset as f64);
    metrics::gauge!(SEGMENTS).set(stats.segments as f64);
    metrics::gauge!(SIZE_BYTES).set(stats.size_bytes as f64);
    if let Ok(space) = crate::log::fsops::space(state.log.dir()) {
        metrics::gauge!(DISK_AVAILABLE).set(space.available as f64);
        metrics::gauge!(DISK_SIZE).set(space.total as f64);
    }
    // Counted by the log under its writer lock (cheaper than a shared
    // counter per append) and handed over here.
    let appended = state.log.appended();
    metrics::counter!(RECORDS_APPENDED).absolute(appended.records);
    metrics::counter!(BYTES_APPENDED).absolute(appended.bytes);
    let mut text = recorder().render();
    request_metrics::render(&mut text);
    process_metrics::render(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
