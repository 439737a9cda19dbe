//! The catalogue of a standalone node's named logs, in `<data dir>/logs/`:
//!
//! ```text
//! logs/<name>/                 a log: its segments, consumers/, producers table
//! logs/<name>/settings         its settings (cluster::Durable: CRC line, JSON)
//! logs/.creating.<name>/       a creation a crash interrupted: removed at open
//! logs/.deleting.<name>.<n>/   a deletion a crash interrupted: removed at open
//! ```
//!
//! Creating: make `.creating.<name>`, write `settings` there (synced),
//! rename it to `<name>` and sync `logs/` (the commit point), then open the
//! log in it (a log records its directory's path, so it opens where it
//! stays); if the open fails, the directory is discarded as a deletion
//! would. Deleting: take the log out of the map (new requests get
//! `NotFound`), end its streams, stop its retention and consumer changes,
//! close it, rename its directory to `.deleting.<name>.<n>` and sync `logs/`
//! (the commit point), then remove it. Every state in between opens:
//! leftovers are dot names, which no log has, and a `<name>` directory
//! always holds its settings. A log that does not open at start (or a
//! directory without settings) is set aside with its error: the others are
//! served, and it answers that error until deleted. Changes run one at a
//! time (`changing`); lookups take a short read lock.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::name::LogName;
use super::settings::{Requested, RetentionChange, Settings, SettingsError};
use crate::cluster::{Cluster, Durable, failpoint};
use crate::log::{Log, LogConfig, LogError, fsops};
use crate::mode::{Consumers, Mode, StartError, start_standalone};

/// The settings document in a log's directory.
const SETTINGS: &str = "settings";
const CREATING: &str = ".creating.";
const DELETING: &str = ".deleting.";

/// The default of `--max-logs`.
pub const DEFAULT_MAX_LOGS: usize = 10_000;

/// What a catalogue is opened with.
#[derive(Clone, Debug)]
pub struct CatalogConfig {
    /// `<data dir>/logs`.
    pub dir: PathBuf,
    /// The node's log configuration: named logs take it, with their settings over it.
    pub base: LogConfig,
    /// Logs the catalogue holds at most (`--max-logs`).
    pub max_logs: usize,
    /// How often each log's retention runs.
    pub retention_check: Duration,
    /// Whether an append to an unknown log creates it (`--auto-create-logs`).
    pub auto_create: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("no log is named {0}")]
    NotFound(String),
    #[error("log {name} exists with other settings")]
    Exists { name: String, settings: Settings },
    #[error("the node holds {max} logs, the most --max-logs allows")]
    TooMany { max: usize },
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("log storage failed: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("log {name} is on disk but did not open ({why}); delete it, or fix the cause and restart")]
    Failed { name: String, why: String },
    /// A catalogue change group 0 did not take (not its leader, no leader,
    /// an unknown outcome); `path` is what a client is sent to elsewhere.
    #[error("{error}")]
    Cluster {
        error: crate::cluster::ClusterError,
        path: String,
    },
    #[error("cannot place the log's replicas: {0}")]
    Placement(String),
}

/// One named log, open.
#[derive(Debug)]
pub struct NamedLog {
    pub name: LogName,
    pub log: Log,
    pub mode: Mode,
    pub consumers: Consumers,
    settings: Mutex<Settings>,
    /// Turns true to stop the log's retention (deleted, or the node stopping).
    stop: watch::Sender<bool>,
    retention: Mutex<Option<JoinHandle<()>>>,
    /// On a cluster member: the log's Raft group (a name deleted and
    /// created again is another group).
    pub group: Option<u64>,
}

