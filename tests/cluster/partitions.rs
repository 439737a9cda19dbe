//! Partitions and what a node says about its leader: a node cut off from
//! its leader (or a leader cut off from its majority) stops naming one and
//! stops answering ready once its lease runs out; a follower back from a
//! long partition does not depose a healthy leader (pre-vote: its term did
//! not climb while it was away); a member catching up is not ready. Every
//! test with a load ends with the checker.

use std::time::{Duration, Instant};

use super::common::cluster::{ClusterConfig, TestCluster};
use super::common::fault_proxy::Mode;
use super::common::writer::Load;
use super::faults::{
    LEADER_TIMEOUT, assert_progress, check_and_report, config, eventually, get, load_config, send, start_with,
};

/// Longer than any election timeout of `config()` several times over: a
/// node cut off this long has called (or, with pre-vote, tried to call)
/// several elections.
const LONG_PARTITION: Duration = Duration::from_secs(5);

/// The lease of `config()` (its longest election timeout) plus a margin for
/// a loaded machine: by then a cut-off node must know it has no leader.
const LEASE_AND_MARGIN: Duration = Duration::from_millis(600 + 2500);

async fn readyz(cluster: &TestCluster, i: usize) -> u16 {
    get(format!("{}/readyz", cluster.url(i)))
        .await
        .map(|r| r.status)
        .unwrap_or(0)
}

/// Posts `batches` NDJSON batches of 1000 records of about 1 KiB (about a
/// MiB each) to node `leader`, each answered 201; returns the last offset.
async fn write_mib_batches(cluster: &TestCluster, leader: usize, batches: usize, what: &str) -> u64 {
    let pad = "x".repeat(900);
    let batch: String = (0..1000)
        .map(|i| format!("{{\"i\":{i},\"pad\":\"{pad}\"}}\n"))
        .collect();
    let mut last = 0;
    for _ in 0..batches {
        let reply = send(
            reqwest::Method::POST,
            format!("{}/", cluster.url(leader)),
            Some("application/x-ndjson"),
            Some(batch.clone()),
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reply.status, 201, "{what}: {}", reply.body);
        last = reply.body["last_offset"].as_u64().expect("last_offset");
    }
    last
}

/// Kills a follower of `leader` and writes `mib` MiB without it; the
/// follower and the leader's commit offset then.
async fn left_behind(cluster: &mut TestCluster, leader: usize, mib: usize, what: &str) -> (usize, u64) {
    let victim = (leader + 1) % cluster.len();
    cluster.kill(victim);
    write_mib_batches(cluster, leader, mib, what).await;
    let committed = cluster
        .cluster_status(leader)
        .await
        .ok()
        .and_then(|s| s.commit_offset)
        .unwrap_or_default();
    (victim, committed)
}

async fn term_of(cluster: &TestCluster, i: usize) -> u64 {
    cluster
        .cluster_status(i)
        .await
        .unwrap_or_else(|e| panic!("node {i}: {e}"))
        .term
}

#[tokio::test]
#[ignore = "slow (~16 s): scripts/slow-tests.sh runs it"]
async fn a_follower_back_from_a_long_partition_does_not_depose_the_leader() {
    let what = "follower partition";
    let (mut cluster, leader) = start_with(what, config()).await;
    let follower = (leader + 1) % cluster.len();
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the partition").await;
    let term = term_of(&cluster, leader).await;

    cluster.partition(follower, Mode::Drop);
    let cut = Instant::now();
    assert!(
        eventually(LEASE_AND_MARGIN, || async { readyz(&cluster, follower).await == 503 }).await,
        "{what}: the cut-off follower still answers ready {:?} after the cut: {}",
        cut.elapsed(),
        cluster.log_tail(follower, 20)
    );
    let status = cluster.cluster_status(follower).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        status.leader_id, None,
        "{what}: the cut-off follower still names a leader: {}",
        status.raw
    );
    // The fault itself: a partition that lasts (nothing to await but time).
    tokio::time::sleep(LONG_PARTITION.saturating_sub(cut.elapsed())).await;
    assert_progress(&load, 50, "on the majority side").await;
    // Cut off for many election timeouts, it asked (pre-vote) and never
    // raised its term: back, it has nothing to depose a leader with.
    let lonely_term = term_of(&cluster, follower).await;
    assert_eq!(
        lonely_term, term,
        "{what}: the cut-off follower raised its term from {term} to {lonely_term}"
    );

    cluster.heal();
    let leader_url = cluster.url(leader);
    let caught_up = eventually(LEADER_TIMEOUT, || async {
        let (Ok(ours), Ok(theirs)) = (
            cluster.cluster_status(follower).await,
            cluster.cluster_status(leader).await,
        ) else {
            return false;
        };
        ours.leader_url.is_some() && ours.leader_url == theirs.leader_url && ours.commit_offset >= theirs.commit_offset
    })
    .await;
    assert!(
        caught_up,
        "{what}: the follower did not rejoin the leader (first {leader_url})"
    );
    assert_eq!(
        readyz(&cluster, follower).await,
        200,
        "{what}: the healed follower is not ready"
    );
    assert_progress(&load, 50, "after healing").await;
    let history = load.stop().await;
    check_and_report(&cluster, what, &history).await;
}

