//! The `distlog` binary: parses the command line and starts things.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use distlog::api::{AllowedOrigins, Limits};
use distlog::auth::{SecurityConfig, TlsFiles};
use distlog::log::{
    Durability, FRAME_HEADER, LogConfig, LogError, MAX_RECORD_CEILING, MIB, default_max_record_bytes, record_ceiling,
};
use distlog::replication::FollowConfig;
use distlog::server::{ClusterSettings, HttpConfig, Server, ServerConfig, ServerError};

#[derive(Parser)]
#[command(
    name = "distlog",
    version,
    about = "An append-only, totally ordered log of records served as JSON over HTTP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the log service (every flag can also be set as DISTLOG_<FLAG>).
    Serve(Box<ServeArgs>),
    /// Exit 0 if the node answers 200 on /readyz (ready: serving, and in a cluster a leader is
    /// known), else 1 saying why on stderr. For container health checks: needs no shell or curl.
    Healthcheck(HealthcheckArgs),
}

#[derive(Args)]
struct HealthcheckArgs {
    /// The node's base URL (http only) [default: http://<DISTLOG_LISTEN>, with 0.0.0.0 or [::] as
    /// the loopback address, else http://127.0.0.1:8080].
    #[arg(long, env = "DISTLOG_HEALTHCHECK_URL", value_name = "URL")]
    url: Option<String>,

    /// Milliseconds to wait for the answer.
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    timeout_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Fsync {
    /// Answer an append only once it is on disk (concurrent appends share a sync).
    Always,
    /// Sync in the background every --fsync-interval-ms.
    Interval,
    /// Leave syncing to the OS: survives a crashed process, not a power cut.
    Never,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ServeArgs {
    /// Directory of the log's segment files; created if missing, locked while serving.
    #[arg(
        long,
        env = "DISTLOG_DATA_DIR",
        value_name = "PATH",
        default_value = "./distlog-data"
    )]
    data_dir: PathBuf,

    /// Address and port to listen on.
    #[arg(long, env = "DISTLOG_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Size in bytes at which a segment's store file rolls over to a new segment. The store is
    /// allocated a few MiB at a time as it fills. At startup a new log's first segment and its
    /// index at full size must fit in the free space of the data directory's filesystem, and for a
    /// directory that already holds a log in the filesystem's size, or startup is refused; an
    /// existing log on a disk too full for the newest segment to reach this size starts with a
    /// warning.
    #[arg(long, env = "DISTLOG_MAX_SEGMENT_BYTES", value_name = "BYTES", default_value_t = 256 * MIB)]
    max_segment_bytes: u64,

    /// Largest size in bytes of a segment's memory-mapped index (12 bytes a record); full means roll.
    /// An index is only as large as its segment can need (one entry per 27 bytes of segment), and a
    /// sealed one is cut to its entries.
    #[arg(long, env = "DISTLOG_MAX_INDEX_BYTES", value_name = "BYTES", default_value_t = 12 * MIB)]
    max_index_bytes: u64,

    /// Largest record value in bytes [default: the largest a segment holds, --max-segment-bytes
    /// less a 27-byte frame header, but at most 1048576]. Must not be more than that.
    #[arg(long, env = "DISTLOG_MAX_RECORD_BYTES", value_name = "BYTES")]
    max_record_bytes: Option<u64>,

    /// Delete the oldest segments while the log is larger than this many bytes [default: keep all].
    #[arg(long, env = "DISTLOG_RETENTION_BYTES", value_name = "BYTES")]
    retention_bytes: Option<u64>,

    /// Delete segments whose newest record is older than this many milliseconds [default: keep all].
    #[arg(long, env = "DISTLOG_RETENTION_MS", value_name = "MS")]
    retention_ms: Option<u64>,

    /// When appends reach the disk. In a cluster, with interval or never a node tells the leader it
    /// holds entries before they are on disk (Redpanda's "write caching"): faster, but a power cut on a
    /// majority of nodes can lose acknowledged records.
    #[arg(long, env = "DISTLOG_FSYNC", value_enum, default_value = "always")]
    fsync: Fsync,

    /// Milliseconds between background syncs with --fsync interval.
    #[arg(long, env = "DISTLOG_FSYNC_INTERVAL_MS", value_name = "MS", default_value_t = 100)]
    fsync_interval_ms: u64,

