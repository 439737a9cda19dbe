//! From flags to a `NodeConfig`: every refusal of a value clap itself
//! cannot check, worded with the flag's name.

use std::time::Duration;

use anyhow::Context;

use super::ServeArgs;
use super::serve_args::Fsync;
use crate::api::{AllowedOrigins, Limits};
use crate::auth::{SecurityConfig, TlsFiles};
use crate::http::HttpConfig;
use crate::log::producers::ProducerLimits;
use crate::log::{
    Clock, Durability, FRAME_HEADER, LogConfig, LogError, MAX_RECORD_CEILING, default_max_record_bytes, record_ceiling,
};
use crate::mode::{ClusterSettings, ModeConfig};
use crate::node::{NamedLogsConfig, NodeConfig};
use crate::replication::FollowConfig;

impl ServeArgs {
    pub fn node_config(&self) -> anyhow::Result<NodeConfig> {
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
            clock: Clock::skewed(self.clock_skew_ms),
            producers: ProducerLimits {
                ttl_ms: self.producer_ttl_ms,
                max_producers: usize::try_from(self.max_producers).unwrap_or(usize::MAX),
            },
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
            max_consumers: self.max_consumers,
            forwarded_writes: Limits::forwarding_places(
                usize::try_from(self.max_forwarded_writes).unwrap_or(usize::MAX),
            ),
            ..Limits::default()
        };
        let cors_origins = AllowedOrigins::parse(&self.cors_origin)
            .map_err(|e| anyhow::anyhow!("invalid --cors-origin {:?}: {}", e.origin, e.reason))?;
        Ok(NodeConfig {
            security: self.security(),
            log,
            limits,
            mode: self.mode()?,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            http: HttpConfig {
                header_timeout: Duration::from_millis(self.header_timeout_ms),
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
                body_timeout: Duration::from_millis(self.body_timeout_ms),
                send_timeout: Duration::from_millis(self.send_timeout_ms),
                max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
                beside: 0,
            },
            max_peer_connections: usize::try_from(self.max_peer_connections).unwrap_or(usize::MAX),
            cors_origins,
            console: !self.no_ui,
            named_logs: NamedLogsConfig {
                max_logs: usize::try_from(self.max_logs).unwrap_or(usize::MAX),
                auto_create: self.auto_create_logs,
            },
            ..NodeConfig::new(&self.data_dir)
        })
    }

    /// `--follow` (a replica), `--peers` (a cluster member), or neither.
    fn mode(&self) -> anyhow::Result<ModeConfig> {
        if let Some(settings) = self.cluster()? {
            return Ok(ModeConfig::Member(Box::new(settings)));
        }
        let Some(leader) = &self.follow else {
            return Ok(ModeConfig::Standalone);
        };
        let leader = &self.followed_url(leader)?;
        Ok(ModeConfig::Replica(FollowConfig {
            reset: self.follow_reset,
            // The leader most likely runs with its followers' limits: its
            // batches fit in what this node would accept.
            max_unfinished_batch_bytes: FollowConfig::new(leader)
                .max_unfinished_batch_bytes
                .max(self.max_request_bytes.saturating_mul(2)),
            ca: self.follow_ca.clone(),
            identity: self.follow_cert.clone().zip(self.follow_key.clone()),
            token: self.follow_token()?,
            ..FollowConfig::new(leader)
        }))
    }

    /// The URL the follower pulls under: the leader's, or with
    /// `--follow-log` the named log's there (`<leader>/logs/<name>`).
    fn followed_url(&self, leader: &str) -> anyhow::Result<String> {
        let leader = leader.trim_end_matches('/');
        let Some(name) = &self.follow_log else {
            return Ok(leader.to_string());
        };
        if name != crate::logs::DEFAULT_LOG {
            crate::logs::LogName::parse(name).map_err(|e| anyhow::anyhow!("invalid --follow-log {name:?}: {e}"))?;
        }
        Ok(format!("{leader}/logs/{name}"))
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
        let peer_advertise_url = self
            .peer_advertise_url
            .as_deref()
            .map(|u| url("--peer-advertise-url", u))
            .transpose()?;
        if let Some(peer_listen) = self.peer_listen {
            if peer_listen == self.listen {
                anyhow::bail!("invalid --peer-listen {peer_listen}: it must not be --listen's address");
            }
            if peer_advertise_url.is_none() && peer_listen.ip().is_unspecified() {
                anyhow::bail!(
                    "--peer-listen {peer_listen} needs --peer-advertise-url: peers cannot reach an unspecified address"
                );
            }
        }
        if let (Some(peer), Some(client)) = (&peer_advertise_url, &advertise_url)
            && peer.trim_end_matches('/') == client.trim_end_matches('/')
        {
            anyhow::bail!(
                "invalid --peer-advertise-url {peer}: it is --advertise-url, where clients reach this node; \
                 give the URL of --peer-listen"
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
        if let Some(n) = self.bootstrap_expect {
            let majority = peers.len() / 2 + 1;
            if n < majority || n > peers.len() {
                anyhow::bail!(
                    "invalid --bootstrap-expect {n}: must be from {majority} (a majority of the {} seeds) to {}",
                    peers.len(),
                    peers.len()
                );
            }
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
            peer_advertise_url,
            routes,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            ready_lag: self.ready_lag,
            replica_timeout: Duration::from_millis(self.replica_timeout_ms),
            bootstrap_expect: self.bootstrap_expect,
            rejoin: self.rejoin,
            forward_writes: self.forward_writes,
            append_window: self.append_window as usize,
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
pub fn name_the_flag(error: LogError) -> anyhow::Error {
    match error {
        LogError::Config { key, allowed, value } => {
            anyhow::anyhow!("invalid --{} {value}: must be {allowed}", key.replace('_', "-"))
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["distlog", "serve"].into_iter().chain(flags.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(args) => Ok(*args),
            Command::Healthcheck(_) | Command::Client(_) => unreachable!("serve was asked for"),
        }
    }

    fn config(flags: &[&str]) -> anyhow::Result<NodeConfig> {
        parse(flags).expect("clap takes the flags").node_config()
    }

    /// The refusal of `flags`, as the binary prints it.
    fn refusal(flags: &[&str]) -> String {
        match config(flags) {
            Ok(_) => panic!("{flags:?} was taken"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn no_flags_start_a_standalone_node_in_the_local_folder() {
        let config = config(&[]).expect("the defaults are valid");
        assert!(matches!(config.mode, ModeConfig::Standalone));
        assert_eq!(config.data_dir, std::path::PathBuf::from("./distlog-data"));
        assert_eq!(config.log.durability, Durability::Always);
    }

    #[test]
    fn follow_makes_a_replica_and_peers_a_member() {
        let replica = config(&["--follow", "http://leader:8080"]).expect("valid");
        assert!(matches!(&replica.mode, ModeConfig::Replica(f) if f.leader == "http://leader:8080"));
        let member = config(&["--peers", "http://a:1,http://b:2/", "--advertise-url", "http://a:1"]).expect("valid");
        let ModeConfig::Member(settings) = member.mode else {
            panic!("not a member");
        };
        assert_eq!(settings.peers, ["http://a:1", "http://b:2"], "trailing slashes go");
    }

    #[test]
    fn a_clock_skew_for_tests_shifts_the_clock_records_are_stamped_with() {
        let behind = config(&["--clock-skew-ms", "-3600000"]).expect("valid");
        let (stamped, now) = (behind.log.clock.now_ms(), crate::log::now_ms());
        assert!(
            stamped + 3_500_000 < now && stamped + 3_700_000 > now,
            "{stamped} vs {now}"
        );
        let plain = config(&[]).expect("valid");
        assert!(plain.log.clock.now_ms() + 60_000 > crate::log::now_ms());
    }

    #[test]
    fn sizes_and_durations_take_units_and_bare_numbers_keep_their_meaning() {
        let config = config(&[
            "--max-segment-bytes",
            "64MiB",
            "--retention-bytes",
            "1GB",
            "--retention-ms",
            "7d",
            "--shutdown-grace-ms",
            "1500",
            "--idle-timeout-ms",
            "2m",
        ])
        .expect("valid");
        assert_eq!(config.log.max_segment_bytes, 64 << 20);
        assert_eq!(config.log.retention_bytes, Some(1_000_000_000));
        assert_eq!(config.log.retention_ms, Some(7 * 24 * 3_600_000));
        assert_eq!(config.shutdown_grace, Duration::from_millis(1500));
        assert_eq!(config.http.idle_timeout, Duration::from_secs(120));
        let bare = config_of(&["--max-segment-bytes", "1048576", "--fsync-interval-ms", "250"]);
        assert_eq!(bare.max_segment_bytes, 1 << 20);
        assert_eq!(bare.fsync_interval_ms, 250);
        let defaults = config_of(&[]);
        assert_eq!(defaults.max_segment_bytes, 256 << 20, "256MiB, as before");
        assert_eq!(defaults.header_timeout_ms, 10_000);
        assert_eq!(defaults.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            config_of(&["--listen", ":8085"]).listen,
            "0.0.0.0:8085".parse().unwrap()
        );
        assert_eq!(
            config_of(&["--listen", "localhost:8085"]).listen,
            "127.0.0.1:8085".parse().unwrap()
        );
    }

    fn config_of(flags: &[&str]) -> ServeArgs {
        parse(flags).expect("clap takes the flags")
    }

    #[test]
    fn a_record_larger_than_a_segment_names_both_flags() {
        let why = refusal(&["--max-segment-bytes", "4096", "--max-record-bytes", "8192"]);
        assert!(
            why.contains("--max-record-bytes 8192 with --max-segment-bytes 4096"),
            "{why}"
        );
    }

    #[test]
    fn storage_settings_out_of_range_name_their_flag() {
        let why = refusal(&["--max-segment-bytes", "1"]);
        assert!(why.starts_with("invalid --max-segment-bytes 1: must be"), "{why}");
        let why = refusal(&["--max-index-bytes", "1"]);
        assert!(why.starts_with("invalid --max-index-bytes 1: must be"), "{why}");
    }

    #[test]
    fn a_follow_url_must_be_http() {
        let why = refusal(&["--follow", "ftp://leader"]);
        assert!(why.contains("invalid --follow \"ftp://leader\""), "{why}");
    }

    #[test]
    fn a_request_limit_of_zero_is_refused() {
        let why = refusal(&["--max-request-bytes", "0"]);
        assert!(why.contains("invalid --max-request-bytes 0"), "{why}");
    }

    #[test]
    fn a_cors_origin_must_be_an_origin() {
        let why = refusal(&["--cors-origin", "not an origin"]);
        assert!(why.contains("invalid --cors-origin \"not an origin\""), "{why}");
    }

    #[test]
    fn peers_and_the_advertised_url_must_be_http() {
        let why = refusal(&["--peers", "a:1"]);
        assert!(why.contains("invalid --peers \"a:1\""), "{why}");
        let why = refusal(&["--peers", "http://a:1", "--advertise-url", "a:1"]);
        assert!(why.contains("invalid --advertise-url \"a:1\""), "{why}");
    }

    #[test]
    fn a_member_listening_on_every_address_must_say_where_it_is_reached() {
        let why = refusal(&["--peers", "http://a:1", "--listen", "0.0.0.0:8080"]);
        assert!(why.contains("needs --advertise-url"), "{why}");
    }

    #[test]
    fn the_peer_advertise_url_is_not_the_client_one() {
        let why = refusal(&[
            "--peers",
            "http://a:1",
            "--advertise-url",
            "http://a:1",
            "--peer-listen",
            "127.0.0.1:7001",
            "--peer-advertise-url",
            "http://a:1/",
        ]);
        assert!(why.contains("invalid --peer-advertise-url http://a:1"), "{why}");
    }

    #[test]
    fn a_peer_listener_needs_peers_and_a_reachable_address_of_its_own() {
        use clap::error::ErrorKind;
        let refused = |flags: &[&str]| parse(flags).err().map(|e| e.kind());
        assert_eq!(
            refused(&["--peer-listen", "127.0.0.1:7001"]),
            Some(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            refused(&["--peers", "http://a:1", "--peer-advertise-url", "http://a:2"]),
            Some(ErrorKind::MissingRequiredArgument)
        );
        let why = refusal(&[
            "--peers",
            "http://a:1",
            "--listen",
            "127.0.0.1:7001",
            "--peer-listen",
            "127.0.0.1:7001",
        ]);
        assert!(why.contains("invalid --peer-listen 127.0.0.1:7001"), "{why}");
        let why = refusal(&[
            "--peers",
            "http://a:1",
            "--advertise-url",
            "http://a:1",
            "--peer-listen",
            ":7001",
        ]);
        assert!(why.contains("needs --peer-advertise-url"), "{why}");
        let member = config(&[
            "--peers",
            "http://a:1",
            "--peer-listen",
            "127.0.0.1:7001",
            "--peer-advertise",
            "http://a:7001/",
            "--max-peer-connections",
            "16",
        ])
        .expect("valid");
        assert_eq!(member.max_peer_connections, 16);
        let ModeConfig::Member(settings) = member.mode else {
            panic!("not a member");
        };
        assert_eq!(settings.peer_advertise_url.as_deref(), Some("http://a:7001"));
        assert_eq!(config(&[]).expect("valid").max_peer_connections, 256);
    }

    #[test]
    fn election_timeouts_and_heartbeats_must_be_ordered() {
        let why = refusal(&[
            "--peers",
            "http://a:1",
            "--election-timeout-min-ms",
            "600",
            "--election-timeout-max-ms",
            "600",
        ]);
        assert!(why.contains("invalid --election-timeout-min-ms 600"), "{why}");
        let why = refusal(&["--peers", "http://a:1", "--heartbeat-ms", "300"]);
        assert!(why.contains("invalid --heartbeat-ms 300"), "{why}");
    }

    #[test]
    fn bootstrap_expect_is_a_majority_of_the_seeds_at_least() {
        let seeds = "http://a:1,http://b:1,http://c:1";
        let why = refusal(&["--peers", seeds, "--bootstrap-expect", "1"]);
        assert!(why.contains("invalid --bootstrap-expect 1: must be from 2"), "{why}");
        let why = refusal(&["--peers", seeds, "--bootstrap-expect", "4"]);
        assert!(why.contains("invalid --bootstrap-expect 4"), "{why}");
        config(&[
            "--peers",
            seeds,
            "--advertise-url",
            "http://a:1",
            "--bootstrap-expect",
            "2",
        ])
        .expect("valid");
    }

    #[test]
    fn a_peer_route_needs_from_and_to() {
        let why = refusal(&["--peers", "http://a:1", "--peer-route", "http://a:1"]);
        assert!(
            why.contains("invalid --peer-route \"http://a:1\": expected FROM=TO"),
            "{why}"
        );
    }

    #[test]
    fn token_files_that_cannot_be_read_are_named() {
        let why = refusal(&["--peers", "http://a:1", "--peer-token-file", "/nonexistent/token"]);
        assert!(
            why.contains("invalid --peer-token-file: cannot read /nonexistent/token"),
            "{why}"
        );
        let why = refusal(&["--follow", "http://a:1", "--follow-token-file", "/nonexistent/token"]);
        assert!(
            why.contains("invalid --follow-token-file: cannot read /nonexistent/token"),
            "{why}"
        );
    }

    #[test]
    fn clap_refuses_what_flags_alone_say_is_wrong() {
        let refused = |flags: &[&str]| parse(flags).err().map(|e| e.kind());
        use clap::error::ErrorKind;
        assert_eq!(
            refused(&["--follow", "http://a:1", "--peers", "http://b:1"]),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            refused(&["--tls-cert", "c.pem"]),
            Some(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(refused(&["--header-timeout-ms", "0"]), Some(ErrorKind::ValueValidation));
        assert_eq!(refused(&["--write-timeout-ms", "0"]), Some(ErrorKind::ValueValidation));
        assert_eq!(refused(&["--fsync", "sometimes"]), Some(ErrorKind::InvalidValue));
        assert_eq!(refused(&["--write-timeout-ms", "2h"]), Some(ErrorKind::ValueValidation));
        assert_eq!(
            refused(&["--max-request-bytes", "16 parsecs"]),
            Some(ErrorKind::ValueValidation)
        );
    }
}
