//! The process's own series, in the names every Prometheus client library
//! uses (`process_*`, so stock dashboards and alerts work), read from
//! `/proc/self` at each scrape, and `distlog_build_info`. On a system
//! without `/proc` the `process_*` families are left out.
//!
//! - `/proc/self/stat`: fields 14-15 (utime, stime, in clock ticks), 22
//!   (starttime, ticks after boot), 23 (vsize, bytes), 24 (rss, pages);
//! - `/proc/stat`: `btime` (boot time, seconds since the epoch);
//! - `/proc/self/fd`: one entry per open descriptor;
//! - `/proc/self/limits`: the "Max open files" soft limit.

use std::fmt::Write;

/// The commit the binary was built from (`build.rs`), or "unknown".
const REVISION: &str = env!("DISTLOG_REVISION");

/// Appends the process families and `distlog_build_info` to `out`.
pub fn render(out: &mut String) {
    build_info(out);
    if let Some(process) = ProcessStats::read() {
        process.render(out);
    }
}

fn build_info(out: &mut String) {
    let version = env!("CARGO_PKG_VERSION");
    out.push_str("# HELP distlog_build_info The version and commit this binary was built from; always 1.\n");
    out.push_str("# TYPE distlog_build_info gauge\n");
    let _ = writeln!(
        out,
        "distlog_build_info{{version=\"{version}\",revision=\"{REVISION}\"}} 1"
    );
}

struct ProcessStats {
    cpu_seconds: f64,
    start_time_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields = StatFields::parse(&stat)?;
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time(&s))?;
        // SAFETY: sysconf reads a constant; it has no preconditions.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        let ticks = ticks as f64;
        Some(ProcessStats {
            cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
            start_time_seconds: boot as f64 + fields.starttime as f64 / ticks,
            virtual_bytes: fields.vsize,
            resident_bytes: fields.rss_pages.saturating_mul(page as u64),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|s| max_open_files(&s)),
        })
    }

    fn render(&self, out: &mut String) {
        let mut family = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        };
        family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            self.cpu_seconds,
        );
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            self.start_time_seconds,
        );
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes (the log's segments are memory-mapped and count here).",
            self.virtual_bytes as f64,
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes (mapped segment pages in the page cache included).",
            self.resident_bytes as f64,
        );
        if let Some(open) = self.open_fds {
            family("process_open_fds", "gauge", "Open file descriptors.", open as f64);
        }
        if let Some(max) = self.max_fds {
            family(
                "process_max_fds",
                "gauge",
                "The soft limit on open file descriptors.",
                max as f64,
            );
        }
    }
}

struct StatFields {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

impl StatFields {
    /// The command name (field 2) is in parentheses and may hold spaces
    /// and parentheses itself: fields are counted from the last `)`.
    fn parse(stat: &str) -> Option<StatFields> {
        let after_name = &stat[stat.rfind(')')? + 1..];
        // after_name's first field is field 3 (state).
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(StatFields {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "1234 (dist (log) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 1000 123456789 300 rest";
        let fields = StatFields::parse(stat).unwrap();
        assert_eq!((fields.utime, fields.stime), (250, 50));
        assert_eq!(fields.starttime, 1000);
        assert_eq!(fields.vsize, 123456789);
        assert_eq!(fields.rss_pages, 300);
        assert!(StatFields::parse("1234 (short) S 1 2").is_none());
    }

    #[test]
    fn boot_time_and_the_open_files_limit_are_found() {
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn this_process_reports_itself() {
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains("distlog_build_info{version=\""), "{out}");
        if std::path::Path::new("/proc/self/stat").exists() {
            for family in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
            ] {
                assert!(out.contains(&format!("\n{family} ")), "{family} missing:\n{out}");
            }
            let start = out
                .lines()
                .find_map(|l| l.strip_prefix("process_start_time_seconds "))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(start <= now + 1.0 && start > now - 86_400.0, "start {start}, now {now}");
        }
    }
}