    /// Format of the log lines written to stdout (level set by RUST_LOG, default info without the access log).
    #[arg(long, env = "DISTLOG_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,

    /// Log one line per request (target distlog::access; also on with RUST_LOG=distlog::access=info).
    #[arg(long, env = "DISTLOG_ACCESS_LOG")]
    access_log: bool,

    /// Run as a read-only replica of the leader at this URL (e.g. http://leader:8080).
    #[arg(long, env = "DISTLOG_FOLLOW", value_name = "URL")]
    follow: Option<String>,

    /// With --follow: discard the local log at start and copy the leader's anew.
    #[arg(long, env = "DISTLOG_FOLLOW_RESET", requires = "follow")]
    follow_reset: bool,

    /// Largest request body in bytes (any body: an NDJSON batch, a JSON document, raw bytes).
    #[arg(long, env = "DISTLOG_MAX_REQUEST_BYTES", value_name = "BYTES", default_value_t = 16 * MIB)]
    max_request_bytes: u64,

    /// Serve HTTPS only, with this PEM certificate chain (reloaded on SIGHUP).
    #[arg(long, env = "DISTLOG_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key (RSA, ECDSA or Ed25519) of --tls-cert.
    #[arg(long, env = "DISTLOG_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Require client certificates signed by this PEM CA (mutual TLS); the principal is the subject CN.
    #[arg(long, env = "DISTLOG_TLS_CLIENT_CA", value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// Accept `Authorization: Bearer` tokens from this file of `<principal> <token>` lines (tokens of 32+ characters).
    #[arg(long, env = "DISTLOG_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Authorize with this policy of `<principal> <action>` lines (actions produce, consume, cluster, admin; `*` = anyone).
    #[arg(long, env = "DISTLOG_ACL", value_name = "FILE")]
    acl: Option<PathBuf>,

    /// Require the admin action for /metrics, /healthz and /readyz too.
    #[arg(long, env = "DISTLOG_PROTECT_METRICS")]
    protect_metrics: bool,

    /// With an https:// --follow URL: PEM CA certificates that sign the leader's certificate.
    #[arg(long, env = "DISTLOG_FOLLOW_CA", value_name = "FILE", requires = "follow")]
    follow_ca: Option<PathBuf>,

    /// Client certificate (PEM) this follower shows a leader that requires mutual TLS.
    #[arg(long, env = "DISTLOG_FOLLOW_CERT", value_name = "FILE", requires_all = ["follow", "follow_key"])]
    follow_cert: Option<PathBuf>,

    /// The PEM key of --follow-cert.
    #[arg(long, env = "DISTLOG_FOLLOW_KEY", value_name = "FILE", requires = "follow_cert")]
    follow_key: Option<PathBuf>,

    /// File holding the bearer token this follower sends its leader (or set DISTLOG_FOLLOW_TOKEN).
    #[arg(long, env = "DISTLOG_FOLLOW_TOKEN_FILE", value_name = "FILE", requires = "follow")]
    follow_token_file: Option<PathBuf>,

    /// A web origin (scheme://host[:port]) whose pages may write and read answers (CORS); repeat for more [default: none].
    #[arg(long, env = "DISTLOG_CORS_ORIGIN", value_name = "ORIGIN", value_delimiter = ',')]
    cors_origin: Vec<String>,

    /// Milliseconds in-flight requests get to finish on SIGINT/SIGTERM.
    #[arg(long, env = "DISTLOG_SHUTDOWN_GRACE_MS", value_name = "MS", default_value_t = 10_000)]
    shutdown_grace_ms: u64,

    /// Milliseconds a client has to send a whole request head (and TLS handshake) from its first byte,
    /// or from connecting; then its connection is closed.
    #[arg(long, env = "DISTLOG_HEADER_TIMEOUT_MS", value_name = "MS", default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_ms: u64,

    /// Milliseconds a keep-alive connection with no request in flight stays open.
    #[arg(long, env = "DISTLOG_IDLE_TIMEOUT_MS", value_name = "MS", default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_ms: u64,

    /// Milliseconds a request body may send nothing before it is answered 408 and its connection closed.
    #[arg(long, env = "DISTLOG_BODY_TIMEOUT_MS", value_name = "MS", default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_ms: u64,

