//! `GET /metrics`: Prometheus text format. The recorder is process-wide;
//! gauges describing the log are refreshed at each scrape. The HTTP request
//! series come from `request_metrics`, the `process_*` series and
//! `distlog_build_info` from `process_metrics`. Every family carries `# HELP` text
//! (`promtool check metrics` insists): each module describes the metrics it
//! records, all of them when the recorder is installed.

use std::fmt::Write;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::process_metrics;
use super::request_metrics::{self, DURATION_BUCKETS};
use super::state::AppState;
use crate::log::{Appended, LogStats};
use crate::logs::DEFAULT_LOG;

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

/// The series every log has, labelled `log` (see `render_logs`): name,
/// type, HELP text, and the value from the log's stats.
type LogSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LogStats, &Appended) -> u64,
);
const LOG_SERIES: [LogSeries; 6] = [
    (
        "distlog_log_next_offset",
        "gauge",
        "The offset the next appended record will get.",
        |s, _| s.next_offset,
    ),
    (
        "distlog_log_lowest_offset",
        "gauge",
        "The oldest offset still in the log (retention deletes below it).",
        |s, _| s.lowest_offset,
    ),
    (
        "distlog_log_segments",
        "gauge",
        "Segment files the log holds.",
        |s, _| s.segments as u64,
    ),
    (
        "distlog_log_size_bytes",
        "gauge",
        "Bytes of record frames in the log's segment stores (indexes not counted).",
        |s, _| s.size_bytes,
    ),
    (
        "distlog_records_appended_total",
        "counter",
        "Records appended since the log was opened.",
        |_, a| a.records,
    ),
    (
        "distlog_bytes_appended_total",
        "counter",
        "Bytes of record frames (header and value) appended since the log was opened.",
        |_, a| a.bytes,
    ),
];
/// Set by the HTTP layer's accept loop (`crate::http`).
pub const OPEN_CONNECTIONS: &str = "distlog_http_open_connections";
/// The same for the peer listener (`--peer-listen`), when there is one.
pub const OPEN_PEER_CONNECTIONS: &str = "distlog_http_open_peer_connections";
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
    describe_gauge!(
        OPEN_CONNECTIONS,
        "HTTP connections being served (those refused beyond --max-connections not counted)."
    );
    describe_gauge!(
        OPEN_PEER_CONNECTIONS,
        "Connections being served on the peer listener (--peer-listen; those refused beyond --max-peer-connections not counted)."
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
    describe_counter!(
        super::forward::FORWARDED_WRITES,
        "Writes a cluster follower forwarded to its leader (--forward-writes), by outcome: relayed (the leader's answer, whatever its status), no_leader (not taken: nothing was written), outcome_unknown (sent, no answer), timeout (its time passed before it went out)."
    );
    metrics::gauge!(OPEN_CONNECTIONS).increment(0.0);
    metrics::gauge!(SSE_SUBSCRIBERS).increment(0.0);
    for kind in STORAGE_ERROR_KINDS {
        metrics::counter!(STORAGE_ERRORS, "kind" => kind).increment(0);
    }
}

/// `LOG_SERIES` for the default log (`log="default"`) and each named log:
/// one label value per log, at most `--max-logs` + 1. Rendered here rather
/// than kept in the recorder, so that a deleted log's series go with it.
fn render_logs(state: &AppState, out: &mut String) {
    let named = state.catalog.list();
    let mut logs = vec![(DEFAULT_LOG, state.log.stats(), state.log.appended())];
    logs.extend(named.iter().map(|n| (n.name.as_str(), n.log.stats(), n.log.appended())));
    for (family, kind, help, value) in LOG_SERIES {
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
        for (name, stats, appended) in &logs {
            // Log names are [a-z0-9._-]: nothing to escape in a label.
            let _ = writeln!(out, "{family}{{log=\"{name}\"}} {}", value(stats, appended));
        }
    }
    // A log's Raft group (in a cluster; none on a standalone node or a replica).
    let mut groups: Vec<(&str, u64)> = state
        .mode
        .cluster()
        .map(|c| (DEFAULT_LOG, c.leader_changes()))
        .into_iter()
        .collect();
    groups.extend(
        named
            .iter()
            .filter_map(|n| Some((n.name.as_str(), n.mode.cluster()?.leader_changes()))),
    );
    let family = "distlog_log_leader_changes_total";
    if groups.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP {family} Times the log's Raft group changed or lost its leader, as this node saw it since it opened the log (cluster members only).\n# TYPE {family} counter"
    );
    for (name, changes) in groups {
        let _ = writeln!(out, "{family}{{log=\"{name}\"}} {changes}");
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(space) = crate::log::fsops::space(state.log.dir()) {
        metrics::gauge!(DISK_AVAILABLE).set(space.available as f64);
        metrics::gauge!(DISK_SIZE).set(space.total as f64);
    }
    let mut text = recorder().render();
    request_metrics::render(&mut text);
    render_logs(&state, &mut text);
    super::consumers::render_metrics(&state, &mut text);
    process_metrics::render(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
