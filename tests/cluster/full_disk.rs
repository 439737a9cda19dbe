//! A full disk, for real: a follower's data directory on a small tmpfs
//! (ENOSPC from the kernel, not injected), filled while the cluster takes
//! writes, then freed. The follower must wait, say so, and catch up once
//! there is room, without a restart; the checker ends it. With retention
//! set, nobody frees the space: retention must, though the node's Raft
//! core waits in the append that met the full disk (the disk reserve).
//! Needs root (for `mount`): skipped, saying so, elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::common::checker::{self, NodeLog};
use super::common::cluster::{ClusterConfig, TestCluster};
use super::common::writer::{Attempt, History, Load, Outcome};
use super::faults::{
    CHECK_TIMEOUT, LEADER_TIMEOUT, MANUAL, assert_progress, check_and_report, config, eventually, get, load_config,
    start_with, transfer_leadership,
};

/// The tmpfs a follower's data directory moves to.
const DISK: &str = "48m";

/// Unmounts on drop (a failed test must not leave a mount behind, and the
/// cluster's temporary directory cannot go while it is mounted).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn run(command: &mut Command) -> bool {
    command.status().is_ok_and(|s| s.success())
}

/// Moves `dir`'s contents onto a new tmpfs of `DISK` mounted at `dir`.
fn onto_small_disk(dir: &Path) -> Option<Mounted> {
    let aside = dir.with_extension("aside");
    std::fs::rename(dir, &aside).expect("the data directory moves aside");
    std::fs::create_dir(dir).expect("a mount point");
    if !run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={DISK}"), "tmpfs"])
        .arg(dir))
    {
        std::fs::remove_dir(dir).expect("the mount point goes");
        std::fs::rename(&aside, dir).expect("the data directory comes back");
        return None;
    }
    let mounted = Mounted(dir.to_path_buf());
    assert!(
        run(Command::new("cp").arg("-a").arg(aside.join(".")).arg(dir)),
        "the data directory is copied onto the tmpfs"
    );
    Some(mounted)
}

/// Fills the filesystem of `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    // dd stops at ENOSPC with an error: that is the point.
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .args(["bs=1M", "status=none"])
        .status();
    filler
}

/// Posts about a MiB (1000 records of about 900 bytes, of `writer` from
/// `first_seq` on) to `url` as one batch, waiting up to `timeout`; their
/// attempts (`Ack` on a 201, else `Unknown`).
pub(super) async fn post_mib(url: &str, writer: u64, first_seq: u64, timeout: Duration) -> Vec<Attempt> {
    let pad = "x".repeat(900);
    let bodies: Vec<String> = (first_seq..first_seq + 1000)
        .map(|n| format!("{{\"w\":{writer},\"n\":{n},\"pad\":\"{pad}\"}}"))
        .collect();
    let sent = Instant::now();
    let answer = super::faults::send(
        reqwest::Method::POST,
        format!("{url}/"),
        Some("application/x-ndjson"),
        Some(bodies.join("\n")),
        timeout,
    )
    .await;
    // Anything but a 201 may or may not have been appended.
    let first = match &answer {
        Ok(reply) if reply.status == 201 => reply.body["first_offset"].as_u64(),
        _ => None,
    };
    let outcome = |offset: Option<u64>| match offset {
        Some(offset) => Outcome::Ack(offset),
        None => Outcome::Unknown(format!("{answer:?}")),
    };
    bodies
        .into_iter()
        .zip(first_seq..)
        .zip((0..).map(|i| first.map(|f| f + i)))
        .map(|((body, seq), offset)| Attempt {
            writer,
            seq,
            body,
            first_node: url.to_string(),
            last_node: url.to_string(),
            sent,
            done: Instant::now(),
            outcome: outcome(offset),
            duplicate: false,
        })
        .collect()
}

async fn commit_offset(cluster: &TestCluster, i: usize) -> Option<u64> {
    cluster.cluster_status(i).await.ok().and_then(|s| s.commit_offset)
}

pub(super) fn acked(attempts: &[Attempt]) -> bool {
    attempts.iter().all(|a| matches!(a.outcome, Outcome::Ack(_)))
}

