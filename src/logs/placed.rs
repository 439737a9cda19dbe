//! Named logs on a cluster member. The catalogue is group 0's
//! (`cluster::Catalogue`): creating, changing and deleting a log are
//! catalogue changes proposed on group 0's leader, decided when applied,
//! the same on every node. Each node then follows the catalogue
//! (`follow`): it opens the logs placed on it, each its own Raft group
//! (`Cluster::start_group`), applies retention changes, closes and
//! removes the logs deleted or moved away, hands the groups it leads to
//! their preferred leaders (`Cluster::spread_leaders`) and drives the
//! moves of replicas (`Cluster::drive_moves`). On disk:
//!
//! ```text
//! groups/<group>/             a replica: segments, raft/ (raft/replica names group and node)
//! groups/.creating.<group>/   a replica's creation a crash interrupted: removed at start
//! groups/.deleting.<group>/   a deletion a crash interrupted: removed at start
//! groups/.gone.<group>        this node removed its replica of the group: never opened again
//! ```
//!
//! A replica directory is made (`.creating` then renamed) before its group
//! starts, and a deleted log's directory is renamed to `.deleting` (the
//! commit point) before it is removed: each state in between opens. A
//! directory of a group the catalogue no longer names, below its next
//! group id, is a deletion this node missed (it was down) and is removed
//! the same way; one above it is left alone and logged (a catalogue that
//! came back short).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::catalog::{Catalog, CatalogConfig, CatalogError, Created, Found, NamedLog, Remote};
use super::name::LogName;
use super::settings::{Requested, RetentionChange, Settings};
use crate::cluster::{CatalogueChange, CatalogueRefusal, Cluster, Moving, PlacedLog, Spreading, failpoint};
use crate::log::{Log, fsops};
use crate::mode::{Consumers, Mode};

const CREATING: &str = ".creating.";
const DELETING: &str = ".deleting.";
/// `.gone.<group>`: this node removed its replica of the group (deleted or
/// moved away); it never opens one again.
const GONE: &str = ".gone.";

fn tombstone(dir: &Path, group: u64) -> PathBuf {
    dir.join(format!("{GONE}{group}"))
}

/// How often the catalogue is followed even without a change (a log that
/// failed to open is tried again).
const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// The settings a catalogue entry carries.
pub(super) fn settings_of(placed: &PlacedLog) -> Result<Settings, CatalogError> {
    serde_json::from_value(placed.settings.clone()).map_err(|e| {
        CatalogError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("catalogue settings: {e}"),
        ))
    })
}

pub(super) fn settings_value(settings: &Settings) -> serde_json::Value {
    // Our own plain struct: cannot fail.
    serde_json::to_value(settings).unwrap_or_default()
}

