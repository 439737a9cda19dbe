//! A whole node, started and stopped: open the log, start the parts of its
//! mode (`crate::mode`), serve the API on the listener it is handed
//! (`crate::http`), keep the metrics recorder trimmed; on shutdown hand
//! leadership on, stop accepting, let in-flight requests finish within a
//! grace period, then sync and close the log.
//!
//! The caller binds the listener (the binary from `--listen`, tests on port
//! 0), so that a start that cannot listen leaves no data directory behind;
//! and a cluster member's peer listener too, when it serves peers on a port
//! of their own (`--peer-listen`): then the peer-only routes are served
//! there alone, under their own connection cap (see `api::Listener`).

mod config;

pub use config::{DEFAULT_MAX_PEER_CONNECTIONS, NamedLogsConfig, NodeConfig, NodeError};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::auth::{AuthConfigError, ReloadableTls, Security};
use crate::http;
use crate::http::HttpConfig;
use crate::log::{Log, LogError};
use crate::logs::{Catalog, CatalogConfig, GROUPS_DIR, LOGS_DIR};
use crate::mode::{self, Mode, ModeConfig, OwnUrls};

/// A running node.
pub struct Node {
    local_addr: SocketAddr,
    log: Log,
    mode: Mode,
    catalog: Catalog,
    tls: Option<Arc<ReloadableTls>>,
    stop: watch::Sender<bool>,
    serving: JoinHandle<std::io::Result<()>>,
    /// The peer listener's server, when there is one.
    serving_peers: Option<JoinHandle<std::io::Result<()>>>,
    peer_addr: Option<SocketAddr>,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
}

/// A member whose callers are not identified (no tokens, no mutual TLS)
/// takes Raft's messages and membership changes from anyone who reaches its
/// port: a crafted message can stop its consensus. Said once, loudly.
fn warn_open_peer_routes() {
    tracing::warn!(
        "cluster peer routes are not authenticated: anyone who reaches this port may send Raft messages \
         (/raft/*) and change the membership (/cluster/*); give every node --token-file and --peer-token-file \
         with a `cluster` ACL line, or mutual TLS (--tls-client-ca, --peer-cert)"
    );
}

impl Node {
    /// Starts a node serving on `listener`. Clients that connect before the
    /// log is open wait in the listener's backlog, or, on a cluster member,
    /// are answered as by a starting node (see `start_with_peers`).
    pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Node, NodeError> {
        Node::start_with_peers(config, listener, None).await
    }

