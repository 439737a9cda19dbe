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
        // Each step goes to a blocking thread only when it has work: at rest a
        // node of 1,000 named logs sent 2,000 of them there every check, a
        // fifth of its idle CPU.
        let store = cluster.store().clone();
        if !store.reserve_whole()
            && let Err(e) = tokio::task::spawn_blocking(move || store.make_reserve()).await
        {
            tracing::warn!(error = %e, "the disk reserve was not checked");
        }
        if cluster.store().log().has_retention()
            && let Err(e) = purge_once(&cluster).await
        {
            tracing::warn!(error = %e, "cluster retention did not run");
        }
    }
}

/// The last entry a purge may take: below where retention keeps the log
/// from, `APPLY_MARGIN` behind what is applied, and below where readers'
/// log ends. A batch still being applied holds readers' end at its first
/// record; a purge past that would leave the log starting after its own
/// end (`next_offset < lowest_offset`) until the batch is whole.
pub(crate) fn purge_point(keep_from: u64, applied: Option<u64>, visible_end: u64) -> Option<u64> {
    let margin_point = applied?.checked_sub(APPLY_MARGIN)?;
    let upto = keep_from
        .checked_sub(1)?
        .min(margin_point)
        .min(visible_end.checked_sub(1)?);
    debug_assert!(upto < keep_from && upto < visible_end);
    Some(upto)
}

async fn purge_once(cluster: &Cluster) -> Result<(), String> {
    let log = cluster.store().log().clone();
    let point = tokio::task::spawn_blocking(move || log.retention_point(now_ms()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let Some(keep_from) = point else {
        return Ok(());
    };
    let applied = cluster.raft().metrics().borrow_watched().last_applied.map(|a| a.index);
    let visible_end = cluster.store().log().next_offset();
    let Some(upto) = purge_point(keep_from, applied, visible_end) else {
        return Ok(());
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_stays_behind_retention_the_margin_and_readers_end() {
        assert_eq!(purge_point(500, Some(5_000), 5_001), Some(499), "retention's point");
        assert_eq!(purge_point(9_000, Some(5_000), 5_001), Some(4_000), "the apply margin");
        assert_eq!(purge_point(0, Some(5_000), 5_001), None, "nothing to purge");
        assert_eq!(purge_point(500, Some(999), 1_000), None, "not past the margin yet");
        assert_eq!(purge_point(500, None, 0), None, "nothing applied");
    }

    /// A batch of 3,000 records from offset 2,000 is being applied: readers'
    /// end stays at 2,000 until its last record is applied, though 4,000
    /// are; the purge must not take the log's start past 2,000.
    #[test]
    fn a_purge_never_starts_the_log_past_readers_end_while_a_batch_is_applied() {
        assert_eq!(purge_point(4_500, Some(4_000), 2_000), Some(1_999));
        assert_eq!(purge_point(4_500, Some(4_000), 0), None);
    }
}
