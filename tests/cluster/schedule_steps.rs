//! The steps of the randomized fault schedules (`faults::run_schedule`)
//! that need more than a signal or a proxy, and the campaign's tally:
//! - a disk filled and freed: the node's data directory is a small tmpfs of
//!   its own (`ClusterConfig::disk`), filled with one file under load, held
//!   so for a while, then the file deleted (ENOSPC from the kernel);
//! - a power cut in a write-caching mode (`--fsync never|interval`): the
//!   node SIGKILLed and the last frames of its active store zeroed, its
//!   Raft marks left as they were (the model of `power_cuts`), then started
//!   again; the schedule then waits until every node holds the commit
//!   offset, the condition under which write caching loses nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::checker::VisibleMonitor;
use super::common::cluster::TestCluster;
use super::common::writer::{Attempt, History, Load};
use super::faults::{
    CHECK_TIMEOUT, LEADER_TIMEOUT, active_store_offsets, eventually, get, pretend_rebooted, zero_frames, zero_tail,
};
use super::full_disk::{acked, post_mib};

/// Writer ids of the MiB batches a disk-full step posts.
pub(super) const DISK_WRITER: u64 = 300;
/// Each node's tmpfs in the schedules that fill disks: room for a
/// schedule's load and its batches, small enough to fill at once.
pub(super) const DISK: &str = "128m";
/// Segments small enough for that disk (a new log must find room for its
/// first segment at full size to start).
pub(super) const SEGMENT: &str = "4MiB";
/// MiB batches posted at most after a disk is filled: enough to pass the
/// few MiB the active segment allocates ahead (and roll to a new segment),
/// so that the node meets ENOSPC.
const BATCHES: u64 = 8;

// ---- disk full ----

/// What a disk-full step did, and the attempts of its batches.
pub(super) struct DiskFull {
    pub(super) step: String,
    pub(super) attempts: Vec<Attempt>,
}

/// Fills node `victim`'s small disk, posts MiB batches to the leader (from
/// `first_seq` of `DISK_WRITER`) until the node says its disk is full (its
/// segment had a few MiB allocated ahead), holds it full for `hold` under
/// load, then frees it. A full follower must not stop the other two: the
/// load must make progress while it is full (Err if not). A full leader
/// stops taking writes (it need not step down): the schedule's usual wait
/// for a leader and progress after the step holds it to resuming.
pub(super) async fn fill_disk_under_load(
    cluster: &TestCluster,
    load: &Load,
    victim: usize,
    leader: Option<usize>,
    hold: Duration,
    first_seq: u64,
) -> Result<DiskFull, String> {
    let role = if leader == Some(victim) { "leader" } else { "follower" };
    let Some(filler) = cluster.fill_disk(victim) else {
        eprintln!("schedule: DISK FULL SKIPPED for node {victim}: its data directory is on no tmpfs of its own");
        return Ok(DiskFull {
            step: format!("disk full {victim} SKIPPED (no tmpfs)"),
            attempts: Vec::new(),
        });
    };
    let filled = Instant::now();
    let attempts = push_until_full(cluster, victim, leader, first_seq).await;
    let said_full = eventually(Duration::from_secs(5), || says_disk_full(cluster, victim)).await;
    let full_after = filled.elapsed();
    tokio::time::sleep(hold).await;
    let progressed = role == "leader" || load.wait_for_more_acks(20, Duration::from_secs(20)).await;
    let held = filled.elapsed();
    std::fs::remove_file(&filler).map_err(|e| format!("the filler {} stays: {e}", filler.display()))?;
    let acked_batches = attempts.chunks(1000).filter(|b| acked(b)).count();
    let step = format!(
        "disk full {victim} ({role}): {acked_batches}/{} MiB batches acked, said full: {said_full} after {} ms, freed after {} ms",
        attempts.len() / 1000,
        full_after.as_millis(),
        held.as_millis(),
    );
    if !progressed {
        return Err(format!("{step}: the other two made no progress while it was full"));
    }
    Ok(DiskFull { step, attempts })
}

/// Posts MiB batches to the leader (the victim when none is known) until
/// node `victim` says its disk is full, one is not acknowledged, or
/// `BATCHES` were posted; their attempts.
async fn push_until_full(cluster: &TestCluster, victim: usize, leader: Option<usize>, first_seq: u64) -> Vec<Attempt> {
    let target = cluster.url(leader.unwrap_or(victim));
    let mut attempts = Vec::new();
    for batch in 0..BATCHES {
        if says_disk_full(cluster, victim).await {
            break;
        }
        let posted = post_mib(&target, DISK_WRITER, first_seq + batch * 1000, Duration::from_secs(5)).await;
        let all_acked = acked(&posted);
        attempts.extend(posted);
        if !all_acked {
            break;
        }
    }
    attempts
}

/// Whether node `i`'s `/readyz` answers 503 "disk is full" now.
async fn says_disk_full(cluster: &TestCluster, i: usize) -> bool {
    get(format!("{}/readyz", cluster.url(i)))
        .await
        .is_ok_and(|r| r.status == 503 && r.body.to_string().contains("disk is full"))
}

// ---- power cut ----