#[tokio::test]
async fn a_leader_cut_off_from_its_majority_stops_naming_itself_and_answering_ready() {
    let what = "lonely leader";
    let (mut cluster, leader) = start_with(what, config()).await;
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the partition").await;

    cluster.partition(leader, Mode::Drop);
    let cut = Instant::now();
    assert!(
        eventually(LEASE_AND_MARGIN, || async { readyz(&cluster, leader).await == 503 }).await,
        "{what}: the old leader still answers ready {:?} after the cut: {}",
        cut.elapsed(),
        cluster.log_tail(leader, 20)
    );
    let status = cluster.cluster_status(leader).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        status.leader_id, None,
        "{what}: the old leader still names a leader: {}",
        status.raw
    );
    // A write to it is refused at once (nothing proposed), not left to time out.
    let sent = Instant::now();
    let reply = send(
        reqwest::Method::POST,
        format!("{}/", cluster.url(leader)),
        Some("application/json"),
        Some(r#"{"lonely":true}"#.into()),
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        (reply.status, reply.body["code"].as_str()),
        (503, Some("no_leader")),
        "{what}: a write to the old leader: {:?} {}",
        reply.location,
        reply.body
    );
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{what}: the refusal took {:?}",
        sent.elapsed()
    );
    assert_progress(&load, 50, "on the majority side").await;

    cluster.heal();
    let new_leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    assert!(
        eventually(LEADER_TIMEOUT, || async { readyz(&cluster, leader).await == 200 }).await,
        "{what}: the old leader (node {leader}) is not ready again under node {new_leader}"
    );
    assert_progress(&load, 50, "after healing").await;
    let history = load.stop().await;
    check_and_report(&cluster, what, &history).await;
}

