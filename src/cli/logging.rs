//! Where the node's log lines go, and at which level.

use super::LogFormat;

/// openraft at the default level: warnings and errors only (its INFO lines
/// are its internals: every vote, a 2 KB state dump at start). Below that,
/// targets whose warnings are per RPC or per entry are at error only:
/// - `responder`: "the client is gone", a line per entry of a batch whenever
///   a client went away before its write was answered;
/// - `heartbeat`, `replication`, `replication_handler`, `raft_core`: a failed
///   heartbeat, append, progress update or vote, each time (ten lines a
///   second with one peer down; openraft's "follower log is reverted", a
///   follower that lost entries, stays at warn). Peers going
///   down and coming back are logged once each by `cluster::peer_health`,
///   leader changes by `cluster::metrics`.
const OPENRAFT: &str = "openraft=warn,openraft::raft::responder=error,openraft::core::heartbeat=error,\
                        openraft::replication=error,openraft::engine::handler::replication_handler=error,\
                        openraft::core::raft_core=error";

/// Log lines go to stdout from a background thread, so that a request
/// never waits on the terminal or pipe. The returned guard flushes what is
/// queued when dropped: keep it until the end of `main`.
///
/// Without RUST_LOG: `info`, but the per-request access log
/// (`distlog::access`) only with `--access-log`; at a line per request it
/// cost a tenth to a quarter of the throughput even written in the
/// background. openraft logs state changes, not events (see `OPENRAFT`).
/// With `--otlp-endpoint`, spans are exported too (see `crate::telemetry`).
pub fn init_tracing(
    format: LogFormat,
    access_log: bool,
    telemetry: Option<&crate::telemetry::Telemetry>,
) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let access = if access_log { "info" } else { "off" };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("info,{}={access},{OPENRAFT}", crate::api::ACCESS_LOG))
    });
    if access_log && let Ok(directive) = format!("{}=info", crate::api::ACCESS_LOG).parse() {
        filter = filter.add_directive(directive);
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // Not lossy: a full queue (128k lines) makes the logger wait rather than
    // drop lines, as logging did before it moved to the background.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("distlog-log")
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.finish().with(telemetry.map(|t| t.layer())).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(telemetry.map(|t| t.layer()))
            .init(),
    }
    if let Some(telemetry) = telemetry {
        let url = telemetry.traces_url();
        tracing::info!("exporting traces over OTLP/HTTP to {url}");
    }
    guard
}
