//! `GET /metrics`: Prometheus text format. The recorder is process-wide;
//! gauges describing the log are refreshed at each scrape. The HTTP request
//! series come from `request_metrics`.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
        handle
    })
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.log.stats();
    metrics::gauge!("distlog_log_next_offset").set(stats.next_offset as f64);
    metrics::gauge!("distlog_log_lowest_offset").set(stats.lowest_offset as f64);
    metrics::gauge!("distlog_log_segments").set(stats.segments as f64);
    metrics::gauge!("distlog_log_size_bytes").set(stats.size_bytes as f64);
    // Counted by the log under its writer lock (cheaper than a shared
    // counter per append) and handed over here.
    let appended = state.log.appended();
    metrics::counter!("distlog_records_appended_total").absolute(appended.records);
    metrics::counter!("distlog_bytes_appended_total").absolute(appended.bytes);
    let mut text = recorder().render();
    request_metrics::render(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