impl NamedLog {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        name: LogName,
        log: Log,
        mode: Mode,
        consumers: Consumers,
        settings: Settings,
        stop: watch::Sender<bool>,
        retention: Mutex<Option<JoinHandle<()>>>,
        group: Option<u64>,
    ) -> NamedLog {
        NamedLog {
            name,
            log,
            mode,
            consumers,
            settings: Mutex::new(settings),
            stop,
            retention,
            group,
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(super) fn set_settings(&self, settings: Settings) {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = settings;
    }

    /// Turns true once the log stops being served (deleted, or the node
    /// stopping): its long polls and event streams end.
    pub fn gone(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Stops retention, consumer changes, the log's Raft group (on a
    /// cluster member) and the log; in-flight requests on it fail.
    pub(super) async fn close(&self) -> Result<(), CatalogError> {
        let _ = self.stop.send(true);
        self.consumers.close();
        let retention = self.retention.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = retention {
            let _ = task.await;
        }
        self.mode.shutdown().await;
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.close())
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        self.mode.log_closed();
        Ok(())
    }
}

/// A log as the catalogue finds it: open on this node, or (a cluster's log
/// with no replica here) held by other nodes.
#[derive(Clone, Debug)]
pub enum Found {
    Here(Arc<NamedLog>),
    Elsewhere(Remote),
    /// Placed on this node, and its replica not open (yet, or it failed:
    /// see `Catalog::failure`).
    Opening(Option<Remote>),
}

/// A cluster's log with no replica on this node.
#[derive(Clone, Debug)]
pub struct Remote {
    pub name: LogName,
    pub settings: Settings,
    /// Where its replicas are (client URLs), the first the one that
    /// normally leads.
    pub urls: Vec<String>,
}

impl Remote {
    /// A node to send the log's clients to: each in turn, so that a client
    /// sent to a node that is down finds another at its next try (this
    /// node cannot tell which of them is up).
    pub fn next_node(&self) -> Option<String> {
        static TURN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let turn = TURN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.urls.get(turn % self.urls.len().max(1)).cloned()
    }
}

/// Whether `create` made the log or found it made the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    Existing,
}

/// See the module doc. Cloning is cheap (one shared handle).
#[derive(Clone, Debug)]
pub struct Catalog(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// `None`: this node serves no named logs (a cluster member, a replica), and why.
    config: Result<CatalogConfig, &'static str>,
    logs: RwLock<BTreeMap<LogName, Arc<NamedLog>>>,
    /// Logs whose directory exists but did not open (at start, or after a
    /// creation's rename), and why: they answer that, and can be deleted.
    failed: Mutex<BTreeMap<LogName, String>>,
    /// One create, change or delete at a time.
    changing: tokio::sync::Mutex<()>,
    /// On a cluster member: group 0, whose catalogue this follows (`placed`).
    cluster: Option<Cluster>,
    /// Turns true when the node stops: the catalogue is no longer followed.
    closing: watch::Sender<bool>,
    /// Set when the node starts handing its leaderships on (`step_down`):
    /// leader spreading stops, so that it does not pick other targets.
    stepping_down: std::sync::atomic::AtomicBool,
    /// Bumped after each pass that opened or closed logs (`placed`).
    opened: watch::Sender<u64>,
}

impl Catalog {
    /// A catalogue that refuses every named log, saying `why`.
    pub fn unavailable(why: &'static str) -> Catalog {
        Catalog(Arc::new(Inner {
            config: Err(why),
            logs: RwLock::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            changing: tokio::sync::Mutex::new(()),
            cluster: None,
            closing: watch::Sender::new(false),
            stepping_down: std::sync::atomic::AtomicBool::new(false),
            opened: watch::Sender::new(0),
        }))
    }

    /// A cluster member's catalogue: group 0's (see `placed`). The logs
    /// placed on this node open in the background, in `config.dir`.
    pub async fn clustered(config: CatalogConfig, cluster: Cluster) -> Result<Catalog, CatalogError> {
        let dir = config.dir.clone();
        tokio::task::spawn_blocking(move || super::placed::tidy(&dir))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        let catalog = Catalog(Arc::new(Inner {
            config: Ok(config),
            logs: RwLock::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            changing: tokio::sync::Mutex::new(()),
            cluster: Some(cluster.clone()),
            closing: watch::Sender::new(false),
            stepping_down: std::sync::atomic::AtomicBool::new(false),
            opened: watch::Sender::new(0),
        }));
        let closing = catalog.0.closing.subscribe();
        tokio::spawn(super::placed::follow(catalog.clone(), cluster, closing));
        Ok(catalog)
    }