    /// Milliseconds an answer's bytes may wait with the client reading none of them before its connection is closed.
    #[arg(long, env = "DISTLOG_SEND_TIMEOUT_MS", value_name = "MS", default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    send_timeout_ms: u64,

    /// Run as a Raft cluster node with these seeds: every node's advertise URL, the same list on every
    /// node (comma-separated). The lowest seed forms the cluster once every seed answers; a node
    /// outside it joins through any seed. Without it the node is standalone.
    #[arg(
        long,
        env = "DISTLOG_PEERS",
        value_name = "URL,...",
        value_delimiter = ',',
        conflicts_with = "follow"
    )]
    peers: Vec<String>,

    /// The URL peers and clients reach this node at [default: http(s)://<--listen address>].
    #[arg(long, env = "DISTLOG_ADVERTISE_URL", value_name = "URL")]
    advertise_url: Option<String>,

    /// Milliseconds between a cluster leader's heartbeats to its followers.
    #[arg(long, env = "DISTLOG_HEARTBEAT_MS", value_name = "MS", default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_ms: u64,

    /// A cluster follower that hears no leader calls an election once the leader's lease
    /// (--election-timeout-max-ms) and then a random wait between this and the max have passed, so
    /// a dead leader is replaced after max + [min, max] ms.
    #[arg(long, env = "DISTLOG_ELECTION_TIMEOUT_MIN_MS", value_name = "MS", default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..))]
    election_timeout_min_ms: u64,

    /// Most milliseconds of the random wait before an election, and the length of a leader's lease
    /// (no follower votes for another node until it has heard no leader for this long).
    #[arg(long, env = "DISTLOG_ELECTION_TIMEOUT_MAX_MS", value_name = "MS", default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..))]
    election_timeout_max_ms: u64,

    /// PEM CA certificates that sign https:// peers' certificates.
    #[arg(long, env = "DISTLOG_PEER_CA", value_name = "FILE")]
    peer_ca: Option<PathBuf>,

    /// Client certificate (PEM) this node shows peers that require mutual TLS.
    #[arg(long, env = "DISTLOG_PEER_CERT", value_name = "FILE", requires = "peer_key")]
    peer_cert: Option<PathBuf>,

    /// The PEM key of --peer-cert.
    #[arg(long, env = "DISTLOG_PEER_KEY", value_name = "FILE", requires = "peer_cert")]
    peer_key: Option<PathBuf>,

    /// File holding the bearer token this node sends its peers (or set DISTLOG_PEER_TOKEN).
    #[arg(long, env = "DISTLOG_PEER_TOKEN_FILE", value_name = "FILE")]
    peer_token_file: Option<PathBuf>,

    /// Testing: reach the peer advertised as FROM at TO instead (FROM=TO; repeatable).
    #[arg(long, value_name = "FROM=TO", hide = true)]
    peer_route: Vec<String>,

    /// Export traces over OTLP/HTTP to the collector at this base URL (spans go to URL/v1/traces) [default: off].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// Connections served at once; more are answered 503 (lowered to what the open-files limit allows).
    #[arg(long, env = "DISTLOG_MAX_CONNECTIONS", value_name = "N", default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
}

