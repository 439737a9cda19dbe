//! The follower's metrics: their names, HELP texts, and the series that
//! exist from the start.

/// The follower's metrics.
pub(super) mod metric {
    pub const ERRORS: &str = "distlog_replication_errors_total";
    pub const GAPS: &str = "distlog_replication_gaps_total";
    pub const DIVERGED: &str = "distlog_replication_diverged";
    pub const RECORDS: &str = "distlog_replication_records_total";
    pub const LAG: &str = "distlog_replication_lag_records";
}

/// HELP text for the follower's metrics.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        metric::ERRORS,
        "Replication attempts that failed (each is retried with backoff, except divergence)."
    );
    describe_counter!(
        metric::GAPS,
        "Times the leader had deleted records this follower never copied, and the local log restarted at the leader's lowest offset."
    );
    describe_gauge!(
        metric::DIVERGED,
        "1 once this follower's log is found not to be a prefix of the leader's (replication stops until --follow-reset), else 0."
    );
    describe_counter!(metric::RECORDS, "Records copied from the leader.");
    describe_gauge!(metric::LAG, "Records this follower is behind the leader, as last seen.");
}

/// The failure and progress series exist from the start, at 0, so that alerts and
/// rates on them work before the first failure.
pub(super) fn export_series_at_zero() {
    metrics::counter!(metric::ERRORS).increment(0);
    metrics::counter!(metric::GAPS).increment(0);
    metrics::counter!(metric::RECORDS).increment(0);
    metrics::gauge!(metric::DIVERGED).increment(0.0);
}