/// Follows the catalogue until `closing` turns true (see the module doc).
pub(super) async fn follow(catalog: Catalog, cluster: Cluster, mut closing: watch::Receiver<bool>) {
    let mut changes = cluster.catalogue_changes();
    let mut spreading = Spreading::default();
    let moving = Moving::default();
    loop {
        if let Err(e) = reconcile(&catalog, &cluster).await {
            tracing::warn!(error = %e, "named logs did not follow the catalogue; trying again");
        }
        if !catalog.is_stopping() {
            cluster.spread_leaders(&mut spreading);
            cluster.drive_moves(&moving);
            cluster.yield_named_groups();
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}

/// One pass: the logs this node holds made to match what the catalogue
/// places on it.
async fn reconcile(catalog: &Catalog, cluster: &Cluster) -> Result<(), CatalogError> {
    let config = catalog.config_ref()?.clone();
    let _one = catalog.changing().await;
    // `Catalog::close` took every log while this pass waited: nothing is opened again.
    if catalog.is_closing() {
        return Ok(());
    }
    let catalogue = cluster.catalogue();
    let me = cluster.id();
    // A node the cluster removed keeps its replicas (a log of one replica lives there, and its
    // votes may be needed) and hands over the groups it leads (`Cluster::yield_named_groups`); nothing is deleted
    // while it is removed (it hears no catalogue change), for when it is added again.
    let removed = cluster.removed().is_some();
    let wanted: BTreeMap<&str, &PlacedLog> = catalogue
        .logs
        .iter()
        .filter(|(_, placed)| placed.held_by(me))
        .map(|(name, placed)| (name.as_str(), placed))
        .collect();
    for named in catalog.list() {
        match wanted.get(named.name.as_str()) {
            Some(placed) if Some(placed.group) == named.group => {
                if let Err(e) = keep_up(&config, cluster, &named, placed).await {
                    tracing::warn!(log = %named.name, error = %e, "a named log's replica did not follow its catalogue entry");
                }
            }
            _ => {
                catalog.forget(&named.name);
                close(cluster, &named).await;
            }
        }
    }
    catalog.keep_failures(|name| wanted.contains_key(name));
    for (name, placed) in &wanted {
        let Ok(name) = LogName::parse(name) else {
            continue;
        };
        if catalog.get(name.as_str()).is_some() {
            continue;
        }
        match open(&config, cluster, name.clone(), placed).await {
            Ok(named) => {
                catalog.insert(named);
                catalog.set_failure(&name, None);
            }
            Err(e) => {
                tracing::error!(log = %name, group = placed.group, error = %e, "a named log's replica did not open");
                catalog.set_failure(&name, Some(e.to_string()));
            }
        }
    }
    catalog.opened();
    if removed {
        return Ok(());
    }
    // Every group the catalogue names is kept, placed here or not (a node
    // that came back under a new id still holds its old replicas' files),
    // but one this node held and gave up (moved away: `former`).
    let kept: Vec<u64> = catalogue
        .logs
        .values()
        .filter(|p| !p.former.contains(&me))
        .map(|p| p.group)
        .collect();
    remove_unplaced(&config.dir, &kept, catalogue.next_group).await
}

/// An open replica made to match its entry: retention as the catalogue
/// says, and its group initialized if this node is the one to do it and
/// an earlier try failed.
async fn keep_up(
    config: &CatalogConfig,
    cluster: &Cluster,
    named: &NamedLog,
    placed: &PlacedLog,
) -> Result<(), CatalogError> {
    let settings = settings_of(placed)?;
    if settings != named.settings() {
        named.log.set_retention(settings.retention(&config.base))?;
        named.set_settings(settings);
    }
    if let Some(group) = named.mode.cluster()
        && placed.initializer() == Some(cluster.id())
        && group.members().is_empty()
    {
        group
            .initialize_group(cluster, &placed.nodes)
            .await
            .map_err(|e| cluster_error(named.name.as_str(), e))?;
    }
    Ok(())
}

/// Stops a log's group, then closes the log (its directory is removed by
/// `remove_unplaced`).
async fn close(cluster: &Cluster, named: &NamedLog) {
    if let Some(group) = named.group {
        cluster.stop_group(group).await;
    }
    if let Err(e) = named.close().await {
        tracing::warn!(log = %named.name, error = %e, "a named log's replica did not close cleanly");
    }
    tracing::info!(log = %named.name, group = ?named.group, "named log's replica closed");
    crash_point(failpoint::GROUP_DELETE_AFTER_CLOSE).await;
}

/// A failpoint of the fault tests (`cluster::failpoint`): only `abort`
/// means anything here; a step that "fails" is tried again at the next pass.
async fn crash_point(point: &str) {
    if let Err(e) = failpoint::hit(point).await {
        tracing::warn!(point, error = %e, "failpoint");
    }
}

/// Opens (making it first if need be) this node's replica of `placed`.
async fn open(
    config: &CatalogConfig,
    cluster: &Cluster,
    name: LogName,
    placed: &PlacedLog,
) -> Result<Arc<NamedLog>, CatalogError> {
    let settings = settings_of(placed)?;
    let dir = config.dir.join(placed.group.to_string());
    if tombstone(&config.dir, placed.group).exists() {
        return Err(CatalogError::Io(io::Error::other(format!(
            "this node removed its replica of group {} (the log was deleted or moved away): it does not open one again \
             (a catalogue that came back short after a power cut names it until it catches up)",
            placed.group
        ))));
    }
    set_aside_if_another_ids(&config.dir, placed.group, cluster.id()).await?;
    crash_point(failpoint::GROUP_CREATE_BEFORE_DIR).await;
    make_directory(&config.dir, placed.group).await?;
    crash_point(failpoint::GROUP_CREATE_AFTER_DIR).await;
    let (opened_dir, log_config) = (dir.clone(), settings.log_config(&config.base));
    let log = tokio::task::spawn_blocking(move || Log::open(&opened_dir, log_config))
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
    let group = match cluster.start_group(placed.group, log.clone(), &dir).await {
        Ok(group) => group,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
            return Err(CatalogError::Start(e.into()));
        }
    };
    crash_point(failpoint::GROUP_CREATE_AFTER_START).await;
    let place = placed
        .nodes
        .iter()
        .position(|n| *n == cluster.id())
        .unwrap_or(placed.nodes.len());
    group.dormant_for(place);
    if placed.initializer() == Some(cluster.id())
        && let Err(e) = group.initialize_group(cluster, &placed.nodes).await
    {
        tracing::warn!(log = %name, error = %e, "could not initialize a named log's group; trying at the next pass");
    }
    let (stop, stopping) = watch::channel(false);
    let retention = tokio::spawn(crate::cluster::retention::run(
        group.clone(),
        config.retention_check,
        stopping,
    ));
    let mode = Mode::Member(group);
    let consumers = match Consumers::open(&mode, &dir) {
        Ok(consumers) => consumers,
        Err(e) => {
            // Nothing is left running that no `NamedLog` would close.
            let _ = stop.send(true);
            cluster.stop_group(placed.group).await;
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
            return Err(e.into());
        }
    };
    tracing::info!(log = %name, group = placed.group, "named log's replica opened");
    Ok(Arc::new(NamedLog::new(
        name,
        log,
        mode,
        consumers,
        settings,
        stop,
        Mutex::new(Some(retention)),
        Some(placed.group),
    )))
}

/// Removes `<dir>/<group>` when it holds a replica made for another node id
/// (this node's id before it was given a new one: that id never votes
/// again, so its files are of no use, and the group placed here under the
/// new id needs the directory), the way a deletion does.
async fn set_aside_if_another_ids(dir: &Path, group: u64, me: u64) -> Result<(), CatalogError> {
    let replica = dir.join(group.to_string());
    let made_for = crate::cluster::replica_made_for(&replica).map_err(|e| CatalogError::Start(e.into()))?;
    let Some(other) = made_for.filter(|node| *node != me) else {
        return Ok(());
    };
    tracing::warn!(
        group,
        old_id = other,
        node_id = me,
        "a replica directory of this node's former id is in the way of the group placed on it now: removing it"
    );
    let (listed, renamed) = (dir.to_path_buf(), dir.join(format!("{DELETING}{group}")));
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        fsops::rename(&replica, &renamed)?;
        fsops::sync_dir(&listed)?;
        remove_tree(&renamed)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))??;
    Ok(())
}