impl ServeArgs {
    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let durability = match self.fsync {
            Fsync::Always => Durability::Always,
            Fsync::Interval => Durability::Interval(Duration::from_millis(self.fsync_interval_ms)),
            Fsync::Never => Durability::Never,
        };
        let log = LogConfig {
            max_segment_bytes: self.max_segment_bytes,
            max_index_bytes: self.max_index_bytes,
            max_record_bytes: self.max_record_bytes(),
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            durability,
        };
        log.validate().map_err(|e| self.flag_error(e))?;
        if let Some(url) = &self.follow
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            anyhow::bail!("invalid --follow {url:?}: must be an http:// or https:// URL");
        }
        if self.max_request_bytes == 0 {
            anyhow::bail!("invalid --max-request-bytes 0: must be at least 1 (it caps every request body)");
        }
        let limits = Limits {
            max_request_bytes: self.max_request_bytes,
            ..Limits::default()
        };
        let cors_origins = AllowedOrigins::parse(&self.cors_origin)
            .map_err(|e| anyhow::anyhow!("invalid --cors-origin {:?}: {}", e.origin, e.reason))?;
        Ok(ServerConfig {
            security: self.security(),
            listen: self.listen,
            log,
            limits,
            follow: match &self.follow {
                Some(leader) => Some(FollowConfig {
                    reset: self.follow_reset,
                    // The leader most likely runs with its followers' limits:
                    // its batches fit in what this node would accept.
                    max_unfinished_batch_bytes: FollowConfig::new(leader)
                        .max_unfinished_batch_bytes
                        .max(self.max_request_bytes.saturating_mul(2)),
                    ca: self.follow_ca.clone(),
                    identity: self.follow_cert.clone().zip(self.follow_key.clone()),
                    token: self.follow_token()?,
                    ..FollowConfig::new(leader)
                }),
                None => None,
            },
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            http: HttpConfig {
                header_timeout: Duration::from_millis(self.header_timeout_ms),
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
                body_timeout: Duration::from_millis(self.body_timeout_ms),
                send_timeout: Duration::from_millis(self.send_timeout_ms),
                max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            },
            cors_origins,
            cluster: self.cluster()?,
            ..ServerConfig::new(&self.data_dir)
        })
    }

    fn cluster(&self) -> anyhow::Result<Option<ClusterSettings>> {
        if self.peers.is_empty() {
            return Ok(None);
        }
        let url = |flag: &str, url: &str| -> anyhow::Result<String> {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!("invalid {flag} {url:?}: must be an http:// or https:// URL");
            }
            Ok(url.trim_end_matches('/').to_string())
        };
        let peers = self
            .peers
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| url("--peers", p.trim()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let advertise_url = self
            .advertise_url
            .as_deref()
            .map(|u| url("--advertise-url", u))
            .transpose()?;
        if advertise_url.is_none() && self.listen.ip().is_unspecified() {
            anyhow::bail!(
                "--peers with --listen {} needs --advertise-url: peers cannot reach an unspecified address",
                self.listen
            );
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            anyhow::bail!(
                "invalid --election-timeout-min-ms {}: must be less than --election-timeout-max-ms {}",
                self.election_timeout_min_ms,
                self.election_timeout_max_ms
            );
        }
        if self.heartbeat_ms >= self.election_timeout_min_ms {
            anyhow::bail!(
                "invalid --heartbeat-ms {}: must be less than --election-timeout-min-ms {}",
                self.heartbeat_ms,
                self.election_timeout_min_ms
            );
        }
        let mut routes = std::collections::HashMap::new();
        for route in &self.peer_route {
            let (from, to) = route
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("invalid --peer-route {route:?}: expected FROM=TO"))?;
            routes.insert(url("--peer-route", from)?, url("--peer-route", to)?);
        }
        let token = match &self.peer_token_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("invalid --peer-token-file: cannot read {}", file.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("DISTLOG_PEER_TOKEN").ok().filter(|t| !t.is_empty()),
        };
        Ok(Some(ClusterSettings {
            peers,
            advertise_url,
            routes,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            election_timeout: (
                Duration::from_millis(self.election_timeout_min_ms),
                Duration::from_millis(self.election_timeout_max_ms),
            ),
            peer_client: FollowConfig {
                ca: self.peer_ca.clone(),
                identity: self.peer_cert.clone().zip(self.peer_key.clone()),
                token,
                ..FollowConfig::new("")
            },
        }))
    }
}

impl ServeArgs {
    /// `--max-record-bytes`, or what `--max-segment-bytes` holds when it is
    /// not given.
    fn max_record_bytes(&self) -> u64 {
        self.max_record_bytes
            .unwrap_or_else(|| default_max_record_bytes(self.max_segment_bytes))
    }

    /// A config error in flag names. A given `--max-record-bytes` that does
    /// not fit a segment names both flags: either may be the one to change.
    fn flag_error(&self, error: LogError) -> anyhow::Error {
        let segment = self.max_segment_bytes;
        match (&error, self.max_record_bytes) {
            (
                LogError::Config {
                    key: "max_record_bytes",
                    ..
                },
                Some(record),
            ) if record > record_ceiling(segment) && record_ceiling(segment) < MAX_RECORD_CEILING => {
                anyhow::anyhow!(
                    "invalid --max-record-bytes {record} with --max-segment-bytes {segment}: a record and its \
                     {FRAME_HEADER}-byte frame header must fit in one segment, so --max-record-bytes may be at \
                     most {} (or --max-segment-bytes must be at least {})",
                    record_ceiling(segment),
                    record.saturating_add(FRAME_HEADER as u64)
                )
            }
            _ => name_the_flag(error),
        }
    }

