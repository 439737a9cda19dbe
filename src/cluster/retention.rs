//! Retention in a cluster goes through Raft: the log's retention settings
//! say where the log may start (`Log::retention_point`); the node snapshots
//! (metadata: see `state_machine`) and asks openraft to purge up to there,
//! and openraft calls `LogStore::purge`, which records the purged id and
//! deletes the whole segments below it. Segments are never deleted behind
//! Raft's back. Each node purges on its own; a node that needs entries a
//! leader purged gets its snapshot instead and starts its log after it,
//! loudly (`StateMachine::install_snapshot`).
//!
//! A node whose disk filled gives back its disk reserve to get its Raft
//! core out of the waiting append, and wakes this at once
//! (`LogStore::retention_wanted`, see `log_store::room`); each check makes
//! the reserve again where there is room.
//!
//! The purge stays `APPLY_MARGIN` entries behind what is applied: openraft
//! delays a purge while replication reads the log, and one racing apply
//! has been seen to panic its core (openraft issue #2116).

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use super::node::Cluster;
use crate::log::now_ms;

const APPLY_MARGIN: u64 = 1000;

/// Checks retention every `every` until `stopping` turns true.
pub async fn run(cluster: Cluster, every: Duration, mut stopping: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = cluster.store().retention_wanted().notified() => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let store = cluster.store().clone();
        if let Err(e) = tokio::task::spawn_blocking(move || store.make_reserve()).await {
            tracing::warn!(error = %e, "the disk reserve was not checked");
        }
        if let Err(e) = purge_once(&cluster).await {
            tracing::warn!(error = %e, "cluster retention did not run");
        }
    }
}

async fn purge_once(cluster: &Cluster) -> Result<(), String> {
    let log = cluster.store().log().clone();
    let point = tokio::task::spawn_blocking(move || log.retention_point(now_ms()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let Some(keep_from) = point.filter(|k| *k > 0) else {
        return Ok(());
    };
    let applied = cluster.raft().metrics().borrow_watched().last_applied.map(|a| a.index);
    let Some(margin_point) = applied.and_then(|a| a.checked_sub(APPLY_MARGIN)) else {
        return Ok(());
    };
    let upto = (keep_from - 1).min(margin_point);
    if upto < cluster.store().first_index() {
        return Ok(());
    }
    let snapshot = cluster.raft().metrics().borrow_watched().snapshot.map(|s| s.index);
    if snapshot.is_none_or(|s| s < upto) {
        cluster.raft().trigger().snapshot().await.map_err(|e| e.to_string())?;
        cluster
            .raft()
            .wait(Some(Duration::from_secs(30)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= upto),
                "a snapshot for retention",
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    tracing::info!(upto, keep_from, "retention: purging the Raft log");
    cluster
        .raft()
        .trigger()
        .purge_log(upto)
        .await
        .map_err(|e| e.to_string())
}
