//! Starting and stopping a whole node: bind, open the log, serve the API,
//! run retention and (on a follower) replication in the background, and on
//! shutdown stop accepting, let in-flight requests finish within a grace
//! period, then sync and close the log.
//!
//! The HTTP connection layer is ours rather than `axum::serve`, which has
//! no timeouts and no connection cap: `accept` (the accept loop, the cap,
//! accept errors), `connection` (one connection under hyper), `clock` (its
//! header, idle and body timeouts), `bodies` (request bodies that report
//! waiting, answers in flight), `conn_io` (JSON for protocol errors hyper answers itself),
//! `fd_limit` (the open-files limit).

mod accept;
mod bodies;
mod clock;
mod conn_io;
mod connection;
mod fd_limit;
mod send_queue;

pub use bodies::BodyTimedOut;
pub use fd_limit::{OpenFilesLimit, raise_open_files_limit};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AllowedOrigins, AppState, Limits, Role};
use crate::auth::{AuthConfigError, ReloadableTls, Security, SecurityConfig};
use crate::cluster::{Cluster, ClusterConfig, StartError};
use crate::log::{Log, LogConfig, LogError, now_ms};
use crate::replication::{FollowConfig, FollowerStatus, spawn_follower};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub log: LogConfig,
    pub limits: Limits,
    pub follow: Option<FollowConfig>,
    pub security: SecurityConfig,
    /// Web origins that may write and read answers from a browser (`--cors-origin`).
    pub cors_origins: AllowedOrigins,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_grace: Duration,
    /// How often retention runs.
    pub retention_check: Duration,
    pub http: HttpConfig,
    /// Set to run as a Raft cluster node (`--peers`).
    pub cluster: Option<ClusterSettings>,
}

/// How this node joins a cluster (see `cluster`).
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub peers: Vec<String>,
    /// How peers and clients reach this node [default: http(s)://<listen address>].
    pub advertise_url: Option<String>,
    /// `advertised URL -> URL to connect to` (`--peer-route`, for tests).
    pub routes: std::collections::HashMap<String, String>,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// The peer client's TLS roots, identity and token, as a follower's.
    pub peer_client: FollowConfig,
}

/// Limits on HTTP connections.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// A request head (and a TLS handshake) must arrive within this, from its first byte.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long is answered 408 and its connection closed.
    pub body_timeout: Duration,
    /// An answer whose queued bytes the socket accepts none of for this long
    /// (the client does not read) has its connection closed.
    pub send_timeout: Duration,
    /// Connections served at once; more are answered 503. Lowered at start
    /// to what the open-files limit allows.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            log: LogConfig::default(),
            limits: Limits::default(),
            follow: None,
            security: SecurityConfig::default(),
            cors_origins: AllowedOrigins::default(),
            shutdown_grace: Duration::from_secs(10),
            retention_check: Duration::from_secs(10),
            http: HttpConfig::default(),
            cluster: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Security(#[from] AuthConfigError),
    #[error("cannot follow the leader: {0}")]
    Follow(String),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cluster(#[from] StartError),
    #[error("cannot reach peers: {0}")]
    PeerClient(String),
    #[error(
        "{0} belongs to a cluster node (it has a raft/ directory): start it with --peers; serving it standalone or as a --follow replica would append outside Raft"
    )]
    ClusterDirectory(String),
}