/// Makes `<dir>/<group>` unless it exists: `.creating.<group>` first,
/// renamed once made, so that a crash leaves either nothing or a whole one.
async fn make_directory(dir: &Path, group: u64) -> io::Result<()> {
    let (dir, target) = (dir.to_path_buf(), dir.join(group.to_string()));
    if target.is_dir() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        let staging = dir.join(format!("{CREATING}{group}"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| fsops::naming(&staging, e))?;
        }
        fsops::create_dir_all(&staging)?;
        fsops::rename(&staging, &target)?;
        fsops::sync_dir(&dir)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))?
}

/// Removes the replicas of groups below `next_group` this node no longer
/// holds (`kept` are the ones it holds), and what interrupted deletions
/// left: each renamed to `.deleting.<group>` (synced: the commit point),
/// then removed.
async fn remove_unplaced(dir: &Path, kept: &[u64], next_group: u64) -> Result<(), CatalogError> {
    let (listed, kept) = (dir.to_path_buf(), kept.to_vec());
    let doomed = tokio::task::spawn_blocking(move || -> io::Result<Vec<PathBuf>> {
        let mut doomed = Vec::new();
        for entry in std::fs::read_dir(&listed).map_err(|e| fsops::naming(&listed, e))? {
            let entry = entry.map_err(|e| fsops::naming(&listed, e))?;
            let file_name = entry.file_name();
            let Some(text) = file_name.to_str() else {
                continue;
            };
            if text.starts_with(DELETING) {
                doomed.push(entry.path());
                continue;
            }
            let Ok(group) = text.parse::<u64>() else {
                continue;
            };
            if kept.contains(&group) {
                continue;
            }
            if group >= next_group {
                tracing::warn!(group, dir = %entry.path().display(),
                    "a replica of a group the catalogue has not heard of: left alone");
                continue;
            }
            // The tombstone first (synced): a catalogue a power cut rolled back must not
            // open this group here again, empty, under the id whose votes went with it.
            let gone = tombstone(&listed, group);
            fsops::create(&gone)?;
            fsops::sync_dir(&listed)?;
            let renamed = listed.join(format!("{DELETING}{group}"));
            fsops::rename(&entry.path(), &renamed)?;
            fsops::sync_dir(&listed)?;
            tracing::info!(group, "removing a deleted named log's replica");
            doomed.push(renamed);
        }
        Ok(doomed)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))??;
    if doomed.is_empty() {
        return Ok(());
    }
    crash_point(failpoint::GROUP_DELETE_AFTER_RENAME).await;
    tokio::task::spawn_blocking(move || doomed.iter().try_for_each(|path| remove_tree(path)))
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
    Ok(())
}

