//! What a node is started with, and why a start fails.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::{AllowedOrigins, Limits};
use crate::auth::{AuthConfigError, SecurityConfig};
use crate::http::HttpConfig;
use crate::log::{LogConfig, LogError};
use crate::mode::{ModeConfig, StartError};

/// `--max-peer-connections` by default: a member holds a few connections
/// to each peer (Raft's messages, formation, joins), so this is ample for
/// clusters of dozens.
pub const DEFAULT_MAX_PEER_CONNECTIONS: usize = 256;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub limits: Limits,
    /// Standalone, a `--follow` replica, or a `--peers` cluster member.
    pub mode: ModeConfig,
    pub security: SecurityConfig,
    /// Web origins that may write and read answers from a browser (`--cors-origin`).
    pub cors_origins: AllowedOrigins,
    /// Whether the web console is served under `/ui` (`--no-ui` turns it off).
    pub console: bool,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_grace: Duration,
    /// How often retention runs.
    pub retention_check: Duration,
    pub http: HttpConfig,
    /// Connections the peer listener (`--peer-listen`) serves at once
    /// (`--max-peer-connections`); its other limits are `http`'s.
    pub max_peer_connections: usize,
    /// Named logs (`--max-logs`, `--auto-create-logs`).
    pub named_logs: NamedLogsConfig,
}

/// How a node holds named logs.
#[derive(Clone, Debug)]
pub struct NamedLogsConfig {
    pub max_logs: usize,
    pub auto_create: bool,
}

impl Default for NamedLogsConfig {
    fn default() -> Self {
        NamedLogsConfig {
            max_logs: crate::logs::DEFAULT_MAX_LOGS,
            auto_create: false,
        }
    }
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            log: LogConfig::default(),
            limits: Limits::default(),
            mode: ModeConfig::Standalone,
            security: SecurityConfig::default(),
            cors_origins: AllowedOrigins::default(),
            console: true,
            shutdown_grace: Duration::from_secs(10),
            retention_check: Duration::from_secs(10),
            http: HttpConfig::default(),
            max_peer_connections: DEFAULT_MAX_PEER_CONNECTIONS,
            named_logs: NamedLogsConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Security(#[from] AuthConfigError),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Mode(#[from] StartError),
    #[error("cannot open the named logs: {0}")]
    Catalog(#[from] crate::logs::CatalogError),
    #[error(
        "{0} belongs to a cluster node (it has a raft/ directory): start it with --peers; serving it standalone or as a --follow replica would append outside Raft"
    )]
    ClusterDirectory(String),
    #[error("a peer listener (--peer-listen) serves a cluster's peers: it needs --peers")]
    PeerListenerAlone,
}
