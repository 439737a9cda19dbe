//! `distlog_http_requests_total`, `distlog_http_request_duration_seconds`
//! and `distlog_http_wait_duration_seconds`, kept here rather than in the metrics recorder: recording a request must
//! cost a few uncontended atomic adds, and the recorder's shared histogram
//! buckets made both worker threads fight over the same cache lines on every
//! request (a twentieth of a request's CPU time under load).
//!
//! Each series (method, route template, status) holds one shard per worker
//! slot; a thread only ever adds to its own shard, and a scrape sums them.
//! The output is Prometheus text format: a counter and histograms with
//! cumulative `le` buckets, `_sum` and `_count`.
//!
//! Requests that wait on purpose (a long poll, `wait_ms`; an event stream,
//! timed to its response head) are counted in `requests_total` but timed
//! in a histogram of their own, labelled `kind`: in the request-latency
//! histogram a handful of 30-second polls would hide every slow write.

use std::cell::{Cell, RefCell};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Upper bounds of the duration buckets, in seconds (`+Inf` follows).
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BUCKETS: usize = DURATION_BUCKETS.len() + 1;
/// More shards than a small server has cores; threads share shards beyond that.
const SHARDS: usize = 8;

/// One thread slot's counts, on cache lines of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    /// Requests per bucket (not cumulative; the last is `+Inf`).
    buckets: [AtomicU64; BUCKETS],
    nanos: AtomicU64,
}

/// What a request is, for the histogram that times it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Answered as soon as it can be: timed in the request-latency histogram.
    Plain,
    /// `wait_ms`: waits for records that are not there yet.
    LongPoll,
    /// `Accept: text/event-stream`: a stream, timed to its response head.
    EventStream,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::LongPoll => "long_poll",
            Kind::EventStream => "event_stream",
        }
    }
}

struct Series {
    method: &'static str,
    route: Box<str>,
    status: u16,
    kind: Kind,
    shards: [Shard; SHARDS],
}

impl Series {
    fn is(&self, method: &str, route: &str, status: u16, kind: Kind) -> bool {
        self.status == status && self.kind == kind && self.method == method && &*self.route == route
    }

    fn observe(&self, nanos: u64) {
        let seconds = nanos as f64 / 1e9;
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS - 1);
        let shard = &self.shards[shard_of_this_thread()];
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Per-bucket counts and total nanoseconds over all shards.
    fn totals(&self) -> ([u64; BUCKETS], u64) {
        let mut buckets = [0; BUCKETS];
        let mut nanos = 0;
        for shard in &self.shards {
            for (total, count) in buckets.iter_mut().zip(&shard.buckets) {
                *total += count.load(Ordering::Relaxed);
            }
            nanos += shard.nanos.load(Ordering::Relaxed);
        }
        (buckets, nanos)
    }
}

/// Every series the process has seen, in the order they appeared.
static ALL: Mutex<Vec<Arc<Series>>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's view of `ALL`. Methods, statuses and route templates
    /// are few, so a short list searched in order beats hashing.
    static SEEN: RefCell<Vec<Arc<Series>>> = const { RefCell::new(Vec::new()) };
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard_of_this_thread() -> usize {
    SHARD.with(|shard| {
        if shard.get() == usize::MAX {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            shard.set(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        shard.get()
    })
}

/// Counts one request. `method` must come from a fixed set and `route` be a
/// route template, so that clients cannot mint new series.
pub fn record(method: &'static str, route: &str, status: u16, kind: Kind, nanos: u64) {
    SEEN.with_borrow_mut(|seen| {
        let known = seen.iter().find(|s| s.is(method, route, status, kind));
        match known {
            Some(series) => series.observe(nanos),
            None => {
                let series = series_for(method, route, status, kind);
                series.observe(nanos);
                seen.push(series);
            }
        }
    });
}

/// The shared series for these labels, made on first use.
fn series_for(method: &'static str, route: &str, status: u16, kind: Kind) -> Arc<Series> {
    let mut all = ALL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(series) = all.iter().find(|s| s.is(method, route, status, kind)) {
        return series.clone();
    }
    let series = Arc::new(Series {
        method,
        route: route.into(),
        status,
        kind,
        shards: Default::default(),
    });
    all.push(series.clone());
    series
}

/// Appends the three families to `out` in Prometheus text format.
pub fn render(out: &mut String) {
    let all: Vec<Arc<Series>> = ALL.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let totals: Vec<_> = all.iter().map(|s| (s, s.totals())).collect();
    out.push_str(
        "# HELP distlog_http_requests_total HTTP requests answered (long polls and event streams included).\n",
    );
    out.push_str("# TYPE distlog_http_requests_total counter\n");
    // One line per (method, route, status): the kinds are summed.
    let mut counts: Vec<(String, u64)> = Vec::new();
    for (series, (buckets, _)) in &totals {
        let labels = labels(series);
        let count: u64 = buckets.iter().sum();
        match counts.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, total)) => *total += count,
            None => counts.push((labels, count)),
        }
    }
    for (labels, count) in counts {
        let _ = writeln!(out, "distlog_http_requests_total{{{labels}}} {count}");
    }
    out.push_str(
        "# HELP distlog_http_request_duration_seconds Time from request to response head \
         (long polls and event streams are in distlog_http_wait_duration_seconds).\n",
    );
    out.push_str("# TYPE distlog_http_request_duration_seconds histogram\n");
    for (series, (buckets, nanos)) in totals.iter().filter(|(s, _)| s.kind == Kind::Plain) {
        histogram(
            out,
            "distlog_http_request_duration_seconds",
            &labels(series),
            buckets,
            *nanos,
        );
    }
    out.push_str(
        "# HELP distlog_http_wait_duration_seconds Long polls (kind long_poll: wait_ms) from request to \
         answer, and event streams (kind event_stream) to their response head.\n",
    );
    out.push_str("# TYPE distlog_http_wait_duration_seconds histogram\n");
    for (series, (buckets, nanos)) in totals.iter().filter(|(s, _)| s.kind != Kind::Plain) {
        let labels = format!("{},kind=\"{}\"", labels(series), series.kind.label());
        histogram(out, "distlog_http_wait_duration_seconds", &labels, buckets, *nanos);
    }
}