/// A power cut on node `victim` alone: SIGKILL, then the last `frames`
/// frames of its active store zeroed (what its page cache held and a real
/// cut would lose; the model `power_cuts` uses, whatever the last sync
/// covered), its Raft marks left as they were, and a start again.
///
/// Why the checker still applies unchanged: a write is acknowledged once a
/// majority holds it, so with only the cut node's tail lost another node
/// still holds every acknowledged record, and Raft's election rule (the
/// most up-to-date log wins) keeps it. Write caching loses acknowledged
/// records only when a second failure strikes before the cut node holds
/// them again, which the schedule rules out by waiting after this step
/// (`wait_all_hold_commit`); so every acknowledged write must be found.
///
/// With `hole`, only the first of those frames is zeroed and the later ones
/// survive (an unsynced batch's pages written back out of order): the start
/// finds a bad frame between good ones, a torn write under write caching.
///
/// The node may come back under a new id: with marks that cover a zeroed
/// frame (the last sync had covered it, which a real cut would have kept)
/// it takes its log for a faulty disk and rejoins (`repair`). The step
/// says which (true: a new id); the caller waits for the membership to
/// settle then.
pub(super) async fn power_cut(
    cluster: &mut TestCluster,
    monitor: &VisibleMonitor,
    victim: usize,
    frames: u64,
    hole: bool,
) -> (String, bool) {
    let id_before = cluster.cluster_status(victim).await.ok().map(|s| s.node_id.to_string());
    cluster.kill(victim);
    // The cut node's visible log may go back: it served records its page
    // cache held and lost (committed ones, held by the others, which it
    // shows again once caught up). The monitor forgets its end, as for a
    // wipe; values seen at an offset are still held to on every node.
    monitor.node_wiped(&cluster.url(victim));
    let zeroed = match active_store_offsets(cluster.data_dir(victim)) {
        Some((first, last)) => {
            let from = last.saturating_sub(frames - 1).max(first);
            match hole && from < last {
                true => {
                    zero_frames(cluster.data_dir(victim), from..=from);
                    format!(
                        "zeroed the frame at offset {from}, before {} good ones (a hole)",
                        last - from
                    )
                }
                false => {
                    let zeroed = zero_tail(cluster.data_dir(victim), from);
                    format!("zeroed {} frames from offset {from} to {last}", zeroed.len())
                }
            }
        }
        None => "its active store held no frame".to_string(),
    };
    pretend_rebooted(cluster.data_dir(victim));
    cluster.restart(victim).await;
    let id_after = cluster.cluster_status(victim).await.ok().map(|s| s.node_id.to_string());
    let new_id = match (&id_before, &id_after) {
        (Some(before), Some(after)) => before != after,
        _ => false,
    };
    let ids = match (new_id, id_before, id_after) {
        (true, Some(before), Some(after)) => format!("NEW ID {after} (was {before})"),
        (_, Some(_), Some(_)) => "same id".to_string(),
        _ => "its id unread (it did not answer)".to_string(),
    };
    (format!("power cut {victim}: {zeroed}, {ids}"), new_id)
}

/// Waits until every node's commit offset reaches the leader's (read once
/// a leader is agreed): every node then holds every write acknowledged
/// before, and the next fault cannot meet a node that lost its tail
/// alone holding some of them. Err with what each said after `CHECK_TIMEOUT`.
/// A node that stops by itself to be repaired is started again meanwhile,
/// as its supervisor would.
pub(super) async fn wait_all_hold_commit(cluster: &mut TestCluster) -> Result<u64, String> {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    let target = cluster
        .cluster_status(leader)
        .await
        .ok()
        .and_then(|s| s.commit_offset)
        .ok_or_else(|| format!("the leader {leader} names no commit offset"))?;
    let deadline = std::time::Instant::now() + CHECK_TIMEOUT;
    loop {
        cluster.start_exited().await;
        let mut all = true;
        for i in 0..cluster.len() {
            all &= cluster
                .cluster_status(i)
                .await
                .is_ok_and(|s| s.commit_offset.is_some_and(|c| c >= target));
        }
        if all {
            return Ok(target);
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut said = Vec::new();
    for i in 0..cluster.len() {
        let commit = cluster.cluster_status(i).await.map(|s| s.commit_offset);
        said.push(format!("node {i}: {commit:?}"));
    }
    Err(format!(
        "not every node reached commit offset {target} within {CHECK_TIMEOUT:?}: {}",
        said.join(", ")
    ))
}

// ---- the campaign's tally ----

/// What the schedules of one run did, summed: steps by kind, and the
/// writes of every schedule whose load was stopped.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) steps: BTreeMap<&'static str, usize>,
    pub(super) attempts: usize,
    pub(super) acked: usize,
    pub(super) failed: usize,
    pub(super) unknown: usize,
    /// Checker problems naming an acknowledged write missing or replaced.
    pub(super) lost: usize,
    /// One line a schedule: its number, seed and settings.
    pub(super) schedules: BTreeMap<usize, String>,
}

pub(super) type SharedTally = Arc<Mutex<Tally>>;

pub(super) fn tally(shared: &SharedTally) -> std::sync::MutexGuard<'_, Tally> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Tally {
    pub(super) fn add_history(&mut self, history: &History) {
        let (acked, failed, unknown) = history.count();
        self.attempts += history.attempts.len();
        self.acked += acked;
        self.failed += failed;
        self.unknown += unknown;
    }

    pub(super) fn add_problems(&mut self, problems: &[String]) {
        self.lost += problems.iter().filter(|p| p.starts_with("acknowledged write")).count();
    }

    pub(super) fn summary(&self) -> String {
        let steps: Vec<String> = self.steps.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        format!(
            "steps by kind: {}\n  writes: {} attempts, {} acked, {} failed, {} unknown; acknowledged writes missing or replaced on a node (checker problems): {}",
            steps.join(", "),
            self.attempts,
            self.acked,
            self.failed,
            self.unknown,
            self.lost
        )
    }
}
