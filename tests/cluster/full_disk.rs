//! A full disk, for real: a follower's data directory on a small tmpfs
//! (ENOSPC from the kernel, not injected), filled while the cluster takes
//! writes, then freed. The follower must wait, say so, and catch up once
//! there is room, without a restart; the checker ends it. Needs root (for
//! `mount`): skipped, saying so, elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::common::cluster::{ClusterConfig, TestCluster};
use super::common::writer::{Attempt, Load, Outcome};
use super::faults::{
    LEADER_TIMEOUT, MANUAL, assert_progress, check_and_report, config, eventually, get, load_config, start_with,
    transfer_leadership,
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
async fn a_leader_whose_disk_fills_commits_again_once_space_is_freed() {
    fill_and_free("the leader's disk filled and freed", true).await;
}