/// A member back from a long outage is a member at once and hears its
/// leader at once, but misses what was written meanwhile: it must not say
/// it is ready (a load balancer would send it reads that miss records)
/// until it has applied all but `--ready-lag` of what the leader committed.
#[tokio::test]
async fn a_member_back_from_an_outage_is_ready_only_once_it_has_caught_up() {
    let what = "ready when caught up";
    const LAG: u64 = 10;
    let config = ClusterConfig {
        extra_args: vec!["--ready-lag".into(), LAG.to_string()],
        ..config()
    };
    let (mut cluster, leader) = start_with(what, config).await;
    // About 24 MiB written while it is down: several append-entries
    // requests to catch up.
    let (victim, committed) = left_behind(&mut cluster, leader, 24, what).await;
    cluster.restart(victim).await;
    let url = cluster.url(victim);
    let deadline = Instant::now() + LEADER_TIMEOUT * 4;
    let mut polls = 0;
    loop {
        polls += 1;
        if readyz(&cluster, victim).await == 200 {
            let next = get(format!("{url}/status"))
                .await
                .ok()
                .and_then(|r| r.body["next_offset"].as_u64());
            let next = next.unwrap_or_default();
            assert!(
                next + LAG + 1 >= committed,
                "{what}: node {victim} answered ready holding offsets below {next} of {committed} (poll {polls})"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{what}: node {victim} never became ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("{what}: ready after {polls} polls");
}

/// A member catching up must not tell a reader that a committed offset
/// does not exist: a read of an offset the cluster committed but the
/// member does not hold yet waits briefly, then sends the reader to the
/// leader (307); before it hears a leader it says it cannot tell (503),
/// never a 404 or an empty range that ends early.
#[tokio::test]
async fn a_member_catching_up_never_says_a_committed_offset_is_missing() {
    let what = "no false 404";
    let (mut cluster, leader) = start_with(what, config()).await;
    let victim = (leader + 1) % cluster.len();
    cluster.kill(victim);
    // About 16 MiB written while it is down: it takes a while to catch up.
    let last = write_mib_batches(&cluster, leader, 16, what).await;
    cluster.restart(victim).await;
    let url = cluster.url(victim);
    let leader_url = cluster.url(leader);
    let deadline = Instant::now() + LEADER_TIMEOUT * 4;
    let (mut redirected, mut polls) = (0, 0);
    loop {
        polls += 1;
        let one = get(format!("{url}/{last}"))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let range = get(format!("{url}/?from={last}&limit=1"))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // The last record, which is `last`: never an older one as the last.
        let tail = get(format!("{url}/?tail=1"))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if tail.status == 200 {
            assert_eq!(
                tail.body["records"][0]["offset"].as_u64(),
                Some(last),
                "{what}: node {victim} answered the last record before {last}, committed, as its last (poll {polls}): {} (GET /{last}: {} {}; GET /?from={last}: {} {})",
                tail.body,
                one.status,
                one.body,
                range.status,
                range.body
            );
        }
        for (route, reply) in [
            (format!("GET /{last}"), &one),
            (format!("GET /?from={last}"), &range),
            ("GET /?tail=1".to_string(), &tail),
        ] {
            match reply.status {
                200 => {}
                307 => {
                    redirected += 1;
                    let location = reply.location.as_deref().unwrap_or_default();
                    assert!(
                        location.starts_with(&leader_url),
                        "{what}: {route} sent the reader to {location}, not the leader {leader_url}"
                    );
                }
                // Just restarted, before it hears a leader: it cannot tell,
                // and says so (retry), rather than "no such offset".
                503 if reply.body["code"] == "no_leader" => {}
                status => panic!(
                    "{what}: node {victim} answered {status} to {route} for committed offset {last} (poll {polls}): {}",
                    reply.body
                ),
            }
        }
        if range.status == 200 {
            assert_eq!(
                range.body["records"][0]["offset"].as_u64(),
                Some(last),
                "{what}: a range from a committed offset came back without it: {}",
                range.body
            );
        }
        if one.status == 200 && range.status == 200 {
            assert_eq!(one.body["offset"].as_u64(), Some(last), "{what}: {}", one.body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: node {victim} never served offset {last}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("{what}: served after {polls} polls, {redirected} answers sent to the leader");
}

/// A member far behind, on a slow link from its leader (2 MiB/s: a full
/// append-entries batch of 4 MiB takes two seconds), catches up. Each
/// request used to be waited for 3/4 of a heartbeat interval whatever it
/// carried: a full batch timed out every time, the leader sent it again,
/// and the member never caught up (on a loaded machine the same happened
/// over loopback: CI's `never became ready`).
#[tokio::test]
#[ignore = "slow (~10 s): scripts/slow-tests.sh runs it"]
async fn a_member_far_behind_on_a_slow_link_catches_up() {
    let what = "slow link";
    let (mut cluster, leader) = start_with(what, config()).await;
    let (victim, committed) = left_behind(&mut cluster, leader, 12, what).await;
    cluster.link(leader, victim).set_rate(Some(2 << 20));
    cluster.restart(victim).await;
    let caught_up = eventually(LEADER_TIMEOUT * 2, || async {
        cluster
            .cluster_status(victim)
            .await
            .is_ok_and(|s| s.commit_offset.is_some_and(|c| c >= committed))
    })
    .await;
    let sent = cluster.link(leader, victim).stats().to_target;
    assert!(
        caught_up,
        "{what}: node {victim} did not catch up to offset {committed} ({sent} bytes sent to it):\n{}",
        cluster.log_tail(victim, 20)
    );
    eprintln!("{what}: caught up; {sent} bytes sent to it");
}