/// One histogram series: cumulative buckets, `+Inf`, `_sum`, `_count`.
fn histogram(out: &mut String, name: &str, labels: &str, buckets: &[u64; BUCKETS], nanos: u64) {
    let mut cumulative = 0;
    for (bound, count) in DURATION_BUCKETS.iter().zip(buckets) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    cumulative += buckets[BUCKETS - 1];
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", nanos as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

fn labels(series: &Series) -> String {
    format!(
        "method=\"{}\",route=\"{}\",status=\"{}\"",
        escape(series.method),
        escape(&series.route),
        series.status
    )
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, prefix: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn requests_from_several_threads_sum_into_cumulative_buckets() {
        let route = "/test/{sums}";
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    record("GET", route, 200, Kind::Plain, 50_000); // 50 µs: first bucket
                    record("GET", route, 200, Kind::Plain, 2_000_000); // 2 ms: le 0.0025
                });
            }
        });
        record("GET", route, 200, Kind::Plain, 60_000_000_000); // a minute: only +Inf
        record("POST", route, 201, Kind::Plain, 1);
        let mut text = String::new();
        render(&mut text);
        let labels = r#"method="GET",route="/test/{sums}",status="200""#;
        assert_eq!(
            line_value(&text, &format!("distlog_http_requests_total{{{labels}}}")),
            9.0
        );
        let bucket = |le: &str| {
            line_value(
                &text,
                &format!("distlog_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.0001"), 4.0);
        assert_eq!(bucket("0.001"), 4.0);
        assert_eq!(bucket("0.0025"), 8.0);
        assert_eq!(bucket("30"), 8.0);
        assert_eq!(bucket("+Inf"), 9.0);
        let sum = line_value(&text, &format!("distlog_http_request_duration_seconds_sum{{{labels}}}"));
        assert!((sum - 60.0082).abs() < 1e-9, "sum {sum}");
        assert!(text.contains(r#"distlog_http_requests_total{method="POST",route="/test/{sums}",status="201"} 1"#));
    }

    #[test]
    fn long_polls_and_streams_are_counted_but_timed_apart() {
        let route = "/test/{waits}";
        record("GET", route, 200, Kind::Plain, 1_000);
        record("GET", route, 200, Kind::LongPoll, 20_000_000_000);
        record("GET", route, 200, Kind::EventStream, 1_000_000);
        let mut text = String::new();
        render(&mut text);
        let labels = r#"method="GET",route="/test/{waits}",status="200""#;
        assert_eq!(
            line_value(&text, &format!("distlog_http_requests_total{{{labels}}}")),
            3.0
        );
        let plain = format!("distlog_http_request_duration_seconds_count{{{labels}}}");
        assert_eq!(line_value(&text, &plain), 1.0);
        let waited = |kind: &str| {
            line_value(
                &text,
                &format!("distlog_http_wait_duration_seconds_sum{{{labels},kind=\"{kind}\"}}"),
            )
        };
        assert_eq!(waited("long_poll"), 20.0);
        assert_eq!(waited("event_stream"), 0.001);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
