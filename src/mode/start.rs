//! Starting a mode's parts once the node's log is open: a replica's
//! follower task, a member's Raft node, and the retention that fits the
//! mode (a member's goes through Raft: snapshot, then purge; deleting
//! segments behind Raft's back would break it).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{GuardedAppends, Mode};
use crate::cluster::{self, Cluster, ClusterConfig, StartProgress};
use crate::log::{Log, now_ms};
use crate::replication::{FollowConfig, FollowerStatus, spawn_follower};

/// Which mode to start in: the command line's `--follow` and `--peers`.
#[derive(Clone, Debug, Default)]
pub enum ModeConfig {
    #[default]
    Standalone,
    Replica(FollowConfig),
    Member(Box<ClusterSettings>),
}

/// How this node joins a cluster (see `cluster`).
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub peers: Vec<String>,
    /// How peers and clients reach this node [default: http(s)://<listen address>].
    pub advertise_url: Option<String>,
    /// How peers reach this node when it serves them on a port of their own
    /// (`--peer-advertise-url`) [default: http(s)://<--peer-listen address>].
    pub peer_advertise_url: Option<String>,
    /// `advertised URL -> URL to connect to` (`--peer-route`, for tests).
    pub routes: HashMap<String, String>,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Longest a write waits to commit (`--write-timeout-ms`).
    pub write_timeout: Duration,
    /// Entries a member may be behind its leader's commit and be ready (`--ready-lag`).
    pub ready_lag: u64,
    /// How long a member may be unreachable before its replicas move (`--replica-timeout-ms`).
    pub replica_timeout: Duration,
    /// How many seeds must agree before a new cluster forms
    /// (`--bootstrap-expect`; None: every seed).
    pub bootstrap_expect: Option<usize>,
    /// A node removed before it started asks to be added again (`--rejoin`).
    pub rejoin: bool,
    /// A follower forwards writes to the leader (`--forward-writes`).
    pub forward_writes: bool,
    /// Append-entries in flight to each follower (`--append-window`).
    pub append_window: usize,
    /// The peer client's TLS roots, identity and token, as a follower's.
    pub peer_client: FollowConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot follow the leader: {0}")]
    Follow(String),
    #[error("cannot reach peers: {0}")]
    PeerClient(String),
    #[error(transparent)]
    Cluster(#[from] cluster::StartError),
    #[error(transparent)]
    MemberLog(#[from] cluster::OpenError),
    #[error("cannot rebuild the idempotent producers from the log: {0}")]
    Producers(String),
}

impl ModeConfig {
    pub fn is_member(&self) -> bool {
        matches!(self, ModeConfig::Member(_))
    }

    /// Whether the log is discarded at start (`--follow-reset`).
    pub fn resets_log(&self) -> bool {
        matches!(self, ModeConfig::Replica(follow) if follow.reset)
    }

    /// The clients this mode talks to other nodes with, built (and their
    /// certificate files read) before the log opens: a start refused for a
    /// bad file then leaves no new data directory behind.
    pub fn clients(&self) -> Result<Clients, StartError> {
        Ok(match self {
            ModeConfig::Standalone => Clients(None),
            ModeConfig::Replica(follow) => Clients(Some(follow.client().map_err(StartError::Follow)?)),
            ModeConfig::Member(settings) => Clients(Some(
                settings.peer_client.peer_client().map_err(StartError::PeerClient)?,
            )),
        })
    }
}

/// How this node is reached, from the addresses it listens on: its URL, and
/// its peer URL when it serves peers on a port of their own.
#[derive(Clone, Debug)]
pub struct OwnUrls {
    pub url: String,
    pub peer_url: Option<String>,
}

/// What `ModeConfig::clients` built.
#[derive(Debug)]
pub struct Clients(Option<reqwest::Client>);

/// The Raft node's settings: `settings` with the peer client and this
/// node's URLs (`own` where no `--advertise-url` says otherwise).
fn cluster_config(settings: &ClusterSettings, client: reqwest::Client, own: OwnUrls) -> ClusterConfig {
    ClusterConfig {
        peers: settings.peers.clone(),
        advertise_url: settings.advertise_url.clone().unwrap_or(own.url),
        peer_url: settings
            .peer_advertise_url
            .clone()
            .or(own.peer_url)
            .map(|url| url.trim_end_matches('/').to_string()),
        routes: settings.routes.clone(),
        heartbeat: settings.heartbeat,
        election_timeout: settings.election_timeout,
        write_timeout: settings.write_timeout,
        ready_lag: settings.ready_lag,
        replica_timeout: settings.replica_timeout,
        bootstrap_expect: settings.bootstrap_expect.unwrap_or(settings.peers.len()),
        rejoin: settings.rejoin,
        client,
        forward_writes: settings.forward_writes,
        append_window: settings.append_window,
        pulses: Default::default(),
    }
}

/// Opens a member's log in `data_dir`: a corrupt sealed segment is moved
/// aside where the cluster can supply it again (`cluster::open_member_log`,
/// which asks the seeds with these settings).
pub async fn open_member_log(
    data_dir: &Path,
    log: crate::log::LogConfig,
    settings: &ClusterSettings,
    clients: &Clients,
    own: &OwnUrls,
) -> Result<Log, StartError> {
    let config = cluster_config(settings, clients.0.clone().unwrap_or_default(), own.clone());
    Ok(cluster::open_member_log(data_dir, log, &config).await?)
}

/// Starts `config`'s mode over `log` (held in `data_dir`). `own` is how
/// this node is reached when no `--advertise-url` (and
/// `--peer-advertise-url`) says otherwise. A member says in `progress` how
/// far its start has got. The tasks end when `stopping` turns true.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    log: &Log,
    data_dir: &Path,
    config: &ModeConfig,
    clients: Clients,
    own: OwnUrls,
    retention_check: Duration,
    stopping: &watch::Receiver<bool>,
    progress: &StartProgress,
) -> Result<(Mode, Vec<JoinHandle<()>>), StartError> {
    let client = clients.0.unwrap_or_default();
    match config {
        ModeConfig::Standalone => {
            let (mode, retention) = start_standalone(log, retention_check, stopping).await?;
            Ok((mode, vec![retention]))
        }
        ModeConfig::Replica(follow) => {
            let status = Arc::new(FollowerStatus::new(follow.leader.clone()));
            let follower = spawn_follower(log.clone(), client, follow.clone(), status.clone(), stopping.clone());
            let retention = spawn_retention(log.clone(), None, retention_check, stopping.clone());
            Ok((Mode::Replica(status), vec![follower, retention]))
        }
        ModeConfig::Member(settings) => {
            let config = cluster_config(settings, client, own);
            let cluster = Cluster::start(log.clone(), data_dir, config, progress).await?;
            crate::telemetry::set_node_id(cluster.id());
            let retention = tokio::spawn(cluster::retention::run(
                cluster.clone(),
                retention_check,
                stopping.clone(),
            ));
            Ok((Mode::Member(cluster), vec![retention]))
        }
    }
}

