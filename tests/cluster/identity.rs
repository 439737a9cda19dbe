//! Node identity and copied disks. A data directory copied to seed another
//! node (`cp -a`, a VM clone, a volume snapshot restored into a new claim)
//! must not run under the id of the member it was copied from: two
//! processes answering as one voter break the intersection of quorums.

use std::time::{Duration, Instant};

use super::common::cluster::ClusterStatus;
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
