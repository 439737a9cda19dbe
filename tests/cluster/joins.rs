//! Joins that stop halfway. A node replacing a wiped one joins in steps
//! (learner, caught up, voter in place of its old id); a crash point
//! (`DISTLOG_FAILPOINT`) stops the leader's join right after the learner
//! is added, as a lost answer or a dead leader would. Either way the
//! cluster must end with three voters, the new id among them and the old
//! one gone, and lose nothing (the checker).

use std::time::{Duration, Instant};

use distlog::cluster::{FAILPOINT_ENV, JOIN_AFTER_LEARNER};

use super::common::cluster::{ClusterConfig, ClusterStatus, TestCluster};
use super::common::writer::Load;
use super::faults::{assert_progress, check_and_report, config, load_config, member_ids, start_with, voters};

const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

fn failpoint_config(action: &str) -> ClusterConfig {
    ClusterConfig {
        env: vec![(FAILPOINT_ENV.into(), format!("{JOIN_AFTER_LEARNER}:{action}"))],
        ..config()
    }
}

fn node_id(status: &ClusterStatus) -> u64 {
    status
        .node_id
        .as_u64()
        .unwrap_or_else(|| panic!("no node id: {}", status.raw))
}

/// Wipes a follower and starts it again: it joins under a new id. Returns
/// (victim, old id, new id).
async fn replace_a_follower(cluster: &mut TestCluster, leader: usize) -> (usize, u64, u64) {
    let victim = (leader + 1) % cluster.len();
    let old_id = node_id(&cluster.cluster_status(victim).await.unwrap_or_else(|e| panic!("{e}")));
    cluster.wipe_and_restart(victim, |_| {}).await;
    let new_id = node_id(&cluster.cluster_status(victim).await.unwrap_or_else(|e| panic!("{e}")));
    assert_ne!(old_id, new_id, "a wiped data directory gets a new id");
    eprintln!("node {victim} was id {old_id}, is id {new_id}");
    (victim, old_id, new_id)
}

/// Waits until every live node lists exactly three voters, `new_id` among
/// them, and not `old_id`; meanwhile restarts any node that exited (a
/// crash point aborted it) with its crash point disarmed. Returns how many
/// it restarted.
async fn wait_settled(cluster: &mut TestCluster, old_id: u64, new_id: u64, what: &str) -> usize {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last = String::new();
    let mut restarted = 0;
    loop {
        for i in 0..cluster.len() {
            if cluster.exited(i) {
                restarted += 1;
                eprintln!("{what}: node {i} exited at its crash point: restarting it disarmed");
                cluster.set_env(i, FAILPOINT_ENV, "");
                cluster.restart(i).await;
            }
        }
        let mut settled = true;
        for i in cluster.live() {
            match cluster.cluster_status(i).await {
                Ok(s) => {
                    let v = voters(&s);
                    if v.len() != 3 || !v.contains(&new_id) || member_ids(&s).contains(&old_id) {
                        settled = false;
                        last = format!("node {i}: {}", s.raw);
                    }
                }
                Err(e) => {
                    settled = false;
                    last = e;
                }
            }
        }
        if settled {
            return restarted;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no three voters with {new_id} and without {old_id} within {SETTLE_TIMEOUT:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_joiner_left_a_learner_and_restarted_ends_a_voter_in_place_of_its_old_id() {
    let what = "join stopped after the learner, joiner restarted";
    let (mut cluster, leader) = start_with(what, failpoint_config("hang")).await;
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the wipe").await;
    let (victim, old_id, new_id) = replace_a_follower(&mut cluster, leader).await;

    // The leader's join hangs once the learner is added; as soon as the
    // joiner sees itself a learner, it is killed and started again.
    // (The leader's reconciler may finish the join first: then there is no
    // learner left to restart.)
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let learner = loop {
        let status = cluster.cluster_status(victim).await;
        let role = status.as_ref().ok().and_then(|s| {
            s.members
                .iter()
                .find(|m| m.id.as_u64() == Some(new_id))
                .map(|m| m.voter)
        });
        match role {
            Some(false) => break true,
            Some(true) => break false,
            None => {}
        }
        assert!(
            Instant::now() < deadline,
            "{what}: node {victim} never became a member: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    match learner {
        true => {
            eprintln!("{what}: node {victim} is a learner: restarting it");
            cluster.restart(victim).await;
        }
        false => eprintln!("{what}: the leader finished the join before node {victim} could be restarted"),
    }

    wait_settled(&mut cluster, old_id, new_id, what).await;
    assert_progress(&load, 50, "after the join finished").await;
    let history = load.stop().await;
    check_and_report(&cluster, what, &history).await;
}

#[tokio::test]
async fn a_leader_that_dies_after_adding_the_learner_leaves_a_join_the_next_leader_finishes() {
    let what = "join stopped by the leader's death";
    let (mut cluster, leader) = start_with(what, failpoint_config("abort")).await;
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the wipe").await;
    let (_victim, old_id, new_id) = replace_a_follower(&mut cluster, leader).await;

    let aborted = wait_settled(&mut cluster, old_id, new_id, what).await;
    assert!(aborted >= 1, "{what}: no leader died at the crash point");
    assert_progress(&load, 50, "after the join finished").await;
    let history = load.stop().await;
    check_and_report(&cluster, what, &history).await;
}