/// A standalone log's mode over `log`: its producers table, rebuilt from
/// the log, and its retention task (ends when `stopping` turns true). The
/// default log of a standalone node and every named log start this way.
pub async fn start_standalone(
    log: &Log,
    retention_check: Duration,
    stopping: &watch::Receiver<bool>,
) -> Result<(Mode, JoinHandle<()>), StartError> {
    let scan = log.clone();
    let guarded = tokio::task::spawn_blocking(move || GuardedAppends::open(&scan))
        .await
        .map_err(|e| StartError::Producers(e.to_string()))?
        .map_err(|e| StartError::Producers(e.to_string()))?;
    let guarded = Arc::new(guarded);
    let retention = spawn_retention(log.clone(), Some(guarded.clone()), retention_check, stopping.clone());
    Ok((Mode::Standalone(guarded), retention))
}

/// A standalone node's or a replica's retention: delete the oldest segments
/// past `--retention-bytes` / `--retention-ms` every `every`. A standalone
/// node saves its producers table first, so that it does not forget the
/// producers whose records go (`guarded`).
fn spawn_retention(
    log: Log,
    producers: Option<Arc<GuardedAppends>>,
    every: Duration,
    mut stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            // Without a limit there is no point to find: no trip to a blocking
            // thread (a standalone node of many named logs runs one task a log).
            if !log.has_retention() {
                continue;
            }
            // One point for the save and the purge: deciding twice (at two
            // clocks, or around appends that seal a segment) could purge
            // records the saved table has not seen.
            let point = {
                let log = log.clone();
                match tokio::task::spawn_blocking(move || log.retention_point(now_ms())).await {
                    Ok(Ok(Some(point))) => point,
                    Ok(Ok(None)) => continue,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "retention failed");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "retention task failed");
                        continue;
                    }
                }
            };
            if let Some(producers) = &producers
                && let Err(e) = producers.save(&log).await
            {
                tracing::error!(error = %e, "could not save the producers table: retention waits");
                continue;
            }
            let log = log.clone();
            match tokio::task::spawn_blocking(move || log.purge_before(point)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(segments = n, "retention deleted old segments"),
                Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                Err(e) => tracing::error!(error = %e, "retention task failed"),
            }
        }
    })
}
