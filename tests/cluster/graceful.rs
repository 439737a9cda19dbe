//! A leader stopped by SIGTERM under load hands leadership to a follower
//! before it goes (what `docker stop`, a rolling restart and Kubernetes do):
//! the next leader takes over at once instead of after an election timeout.
//! The target must take the hand-over even when it answers after the
//! leader stopped waiting (openraft makes it wait for the leader's last
//! entry), or every write waits for an election timeout. And the writes
//! it held at SIGTERM are answered before it closes its listener.

use std::time::Duration;

use super::faults::{LEADER_TIMEOUT, assert_progress, check_and_report, config, load_config, start_with};
use crate::common::writer::{History, Load, Outcome, same_node};

/// The stopping node's log line when it leads at SIGTERM (`Cluster::step_down`).
const HANDING_OVER: &str = "shutting down: handing leadership over";
/// The target's log line once openraft took the hand-over (`rpc::take_over`).
const TAKEN: &str = "hand-over taken";

fn lines_with(log: &std::path::Path, text: &str) -> usize {
    std::fs::read_to_string(log)
        .map(|log| log.matches(text).count())
        .unwrap_or(0)
}

/// Every node's lines with `text`.
fn all_lines_with(cluster: &crate::common::cluster::TestCluster, text: &str) -> usize {
    (0..cluster.len()).map(|i| lines_with(cluster.log_path(i), text)).sum()
}

/// Stops of a node that led at SIGTERM: each one's writes in flight are
/// answered or not within a few milliseconds of the hand-over (a stop that
/// left them to time out did so about one stop in eight here).
const LED_STOPS: usize = 5;

/// Writes that timed out at a node this test stopped gracefully: its writes
/// in flight at SIGTERM are committed by its successor (which takes over
/// only once it holds them), and it answers their clients when it hears so.
/// That word comes after the one naming the successor; a stop that closed
/// its listener on the latter left them waiting for the client's timeout
/// (a CI rolling restart's 2.6 s without an acknowledged write). Nothing
/// else here makes a node take a write and not answer it.
fn left_to_time_out(history: &History, urls: &[String], timeout: Duration) -> Vec<String> {
    history
        .attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Unknown(_)) && a.done - a.sent >= timeout)
        .filter(|a| urls.iter().any(|url| same_node(&a.last_node, url)))
        .map(|a| {
            format!(
                "writer {} seq {} at {}: {:?} after {:?}",
                a.writer,
                a.seq,
                a.last_node,
                a.outcome,
                a.done - a.sent
            )
        })
        .collect()
}

#[tokio::test]
async fn a_leader_stopped_by_sigterm_under_load_hands_leadership_over_every_time() {
    let what = "graceful leader stop";
    let (mut cluster, _) = start_with(what, config()).await;
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the stops").await;
    // Stops of a node that led at SIGTERM (leadership may move between the
    // look and the signal on a loaded machine: such a stop does not count).
    let mut led = 0;
    for round in 0..12 {
        if led == LED_STOPS {
            break;
        }
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let (handing, taken) = (
            lines_with(cluster.log_path(leader), HANDING_OVER),
            all_lines_with(&cluster, TAKEN),
        );
        let stopped = cluster.terminate(leader, Duration::from_secs(20)).await;
        assert!(stopped, "{what}: node {leader} did not exit within 20 s of SIGTERM");
        if lines_with(cluster.log_path(leader), HANDING_OVER) > handing {
            led += 1;
            assert!(
                all_lines_with(&cluster, TAKEN) > taken,
                "{what}: round {round}, node {leader} led and stopped, and no node took the hand-over:\n{}",
                cluster.log_tail(leader, 40)
            );
        }
        assert_progress(&load, 30, &format!("after node {leader} stopped")).await;
        cluster.restart(leader).await;
        assert_progress(&load, 30, &format!("after node {leader} came back")).await;
    }
    assert_eq!(led, LED_STOPS, "{what}: {LED_STOPS} stops of a node that led");
    let history = load.stop().await;
    let stranded = left_to_time_out(&history, &cluster.urls(), load_config().request_timeout);
    assert!(
        stranded.is_empty(),
        "{what}: writes at a stopping node were left to time out:\n  {}",
        stranded.join("\n  ")
    );
    check_and_report(&cluster, what, &history).await;
}