    /// Group 0, on a cluster member.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.0.cluster.as_ref()
    }

    pub(super) fn config_ref(&self) -> Result<&CatalogConfig, CatalogError> {
        self.config()
    }

    pub(super) async fn changing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.changing.lock().await
    }

    pub(super) fn forget(&self, name: &LogName) {
        self.write().remove(name);
    }

    pub(super) fn insert(&self, named: Arc<NamedLog>) {
        self.write().insert(named.name.clone(), named);
    }

    pub(super) fn set_failure(&self, name: &LogName, why: Option<String>) {
        self.set_failed(name, why);
    }

    /// Forgets the failures of logs `wanted` no longer names (deleted).
    pub(super) fn keep_failures(&self, wanted: impl Fn(&str) -> bool) {
        let mut failed = self.0.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.retain(|name, _| wanted(name.as_str()));
    }

    /// Whether the node is stopping (`close` was called).
    pub(super) fn is_closing(&self) -> bool {
        *self.0.closing.borrow()
    }

    /// A cluster's log: the client URL of the first node of its placement
    /// (the leader it prefers, `cluster::spread`), and whether a replica of
    /// it is moving (a node is leaving its group: a drain, the replica
    /// timeout, balance). Read in place: `GET /logs` asks it of every log.
    pub fn placement(&self, name: &str) -> (Option<String>, bool) {
        let Some(cluster) = self.0.cluster.as_ref() else {
            return (None, false);
        };
        let placed = cluster.with_placed(name, |placed| {
            (placed.nodes.first().copied(), !placed.leaving.is_empty())
        });
        let Some((first, moving)) = placed else {
            return (None, false);
        };
        (first.and_then(|id| cluster.member(id)).map(|member| member.url), moving)
    }

    /// Whether the node is handing its leaderships on or closing.
    pub(super) fn is_stopping(&self) -> bool {
        self.0.stepping_down.load(std::sync::atomic::Ordering::SeqCst) || self.is_closing()
    }

    /// Says a pass of `placed::follow` ended.
    pub(super) fn opened(&self) {
        self.0.opened.send_modify(|n| *n += 1);
    }

    /// Waits (up to `within`) until a pass of `placed::follow` ends with
    /// `done` true.
    pub(super) async fn wait_for_pass(&self, within: Duration, done: impl Fn(&Catalog) -> bool) -> bool {
        let mut passes = self.0.opened.subscribe();
        let waited = tokio::time::timeout(within, async {
            loop {
                if done(self) {
                    return;
                }
                if passes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        waited.is_ok() && done(self)
    }

    /// Opens every log under `config.dir` (a few at a time), first clearing
    /// what interrupted changes left. A log that does not open is kept
    /// aside with its error (`failure`), the others are served.
    pub async fn open(config: CatalogConfig) -> Result<Catalog, CatalogError> {
        let dir = config.dir.clone();
        let names = tokio::task::spawn_blocking(move || tidy_and_list(&dir))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        let opened: Vec<(LogName, Result<Arc<NamedLog>, CatalogError>)> = futures_util::stream::iter(names)
            .map(|name| {
                let config = &config;
                async move {
                    let opened = match read_settings(&config.dir.join(name.as_str())) {
                        Ok(settings) => open_log(config, name.clone(), settings).await,
                        Err(e) => Err(e),
                    };
                    (name, opened)
                }
            })
            .buffer_unordered(OPEN_AT_ONCE)
            .collect()
            .await;
        let (mut logs, mut failed) = (BTreeMap::new(), BTreeMap::new());
        for (name, opened) in opened {
            match opened {
                Ok(named) => {
                    logs.insert(name, named);
                }
                Err(e) => {
                    tracing::error!(log = %name, error = %e, "a named log did not open: it answers 503 until deleted or the node restarts");
                    failed.insert(name, e.to_string());
                }
            }
        }
        if !logs.is_empty() {
            tracing::info!(logs = logs.len(), "named logs opened");
        }
        Ok(Catalog(Arc::new(Inner {
            config: Ok(config),
            logs: RwLock::new(logs),
            failed: Mutex::new(failed),
            changing: tokio::sync::Mutex::new(()),
            cluster: None,
            closing: watch::Sender::new(false),
            stepping_down: std::sync::atomic::AtomicBool::new(false),
            opened: watch::Sender::new(0),
        })))
    }

    /// Why the log `name` exists on disk but is not served, if it is so.
    pub fn failure(&self, name: &str) -> Option<String> {
        self.0
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn set_failed(&self, name: &LogName, why: Option<String>) {
        let mut failed = self.0.failed.lock().unwrap_or_else(PoisonError::into_inner);
        match why {
            Some(why) => failed.insert(name.clone(), why),
            None => failed.remove(name),
        };
    }

    fn config(&self) -> Result<&CatalogConfig, CatalogError> {
        self.0.config.as_ref().map_err(|why| CatalogError::Unavailable(why))
    }

    /// Why named logs are not served here, if they are not.
    pub fn unavailable_reason(&self) -> Option<&'static str> {
        self.0.config.as_ref().err().copied()
    }

    /// Whether an append to an unknown log creates it with default settings.
    pub fn auto_creates(&self) -> bool {
        self.0.config.as_ref().is_ok_and(|c| c.auto_create)
    }

    /// The node's log configuration, which settings left out fall back to.
    pub fn base(&self) -> Option<&LogConfig> {
        self.0.config.as_ref().ok().map(|c| &c.base)
    }

    pub fn get(&self, name: &str) -> Option<Arc<NamedLog>> {
        self.read().get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<NamedLog>> {
        self.read().values().cloned().collect()
    }

    /// `name` wherever it is: open here, or (in a cluster) on other nodes
    /// only, or placed here and not open yet.
    pub fn find(&self, name: &str) -> Option<Found> {
        if let Some(named) = self.get(name) {
            return Some(Found::Here(named));
        }
        let cluster = self.0.cluster.as_ref()?;
        let placed = cluster.placed(name)?;
        let name = LogName::parse(name).ok()?;
        let remote = super::placed::remote(cluster, name, &placed);
        // Placed here, it answers as opening (or why it failed) even if
        // its entry does not read.
        match placed.held_by(cluster.id()) {
            true => Some(Found::Opening(remote.ok())),
            false => remote.ok().map(Found::Elsewhere),
        }
    }

    /// On a cluster member that does not lead the cluster group, why a name
    /// it does not know is not an answer: it may not have applied the
    /// log's creation yet (the leader's URL in `NotLeader`, or no leader).
    /// `None`: this node's word is final (standalone, or the leader).
    pub fn not_final(&self) -> Option<crate::cluster::ClusterError> {
        self.0.cluster.as_ref()?.must_lead().err()
    }

    /// Every log: the ones open here, and in a cluster the others too.
    pub fn list_all(&self) -> Vec<Found> {
        let Some(cluster) = &self.0.cluster else {
            return self.list().into_iter().map(Found::Here).collect();
        };
        let catalogue = cluster.catalogue();
        let me = cluster.id();
        let logs = catalogue.logs.into_iter().filter_map(|(name, placed)| {
            if let Some(named) = self.get(&name) {
                return Some(Found::Here(named));
            }
            let name = LogName::parse(&name).ok()?;
            let remote = super::placed::remote(cluster, name, &placed);
            match placed.held_by(me) {
                true => Some(Found::Opening(remote.ok())),
                false => remote.ok().map(Found::Elsewhere),
            }
        });
        logs.collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<LogName, Arc<NamedLog>>> {
        self.0.logs.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<LogName, Arc<NamedLog>>> {
        self.0.logs.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates `name` with `requested` settings; the same settings again
    /// find it (`Created::Existing`), other settings are `Exists`.
    pub async fn create(&self, name: LogName, requested: &Requested) -> Result<(Created, Found), CatalogError> {
        let config = self.config()?;
        if let Some(cluster) = &self.0.cluster {
            return super::placed::create(self, cluster, config, name, requested).await;
        }
        let settings = requested.resolve(1, &config.base)?;
        let _one = self.0.changing.lock().await;
        if let Some(existing) = self.get(name.as_str()) {
            let held = existing.settings();
            return match held == settings {
                true => Ok((Created::Existing, Found::Here(existing))),
                false => Err(CatalogError::Exists {
                    name: name.to_string(),
                    settings: held,
                }),
            };
        }
        if let Some(why) = self.failure(name.as_str()) {
            return Err(CatalogError::Failed {
                name: name.to_string(),
                why,
            });
        }
        if self.read().len() >= config.max_logs {
            return Err(CatalogError::TooMany { max: config.max_logs });
        }
        make_directory(&config.dir, &name, &settings).await?;
        let opened = match failpoint::hit(failpoint::LOG_CREATE_AFTER_RENAME).await {
            Ok(()) => open_log(config, name.clone(), settings).await,
            Err(e) => Err(io::Error::other(e).into()),
        };
        let named = match opened {
            Ok(named) => named,
            Err(e) => {
                // The name exists on disk now; taken back, it stays free.
                self.discard_or_set_aside(config, &name).await?;
                return Err(e);
            }
        };
        self.write().insert(name.clone(), named.clone());
        tracing::info!(log = %name, "named log created");
        Ok((Created::New, Found::Here(named)))
    }

    /// Changes `name`'s retention; it applies from the log's next
    /// retention run.
    pub async fn change(&self, name: &str, change: &RetentionChange) -> Result<Found, CatalogError> {
        let config = self.config()?;
        if let Some(cluster) = &self.0.cluster {
            return super::placed::change(self, cluster, config, name, change).await;
        }
        let _one = self.0.changing.lock().await;
        let named = self.get(name).ok_or_else(|| CatalogError::NotFound(name.to_string()))?;
        let settings = named.settings().changed(change);
        settings.check(&config.base)?;
        let durable = Durable::open(config.dir.join(name))?;
        let written = settings.clone();
        tokio::task::spawn_blocking(move || durable.write(SETTINGS, &written, true))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        named.log.set_retention(settings.retention(&config.base))?;
        *named.settings.lock().unwrap_or_else(PoisonError::into_inner) = settings;
        Ok(Found::Here(named))
    }

    /// Deletes `name` and everything it holds (a log that did not open too).
    pub async fn delete(&self, name: &str) -> Result<(), CatalogError> {
        let config = self.config()?;
        if let Some(cluster) = &self.0.cluster {
            return super::placed::delete(self, cluster, name).await;
        }
        let _one = self.0.changing.lock().await;
        match self.get(name) {
            Some(named) => {
                self.write().remove(&named.name);
                // Its records are going: a failed final sync changes nothing.
                if let Err(e) = named.close().await {
                    tracing::warn!(log = %name, error = %e, "a deleted log did not close cleanly");
                }
            }
            None => {
                let failed = LogName::parse(name).ok().filter(|n| self.failure(n.as_str()).is_some());
                let Some(failed) = failed else {
                    return Err(CatalogError::NotFound(name.to_string()));
                };
                self.set_failed(&failed, None);
            }
        }
        let log_name = LogName::parse(name).map_err(|e| io::Error::other(e.to_string()))?;
        self.discard_or_set_aside(config, &log_name).await?;
        tracing::info!(log = %name, "named log deleted");
        Ok(())
    }

    /// `discard`s `name`; if that fails the directory is still `<name>`, so
    /// the name is set aside with the error (served as such, deletable
    /// again) rather than hidden: neither served nor free, and back with
    /// its records at the next start.
    async fn discard_or_set_aside(&self, config: &CatalogConfig, name: &LogName) -> Result<(), CatalogError> {
        let discarded = discard(config, name.as_str()).await;
        if let Err(e) = &discarded {
            self.set_failed(name, Some(format!("its deletion failed: {e}")));
        }
        discarded
    }

    /// Before a graceful stop: every group this node leads hands its
    /// leadership on (see `Mode::step_down`), a few at a time, all within
    /// `within` (not each: a node of many logs must not stop for minutes).
    pub async fn step_down(&self, within: Duration) {
        self.0.stepping_down.store(true, std::sync::atomic::Ordering::SeqCst);
        let until = tokio::time::Instant::now() + within;
        let skipped = std::sync::atomic::AtomicUsize::new(0);
        futures_util::stream::iter(self.list())
            .for_each_concurrent(OPEN_AT_ONCE, |named| {
                let skipped = &skipped;
                async move {
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    match left.is_zero() {
                        true => _ = skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        false => named.mode.step_down(left).await,
                    }
                }
            })
            .await;
        let skipped = skipped.into_inner();
        if skipped > 0 {
            tracing::warn!(
                ?within,
                skipped,
                "no time left to hand over the named logs not reached yet (skipped: how many; those this node leads elect after an election timeout)"
            );
        }
    }

    /// At shutdown, before requests drain: every log's long polls and
    /// event streams end and its retention stops.
    pub fn stop_serving(&self) {
        for named in self.read().values() {
            let _ = named.stop.send(true);
        }
    }

    /// At shutdown: every log's retention stopped, every log synced and
    /// closed, a few at a time.
    pub async fn close(&self) {
        let _ = self.0.closing.send(true);
        let _one = self.0.changing.lock().await;
        let logs = std::mem::take(&mut *self.write());
        futures_util::stream::iter(logs)
            .for_each_concurrent(OPEN_AT_ONCE, |(name, named)| async move {
                if let Err(e) = named.close().await {
                    tracing::error!(log = %name, error = %e, "a named log did not close cleanly");
                }
            })
            .await;
    }
}

/// Logs opened or closed at once: a restart of a node with many logs is
/// bounded by the disk's sync latency, not by one log after another.
const OPEN_AT_ONCE: usize = 16;

/// Removes `<dir>/<name>` for good: renamed to a `.deleting` name and
/// synced (after which a crash finishes the removal at the next start),
/// then removed.
async fn discard(config: &CatalogConfig, name: &str) -> Result<(), CatalogError> {
    let (dir, doomed) = (config.dir.join(name), config.dir.join(deleting_name(name)));
    let logs_dir = config.dir.clone();
    let renamed = doomed.clone();
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        fsops::rename(&dir, &renamed)?;
        fsops::sync_dir(&logs_dir)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))??;
    failpoint::hit(failpoint::LOG_DELETE_AFTER_RENAME)
        .await
        .map_err(io::Error::other)?;
    remove_leftover(doomed).await;
    Ok(())
}

/// A name no other deletion of `name` uses: the clock's nanoseconds.
fn deleting_name(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{DELETING}{name}.{nanos}")
}

/// Steps 1-3 of creating (see the module doc): after it, `name` exists.
async fn make_directory(logs_dir: &Path, name: &LogName, settings: &Settings) -> Result<(), CatalogError> {
    let staging = logs_dir.join(format!("{CREATING}{name}"));
    let (staged, written) = (staging.clone(), settings.clone());
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        if staged.exists() {
            std::fs::remove_dir_all(&staged).map_err(|e| fsops::naming(&staged, e))?;
        }
        Durable::open(staged)?.write(SETTINGS, &written, true)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))??;
    failpoint::hit(failpoint::LOG_CREATE_BEFORE_RENAME)
        .await
        .map_err(io::Error::other)?;
    let (target, logs) = (logs_dir.join(name.as_str()), logs_dir.to_path_buf());
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        fsops::rename(&staging, &target)?;
        fsops::sync_dir(&logs)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))??;
    Ok(())
}

