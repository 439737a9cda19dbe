//! `/metrics` as Prometheus tools read it: every family has HELP text, and
//! a follower's failure series exist (at 0) from the start, so alerts on
//! them work before the first failure. One test in its own binary: the
//! metrics recorder is process-wide, and other tests' failures would count.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{client, eventually, follower_config, post_json, start};

async fn scrape(url: &str) -> String {
    let response = client().get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The metric names that `# <keyword> <name> ...` lines introduce.
fn families(text: &str, keyword: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            line.strip_prefix("# ")?
                .strip_prefix(keyword)?
                .split_whitespace()
                .next()
        })
        .map(str::to_string)
        .collect()
}

fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// The families every node shows once it has appended (with fsyncs).
const LOG_FAMILIES: &[&str] = &[
    "distlog_records_appended_total",
    "distlog_bytes_appended_total",
    "distlog_fsync_duration_seconds",
    "distlog_log_lowest_offset",
    "distlog_log_next_offset",
    "distlog_log_segments",
    "distlog_log_size_bytes",
    "distlog_http_requests_total",
    "distlog_http_request_duration_seconds",
    "distlog_http_wait_duration_seconds",
    "distlog_http_open_connections",
    "distlog_sse_subscribers",
    "distlog_storage_errors_total",
    "distlog_producers_evicted_total",
    "distlog_disk_available_bytes",
    "distlog_disk_size_bytes",
    "distlog_build_info",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
];

const FOLLOWER_FAMILIES: &[&str] = &[
    "distlog_replication_errors_total",
    "distlog_replication_gaps_total",
    "distlog_replication_diverged",
    "distlog_replication_records_total",
    "distlog_replication_lag_records",
];

fn assert_every_family_has_help(text: &str, node: &str, expected: &[&str]) {
    let typed = families(text, "TYPE ");
    let helped = families(text, "HELP ");
    let missing: Vec<_> = typed.difference(&helped).collect();
    assert!(missing.is_empty(), "{node}: families without # HELP: {missing:?}");
    for family in expected {
        assert!(
            typed.contains(*family),
            "{node}: {family} is not on the page: {typed:?}"
        );
    }
}

#[tokio::test]
async fn every_family_has_help_and_follower_failures_start_at_zero() {
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader_config = common::config(leader_dir.path());
    // An fsync per append, so that the fsync histogram shows too.
    leader_config.log.durability = distlog::log::Durability::Always;
    let leader = start(leader_config).await;
    post_json(&leader.url, r#"{"a":1}"#).await;
    assert_every_family_has_help(&scrape(&leader.url).await, "leader", LOG_FAMILIES);

    let follower_dir = tempfile::tempdir().unwrap();
    let follower = start(follower_config(follower_dir.path(), &leader.url)).await;
    let fresh = scrape(&follower.url).await;
    for series in [
        "distlog_replication_errors_total",
        "distlog_replication_gaps_total",
        "distlog_replication_diverged",
    ] {
        assert_eq!(
            value_of(&fresh, series),
            Some(0.0),
            "{series} at 0 right after start:\n{fresh}"
        );
    }

    // The lag gauge is set just after the appended records show in the
    // follower's status: both are awaited, or the scrape can fall between.
    eventually(Duration::from_secs(10), "the follower to catch up", || async {
        common::status(&follower.url).await["next_offset"] == 1
            && value_of(&scrape(&follower.url).await, "distlog_replication_lag_records").is_some()
    })
    .await;
    let follower_page = scrape(&follower.url).await;
    assert_every_family_has_help(&follower_page, "follower", FOLLOWER_FAMILIES);
}

/// An open event stream shows in `distlog_sse_subscribers` and
/// `distlog_http_open_connections`, and a long poll is timed in
/// `distlog_http_wait_duration_seconds`, not the request-latency histogram.
/// Other tests share the recorder, so the gauges are read as "at least".
#[tokio::test]
async fn streams_and_long_polls_have_their_own_series() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(common::config(dir.path())).await;
    let stream = client()
        .get(format!("{}/?from=0", node.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let page = scrape(&node.url).await;
    assert!(
        value_of(&page, "distlog_sse_subscribers").unwrap_or(0.0) >= 1.0,
        "{page}"
    );
    // The stream's connection and the scrape's.
    assert!(
        value_of(&page, "distlog_http_open_connections").unwrap_or(0.0) >= 2.0,
        "{page}"
    );
    drop(stream);

    let polled = client()
        .get(format!("{}/?from=0&wait_ms=50", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(polled.status(), 200);
    let page = scrape(&node.url).await;
    let long_polls =
        r#"distlog_http_wait_duration_seconds_count{method="GET",route="/",status="200",kind="long_poll"}"#;
    assert!(value_of(&page, long_polls).unwrap_or(0.0) >= 1.0, "{page}");
    let streams =
        r#"distlog_http_wait_duration_seconds_count{method="GET",route="/",status="200",kind="event_stream"}"#;
    assert!(value_of(&page, streams).unwrap_or(0.0) >= 1.0, "{page}");
}