    fn security(&self) -> SecurityConfig {
        SecurityConfig {
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| TlsFiles {
                    cert,
                    key,
                    client_ca: self.tls_client_ca.clone(),
                }),
            token_file: self.token_file.clone(),
            acl_file: self.acl.clone(),
            protect_metrics: self.protect_metrics,
        }
    }

    fn follow_token(&self) -> anyhow::Result<Option<String>> {
        if let Some(file) = &self.follow_token_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("invalid --follow-token-file: cannot read {}", file.display()))?;
            return Ok(Some(text.trim().to_string()));
        }
        Ok(std::env::var("DISTLOG_FOLLOW_TOKEN").ok().filter(|t| !t.is_empty()))
    }
}

/// Config errors name keys; on the command line they are flags.
fn name_the_flag(error: LogError) -> anyhow::Error {
    match error {
        LogError::Config { key, allowed, value } => {
            anyhow::anyhow!("invalid --{} {value}: must be {allowed}", key.replace('_', "-"))
        }
        other => other.into(),
    }
}

/// Log lines go to stdout from a background thread, so that a request
/// never waits on the terminal or pipe. The returned guard flushes what is
/// queued when dropped: keep it until the end of `main`.
///
/// Without RUST_LOG: `info`, but the per-request access log
/// (`distlog::access`) only with `--access-log`; at a line per request it
/// cost a tenth to a quarter of the throughput even written in the
/// background.
/// With `--otlp-endpoint`, spans are exported too (see `distlog::telemetry`).
fn init_tracing(
    format: LogFormat,
    access_log: bool,
    telemetry: Option<&distlog::telemetry::Telemetry>,
) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let access = if access_log { "info" } else { "off" };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{}={access}", distlog::api::ACCESS_LOG)));
    if access_log && let Ok(directive) = format!("{}=info", distlog::api::ACCESS_LOG).parse() {
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
    guard
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the server");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.server_config()?;
    let server = match Server::start(config).await {
        Ok(server) => server,
        // A setting the data directory cannot take (a segment larger than
        // the free space) is a flag to change.
        Err(ServerError::Log(error @ LogError::Config { .. })) => return Err(name_the_flag(error)),
        Err(error) => return Err(error).with_context(|| format!("cannot start distlog on {}", args.listen)),
    };
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangups.recv() => {
                tracing::info!("SIGHUP: reloading TLS certificates");
                if let Err(e) = server.reload_tls() {
                    tracing::error!(error = %e, "reload failed; the previous certificate stays in use");
                }
            }
        }
    }
    server.shutdown().await?;
    Ok(())
}

/// `distlog healthcheck`: GET /readyz; 200 is healthy, anything else (or no answer) is not.
fn healthcheck(args: HealthcheckArgs) -> std::process::ExitCode {
    let base = args.url.unwrap_or_else(|| {
        let listen = std::env::var("DISTLOG_LISTEN")
            .ok()
            .and_then(|l| l.parse::<SocketAddr>().ok());
        let mut addr = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    });
    let url = format!("{}/readyz", base.trim_end_matches('/').trim_end_matches("/readyz"));
    let timeout = Duration::from_millis(args.timeout_ms);
    let check = async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let response = client.get(&url).send().await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::Ok((status, body))
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(check));
    match result {
        Ok((status, _)) if status == reqwest::StatusCode::OK => std::process::ExitCode::SUCCESS,
        Ok((status, body)) => {
            eprintln!("distlog healthcheck: {url} answered {status}: {}", body.trim());
            std::process::ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("distlog healthcheck: {url}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Healthcheck(args) => Ok(healthcheck(args)),
        Command::Serve(args) => {
            let instance = args.advertise_url.clone().unwrap_or_else(|| args.listen.to_string());
            let telemetry = distlog::telemetry::Telemetry::start(args.otlp_endpoint.as_deref(), &instance)?;
            let _flush_logs_on_exit = init_tracing(args.log_format, args.access_log, telemetry.as_ref());
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(*args))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// mimalloc: the server allocates and frees small buffers on every request,
/// and glibc's malloc showed up as a tenth of its CPU time under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
