//! A leader stopped by SIGTERM under load hands leadership to a follower
//! before it goes (what `docker stop`, a rolling restart and Kubernetes do):
//! the next leader takes over at once instead of after an election timeout.
//! The hand-over names the leader's last entry; a target that has not got
//! it yet must not drop the hand-over, or every write waits for an election
//! (a rolling restart of a compose cluster stopped writes for 3.3 s so).

use std::time::Duration;

use super::faults::{LEADER_TIMEOUT, assert_progress, check_and_report, config, load_config, start_with};
use crate::common::writer::Load;

/// The stopping node's log line once the next leader leads (`Cluster::step_down`).
const HANDED_OVER: &str = "leadership handed over";

fn handovers(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.matches(HANDED_OVER).count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_leader_stopped_by_sigterm_under_load_hands_leadership_over_every_time() {
    let what = "graceful leader stop";
    let (mut cluster, _) = start_with(what, config()).await;
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the stops").await;
    for round in 0..4 {
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let before = handovers(cluster.log_path(leader));
        let stopped = cluster.terminate(leader, Duration::from_secs(15)).await;
        assert!(stopped, "{what}: node {leader} did not exit within 15 s of SIGTERM");
        let after = handovers(cluster.log_path(leader));
        assert_eq!(
            after,
            before + 1,
            "{what}: round {round}, node {leader} stopped without handing leadership over:\n{}",
            cluster.log_tail(leader, 40)
        );
        assert_progress(&load, 30, &format!("after node {leader} stopped")).await;
        cluster.restart(leader).await;
        assert_progress(&load, 30, &format!("after node {leader} came back")).await;
    }
    let history = load.stop().await;
    check_and_report(&cluster, what, &history).await;
}
