//! Node identity and copied disks. A data directory copied to seed another
//! node (`cp -a`, a VM clone, a volume snapshot restored into a new claim)
//! must not run under the id of the member it was copied from: two
//! processes answering as one voter break the intersection of quorums.

use std::time::{Duration, Instant};

use super::common::cluster::{ClusterConfig, ClusterStatus};
use super::common::fault_proxy::Mode;
use super::common::writer::Load;
use super::faults::{assert_progress, check_and_report, config, load_config, start_with, voters};

const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

fn node_id(status: &ClusterStatus) -> u64 {
    status
        .node_id
        .as_u64()
        .unwrap_or_else(|| panic!("no node id: {}", status.raw))
}

#[tokio::test]
async fn a_copied_data_directory_runs_as_a_new_node_not_as_the_one_it_was_copied_from() {
    let what = "a copied data directory";
    let (mut cluster, leader) = start_with(what, config()).await;
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the copy").await;

    let original = (leader + 1) % cluster.len();
    let id = node_id(&cluster.cluster_status(original).await.unwrap_or_else(|e| panic!("{e}")));
    cluster.kill(original);
    let copy = cluster.add_node_copying(original).await;
    cluster.restart(original).await;

    let copy_id = node_id(&cluster.cluster_status(copy).await.unwrap_or_else(|e| panic!("{e}")));
    assert_ne!(
        copy_id,
        id,
        "{what}: the copy at {} runs as node {id}",
        cluster.url(copy)
    );
    let original_id = node_id(&cluster.cluster_status(original).await.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(original_id, id, "{what}: the original lost its id");

    // Both go on as members of their own: the copy joins as a new node.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut last = None;
        for i in cluster.live() {
            match cluster.cluster_status(i).await {
                Ok(s) if voters(&s).contains(&id) && voters(&s).contains(&copy_id) => {}
                other => last = Some(format!("node {i}: {other:?}")),
            }
        }
        let Some(last) = last else { break };
        assert!(
            Instant::now() < deadline,
            "{what}: nodes {id} and {copy_id} not both voters within {SETTLE_TIMEOUT:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_progress(&load, 50, "with the copy a member").await;
    let history = load.stop().await;
    check_and_report(&cluster, what, &history).await;
}

/// A follower's data directory restored from an older copy at the same
/// URL comes back with its id and marks as old as its log: only the leader
/// knows what it acknowledged since. The restored node must not count as
/// holding those entries (here: elect a leader without them once the old
/// leader is gone).
#[tokio::test]
#[ignore = "slow (~21 s): scripts/slow-tests.sh runs it"]
async fn a_follower_restored_from_an_old_copy_does_not_lose_what_it_acknowledged() {
    restored_from_an_old_copy("a follower restored from an old copy", config(), Duration::ZERO).await;
}

/// The same, restored after longer than the leader's lease (a real restore
/// takes a while; by then the leader, whose only majority included the
/// restored node, no longer names itself leader), with every node's seed
/// list reversed (the seed cut off is asked before the leader).
#[tokio::test]
#[ignore = "slow (~13 s): scripts/slow-tests.sh runs it"]
async fn a_follower_restored_after_the_leaders_lease_ran_out_does_not_lose_what_it_acknowledged() {
    let config = ClusterConfig {
        seeds_for: Some(|_, seeds| seeds.iter().rev().cloned().collect()),
        ..config()
    };
    restored_from_an_old_copy("a follower restored late", config, LONGER_THAN_THE_LEASE).await;
}

/// Longer than the harness's lease (twice the longest election timeout
/// and a heartbeat: 1.275 s).
const LONGER_THAN_THE_LEASE: Duration = Duration::from_secs(3);

/// Restores a follower's data directory from a copy taken before writes it
/// acknowledged with the leader alone (the other follower cut off), after
/// `down` with the node stopped; then the leader dies.
async fn restored_from_an_old_copy(what: &str, config: ClusterConfig, down: Duration) {
    let (mut cluster, leader) = start_with(what, config).await;
    let (restored, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the backup").await;

    let old_id = node_id(&cluster.cluster_status(restored).await.unwrap_or_else(|e| panic!("{e}")));
    let backup = tempfile::tempdir().expect("a directory for the backup");
    let backup_copy = backup.path().join("copy");
    cluster.kill(restored);
    copy_dir(cluster.data_dir(restored), &backup_copy);
    cluster.restart(restored).await;
    assert_progress(&load, 50, "after the backup").await;

    // With `other` cut off, what commits now commits on the leader and the
    // node to be restored alone.
    cluster.partition(other, Mode::Drop);
    assert_progress(&load, 100, "with one follower cut off").await;

    // Restore the old copy. The leader cannot reach it (it cannot hand back
    // what the copy lacks); it can reach the leader.
    cluster.kill(restored);
    std::fs::remove_dir_all(cluster.data_dir(restored)).expect("the node's data directory goes");
    copy_dir(&backup_copy, cluster.data_dir(restored));
    cluster.set_link(leader, restored, Mode::Drop);
    // A restore takes time: here, on purpose, longer than the lease.
    tokio::time::sleep(down).await;
    cluster.restart(restored).await;
    let new_id = node_id(&cluster.cluster_status(restored).await.unwrap_or_else(|e| panic!("{e}")));
    assert_ne!(new_id, old_id, "{what}: the restored node came back as node {old_id}");

    // The leader dies; the restored node and the one that was cut off now
    // reach each other. They must not elect a leader without what the
    // leader and the restored node had acknowledged.
    cluster.kill(leader);
    cluster.heal();
    let elected_without = load.wait_for_more_acks(1, Duration::from_secs(5)).await;
    eprintln!("{what}: the two without the old leader took writes: {elected_without}");
    cluster.restart(leader).await;
    assert_progress(&load, 50, "with the old leader back").await;
    let history = load.stop().await;
    check_and_report(&cluster, what, &history).await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(copied.success(), "cp -a {} {}", from.display(), to.display());
}