fn remove_tree(path: &Path) -> io::Result<()> {
    std::fs::remove_dir_all(path).map_err(|e| fsops::naming(path, e))
}

/// Clears what interrupted creations left and makes `dir` (at start).
pub(super) fn tidy(dir: &Path) -> io::Result<()> {
    fsops::create_dir_all(dir)?;
    if let Some(parent) = dir.parent() {
        fsops::sync_dir(parent)?;
    }
    for entry in std::fs::read_dir(dir).map_err(|e| fsops::naming(dir, e))? {
        let entry = entry.map_err(|e| fsops::naming(dir, e))?;
        if entry.file_name().to_str().is_some_and(|t| t.starts_with(CREATING)) {
            remove_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// How long a create or delete waits for this node to open or close its
/// replica, and a created log's group to elect its first leader.
const SETTLING: Duration = Duration::from_secs(10);

fn cluster_error(name: &str, error: crate::cluster::ClusterError) -> CatalogError {
    CatalogError::Cluster {
        error,
        path: format!("/logs/{name}"),
    }
}

fn refused(refusal: CatalogueRefusal) -> CatalogError {
    match refusal {
        CatalogueRefusal::Exists { name, settings } => match serde_json::from_value(settings) {
            Ok(settings) => CatalogError::Exists { name, settings },
            Err(e) => CatalogError::Io(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        },
        CatalogueRefusal::NotFound(name) => CatalogError::NotFound(name),
        CatalogueRefusal::TooMany { max } => CatalogError::TooMany { max },
        CatalogueRefusal::Placement(why) => CatalogError::Placement(why),
        other @ (CatalogueRefusal::Changed(_) | CatalogueRefusal::Replayed(_)) => CatalogError::Cluster {
            path: String::new(),
            error: crate::cluster::ClusterError::OutcomeUnknown(other.to_string()),
        },
    }
}

/// Creates `name` through group 0 (see the module doc), then waits for
/// this node's replica, if it holds one, to open and its group to lead.
pub(super) async fn create(
    catalog: &Catalog,
    cluster: &Cluster,
    config: &CatalogConfig,
    name: LogName,
    requested: &Requested,
) -> Result<(Created, Found), CatalogError> {
    cluster.must_lead().map_err(|e| cluster_error(name.as_str(), e))?;
    let members = cluster.voter_ids();
    // The default replica count is the cluster's, a node being drained included.
    let nodes = u64::try_from(cluster.voter_count()).unwrap_or(u64::MAX);
    let settings = requested.resolve(nodes, &config.base)?;
    // Asked again for a log that exists: answered from the catalogue, with
    // no entry (each one is synced on every node, whatever --fsync says).
    if let Some(placed) = cluster.placed(name.as_str()) {
        let held = settings_of(&placed)?;
        if held != settings {
            return Err(CatalogError::Exists {
                name: name.to_string(),
                settings: held,
            });
        }
        let found = settle(catalog, cluster, &name, &placed).await?;
        return Ok((Created::Existing, found));
    }
    let placement = cluster
        .catalogue()
        .place(name.as_str(), usize::from(settings.replicas), &members)
        .map_err(refused)?;
    let change = CatalogueChange::Create {
        name: name.to_string(),
        settings: settings_value(&settings),
        nodes: placement,
        max_logs: config.max_logs,
    };
    let outcome = cluster
        .change_catalogue(change)
        .await
        .map_err(|e| cluster_error(name.as_str(), e))?;
    let (made, placed) = outcome.map_err(refused)?;
    let created = if made { Created::New } else { Created::Existing };
    let found = settle(catalog, cluster, &name, &placed).await?;
    Ok((created, found))
}

/// The log as found once this node's replica (if any) opened and its
/// group has a leader, or `SETTLING` passed.
async fn settle(
    catalog: &Catalog,
    cluster: &Cluster,
    name: &LogName,
    placed: &PlacedLog,
) -> Result<Found, CatalogError> {
    if !placed.held_by(cluster.id()) {
        return Ok(Found::Elsewhere(remote(cluster, name.clone(), placed)?));
    }
    let group = placed.group;
    let opened = catalog
        .wait_for_pass(SETTLING, |c| {
            c.get(name.as_str()).is_some_and(|n| n.group == Some(group))
        })
        .await;
    let named = match (opened, catalog.get(name.as_str())) {
        (true, Some(named)) => named,
        _ => {
            return Err(match catalog.failure(name.as_str()) {
                Some(why) => CatalogError::Failed {
                    name: name.to_string(),
                    why,
                },
                None => cluster_error(
                    name.as_str(),
                    crate::cluster::ClusterError::Timeout(format!(
                        "log {name} is in the catalogue, but this node's replica did not open within {} s",
                        SETTLING.as_secs()
                    )),
                ),
            });
        }
    };
    if let Some(group) = named.mode.cluster() {
        group.wait_for_leader(SETTLING).await;
    }
    Ok(Found::Here(named))
}

/// A log placed on other nodes only.
pub(super) fn remote(cluster: &Cluster, name: LogName, placed: &PlacedLog) -> Result<Remote, CatalogError> {
    let members = cluster.members();
    let urls = placed
        .nodes
        .iter()
        .filter_map(|node| members.get(node).map(|(member, _)| member.url.clone()))
        .collect();
    Ok(Remote {
        name,
        settings: settings_of(placed)?,
        urls,
    })
}

/// Changes `name`'s retention through group 0; every replica applies it
/// when it follows the catalogue.
pub(super) async fn change(
    catalog: &Catalog,
    cluster: &Cluster,
    config: &CatalogConfig,
    name: &str,
    change: &RetentionChange,
) -> Result<Found, CatalogError> {
    /// Tries when other changes of the log's settings keep landing first.
    const TRIES: usize = 5;
    for _ in 0..TRIES {
        cluster.must_lead().map_err(|e| cluster_error(name, e))?;
        let placed = cluster
            .placed(name)
            .ok_or_else(|| CatalogError::NotFound(name.to_string()))?;
        let settings = settings_of(&placed)?.changed(change);
        settings.check(&config.base)?;
        let proposed = CatalogueChange::Settings {
            name: name.to_string(),
            settings: settings_value(&settings),
            expected: Some(placed.settings.clone()),
        };
        let outcome = cluster
            .change_catalogue(proposed)
            .await
            .map_err(|e| cluster_error(name, e))?;
        let placed = match outcome {
            Ok((_, placed)) => placed,
            Err(CatalogueRefusal::Changed(_)) => continue,
            Err(refusal) => return Err(refused(refusal)),
        };
        let log_name = LogName::parse(name).map_err(|e| io::Error::other(e.to_string()))?;
        if placed.held_by(cluster.id()) {
            catalog
                .wait_for_pass(SETTLING, |c| c.get(name).is_some_and(|n| n.settings() == settings))
                .await;
        }
        return settle(catalog, cluster, &log_name, &placed).await;
    }
    Err(cluster_error(
        name,
        crate::cluster::ClusterError::OutcomeUnknown(format!(
            "log {name}'s settings kept changing under {TRIES} tries; nothing was changed by this request"
        )),
    ))
}

/// Deletes `name` through group 0: the name is free once that is applied;
/// each replica is closed and removed as its node follows the catalogue
/// (this node's before the answer, within `SETTLING`).
pub(super) async fn delete(catalog: &Catalog, cluster: &Cluster, name: &str) -> Result<(), CatalogError> {
    cluster.must_lead().map_err(|e| cluster_error(name, e))?;
    let outcome = cluster
        .change_catalogue(CatalogueChange::Delete { name: name.to_string() })
        .await
        .map_err(|e| cluster_error(name, e))?;
    let (_, placed) = outcome.map_err(refused)?;
    catalog
        .wait_for_pass(SETTLING, |c| c.get(name).is_none_or(|n| n.group != Some(placed.group)))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica removed here leaves a synced tombstone: a catalogue that a power cut rolled
    /// back (it names the group here again until it catches up) does not open it again.
    #[tokio::test]
    async fn a_removed_replica_leaves_a_tombstone_and_kept_ones_stay() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for group in [3, 5] {
            std::fs::create_dir_all(dir.path().join(group.to_string()).join("raft")).expect("a replica directory");
        }
        remove_unplaced(dir.path(), &[3], 10).await.expect("removed");
        assert!(dir.path().join("3").is_dir(), "kept");
        assert!(!dir.path().join("5").exists(), "removed");
        assert!(tombstone(dir.path(), 5).exists(), "its tombstone");
        assert!(!tombstone(dir.path(), 3).exists());
        // A second pass with the tombstone there changes nothing.
        remove_unplaced(dir.path(), &[3], 10).await.expect("again");
        assert!(dir.path().join("3").is_dir() && tombstone(dir.path(), 5).exists());
    }
}