/// Opens the log in `<dir>/<name>` with its mode, consumer positions and retention.
async fn open_log(config: &CatalogConfig, name: LogName, settings: Settings) -> Result<Arc<NamedLog>, CatalogError> {
    let dir = config.dir.join(name.as_str());
    let log_config = settings.log_config(&config.base);
    let opened_dir = dir.clone();
    let log = tokio::task::spawn_blocking(move || Log::open(&opened_dir, log_config))
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
    let (stop, stopping) = watch::channel(false);
    let (mode, retention) = start_standalone(&log, config.retention_check, &stopping).await?;
    let consumers = Consumers::open(&mode, &dir)?;
    Ok(Arc::new(NamedLog {
        name,
        log,
        mode,
        consumers,
        settings: Mutex::new(settings),
        stop,
        retention: Mutex::new(Some(retention)),
        group: None,
    }))
}

fn read_settings(dir: &Path) -> Result<Settings, CatalogError> {
    let durable = Durable::open(dir.to_path_buf())?;
    durable.read::<Settings>(SETTINGS)?.ok_or_else(|| {
        CatalogError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} has no settings: not a named log distlog made (move it out of logs/)",
                dir.display()
            ),
        ))
    })
}

/// Creates `dir` if needed, removes what interrupted creations and
/// deletions left, and lists the logs in it.
fn tidy_and_list(dir: &Path) -> io::Result<Vec<LogName>> {
    fsops::create_dir_all(dir)?;
    if let Some(parent) = dir.parent() {
        fsops::sync_dir(parent)?;
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| fsops::naming(dir, e))? {
        let entry = entry.map_err(|e| fsops::naming(dir, e))?;
        let file_name = entry.file_name();
        let Some(text) = file_name.to_str() else {
            continue;
        };
        if text.starts_with(CREATING) || text.starts_with(DELETING) {
            let path = entry.path();
            tracing::warn!(dir = %path.display(), "removing what an interrupted log creation or deletion left");
            std::fs::remove_dir_all(&path).map_err(|e| fsops::naming(&path, e))?;
            continue;
        }
        match LogName::parse(text) {
            Ok(name) if entry.path().is_dir() => names.push(name),
            _ => tracing::warn!(entry = %entry.path().display(), "not a named log: left alone"),
        }
    }
    names.sort();
    Ok(names)
}

/// Removes a deleted log's directory; a failure is logged, and the next
/// start removes it (its name marks it).
async fn remove_leftover(dir: PathBuf) {
    let removed =
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir).map_err(|e| fsops::naming(&dir, e))).await;
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "a deleted log's files remain until the next start"),
        Err(e) => tracing::warn!(error = %e, "a deleted log's files remain until the next start"),
    }
}