/// Waits up to 10 s for node `i`'s `/readyz` to answer 503 "disk is full".
async fn says_disk_full(cluster: &TestCluster, i: usize, what: &str) {
    let url = format!("{}/readyz", cluster.url(i));
    let deadline = Instant::now() + Duration::from_secs(10);
    let (says_full, last) = loop {
        let answer = get(url.clone()).await;
        let full = answer
            .as_ref()
            .is_ok_and(|r| r.status == 503 && r.body.to_string().contains("disk is full"));
        if full || Instant::now() >= deadline {
            break (full, answer);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        says_full,
        "{what}: node {i} never said its disk is full (last /readyz: {last:?}):\n{}",
        cluster.log_tail(i, 30)
    );
}

/// Fills node `victim`'s disk (on a small tmpfs) under load, checks it
/// says so, frees the space, and checks that it commits up to the
/// cluster's commit offset within 10 s, then the checker. `victim_leads`:
/// the victim is the leader (else a follower).
async fn fill_and_free(what: &str, victim_leads: bool) {
    let config = ClusterConfig {
        extra_args: vec!["--max-segment-bytes".into(), "4MiB".into()],
        ..config()
    };
    let (mut cluster, leader) = start_with(what, config).await;
    let victim = match victim_leads {
        true => leader,
        false => (leader + 1) % cluster.len(),
    };
    let dir = cluster.data_dir(victim).to_path_buf();
    cluster.kill(victim);
    let Some(_mounted) = onto_small_disk(&dir) else {
        eprintln!("{what}: SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    };
    cluster.restart(victim).await;
    let mut leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    if victim_leads && leader != victim {
        // Its restart moved leadership: hand it back (it may take a few
        // tries while the restarted node catches up).
        let handed_back = eventually(LEADER_TIMEOUT, || async {
            transfer_leadership(&cluster, cluster.leader().await.unwrap_or(leader), victim).await;
            cluster.leader().await == Some(victim)
        })
        .await;
        assert!(handed_back, "{what}: leadership never came back to node {victim}");
        leader = victim;
    }
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the disk fills").await;

    let filler = fill(&dir);
    // Past the space its segment had already allocated: a few MiB.
    let mut manual = Vec::new();
    for batch in 0..6 {
        let attempts = post_mib(&cluster.url(leader), MANUAL, batch * 1000, Duration::from_secs(10)).await;
        let ok = acked(&attempts);
        manual.extend(attempts);
        if !ok {
            break;
        }
    }
    if !victim_leads {
        // The other two commit on.
        assert_progress(&load, 200, "with a follower's disk full").await;
    }
    says_disk_full(&cluster, victim, what).await;

    std::fs::remove_file(&filler).expect("the filler goes");
    assert_progress(&load, 50, "after the space came back").await;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    let target = commit_offset(&cluster, leader)
        .await
        .expect("the leader's commit offset");
    let caught_up = eventually(Duration::from_secs(10), || async {
        commit_offset(&cluster, victim).await.is_some_and(|c| c >= target)
    })
    .await;
    assert!(
        caught_up,
        "{what}: node {victim} did not commit up to {target} within 10 s of the space coming back:\n{}",
        cluster.log_tail(victim, 40)
    );
    let mut history = load.stop().await;
    history.attempts.extend(manual);
    check_and_report(&cluster, what, &history).await;
}

#[tokio::test]
async fn a_follower_whose_disk_fills_waits_then_catches_up_once_space_is_freed() {
    fill_and_free("a follower's disk filled and freed", false).await;
}

#[tokio::test]
#[ignore = "slow (~11 s): scripts/slow-tests.sh runs it"]
async fn a_leader_whose_disk_fills_commits_again_once_space_is_freed() {
    fill_and_free("the leader's disk filled and freed", true).await;
}

/// Lines of node `i`'s log that say its disk is full (each time an append
/// met a full disk).
fn disk_full_lines(cluster: &TestCluster, i: usize) -> usize {
    cluster
        .log_tail(i, usize::MAX)
        .lines()
        .filter(|l| l.contains("disk is full"))
        .count()
}

/// Bytes node `i` holds in its disk reserve, as `/metrics` says.
async fn reserve_bytes(cluster: &TestCluster, i: usize) -> Option<u64> {
    let metrics = get(format!("{}/metrics", cluster.url(i))).await.ok()?;
    metrics.body.as_str()?.lines().find_map(|line| {
        line.strip_prefix("distlog_raft_disk_reserve_bytes ")
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n as u64)
    })
}

/// The checker over what retention kept: records from the highest first
/// offset the nodes serve on, and the acknowledged writes among them.
async fn check_retained(cluster: &TestCluster, what: &str, history: &History) {
    eprintln!("{what}: {}", history.summary());
    let urls: Vec<String> = cluster.reachable().into_iter().map(|i| cluster.url(i)).collect();
    let (converged, reads) = checker::wait_converged(&urls, CHECK_TIMEOUT).await;
    let mut problems = Vec::new();
    if !converged {
        problems.push(format!("the nodes did not converge within {CHECK_TIMEOUT:?}"));
    }
    let logs: Vec<NodeLog> = reads
        .into_iter()
        .filter_map(|read| {
            read.map_err(|e| problems.push(format!("could not read a node's log: {e}")))
                .ok()
        })
        .collect();
    // Retention may purge while a node's pages are read (its next page
    // then starts at its new first offset): from where every node starts
    // after the reads.
    let mut kept_from = logs
        .iter()
        .filter_map(|l| l.records.keys().next().copied())
        .max()
        .unwrap_or(0);
    for url in &urls {
        let lowest = super::common::status(url).await["lowest_offset"].as_u64();
        kept_from = kept_from.max(lowest.expect("/status names the lowest offset"));
    }
    eprintln!("{what}: checking offsets from {kept_from} on (retention purged those before)");
    let logs: Vec<NodeLog> = logs
        .iter()
        .map(|l| NodeLog::new(&l.url, l.records.range(kept_from..).map(|(o, v)| (*o, v.clone()))))
        .collect();
    let kept = History {
        attempts: history
            .attempts
            .iter()
            .filter(|a| a.acked_offset().is_none_or(|o| o >= kept_from))
            .cloned()
            .collect(),
        producers: history.producers.clone(),
    };
    problems.extend(checker::check_history(&kept, &logs));
    checker::assert_clean(what, &problems);
}

/// With retention set, a follower whose small disk fills (by writes alone:
/// the test deletes nothing) must commit again once retention purged
/// whole segments, twice over (the reserve is made again in between).
#[tokio::test]
#[ignore = "slow (~18 s): scripts/slow-tests.sh runs it"]
async fn retention_frees_a_full_disk_and_the_node_commits_again_by_itself() {
    let what = "a follower's disk filled and freed by retention";
    let config = ClusterConfig {
        extra_args: ["--max-segment-bytes", "4MiB", "--retention-bytes", "4MiB"]
            .map(String::from)
            .to_vec(),
        ..config()
    };
    let (mut cluster, leader) = start_with(what, config).await;
    let victim = (leader + 1) % cluster.len();
    let dir = cluster.data_dir(victim).to_path_buf();
    cluster.kill(victim);
    let Some(_mounted) = onto_small_disk(&dir) else {
        eprintln!("{what}: SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    };
    cluster.restart(victim).await;
    let mut leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    if leader == victim {
        let to = (victim + 1) % cluster.len();
        transfer_leadership(&cluster, leader, to).await;
        leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    }
    assert_ne!(leader, victim, "{what}: the victim must follow");
    let held = reserve_bytes(&cluster, victim).await;
    assert!(
        held.is_some_and(|b| b > 0),
        "{what}: no disk reserve at start: {held:?}"
    );
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the disk fills").await;

    let mut manual = Vec::new();
    let mut seq = 0;
    for round in 1..=2 {
        // Written until the disk is full: the victim says so in its log.
        let said_before = disk_full_lines(&cluster, victim);
        let mut posted = 0;
        while disk_full_lines(&cluster, victim) == said_before {
            assert!(
                posted < 300,
                "{what}: round {round}: 300 MiB written and the disk never filled"
            );
            let to = cluster.leader().await.unwrap_or(leader);
            manual.extend(post_mib(&cluster.url(to), MANUAL, seq, Duration::from_secs(10)).await);
            seq += 1000;
            posted += 1;
        }
        eprintln!("{what}: round {round}: the disk filled after {posted} MiB");
        let filled = Instant::now();
        // The others go on past what the victim holds.
        for _ in 0..3 {
            let to = cluster.leader().await.unwrap_or(leader);
            manual.extend(post_mib(&cluster.url(to), MANUAL, seq, Duration::from_secs(10)).await);
            seq += 1000;
        }
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let target = commit_offset(&cluster, leader)
            .await
            .expect("the leader's commit offset");
        let caught_up = eventually(Duration::from_secs(30), || async {
            commit_offset(&cluster, victim).await.is_some_and(|c| c >= target)
        })
        .await;
        assert!(
            caught_up,
            "{what}: round {round}: node {victim} did not commit up to {target} within 30 s of its disk filling (nothing was deleted by the test; retention had to free it):\n{}",
            cluster.log_tail(victim, 40)
        );
        eprintln!(
            "{what}: round {round}: node {victim} committed up to {target} {:?} after its disk filled",
            filled.elapsed()
        );
    }
    assert_progress(&load, 50, "after retention freed the disk").await;
    let made_again = eventually(Duration::from_secs(15), || async {
        reserve_bytes(&cluster, victim).await == held
    })
    .await;
    assert!(made_again, "{what}: the reserve was not made again after the purges");
    let mut history = load.stop().await;
    history.attempts.extend(manual);
    check_retained(&cluster, what, &history).await;
}
