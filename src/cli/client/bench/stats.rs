//! What `distlog bench` measures while it runs: acknowledged records and
//! bytes, ack latency (from each request's intended send time, so a
//! stalled server is not hidden by a client that waited for it), end-to-end
//! latency (intended send time to seen by a consumer), errors by kind; and
//! how it is shown: a progress line a second, a final table, or JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::chain::Faults;

/// Latencies are kept in µs, from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let us = (latency.as_micros() as u64).clamp(1, 600_000_000);
    histogram.saturating_record(us);
}

#[derive(Default)]
pub struct Totals {
    pub records: u64,
    pub bytes: u64,
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
}

pub struct Live {
    pub totals: Totals,
    pub ack: Histogram<u64>,
    pub end_to_end: Histogram<u64>,
    /// Since the last progress line.
    pub tick_ack: Histogram<u64>,
    pub tick_records: u64,
    pub tick_bytes: u64,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            totals: Totals::default(),
            ack: histogram(),
            end_to_end: histogram(),
            tick_ack: histogram(),
            tick_records: 0,
            tick_bytes: 0,
        }
    }
}

impl Live {
    pub fn acked(&mut self, latency: Duration, records: u64, bytes: u64) {
        record_latency(&mut self.ack, latency);
        record_latency(&mut self.tick_ack, latency);
        self.totals.records += records;
        self.totals.bytes += bytes;
        self.totals.requests += 1;
        self.tick_records += records;
        self.tick_bytes += bytes;
    }

    pub fn failed(&mut self, kind: String) {
        *self.totals.errors.entry(kind).or_default() += 1;
    }

    /// The progress line for the last `elapsed`, and a new tick.
    pub fn progress_line(&mut self, at: Duration, elapsed: Duration) -> String {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let line = format!(
            "{:>5.1}s {:>10.0} records/s {:>8.2} MiB/s  ack p50 {} p99 {}  errors {}",
            at.as_secs_f64(),
            self.tick_records as f64 / seconds,
            self.tick_bytes as f64 / seconds / 1048576.0,
            show_us(self.tick_ack.value_at_quantile(0.5)),
            show_us(self.tick_ack.value_at_quantile(0.99)),
            self.totals.errors.values().sum::<u64>()
        );
        self.tick_ack.reset();
        self.tick_records = 0;
        self.tick_bytes = 0;
        line
    }
}

pub fn show_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}ms", us as f64 / 1000.0)
    }
}

const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

fn latency_json(histogram: &Histogram<u64>) -> Value {
    let mut out = json!({ "count": histogram.len() });
    for (name, q) in QUANTILES {
        out[format!("{name}_ms")] = json!(histogram.value_at_quantile(q) as f64 / 1000.0);
    }
    out["max_ms"] = json!(histogram.max() as f64 / 1000.0);
    out
}

/// Everything the run found, for the table and for `--json`.
pub struct Report {
    pub seconds: f64,
    pub totals: Totals,
    pub ack: Histogram<u64>,
    pub end_to_end: Histogram<u64>,
    pub consumers: Vec<(u64, Faults)>,
    pub catch_up: Option<(u64, u64, f64, Faults)>,
    pub start_offset: u64,
    pub end_offset: u64,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.consumers.iter().any(|(_, f)| f.failed()) || self.catch_up.as_ref().is_some_and(|c| c.3.failed())
    }

    pub fn to_json(&self) -> Value {
        let rate = |n: u64| n as f64 / self.seconds.max(1e-9);
        json!({
            "seconds": self.seconds,
            "start_offset": self.start_offset,
            "end_offset": self.end_offset,
            "produced": {
                "records": self.totals.records,
                "bytes": self.totals.bytes,
                "requests": self.totals.requests,
                "records_per_s": rate(self.totals.records),
                "mib_per_s": rate(self.totals.bytes) / 1048576.0,
            },
            "ack_latency": latency_json(&self.ack),
            "end_to_end_latency": latency_json(&self.end_to_end),
            "errors": self.totals.errors,
            "consumers": self.consumers.iter().map(|(records, faults)| json!({"records": records, "faults": faults})).collect::<Vec<_>>(),
            "catch_up": self.catch_up.as_ref().map(|(records, bytes, seconds, faults)| json!({
                "records": records,
                "bytes": bytes,
                "seconds": seconds,
                "records_per_s": *records as f64 / seconds.max(1e-9),
                "mib_per_s": *bytes as f64 / seconds.max(1e-9) / 1048576.0,
                "faults": faults,
            })),
            "failed": self.failed(),
        })
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let rate = |n: u64| n as f64 / self.seconds.max(1e-9);
        out.push_str(&format!(
            "produced    {} records ({} requests) in {:.1}s: {:.0} records/s, {:.2} MiB/s (offsets {}..{})\n",
            self.totals.records,
            self.totals.requests,
            self.seconds,
            rate(self.totals.records),
            rate(self.totals.bytes) / 1048576.0,
            self.start_offset,
            self.end_offset
        ));
        if let Some((records, bytes, seconds, _)) = &self.catch_up {
            out.push_str(&format!(
                "catch-up    {records} records in {seconds:.2}s: {:.0} records/s, {:.2} MiB/s\n",
                *records as f64 / seconds.max(1e-9),
                *bytes as f64 / seconds.max(1e-9) / 1048576.0
            ));
        }
        out.push_str("latency       p50       p90       p99     p99.9       max\n");
        for (name, histogram) in [("ack", &self.ack), ("end-to-end", &self.end_to_end)] {
            let mut line = format!("{name:<10}");
            for (_, q) in QUANTILES {
                line.push_str(&format!("{:>10}", show_us(histogram.value_at_quantile(q))));
            }
            line.push_str(&format!("{:>10}\n", show_us(histogram.max())));
            out.push_str(&line);
        }
        if self.totals.errors.is_empty() {
            out.push_str("errors      none\n");
        }
        for (kind, count) in &self.totals.errors {
            out.push_str(&format!("errors      {kind}: {count}\n"));
        }
        let mut checks: Vec<(String, u64, Faults)> = self
            .consumers
            .iter()
            .enumerate()
            .map(|(i, (records, faults))| (format!("consumer {i}"), *records, *faults))
            .collect();
        if let Some((records, _, _, faults)) = &self.catch_up {
            checks.push(("catch-up".into(), *records, *faults));
        }
        for (who, records, f) in checks {
            out.push_str(&format!(
                "verified    {who}: {records} records, lost {}, duplicated {}, broken {}, foreign {}{}\n",
                f.lost,
                f.duplicated,
                f.broken,
                f.foreign,
                if f.failed() { "  FAILED" } else { "" }
            ));
        }
        out
    }
}
