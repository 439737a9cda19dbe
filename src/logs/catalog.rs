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
//! log in it. Deleting: take the log out of the map (new requests get
//! `NotFound`), stop its retention, close it, rename its directory to
//! `.deleting.<name>.<n>` and sync `logs/` (the commit point), then remove
//! it. Every state in between opens: leftovers are dot names, which no log
//! has, and a `<name>` directory always holds its settings. Changes run one
//! at a time (`changing`); lookups take a short read lock.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::name::LogName;
use super::settings::{Requested, RetentionChange, Settings, SettingsError};
use crate::cluster::{Durable, failpoint};
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
}

impl NamedLog {
    pub fn settings(&self) -> Settings {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops retention and closes the log; in-flight requests on it fail.
    async fn close(&self) -> Result<(), CatalogError> {
        let _ = self.stop.send(true);
        let retention = self.retention.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = retention {
            let _ = task.await;
        }
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.close())
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        Ok(())
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
    /// One create, change or delete at a time.
    changing: tokio::sync::Mutex<()>,
}

impl Catalog {
    /// A catalogue that refuses every named log, saying `why`.
    pub fn unavailable(why: &'static str) -> Catalog {
        Catalog(Arc::new(Inner {
            config: Err(why),
            logs: RwLock::new(BTreeMap::new()),
            changing: tokio::sync::Mutex::new(()),
        }))
    }

    /// Opens every log under `config.dir`, first clearing what interrupted
    /// changes left.
    pub async fn open(config: CatalogConfig) -> Result<Catalog, CatalogError> {
        let dir = config.dir.clone();
        let names = tokio::task::spawn_blocking(move || tidy_and_list(&dir))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        let mut logs = BTreeMap::new();
        for name in names {
            let settings = read_settings(&config.dir.join(name.as_str()))?;
            let named = open_log(&config, name.clone(), settings).await?;
            logs.insert(name, named);
        }
        if !logs.is_empty() {
            tracing::info!(logs = logs.len(), "named logs opened");
        }
        Ok(Catalog(Arc::new(Inner {
            config: Ok(config),
            logs: RwLock::new(logs),
            changing: tokio::sync::Mutex::new(()),
        })))
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
        self.read()
            .iter()
            .find_map(|(n, l)| (n.as_str() == name).then(|| l.clone()))
    }

    pub fn list(&self) -> Vec<Arc<NamedLog>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<LogName, Arc<NamedLog>>> {
        self.0.logs.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<LogName, Arc<NamedLog>>> {
        self.0.logs.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates `name` with `requested` settings; the same settings again
    /// find it (`Created::Existing`), other settings are `Exists`.
    pub async fn create(&self, name: LogName, requested: &Requested) -> Result<(Created, Arc<NamedLog>), CatalogError> {
        let config = self.config()?;
        let settings = requested.resolve(1, &config.base)?;
        let _one = self.0.changing.lock().await;
        if let Some(existing) = self.get(name.as_str()) {
            let held = existing.settings();
            return match held == settings {
                true => Ok((Created::Existing, existing)),
                false => Err(CatalogError::Exists {
                    name: name.to_string(),
                    settings: held,
                }),
            };
        }
        if self.read().len() >= config.max_logs {
            return Err(CatalogError::TooMany { max: config.max_logs });
        }
        make_directory(&config.dir, &name, &settings).await?;
        let named = open_log(config, name.clone(), settings).await?;
        self.write().insert(name.clone(), named.clone());
        tracing::info!(log = %name, "named log created");
        Ok((Created::New, named))
    }

    /// Changes `name`'s retention; it applies from the log's next
    /// retention run.
    pub async fn change(&self, name: &str, change: &RetentionChange) -> Result<Arc<NamedLog>, CatalogError> {
        let config = self.config()?;
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
        Ok(named)
    }

    /// Deletes `name` and everything it holds.
    pub async fn delete(&self, name: &str) -> Result<(), CatalogError> {
        let config = self.config()?;
        let _one = self.0.changing.lock().await;
        let named = self.get(name).ok_or_else(|| CatalogError::NotFound(name.to_string()))?;
        self.write().remove(&named.name);
        named.close().await?;
        let (dir, doomed) = (config.dir.join(name), config.dir.join(deleting_name(name)));
        let logs_dir = config.dir.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            fsops::rename(&dir, &doomed)?;
            fsops::sync_dir(&logs_dir)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
        failpoint::hit(failpoint::LOG_DELETE_AFTER_RENAME)
            .await
            .map_err(io::Error::other)?;
        let doomed = config.dir.join(deleting_name(name));
        remove_leftover(doomed).await;
        tracing::info!(log = %name, "named log deleted");
        Ok(())
    }

    /// At shutdown: every log's retention stopped, every log synced and closed.
    pub async fn close(&self) {
        let logs = std::mem::take(&mut *self.write());
        for (name, named) in logs {
            if let Err(e) = named.close().await {
                tracing::error!(log = %name, error = %e, "a named log did not close cleanly");
            }
        }
    }
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
    failpoint::hit(failpoint::LOG_CREATE_AFTER_RENAME)
        .await
        .map_err(io::Error::other)?;
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