    /// Starts a node serving clients on `listener` and, when given, peers
    /// on `peers` (a cluster member's `--peer-listen`).
    ///
    /// A member serves from the first moment, through a `api::Gate` that
    /// answers as a starting node (`/healthz` 200, the rest 503) until its
    /// parts are built: checking a log no earlier start checked can outlast
    /// a start-up probe. Other modes start in moments, and serve once
    /// started.
    pub async fn start_with_peers(
        config: NodeConfig,
        listener: TcpListener,
        peers: Option<TcpListener>,
    ) -> Result<Node, NodeError> {
        if peers.is_some() && !config.mode.is_member() {
            return Err(NodeError::PeerListenerAlone);
        }
        // Before the log opens: it takes its metric handles from the recorder.
        api::recorder();
        let security = Security::load(&config.security)?;
        if config.mode.is_member() && security.policy.is_none() {
            warn_open_peer_routes();
        }
        let clients = config.mode.clients()?;
        let local_addr = listener.local_addr()?;
        let peer_addr = peers.as_ref().map(TcpListener::local_addr).transpose()?;
        let (stop, stopping) = watch::channel(false);
        let progress = mode::StartProgress::default();
        let kinds = listener_kinds(peers.is_some());
        let listening = match config.mode.is_member() {
            true => {
                let gates: Vec<api::Gate> = kinds
                    .iter()
                    .map(|_| api::Gate::new(progress.clone(), security.policy.clone()))
                    .collect();
                let app = |i: usize| gates[i].app(config.cors_origins.clone());
                let servers = serve(listener, peers, app, &security, &config, stopping.clone());
                Listening::Gated(servers, gates)
            }
            false => Listening::Later(listener, peers),
        };
        let scheme = if security.tls.is_some() { "https" } else { "http" };
        let own = OwnUrls {
            url: format!("{scheme}://{local_addr}"),
            peer_url: peer_addr.map(|addr| format!("{scheme}://{addr}")),
        };
        let started = start_parts(&config, clients, own, &stopping, &progress).await;
        let Parts {
            log,
            mode,
            background,
            catalog,
            state,
        } = match started {
            Ok(parts) => parts,
            Err(e) => {
                if let Listening::Gated(servers, _) = listening {
                    servers.abort();
                }
                return Err(e);
            }
        };
        let servers = match listening {
            Listening::Gated(servers, gates) => {
                for (kind, gate) in kinds.iter().zip(&gates) {
                    let routes = api::routes_on(*kind, state.clone(), security.policy.clone(), config.console);
                    gate.open(routes);
                }
                servers
            }
            Listening::Later(listener, peers) => {
                let app = |i: usize| {
                    api::app_on(
                        kinds[i],
                        state.clone(),
                        security.policy.clone(),
                        config.cors_origins.clone(),
                        config.console,
                    )
                };
                serve(listener, peers, app, &security, &config, stopping)
            }
        };
        tracing::info!(addr = %local_addr, peer_addr = ?peer_addr, data_dir = %config.data_dir.display(),
            next_offset = log.next_offset(), role = role_name(&mode), "distlog is serving");
        Ok(Node {
            local_addr,
            log,
            mode,
            catalog,
            tls: security.tls,
            stop,
            serving: servers.clients,
            serving_peers: servers.peers,
            peer_addr,
            background,
            grace: config.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the peer listener listens, when there is one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Waits until this node asks to be started again (a cluster member
    /// that planned a repair for its next start: `cluster::contradiction`);
    /// why. Never, outside a cluster.
    pub async fn restart_needed(&self) -> String {
        match self.mode.cluster() {
            Some(cluster) => cluster.restart_needed().await,
            None => std::future::pending().await,
        }
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

    /// Graceful stop: leadership handed on, no new connections, in-flight
    /// requests get the grace period, long polls and event streams end,
    /// then the log is synced and closed.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        // Before anything stops: the next leader takes over at once, within
        // the grace period's first part.
        let within = (self.grace / 3).max(Duration::from_millis(500));
        tokio::join!(self.mode.step_down(within), self.catalog.step_down(within));
        let _ = self.stop.send(true);
        self.catalog.stop_serving();
        let deadline = tokio::time::Instant::now() + self.grace;
        let servers = std::iter::once(self.serving).chain(self.serving_peers);
        for mut serving in servers {
            match tokio::time::timeout_at(deadline, &mut serving).await {
                Ok(Ok(served)) => served?,
                Ok(Err(join)) => tracing::error!(error = %join, "the server task failed"),
                Err(_) => {
                    tracing::warn!(grace = ?self.grace, "requests still running after the grace period; closing anyway");
                    serving.abort();
                }
            }
        }
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
        // Named logs' groups first: they are started from the cluster group.
        self.catalog.close().await;
        self.mode.shutdown().await;
        let log = self.log;
        tokio::task::spawn_blocking(move || log.close())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        tracing::info!("log synced and closed");
        self.mode.log_closed();
        Ok(())
    }
}

/// What the listeners serve: every route on the only one, or the client
/// routes on the first and the peer routes on the second.
fn listener_kinds(peer_listener: bool) -> Vec<api::Listener> {
    match peer_listener {
        true => vec![api::Listener::Client, api::Listener::Peer],
        false => vec![api::Listener::All],
    }
}

/// A node's listeners: served through gates from the start (a member), or
/// not yet served.
enum Listening {
    Gated(Servers, Vec<api::Gate>),
    Later(TcpListener, Option<TcpListener>),
}

/// The servers of the client listener and of the peer listener.
struct Servers {
    clients: JoinHandle<std::io::Result<()>>,
    peers: Option<JoinHandle<std::io::Result<()>>>,
}

impl Servers {
    /// Stops accepting (a start that failed).
    fn abort(self) {
        self.clients.abort();
        if let Some(peers) = self.peers {
            peers.abort();
        }
    }
}

/// Serves `app(i)` on the `i`th listener of `listener_kinds`: the peer
/// listener, when there is one, under its own connection cap.
fn serve(
    listener: TcpListener,
    peers: Option<TcpListener>,
    app: impl Fn(usize) -> api::App,
    security: &Security,
    config: &NodeConfig,
    stopping: watch::Receiver<bool>,
) -> Servers {
    // Only the guard reads the peer (its client certificate).
    let with_peer = security.policy.is_some();
    let beside = match peers {
        Some(_) => config.max_peer_connections,
        None => 0,
    };
    let peers = peers.map(|peers| {
        let http = HttpConfig {
            max_connections: config.max_peer_connections,
            ..config.http.clone()
        };
        http::serve_peers(peers, security.tls.clone(), app(1), &http, with_peer, stopping.clone())
    });
    // The peers' share of the open-files limit is kept from the clients'.
    let client_http = HttpConfig {
        beside,
        ..config.http.clone()
    };
    let clients = http::serve(
        listener,
        security.tls.clone(),
        app(0),
        &client_http,
        with_peer,
        stopping,
    );
    Servers { clients, peers }
}

/// A node's parts, started over its log.
struct Parts {
    log: Log,
    mode: Mode,
    background: Vec<JoinHandle<()>>,
    catalog: Catalog,
    state: AppState,
}

/// Opens the log and starts the mode's parts, the consumers' positions and
/// the named logs (see `Node::start_with_peers`); a member says in
/// `progress` how far it has got.
async fn start_parts(
    config: &NodeConfig,
    clients: mode::Clients,
    own: OwnUrls,
    stopping: &watch::Receiver<bool>,
    progress: &mode::StartProgress,
) -> Result<Parts, NodeError> {
    let log = open_log(config, &clients, &own).await?;
    let (mode, mut background) = mode::start(
        &log,
        &config.data_dir,
        &config.mode,
        clients,
        own,
        config.retention_check,
        stopping,
        progress,
    )
    .await?;
    background.push(spawn_metrics_upkeep(stopping.clone()));
    let consumers = mode::Consumers::open(&mode, &config.data_dir)?;
    let catalog = open_catalog(config, &mode).await?;
    let state = AppState::new(
        log.clone(),
        config.limits.clone(),
        mode.clone(),
        consumers,
        stopping.clone(),
        catalog.clone(),
    );
    Ok(Parts {
        log,
        mode,
        background,
        catalog,
        state,
    })
}

/// A standalone node's named logs, opened from `<data dir>/logs`; a
/// cluster member's, each a Raft group, placed by the cluster's catalogue
/// (`<data dir>/groups`); a replica serves none.
async fn open_catalog(config: &NodeConfig, mode: &Mode) -> Result<Catalog, NodeError> {
    match mode {
        Mode::Standalone(_) => Ok(Catalog::open(CatalogConfig {
            dir: config.data_dir.join(LOGS_DIR),
            base: config.log.clone(),
            max_logs: config.named_logs.max_logs,
            retention_check: config.retention_check,
            auto_create: config.named_logs.auto_create,
        })
        .await?),
        Mode::Replica(_) => Ok(Catalog::unavailable(
            "a --follow replica copies one log; ask its leader",
        )),
        Mode::Member(cluster) => Ok(Catalog::clustered(
            CatalogConfig {
                dir: config.data_dir.join(GROUPS_DIR),
                base: config.log.clone(),
                max_logs: config.named_logs.max_logs,
                retention_check: config.retention_check,
                auto_create: config.named_logs.auto_create,
            },
            cluster.clone(),
        )
        .await?),
    }
}

/// How the start line names the mode.
fn role_name(mode: &Mode) -> &'static str {
    match mode {
        Mode::Standalone(_) => "leader",
        Mode::Replica(_) => "follower",
        Mode::Member(_) => "cluster",
    }
}

async fn open_log(config: &NodeConfig, clients: &mode::Clients, own: &OwnUrls) -> Result<Log, NodeError> {
    // A cluster member's log is its Raft log: records appended to it
    // outside Raft would take offsets (and terms) the cluster gives others.
    if !config.mode.is_member() && config.data_dir.join("raft").is_dir() {
        return Err(NodeError::ClusterDirectory(config.data_dir.display().to_string()));
    }
    let (dir, log_config) = (config.data_dir.clone(), config.log.clone());
    // A member's corrupt sealed segment moves aside where the cluster can
    // supply it again, and stops the open where it cannot (see
    // `cluster::quarantine`).
    if let ModeConfig::Member(settings) = &config.mode {
        return Ok(mode::open_member_log(&dir, log_config, settings, clients, own).await?);
    }
    let reset = config.mode.resets_log();
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
