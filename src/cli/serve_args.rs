//! The flags of `distlog serve`, each also a `DISTLOG_*` environment
//! variable, with their units and defaults in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::units;

#[derive(Clone, Copy, ValueEnum)]
pub enum Fsync {
    /// Answer an append only once it is on disk (concurrent appends share a sync).
    Always,
    /// Sync in the background every --fsync-interval-ms.
    Interval,
    /// Leave syncing to the OS: survives a crashed process, not a power cut.
    Never,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Directory of the log's segment files; created if missing, locked while serving.
    #[arg(
        long,
        env = "DISTLOG_DATA_DIR",
        value_name = "PATH",
        default_value = "./distlog-data",
        help_heading = "Storage"
    )]
    pub(super) data_dir: PathBuf,

    /// Address and port to listen on: IP:PORT, HOST:PORT (localhost:8080) or :PORT (every IPv4 address).
    #[arg(long, env = "DISTLOG_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = units::listen, help_heading = "HTTP")]
    pub(super) listen: SocketAddr,

    /// Size at which a segment's store file rolls over to a new segment. The store is
    /// allocated a few MiB at a time as it fills. At startup a new log's first segment and its
    /// index at full size must fit in the free space of the data directory's filesystem, and for a
    /// directory that already holds a log in the filesystem's size, or startup is refused; an
    /// existing log on a disk too full for the newest segment to reach this size starts with a
    /// warning.
    #[arg(long, env = "DISTLOG_MAX_SEGMENT_BYTES", value_name = "SIZE", default_value = "256MiB", value_parser = units::bytes, help_heading = "Storage")]
    pub(super) max_segment_bytes: u64,

    /// Largest size of a segment's memory-mapped index (12 bytes a record); full means roll.
    /// An index is only as large as its segment can need (one entry per 27 bytes of segment), and a
    /// sealed one is cut to its entries.
    #[arg(long, env = "DISTLOG_MAX_INDEX_BYTES", value_name = "SIZE", default_value = "12MiB", value_parser = units::bytes, help_heading = "Storage")]
    pub(super) max_index_bytes: u64,

    /// Largest record value [default: the largest a segment holds, --max-segment-bytes
    /// less a 27-byte frame header, but at most 1048576]. Must not be more than that.
    #[arg(long, env = "DISTLOG_MAX_RECORD_BYTES", value_name = "SIZE", value_parser = units::bytes, help_heading = "Storage")]
    pub(super) max_record_bytes: Option<u64>,

    /// Delete the oldest segments while the log is larger than this [default: keep all].
    #[arg(long, env = "DISTLOG_RETENTION_BYTES", value_name = "SIZE", value_parser = units::bytes, help_heading = "Storage")]
    pub(super) retention_bytes: Option<u64>,

    /// Delete segments whose newest record is older than this (e.g. 7d) [default: keep all].
    #[arg(long, env = "DISTLOG_RETENTION_MS", value_name = "DURATION", value_parser = units::millis, help_heading = "Storage")]
    pub(super) retention_ms: Option<u64>,

    /// When appends reach the disk. In a cluster, with interval or never a node tells the leader it
    /// holds entries before they are on disk (Redpanda's "write caching"): faster, but acknowledged
    /// records can be lost by a power cut on one node together with any one other failure (another
    /// node's crash or disk, or the same power cut), not only on a majority.
    #[arg(
        long,
        env = "DISTLOG_FSYNC",
        value_enum,
        default_value = "always",
        help_heading = "Storage"
    )]
    pub(super) fsync: Fsync,

    /// Forget an idempotent producer this long after its last append (its
    /// very late retries are then appended again). The same on every member.
    #[arg(long, env = "DISTLOG_PRODUCER_TTL_MS", value_name = "DURATION", default_value = "7d", value_parser = units::millis_in(1, u64::MAX / 2), help_heading = "Storage")]
    pub(super) producer_ttl_ms: u64,

    /// Idempotent producers remembered at most (the least recently used are
    /// forgotten first). The same on every member. At most 200000: a
    /// cluster's tables, which hold them, are read back only up to 64 MiB.
    #[arg(long, env = "DISTLOG_MAX_PRODUCERS", value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=200_000), help_heading = "Storage")]
    pub(super) max_producers: u64,

    /// Time between background syncs with --fsync interval.
    #[arg(long, env = "DISTLOG_FSYNC_INTERVAL_MS", value_name = "DURATION", default_value = "100ms", value_parser = units::millis, help_heading = "Storage")]
    pub(super) fsync_interval_ms: u64,

    /// Largest request body (any body: an NDJSON batch, a JSON document, raw bytes).
    #[arg(long, env = "DISTLOG_MAX_REQUEST_BYTES", value_name = "SIZE", default_value = "16MiB", value_parser = units::bytes, help_heading = "HTTP")]
    pub(super) max_request_bytes: u64,

    /// Named consumers whose positions are kept (`PUT /consumers/{name}`); a new name past it is refused (409).
    #[arg(long, env = "DISTLOG_MAX_CONSUMERS", value_name = "COUNT", default_value_t = crate::log::consumers::DEFAULT_MAX_CONSUMERS, help_heading = "HTTP")]
    pub(super) max_consumers: usize,

    /// Named logs this node holds at most (`PUT /logs/{name}`); a new one past it is refused (409 too_many_logs).
    #[arg(long, env = "DISTLOG_MAX_LOGS", value_name = "COUNT", default_value_t = crate::logs::DEFAULT_MAX_LOGS as u64, value_parser = clap::value_parser!(u64).range(1..=100_000), help_heading = "Named logs")]
    pub(super) max_logs: u64,

    /// An append to a named log that does not exist creates it with default settings (reads still answer 404).
    #[arg(long, env = "DISTLOG_AUTO_CREATE_LOGS", help_heading = "Named logs")]
    pub(super) auto_create_logs: bool,

    /// Serve HTTPS only, with this PEM certificate chain (reloaded on SIGHUP).
    #[arg(
        long,
        env = "DISTLOG_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        help_heading = "Security"
    )]
    pub(super) tls_cert: Option<PathBuf>,

    /// The PEM private key (RSA, ECDSA or Ed25519) of --tls-cert.
    #[arg(
        long,
        env = "DISTLOG_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    pub(super) tls_key: Option<PathBuf>,

    /// Require client certificates signed by this PEM CA (mutual TLS); the principal is the subject CN.
    #[arg(
        long,
        env = "DISTLOG_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    pub(super) tls_client_ca: Option<PathBuf>,

    /// Accept `Authorization: Bearer` tokens from this file of `<principal> <token>` lines (tokens of 32+ characters).
    #[arg(long, env = "DISTLOG_TOKEN_FILE", value_name = "FILE", help_heading = "Security")]
    pub(super) token_file: Option<PathBuf>,

    /// Authorize with this policy of `<principal> <action>` lines (actions produce, consume, manage, cluster, admin, produce/consume/manage scoped as `produce:orders` or `consume:audit-*`; `*` = anyone).
    #[arg(long, env = "DISTLOG_ACL", value_name = "FILE", help_heading = "Security")]
    pub(super) acl: Option<PathBuf>,

    /// Require the admin action for /metrics, /healthz and /readyz too.
    #[arg(long, env = "DISTLOG_PROTECT_METRICS", help_heading = "Security")]
    pub(super) protect_metrics: bool,

    /// Run as a read-only replica of the leader at this URL (e.g. http://leader:8080).
    #[arg(long, env = "DISTLOG_FOLLOW", value_name = "URL", help_heading = "Replica")]
    pub(super) follow: Option<String>,

    /// With --follow: copy this named log of the leader's (its /logs/NAME/ routes) rather than its default log.
    #[arg(
        long,
        env = "DISTLOG_FOLLOW_LOG",
        value_name = "NAME",
        requires = "follow",
        help_heading = "Replica"
    )]
    pub(super) follow_log: Option<String>,

    /// With --follow: discard the local log at start and copy the leader's anew.
    #[arg(long, env = "DISTLOG_FOLLOW_RESET", requires = "follow", help_heading = "Replica")]
    pub(super) follow_reset: bool,

    /// With an https:// --follow URL: PEM CA certificates that sign the leader's certificate.
    #[arg(
        long,
        env = "DISTLOG_FOLLOW_CA",
        value_name = "FILE",
        requires = "follow",
        help_heading = "Replica"
    )]
    pub(super) follow_ca: Option<PathBuf>,

    /// Client certificate (PEM) this follower shows a leader that requires mutual TLS.
    #[arg(long, env = "DISTLOG_FOLLOW_CERT", value_name = "FILE", requires_all = ["follow", "follow_key"], help_heading = "Replica")]
    pub(super) follow_cert: Option<PathBuf>,

    /// The PEM key of --follow-cert.
    #[arg(
        long,
        env = "DISTLOG_FOLLOW_KEY",
        value_name = "FILE",
        requires = "follow_cert",
        help_heading = "Replica"
    )]
    pub(super) follow_key: Option<PathBuf>,

    /// File holding the bearer token this follower sends its leader (or set DISTLOG_FOLLOW_TOKEN).
    #[arg(
        long,
        env = "DISTLOG_FOLLOW_TOKEN_FILE",
        value_name = "FILE",
        requires = "follow",
        help_heading = "Replica"
    )]
    pub(super) follow_token_file: Option<PathBuf>,

    /// A web origin (scheme://host[:port]) whose pages may write and read answers (CORS); repeat for more [default: none].
    #[arg(
        long,
        env = "DISTLOG_CORS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ',',
        help_heading = "HTTP"
    )]
    pub(super) cors_origin: Vec<String>,

    /// Do not serve the web console at /ui (then /ui answers 404).
    #[arg(long, env = "DISTLOG_NO_UI", help_heading = "HTTP")]
    pub(super) no_ui: bool,

    /// Time in-flight requests get to finish on SIGINT/SIGTERM.
    #[arg(long, env = "DISTLOG_SHUTDOWN_GRACE_MS", value_name = "DURATION", default_value = "10s", value_parser = units::millis, help_heading = "HTTP")]
    pub(super) shutdown_grace_ms: u64,

    /// Time a client has to send a whole request head (and TLS handshake) from its first byte,
    /// or from connecting; then its connection is closed.
    #[arg(long, env = "DISTLOG_HEADER_TIMEOUT_MS", value_name = "DURATION", default_value = "10s", value_parser = units::millis_in(1, u64::MAX), help_heading = "HTTP")]
    pub(super) header_timeout_ms: u64,

    /// How long a keep-alive connection with no request in flight stays open.
    #[arg(long, env = "DISTLOG_IDLE_TIMEOUT_MS", value_name = "DURATION", default_value = "60s", value_parser = units::millis_in(1, u64::MAX), help_heading = "HTTP")]
    pub(super) idle_timeout_ms: u64,

    /// How long a request body may send nothing before it is answered 408 and its connection closed.
    #[arg(long, env = "DISTLOG_BODY_TIMEOUT_MS", value_name = "DURATION", default_value = "30s", value_parser = units::millis_in(1, u64::MAX), help_heading = "HTTP")]
    pub(super) body_timeout_ms: u64,

    /// How long an answer's bytes may wait with the client reading none of them before its connection is closed.
    #[arg(long, env = "DISTLOG_SEND_TIMEOUT_MS", value_name = "DURATION", default_value = "30s", value_parser = units::millis_in(1, u64::MAX), help_heading = "HTTP")]
    pub(super) send_timeout_ms: u64,

    /// Run as a Raft cluster node with these seeds: every node's advertise URL, the same list on every
    /// node (comma-separated). The lowest seed forms the cluster once every seed (or
    /// --bootstrap-expect of them) answers; a node outside it joins through any seed. Without it
    /// the node is standalone.
    #[arg(
        long,
        env = "DISTLOG_PEERS",
        value_name = "URL,...",
        value_delimiter = ',',
        conflicts_with = "follow",
        help_heading = "Cluster"
    )]
    pub(super) peers: Vec<String>,

    /// The URL peers and clients reach this node at [default: http(s)://<--listen address>].
    #[arg(long, env = "DISTLOG_ADVERTISE_URL", value_name = "URL", help_heading = "Cluster")]
    pub(super) advertise_url: Option<String>,

    /// Serve the cluster's peers on this address of their own (IP:PORT, HOST:PORT or :PORT), with
    /// their own connection cap: Raft's messages (/raft/*) and the membership changes (POST
    /// /cluster/join, DELETE /cluster/members/ID, POST /cluster/leader) are then served here only
    /// (404 peer_port_only on --listen), so clients holding every --max-connections cannot cut
    /// peers off, and a firewall can keep these routes to peers by port. Every member must run a
    /// distlog that knows this flag before any uses it.
    #[arg(long, env = "DISTLOG_PEER_LISTEN", value_name = "ADDR", value_parser = units::listen, requires = "peers", help_heading = "Cluster")]
    pub(super) peer_listen: Option<SocketAddr>,

    /// The URL peers reach this node's --peer-listen at [default: http(s)://<--peer-listen address>].
    #[arg(
        long,
        env = "DISTLOG_PEER_ADVERTISE_URL",
        visible_alias = "peer-advertise",
        value_name = "URL",
        requires = "peer_listen",
        help_heading = "Cluster"
    )]
    pub(super) peer_advertise_url: Option<String>,

    /// Connections the peer listener (--peer-listen) serves at once; more are answered 503.
    #[arg(long, env = "DISTLOG_MAX_PEER_CONNECTIONS", value_name = "N", default_value_t = crate::node::DEFAULT_MAX_PEER_CONNECTIONS as u64,
        value_parser = clap::value_parser!(u64).range(1..), help_heading = "Cluster")]
    pub(super) max_peer_connections: u64,

    /// Time between a cluster leader's heartbeats to its followers.
    #[arg(long, env = "DISTLOG_HEARTBEAT_MS", value_name = "DURATION", default_value = "100ms", value_parser = units::millis_in(1, u64::MAX), help_heading = "Cluster")]
    pub(super) heartbeat_ms: u64,

    /// A cluster follower that hears no leader calls an election once the leader's lease
    /// (--election-timeout-max-ms) and then a random wait between this and the max have passed, so
    /// a dead leader is replaced after max + [min, max].
    #[arg(long, env = "DISTLOG_ELECTION_TIMEOUT_MIN_MS", value_name = "DURATION", default_value = "300ms", value_parser = units::millis_in(1, u64::MAX), help_heading = "Cluster")]
    pub(super) election_timeout_min_ms: u64,

    /// Longest random wait before an election, and the length of a leader's lease
    /// (no follower votes for another node until it has heard no leader for this long).
    #[arg(long, env = "DISTLOG_ELECTION_TIMEOUT_MAX_MS", value_name = "DURATION", default_value = "600ms", value_parser = units::millis_in(1, u64::MAX), help_heading = "Cluster")]
    pub(super) election_timeout_max_ms: u64,

    /// Longest a cluster leader waits for a write to commit. Past it the client is answered 503
    /// outcome_unknown (the write may still commit, e.g. once a partition heals) instead of
    /// waiting as long as the fault lasts.
    #[arg(long, env = "DISTLOG_WRITE_TIMEOUT_MS", value_name = "DURATION", default_value = "5s", value_parser = units::millis_in(1, 3_600_000), help_heading = "Cluster")]
    pub(super) write_timeout_ms: u64,

    /// A cluster member answers /readyz 200 only while it has applied all but at most this many
    /// of the entries its leader has committed (a node catching up after a wipe or a long outage
    /// would serve reads that miss records).
    #[arg(
        long,
        env = "DISTLOG_READY_LAG",
        value_name = "ENTRIES",
        default_value_t = 2000,
        help_heading = "Cluster"
    )]
    pub(super) ready_lag: u64,

    /// A member unreachable from the cluster's leader this long has its replicas of named logs
    /// moved to other nodes (each log back to its replica count; the node drops them when it
    /// comes back).
    #[arg(long, env = "DISTLOG_REPLICA_TIMEOUT_MS", value_name = "DURATION", default_value = "10m", value_parser = units::millis_in(1, 7 * 86_400_000), help_heading = "Cluster")]
    pub(super) replica_timeout_ms: u64,

    /// How many seeds (--peers) must answer, uninitialized and with the same
    /// seed list, before the lowest seed forms a new cluster with them [default: every seed]; the
    /// others join once they come. At least a majority of the seeds, and the lowest seed must be
    /// among them: only it ever forms a cluster, so two groups never form two.
    #[arg(
        long,
        env = "DISTLOG_BOOTSTRAP_EXPECT",
        value_name = "SEEDS",
        help_heading = "Cluster"
    )]
    pub(super) bootstrap_expect: Option<usize>,

    /// A node the cluster removed while it was down asks the leader to add it again when it starts
    /// (as `POST /cluster/join` does). Without it, it waits to be added. A node removed while it
    /// runs stays removed until it is asked to rejoin or restarted with this flag.
    #[arg(long, env = "DISTLOG_REJOIN", help_heading = "Cluster")]
    pub(super) rejoin: bool,

    /// A follower takes a client's write (appends, consumer positions) and forwards it to the
    /// leader over the peer connection, relaying the leader's answer, instead of redirecting the
    /// client (307) to the leader's advertise URL, which a client outside the cluster's network
    /// may not reach. One hop at most; the client's identity is carried for the ACL.
    #[arg(long, env = "DISTLOG_FORWARD_WRITES", help_heading = "Cluster")]
    pub(super) forward_writes: bool,

    /// Append-entries requests a cluster leader keeps in flight to each follower (pipelining,
    /// experimental: no gain measured on one shared disk, see docs/cluster-design.md); 1 (the
    /// default) sends the next one only once the previous one is answered, and takes a leader's
    /// one at a time. Both ends need N > 1: a follower with 1, or from before pipelining, gets one
    /// at a time whatever the leader says.
    #[arg(long, env = "DISTLOG_APPEND_WINDOW", value_name = "N", default_value_t = 1,
        value_parser = clap::value_parser!(u64).range(1..=32), help_heading = "Cluster")]
    pub(super) append_window: u64,

    /// Writes a follower forwards to its leader at once (--forward-writes); one more is refused at
    /// once, 503 busy with Retry-After: 1. Each holds the client's connection and one to the leader
    /// for up to --write-timeout-ms.
    #[arg(long, env = "DISTLOG_MAX_FORWARDED_WRITES", value_name = "COUNT", default_value_t = crate::api::DEFAULT_MAX_FORWARDED_WRITES as u64, value_parser = clap::value_parser!(u64).range(1..=100_000), help_heading = "Cluster")]
    pub(super) max_forwarded_writes: u64,

    /// PEM CA certificates that sign https:// peers' certificates.
    #[arg(long, env = "DISTLOG_PEER_CA", value_name = "FILE", help_heading = "Cluster")]
    pub(super) peer_ca: Option<PathBuf>,

    /// Client certificate (PEM) this node shows peers that require mutual TLS.
    #[arg(
        long,
        env = "DISTLOG_PEER_CERT",
        value_name = "FILE",
        requires = "peer_key",
        help_heading = "Cluster"
    )]
    pub(super) peer_cert: Option<PathBuf>,

    /// The PEM key of --peer-cert.
    #[arg(
        long,
        env = "DISTLOG_PEER_KEY",
        value_name = "FILE",
        requires = "peer_cert",
        help_heading = "Cluster"
    )]
    pub(super) peer_key: Option<PathBuf>,

    /// File holding the bearer token this node sends its peers (or set DISTLOG_PEER_TOKEN).
    #[arg(long, env = "DISTLOG_PEER_TOKEN_FILE", value_name = "FILE", help_heading = "Cluster")]
    pub(super) peer_token_file: Option<PathBuf>,

    /// Testing: reach the peer advertised as FROM at TO instead (FROM=TO; repeatable).
    #[arg(long, value_name = "FROM=TO", hide = true, help_heading = "Cluster")]
    pub(super) peer_route: Vec<String>,

    /// Testing: stamp records by a clock this many ms ahead of the system's (negative: behind).
    #[arg(
        long,
        value_name = "MS",
        hide = true,
        allow_hyphen_values = true,
        default_value_t = 0
    )]
    pub(super) clock_skew_ms: i64,

    /// Format of the log lines written to stdout (level set by RUST_LOG, default info without the access log).
    #[arg(
        long,
        env = "DISTLOG_LOG_FORMAT",
        value_enum,
        default_value = "text",
        help_heading = "Telemetry"
    )]
    pub(super) log_format: LogFormat,

    /// Log one line per request (target distlog::access; also on with RUST_LOG=distlog::access=info).
    #[arg(long, env = "DISTLOG_ACCESS_LOG", help_heading = "Telemetry")]
    pub(super) access_log: bool,

    /// Export traces over OTLP/HTTP to the collector at this base URL (spans go to URL/v1/traces) [default: off].
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL",
        help_heading = "Telemetry"
    )]
    pub(super) otlp_endpoint: Option<String>,

    /// Connections served at once; more are answered 503 (lowered to what the open-files limit allows).
    #[arg(long, env = "DISTLOG_MAX_CONNECTIONS", value_name = "N", default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..), help_heading = "HTTP")]
    pub(super) max_connections: u64,
}

impl ServeArgs {
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Where peers are served apart (`--peer-listen`), if anywhere.
    pub fn peer_listen(&self) -> Option<SocketAddr> {
        self.peer_listen
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Where traces go (`--otlp-endpoint`), if anywhere.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref()
    }

    /// How this node names itself in traces: its advertised URL, else its
    /// listen address.
    pub fn instance(&self) -> String {
        self.advertise_url.clone().unwrap_or_else(|| self.listen.to_string())
    }

    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    pub fn access_log(&self) -> bool {
        self.access_log
    }
}