/// A running node.
pub struct Server {
    local_addr: SocketAddr,
    log: Log,
    role: Role,
    cluster: Option<Cluster>,
    tls: Option<Arc<ReloadableTls>>,
    stop: watch::Sender<bool>,
    serving: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Server {
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        // Before the log opens: it takes its metric handles from the recorder.
        api::recorder();
        let security = Security::load(&config.security)?;
        let follow_client = match &config.follow {
            Some(follow) => Some(follow.client().map_err(ServerError::Follow)?),
            None => None,
        };
        // Bind before the log opens: a start that cannot listen then leaves
        // no new data directory behind (clients that connect meanwhile wait
        // in the backlog until the log is open).
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr()?;
        let log = open_log(&config).await?;
        let (stop, stopping) = watch::channel(false);

        let mut background = vec![spawn_metrics_upkeep(stopping.clone())];
        let cluster = match &config.cluster {
            Some(settings) => {
                let scheme = if security.tls.is_some() { "https" } else { "http" };
                let cluster =
                    start_cluster(&log, &config.data_dir, settings, format!("{scheme}://{local_addr}")).await?;
                crate::telemetry::set_node_id(cluster.id());
                background.push(tokio::spawn(crate::cluster::retention::run(
                    cluster.clone(),
                    config.retention_check,
                    stopping.clone(),
                )));
                Some(cluster)
            }
            // Retention in a cluster must go through Raft (snapshot, then
            // purge); deleting segments behind its back would break it.
            None => {
                background.push(spawn_retention(log.clone(), config.retention_check, stopping.clone()));
                None
            }
        };
        let role = match &config.follow {
            None => Role::Leader,
            Some(follow) => {
                let status = Arc::new(FollowerStatus::new(follow.leader.clone()));
                let client = follow_client.clone().unwrap_or_default();
                let task = spawn_follower(log.clone(), client, follow.clone(), status.clone(), stopping.clone());
                background.push(task);
                Role::Follower(status)
            }
        };
        let state = match &cluster {
            Some(cluster) => AppState::clustered(log.clone(), config.limits.clone(), cluster.clone(), stopping.clone()),
            None => AppState::new(log.clone(), config.limits.clone(), role.clone(), stopping.clone()),
        };
        let app = api::app(state, security.policy.clone(), config.cors_origins.clone());
        // Only the guard reads the peer (its client certificate); attaching
        // it to every request costs when nothing reads it.
        let with_peer = security.policy.is_some();
        let acceptor = accept::Acceptor {
            listener,
            tls: security.tls.clone(),
            settings: Arc::new(connection::ConnSettings {
                app,
                timeouts: clock::Timeouts {
                    header: config.http.header_timeout,
                    idle: config.http.idle_timeout,
                    body: config.http.body_timeout,
                    send: config.http.send_timeout,
                },
                with_peer,
            }),
            max_connections: max_connections(config.http.max_connections),
            stopping: stopping.clone(),
        };
        let serving = tokio::spawn(acceptor.run());
        tracing::info!(addr = %local_addr, data_dir = %config.data_dir.display(),
            next_offset = log.next_offset(),
            role = if config.follow.is_some() { "follower" } else if config.cluster.is_some() { "cluster" } else { "leader" },
            "distlog is serving");
        Ok(Server {
            local_addr,
            log,
            role,
            cluster,
            tls: security.tls,
            stop,
            serving,
            background,
            grace: config.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Re-reads the TLS certificate, key and client CA (on SIGHUP). Open
    /// connections keep going; new ones get the new certificate. On error
    /// the old configuration stays.
    pub fn reload_tls(&self) -> Result<(), AuthConfigError> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// Graceful stop: no new connections, in-flight requests get the grace
    /// period, long polls and event streams end, then the log is synced and
    /// closed.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        if let Some(cluster) = &self.cluster {
            // Before anything stops: the next leader takes over at once,
            // within the grace period's first part.
            cluster
                .step_down((self.grace / 3).max(Duration::from_millis(500)))
                .await;
        }
        let _ = self.stop.send(true);
        let mut serving = self.serving;
        match tokio::time::timeout(self.grace, &mut serving).await {
            Ok(Ok(served)) => served?,
            Ok(Err(join)) => tracing::error!(error = %join, "the server task failed"),
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "requests still running after the grace period; closing anyway");
                serving.abort();
            }
        }
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
        if let Some(cluster) = &self.cluster {
            cluster.shutdown().await;
        }
        let log = self.log;
        tokio::task::spawn_blocking(move || log.close())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        tracing::info!("log synced and closed");
        Ok(())
    }
}

async fn start_cluster(
    log: &Log,
    data_dir: &std::path::Path,
    settings: &ClusterSettings,
    default_url: String,
) -> Result<Cluster, ServerError> {
    let client = settings.peer_client.client().map_err(ServerError::PeerClient)?;
    let advertise_url = settings.advertise_url.clone().unwrap_or(default_url);
    let config = ClusterConfig {
        peers: settings.peers.clone(),
        advertise_url,
        routes: settings.routes.clone(),
        heartbeat: settings.heartbeat,
        election_timeout: settings.election_timeout,
        client,
    };
    Ok(Cluster::start(log.clone(), data_dir, config).await?)
}

/// `wanted`, or fewer if the open-files limit (raised to its hard limit
/// here) would run out first.
fn max_connections(wanted: usize) -> usize {
    match raise_open_files_limit() {
        Ok(limit) => {
            if limit.now > limit.before {
                tracing::info!(from = limit.before, to = limit.now, "raised the open-files limit");
            }
            let allowed = limit.connections_allowed(accept::MAX_REFUSING);
            if wanted > allowed {
                tracing::warn!(
                    max_connections = wanted,
                    open_files_limit = limit.now,
                    using = allowed,
                    "--max-connections is more than the open-files limit allows; using fewer"
                );
            }
            wanted.min(allowed).max(1)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-files limit");
            wanted.max(1)
        }
    }
}

async fn open_log(config: &ServerConfig) -> Result<Log, ServerError> {
    // A cluster member's log is its Raft log: records appended to it
    // outside Raft would take offsets (and terms) the cluster gives others.
    if config.cluster.is_none() && config.data_dir.join("raft").is_dir() {
        return Err(ServerError::ClusterDirectory(config.data_dir.display().to_string()));
    }
    let (dir, log_config) = (config.data_dir.clone(), config.log.clone());
    let reset = config.follow.as_ref().is_some_and(|f| f.reset);
    let log = tokio::task::spawn_blocking(move || -> Result<Log, LogError> {
        let log = Log::open(&dir, log_config)?;
        if reset {
            tracing::warn!(dir = %dir.display(), "--follow-reset: discarding the local log to copy the leader's anew");
            log.reset(0)?;
        }
        Ok(log)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(log)
}

/// Histogram samples pile up in the recorder until upkeep folds them into
/// buckets; without scrapes that would grow without bound.
fn spawn_metrics_upkeep(mut stopping: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = ticks.tick() => api::recorder().run_upkeep(),
                _ = stopping.wait_for(|stop| *stop) => return,
            }
        }
    })
}

fn spawn_retention(log: Log, every: Duration, mut stopping: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            let log = log.clone();
            match tokio::task::spawn_blocking(move || log.enforce_retention(now_ms())).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(segments = n, "retention deleted old segments"),
                Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                Err(e) => tracing::error!(error = %e, "retention task failed"),
            }
        }
    })
}
