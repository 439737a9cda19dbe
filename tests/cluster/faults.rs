//! Real-process fault tests of cluster mode: three (or four) `distlog
//! serve --peers` processes, a fault proxy on every link between them
//! (`common::cluster`), concurrent writers recording a history
//! (`common::writer`) and the checker (`common::checker`) at the end of
//! every test. Every test prints its seed (`DISTLOG_TEST_SEED=N` replays
//! the cluster's random choices; timing still varies).
//!
//! The tests take turns on the harness's cluster lock, so plain `cargo
//! test` runs them one cluster at a time. The long schedule runner is
//! `#[ignore]`d; `cargo test --test cluster randomized_fault_schedules --
//! --ignored` runs it (`DISTLOG_SCHEDULES=N`, default 20, from number
//! `DISTLOG_SCHEDULE_FIRST`, default 0: a schedule's settings follow from
//! its number). Schedules fill disks (as root) and cut power in the
//! write-caching modes (`schedule_steps`).

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::checker::{self, NodeLog, VisibleMonitor};
use common::cluster::{ClusterConfig, ClusterStatus, TestCluster};
use common::fault_proxy::Mode;
use common::rt::{self, XorShift};
use common::writer::{Attempt, History, Load, LoadConfig, Outcome, base_url, record_body};

use super::schedule_steps::{self, SharedTally};
use serde_json::Value;

pub(super) const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
pub(super) const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(20);
pub(super) const MONITOR_EVERY: Duration = Duration::from_millis(150);

/// Election timeouts 300-600 ms, heartbeat 75 ms (the harness default).
/// Node logs without the access log (one line per request drowns the
/// cluster's own lines in the tails printed on failure).
pub(super) fn config() -> ClusterConfig {
    ClusterConfig {
        rust_log: "info,distlog::access=warn".into(),
        ..ClusterConfig::default()
    }
}

/// `--write-timeout-ms` where a test waits for it.
const WRITE_TIMEOUT_MS: u64 = 1000;

/// Writer ids of hand-made writes (a `Load`'s writers are 0..writers).
pub(super) const MANUAL: u64 = 100;
/// Writer ids of the load sent to a stopped leader.
const STOPPED_WRITERS: u64 = 200;

pub(super) fn load_config() -> LoadConfig {
    LoadConfig {
        writers: 4,
        request_timeout: Duration::from_millis(1500),
        ..LoadConfig::default()
    }
}

/// Writer ids of producer-mode loads.
pub(super) const PRODUCERS: u64 = 50;

/// Two idempotent producers (see `writer`'s producer mode).
pub(super) fn producer_config() -> LoadConfig {
    LoadConfig {
        writers: 2,
        first_writer: PRODUCERS,
        producer: true,
        ..load_config()
    }
}

async fn start(test: &str) -> (TestCluster, usize) {
    start_with(test, config()).await
}

pub(super) async fn start_with(test: &str, config: ClusterConfig) -> (TestCluster, usize) {
    eprintln!("==== {test}");
    let cluster = TestCluster::start(config).await;
    eprintln!("{test}: seed {}", cluster.seed());
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    eprintln!("{test}: node {leader} leads");
    (cluster, leader)
}

// ---- HTTP ----

#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) location: Option<String>,
    pub(super) body: Value,
}

pub(super) async fn send(
    method: reqwest::Method,
    url: String,
    content_type: Option<&'static str>,
    body: Option<String>,
    timeout: Duration,
) -> Result<Reply, String> {
    rt::on_harness(async move {
        let mut request = rt::http().request(method, &url).timeout(timeout);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply { status, location, body })
    })
    .await
}

async fn post_json(node: &str, body: &str) -> Result<Reply, String> {
    send(
        reqwest::Method::POST,
        format!("{node}/"),
        Some("application/json"),
        Some(body.to_string()),
        Duration::from_secs(5),
    )
    .await
}

pub(super) async fn get(url: String) -> Result<Reply, String> {
    send(reqwest::Method::GET, url, None, None, Duration::from_secs(5)).await
}

/// An attempt made by hand (not by a `Load`), for the checker.
fn attempt(writer: u64, seq: u64, node: &str, sent: Instant, outcome: Outcome) -> Attempt {
    Attempt {
        writer,
        seq,
        body: record_body(writer, seq),
        first_node: node.to_string(),
        last_node: node.to_string(),
        sent,
        done: Instant::now(),
        outcome,
        duplicate: false,
    }
}

/// Posts record (writer, seq) to `node` and expects 201; its attempt. A
/// `503 no_leader` (refused before anything was appended, so safe to send
/// again) is retried for a while: on a loaded machine a fresh cluster may
/// hold an election more.
pub(super) async fn write_acked(node: &str, writer: u64, seq: u64) -> Attempt {
    let sent = Instant::now();
    let reply = loop {
        let reply = post_json(node, &record_body(writer, seq))
            .await
            .unwrap_or_else(|e| panic!("write ({writer},{seq}) to {node}: {e}"));
        let no_leader = reply.status == 503 && reply.body["code"] == "no_leader";
        if !no_leader || sent.elapsed() > LEADER_TIMEOUT {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply.status, 201, "write ({writer},{seq}) to {node}: {reply:?}");
    let offset = reply.body["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("201 without an offset: {reply:?}"));
    attempt(writer, seq, node, sent, Outcome::Ack(offset))
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub(super) async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) fn voters(status: &ClusterStatus) -> BTreeSet<u64> {
    status
        .members
        .iter()
        .filter(|m| m.voter)
        .filter_map(|m| m.id.as_u64())
        .collect()
}

pub(super) fn member_ids(status: &ClusterStatus) -> BTreeSet<u64> {
    status.members.iter().filter_map(|m| m.id.as_u64()).collect()
}

/// Polls the agreed leader's `/cluster` until `check` holds; Err with what
/// it last said after `timeout`.
async fn wait_membership(
    cluster: &TestCluster,
    timeout: Duration,
    check: impl Fn(&ClusterStatus) -> bool,
) -> Result<ClusterStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match cluster.leader().await {
            None => "no agreed leader".to_string(),
            Some(l) => match cluster.cluster_status(l).await {
                Ok(s) if check(&s) => return Ok(s),
                Ok(s) => format!("node {l}: {}", s.raw),
                Err(e) => e,
            },
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- checks ----

pub(super) async fn assert_progress(load: &Load, n: u64, what: &str) {
    load.assert_progress(n, PROGRESS_TIMEOUT, what).await;
}

/// Every problem the visible-log monitor saw fails the test (a restarted
/// node re-applies up to its persisted commit index before it serves, so
/// its visible log never goes back).
pub(super) fn assert_monitor_clean(what: &str, problems: Vec<String>) {
    checker::assert_clean(what, &problems);
}

pub(super) async fn check_and_report(cluster: &TestCluster, what: &str, history: &History) {
    eprintln!("{what}: {}", history.summary());
    let problems = cluster.check(history, CHECK_TIMEOUT).await;
    checker::assert_clean(what, &problems);
}

// ==== 1. formation, writes through follower and leader, control offsets ====

#[tokio::test]
async fn three_nodes_form_a_cluster_and_serve_identical_records() {
    let (cluster, leader) = start("formation").await;
    let follower = (leader + 1) % cluster.len();
    let leader_url = cluster.url(leader);
    let mut history = History::default();

    // Every node agrees on the membership: three voters, the same ids.
    let statuses = {
        let mut s = Vec::new();
        for i in 0..cluster.len() {
            s.push(cluster.cluster_status(i).await.expect("GET /cluster"));
        }
        s
    };
    let ids: BTreeSet<u64> = statuses.iter().filter_map(|s| s.node_id.as_u64()).collect();
    assert_eq!(ids.len(), 3, "three distinct node ids: {statuses:#?}");
    for s in &statuses {
        assert!(s.raw["initialized"].as_bool().unwrap_or(false), "{s:#?}");
        assert_eq!(voters(s), ids, "every node sees the three voters: {}", s.raw);
        assert!(ids.iter().all(|id| *id < (1 << 53)), "ids below 2^53: {ids:?}");
    }

    let term_before = cluster.cluster_status(leader).await.expect("status").term;
    // Through a follower: 307 to the leader, then 201 there.
    let sent = Instant::now();
    let reply = loop {
        let reply = post_json(&cluster.url(follower), &record_body(MANUAL, 0))
            .await
            .expect("post to a follower");
        // Refused before anything was appended: an election on a loaded
        // machine, safe to retry.
        let no_leader = reply.status == 503 && reply.body["code"] == "no_leader";
        if !no_leader || sent.elapsed() > LEADER_TIMEOUT {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply.status, 307, "a follower redirects a write: {reply:?}");
    let location = reply.location.clone().expect("a 307 with a Location");
    assert_eq!(base_url(&location), leader_url, "redirected to the leader");
    let reply = send(
        reqwest::Method::POST,
        location.clone(),
        Some("application/json"),
        Some(record_body(MANUAL, 0)),
        Duration::from_secs(5),
    )
    .await
    .expect("post to the Location");
    assert_eq!(reply.status, 201, "{reply:?}");
    let via_follower = reply.body["offset"].as_u64().expect("an offset");
    history
        .attempts
        .push(attempt(MANUAL, 0, &leader_url, sent, Outcome::Ack(via_follower)));

    // Through the leader, a few more.
    for seq in 1..20 {
        history.attempts.push(write_acked(&leader_url, MANUAL, seq).await);
    }
    // And concurrent writers (they follow redirects themselves).
    let monitor = VisibleMonitor::start(cluster.urls(), MONITOR_EVERY);
    let load = Load::start(
        cluster.urls(),
        LoadConfig {
            attempts_per_writer: Some(50),
            ..load_config()
        },
    );
    let load_history = load.stop_when_done().await;
    history.attempts.extend(load_history.attempts);
    let (_, failed, unknown) = history.count();
    let term_after = cluster.cluster_status(leader).await.expect("status").term;
    // An election the test did not cause (a starved machine misses
    // heartbeats) may leave writes unknown; without one, none may fail.
    let calm = term_before == term_after;
    eprintln!("formation: term {term_before} -> {term_after}");
    assert!(
        !calm || (failed, unknown) == (0, 0),
        "no faults, no failures: {}",
        history.summary()
    );

    check_and_report(&cluster, "formation", &history).await;

    // Read back one by one on every node, identically.
    for i in 0..cluster.len() {
        for (a, offset) in history.attempts.iter().filter_map(|a| Some((a, a.acked_offset()?))) {
            let reply = get(format!("{}/{offset}", cluster.url(i))).await.expect("GET /offset");
            assert_eq!(reply.status, 200, "node {i} offset {offset}: {reply:?}");
            assert_eq!(reply.body["value"], a.value(), "node {i} offset {offset}");
        }
    }

    // Control offsets (0 and 1 at least: the formation's entries) answer
    // 404 no_record_at_offset with the next offset that holds a record.
    let visible = checker::read_visible(&leader_url).await.expect("read the leader");
    let control: Vec<u64> = (0..visible.end())
        .filter(|o| !visible.records.contains_key(o))
        .collect();
    assert!(
        !control.is_empty(),
        "the log skips control offsets: {:?}",
        visible.records.keys().take(5)
    );
    assert!(control.contains(&0), "offset 0 is a control entry: {control:?}");
    for i in 0..cluster.len() {
        for &offset in control.iter().take(5) {
            let reply = get(format!("{}/{offset}", cluster.url(i)))
                .await
                .expect("GET control offset");
            assert_eq!(reply.status, 404, "node {i} control offset {offset}: {reply:?}");
            assert_eq!(reply.body["code"], "no_record_at_offset", "{reply:?}");
            let next = visible.records.range(offset..).next().map(|(o, _)| *o);
            assert_eq!(
                reply.body["next_offset"].as_u64(),
                next,
                "node {i} offset {offset}: {reply:?}"
            );
        }
    }
    assert_monitor_clean("formation monitor", monitor.stop().await);
}

// ==== 2. kill -9 of the leader under load ====

#[tokio::test]
async fn leader_kill9_under_load_elects_a_new_leader_and_the_old_one_catches_up() {
    let (mut cluster, leader) = start("leader kill -9").await;
    let monitor = VisibleMonitor::start(cluster.urls(), MONITOR_EVERY);
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 100, "before the kill").await;

    cluster.kill(leader);
    let killed = Instant::now();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let took = killed.elapsed();
    eprintln!("leader kill -9: node {new_leader} leads {took:?} after the kill");
    assert_ne!(new_leader, leader);
    assert!(took < Duration::from_secs(5), "a new leader after {took:?}");
    assert_progress(&load, 100, "after the kill").await;

    cluster.restart(leader).await;
    cluster.wait_for_leader(LEADER_TIMEOUT).await;
    assert_progress(&load, 100, "after the restart").await;
    let history = load.stop().await;
    check_and_report(&cluster, "leader kill -9", &history).await;
    assert_monitor_clean("leader kill -9 monitor", monitor.stop().await);
}

// ==== 3. SIGSTOP of the leader past the election timeout ====

#[tokio::test]
async fn a_stopped_leader_acknowledges_nothing_it_cannot_commit() {
    let (mut cluster, leader) = start("leader SIGSTOP").await;
    let leader_url = cluster.url(leader);
    let monitor = VisibleMonitor::start(cluster.urls(), MONITOR_EVERY);
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 100, "before the stop").await;

    cluster.stop(leader);
    // Writes that reach the frozen leader: they wait in its socket buffer
    // and are handled when it continues, in its old term. No redirects
    // followed: any 201 comes from the old leader itself.
    let to_stopped = Load::start(
        vec![leader_url.clone()],
        LoadConfig {
            writers: 3,
            first_writer: STOPPED_WRITERS,
            request_timeout: Duration::from_secs(20),
            max_redirects: 0,
            attempts_per_writer: Some(1),
            ..load_config()
        },
    );
    let stopped = Instant::now();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    eprintln!(
        "leader SIGSTOP: node {new_leader} leads {:?} after the stop",
        stopped.elapsed()
    );
    assert_ne!(new_leader, leader);
    assert_progress(&load, 100, "while the old leader is stopped").await;
    // Well past the election timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    cluster.cont(leader);
    let sent_to_stopped = to_stopped.stop().await;
    for a in &sent_to_stopped.attempts {
        eprintln!("leader SIGSTOP: write sent to the stopped leader: {:?}", a.outcome);
    }
    cluster.wait_for_leader(LEADER_TIMEOUT).await;
    assert_progress(&load, 50, "after the old leader continued").await;
    let mut history = load.stop().await;
    history.attempts.extend(sent_to_stopped.attempts.iter().cloned());
    // The old leader may acknowledge such a write truthfully: appended in
    // its old term and copied to a follower before it hears of the new
    // term, the entry is committed by a later leader (with that follower's
    // vote) under its original log id, and openraft answers the waiting
    // client then (seen on a loaded machine: three such 201s). What it must
    // never do is acknowledge one that is not in the committed log at the
    // offset it named: the checker holds every 201 to that.
    check_and_report(&cluster, "leader SIGSTOP", &history).await;
    assert_monitor_clean("leader SIGSTOP monitor", monitor.stop().await);
}

// ==== 4. partitioning the leader (Drop, Sever) ====

async fn partition_the_leader(mode: Mode) {
    let what = format!("leader partition {mode:?}");
    // A lease (the max election timeout) well past the write timeout: the
    // write below reaches the old leader while it still believes it leads,
    // however slow this machine is; after the lease it would refuse it.
    let config = ClusterConfig {
        extra_args: vec!["--write-timeout-ms".into(), WRITE_TIMEOUT_MS.to_string()],
        election_timeout_min_ms: 1000,
        election_timeout_max_ms: 2500,
        ..config()
    };
    let (mut cluster, leader) = start_with(&what, config).await;
    let monitor = VisibleMonitor::start(cluster.urls(), MONITOR_EVERY);
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 100, "before the partition").await;

    cluster.partition(leader, mode);
    let cut = Instant::now();
    // A write sent to the old leader as it is cut off: it still leads (its
    // lease runs), so it proposes the write, which cannot commit. It waits
    // no longer than the write timeout (it used to wait until the partition
    // healed) and says that its outcome is unknown.
    let sent = Instant::now();
    let lonely_write = async {
        let reply = send(
            reqwest::Method::POST,
            format!("{}/", cluster.url(leader)),
            Some("application/json"),
            Some(record_body(MANUAL + 1, 0)),
            Duration::from_secs(10),
        )
        .await;
        (reply, sent.elapsed())
    };
    let ((lonely, waited), new_leader) = tokio::join!(lonely_write, cluster.wait_for_leader(LEADER_TIMEOUT));
    eprintln!(
        "{what}: node {new_leader} leads the majority {:?} after the cut; the isolated old leader answered in {waited:?}: {lonely:?}",
        cut.elapsed()
    );
    assert_ne!(new_leader, leader);
    match &lonely {
        Ok(r) => assert_eq!(
            (r.status, r.body["code"].as_str()),
            (503, Some("outcome_unknown")),
            "{what}: a write to the isolated old leader: {r:?}"
        ),
        Err(e) => panic!("{what}: a write to the isolated old leader got no answer in {waited:?}: {e}"),
    }
    assert!(
        waited < Duration::from_millis(WRITE_TIMEOUT_MS + 2000),
        "{what}: the isolated old leader answered after {waited:?}"
    );
    assert_progress(&load, 100, "on the majority side").await;
    let lonely_outcome = match &lonely {
        Ok(r) if r.status == 201 => Outcome::Ack(r.body["offset"].as_u64().unwrap_or(u64::MAX)),
        Ok(r) if (400..500).contains(&r.status) => Outcome::Failed(r.status),
        Ok(r) => Outcome::Unknown(format!("{} {}", r.status, r.body)),
        Err(e) => Outcome::Unknown(e.clone()),
    };
    eprintln!("{what}: a write to the isolated old leader: {lonely_outcome:?}");

    cluster.heal();
    cluster.wait_for_leader(LEADER_TIMEOUT).await;
    assert_progress(&load, 100, "after healing").await;
    let mut history = load.stop().await;
    history.attempts.push(attempt(
        MANUAL + 1,
        0,
        &cluster.url(leader),
        sent,
        lonely_outcome.clone(),
    ));
    check_and_report(&cluster, &what, &history).await;
    assert!(
        !matches!(lonely_outcome, Outcome::Ack(_)),
        "the isolated old leader acknowledged a write: {lonely_outcome:?}"
    );
    assert_monitor_clean(&format!("{what} monitor"), monitor.stop().await);
}

#[tokio::test]
#[ignore = "slow (~16 s): scripts/slow-tests.sh runs it"]
async fn a_leader_partitioned_by_dropped_packets_is_replaced_and_catches_up() {
    partition_the_leader(Mode::Drop).await;
}

#[tokio::test]
async fn a_leader_partitioned_by_severed_connections_is_replaced_and_catches_up() {
    partition_the_leader(Mode::Sever).await;
}

// ==== 5. rolling restart ====

#[tokio::test]
#[ignore = "slow (~17 s): scripts/slow-tests.sh runs it"]
async fn a_rolling_restart_under_load_loses_nothing() {
    let (mut cluster, _) = start("rolling restart").await;
    let monitor = VisibleMonitor::start(cluster.urls(), MONITOR_EVERY);
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 50, "before the restarts").await;
    let mut order: Vec<usize> = (0..cluster.len()).collect();
    cluster.rng().shuffle(&mut order);
    eprintln!("rolling restart: order {order:?}");
    for i in order {
        cluster.restart(i).await;
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        eprintln!("rolling restart: node {i} restarted, node {leader} leads");
        assert_progress(&load, 50, &format!("after restarting node {i}")).await;
    }
    let history = load.stop().await;
    check_and_report(&cluster, "rolling restart", &history).await;
    assert_monitor_clean("rolling restart monitor", monitor.stop().await);
}

// ==== 6. a wiped node rejoins under a new id ====

#[tokio::test]
async fn a_wiped_node_rejoins_under_a_new_id_with_identical_records() {
    let (mut cluster, leader) = start("wipe").await;
    let victim = (leader + 1 + cluster.rng().index(2)) % cluster.len();
    let old_id = cluster
        .cluster_status(victim)
        .await
        .expect("status")
        .node_id
        .as_u64()
        .expect("an id");
    let monitor = VisibleMonitor::start(cluster.urls(), MONITOR_EVERY);
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 100, "before the wipe").await;

    cluster.wipe_and_restart(victim, |url| monitor.node_wiped(url)).await;
    let new_id = cluster
        .cluster_status(victim)
        .await
        .expect("status")
        .node_id
        .as_u64()
        .expect("an id");
    eprintln!("wipe: node {victim} was id {old_id}, is id {new_id}");
    assert_ne!(old_id, new_id, "a wiped data directory gets a new id");

    let victim_url = cluster.url(victim);
    let joined = wait_membership(&cluster, Duration::from_secs(30), |s| {
        let v = voters(s);
        v.len() == 3
            && v.contains(&new_id)
            && !member_ids(s).contains(&old_id)
            && s.members
                .iter()
                .any(|m| m.id.as_u64() == Some(new_id) && m.url == victim_url)
    })
    .await;
    if let Err(last) = joined {
        panic!("wipe: the new id never became a voter in place of the old one; leader said {last}");
    }
    assert_progress(&load, 100, "after the rejoin").await;
    let history = load.stop().await;
    check_and_report(&cluster, "wipe", &history).await;
    for i in 0..cluster.len() {
        let s = cluster.cluster_status(i).await.expect("status");
        assert_eq!(voters(&s).len(), 3, "node {i}: {}", s.raw);
        assert!(
            !member_ids(&s).contains(&old_id),
            "node {i} still lists {old_id}: {}",
            s.raw
        );
    }
    assert_monitor_clean("wipe monitor", monitor.stop().await);
}

// ==== 7. remove a member, add a fourth process ====

#[tokio::test]
async fn a_removed_member_is_replaced_by_a_new_node_that_joins_through_a_seed() {
    let (mut cluster, leader) = start("remove and add").await;
    let removed = (leader + 1 + cluster.rng().index(2)) % cluster.len();
    let removed_id = cluster
        .cluster_status(removed)
        .await
        .expect("status")
        .node_id
        .as_u64()
        .expect("id");
    let monitor = VisibleMonitor::start(cluster.urls(), MONITOR_EVERY);
    let load = Load::start(cluster.urls(), load_config());
    assert_progress(&load, 100, "before the removal").await;

    let reply = send(
        reqwest::Method::DELETE,
        format!("{}/cluster/members/{removed_id}", cluster.url(leader)),
        None,
        None,
        Duration::from_secs(10),
    )
    .await
    .expect("DELETE /cluster/members/{id}");
    eprintln!(
        "remove and add: DELETE node {removed} (id {removed_id}): {} {}",
        reply.status, reply.body
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let status = ClusterStatus::parse(reply.body.clone()).expect("a /cluster answer");
    assert!(!member_ids(&status).contains(&removed_id), "{}", status.raw);
    assert_eq!(voters(&status).len(), 2, "{}", status.raw);
    // The removed node keeps running for a while: it must not disturb the
    // two that remain.
    assert_progress(&load, 100, "with the removed node still running").await;
    cluster.kill(removed);

    let added = cluster.add_node().await;
    let added_id = cluster
        .cluster_status(added)
        .await
        .expect("status")
        .node_id
        .as_u64()
        .expect("id");
    eprintln!(
        "remove and add: node {added} ({}) has id {added_id}",
        cluster.url(added)
    );
    let joined = wait_membership(&cluster, Duration::from_secs(30), |s| {
        voters(s).len() == 3 && voters(s).contains(&added_id) && !member_ids(s).contains(&removed_id)
    })
    .await;
    if let Err(last) = joined {
        panic!("remove and add: the new node never became a voter; leader said {last}");
    }
    assert_progress(&load, 100, "after the new node joined").await;
    let history = load.stop().await;
    check_and_report(&cluster, "remove and add", &history).await;
    assert!(cluster.live().contains(&added));
    assert_monitor_clean("remove and add monitor", monitor.stop().await);
}

// ==== 8. NDJSON batches under a leader kill ====

/// One NDJSON batch's attempt.
#[derive(Clone, Debug)]
struct BatchAttempt {
    writer: u64,
    seq: u64,
    bodies: Vec<String>,
    first_node: String,
    last_node: String,
    sent: Instant,
    done: Instant,
    outcome: Outcome,
    /// Problems with the answer itself (non-contiguous offsets).
    answer_problem: Option<String>,
}

fn batch_body(writer: u64, seq: u64, i: usize) -> String {
    format!("{{\"b\":{writer},\"s\":{seq},\"i\":{i}}}")
}

async fn batch_writer(
    writer: u64,
    urls: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Vec<BatchAttempt> {
    let mut rng = XorShift::new(seed ^ writer.wrapping_mul(0x9E37_79B9));
    let mut target = writer as usize % urls.len();
    let mut attempts = Vec::new();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let n = 2 + rng.index(7);
        let bodies: Vec<String> = (0..n).map(|i| batch_body(writer, seq, i)).collect();
        let payload = bodies.join("\n") + "\n";
        let first_node = urls[target].clone();
        let mut node = first_node.clone();
        let sent = Instant::now();
        let mut answer_problem = None;
        let mut redirects = 0;
        let outcome = loop {
            let reply = rt::http()
                .post(format!("{node}/"))
                .header("content-type", "application/x-ndjson")
                .timeout(Duration::from_millis(1500))
                .body(payload.clone())
                .send()
                .await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => break Outcome::Unknown(format!("{node}: {e}")),
            };
            let status = reply.status().as_u16();
            match status {
                201 => {
                    let body: Value = reply.json().await.unwrap_or(Value::Null);
                    match (body["first_offset"].as_u64(), body["last_offset"].as_u64()) {
                        (Some(first), Some(last)) => {
                            if last + 1 != first + n as u64 {
                                answer_problem = Some(format!(
                                    "batch ({writer},{seq}) of {n} records acked at {first}..={last}: not contiguous"
                                ));
                            }
                            break Outcome::Ack(first);
                        }
                        _ => break Outcome::Unknown(format!("{node}: 201 {body}")),
                    }
                }
                307 if redirects < 4 => {
                    redirects += 1;
                    match reply.headers().get("location").and_then(|l| l.to_str().ok()) {
                        Some(l) => node = base_url(l),
                        None => break Outcome::Unknown("307 without a location".into()),
                    }
                }
                400..=499 => break Outcome::Failed(status),
                _ => break Outcome::Unknown(format!("{node}: {status}")),
            }
        };
        match outcome {
            Outcome::Ack(_) => {
                acked.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = urls.iter().position(|u| *u == node) {
                    target = i;
                }
            }
            _ => {
                target = (target + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        attempts.push(BatchAttempt {
            writer,
            seq,
            bodies,
            first_node,
            last_node: node,
            sent,
            done: Instant::now(),
            outcome,
            answer_problem,
        });
        seq += 1;
    }
    attempts
}

/// The batches' records as single attempts, for the checker.
fn batches_as_history(batches: &[BatchAttempt]) -> History {
    let mut history = History::default();
    for b in batches {
        for (i, body) in b.bodies.iter().enumerate() {
            history.attempts.push(Attempt {
                writer: 1000 + b.writer,
                seq: b.seq * 100 + i as u64,
                body: body.clone(),
                first_node: b.first_node.clone(),
                last_node: b.last_node.clone(),
                sent: b.sent,
                done: b.done,
                outcome: match &b.outcome {
                    Outcome::Ack(first) => Outcome::Ack(first + i as u64),
                    other => other.clone(),
                },
                duplicate: false,
            });
        }
    }
    history
}

/// A batch shown in part on a node: some of its records but not all.
fn partial_batches(log: &NodeLog, sizes: &HashMap<(u64, u64), usize>) -> Vec<String> {
    let mut shown: BTreeMap<(u64, u64), BTreeSet<u64>> = BTreeMap::new();
    for value in log.records.values() {
        if let (Some(b), Some(s), Some(i)) = (value["b"].as_u64(), value["s"].as_u64(), value["i"].as_u64()) {
            shown.entry((b, s)).or_default().insert(i);
        }
    }
    shown
        .into_iter()
        .filter_map(|(key, items)| {
            let size = sizes.get(&key).copied().unwrap_or(0);
            (items.len() != size).then(|| {
                format!(
                    "batch {key:?} of {size} records shows only items {items:?} on {} (visible end {})",
                    log.url,
                    log.end()
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn ndjson_batches_are_visible_whole_or_not_at_all_across_a_leader_kill() {
    let (mut cluster, leader) = start("batches").await;
    let seed = cluster.seed();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..3)
        .map(|w| rt::runtime().spawn(batch_writer(w, cluster.urls(), seed, stop.clone(), acked.clone())))
        .collect();
    let monitor = VisibleMonitor::start(cluster.urls(), MONITOR_EVERY);
    // Watch for partial batches while it runs. Batch sizes are only known
    // after the run, so keep the reads and judge them afterwards.
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let urls = cluster.urls();
        let watch_stop = watch_stop.clone();
        rt::runtime().spawn(async move {
            let mut reads = Vec::new();
            while !watch_stop.load(Ordering::Relaxed) {
                for url in &urls {
                    if let Ok(log) = checker::read_visible(url).await {
                        reads.push(log);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            reads
        })
    };
    let wait_batches = |n: u64| {
        let acked = acked.clone();
        async move {
            let target = acked.load(Ordering::Relaxed) + n;
            eventually(PROGRESS_TIMEOUT, || {
                let acked = acked.clone();
                async move { acked.load(Ordering::Relaxed) >= target }
            })
            .await
        }
    };
    assert!(wait_batches(50).await, "batches: no progress before the kill");
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    eprintln!("batches: node {new_leader} leads after the kill");
    assert!(wait_batches(50).await, "batches: no progress after the kill");
    cluster.restart(leader).await;
    cluster.wait_for_leader(LEADER_TIMEOUT).await;
    assert!(wait_batches(50).await, "batches: no progress after the restart");
    stop.store(true, Ordering::Relaxed);
    let mut batches = Vec::new();
    for w in writers {
        batches.extend(w.await.expect("a batch writer"));
    }
    watch_stop.store(true, Ordering::Relaxed);
    let reads = watcher.await.expect("the watcher");

    let sizes: HashMap<(u64, u64), usize> = batches.iter().map(|b| ((b.writer, b.seq), b.bodies.len())).collect();
    let history = batches_as_history(&batches);
    let acked_batches = batches.iter().filter(|b| matches!(b.outcome, Outcome::Ack(_))).count();
    eprintln!(
        "batches: {} batches, {acked_batches} acked; {} records ({}); {} reads watched",
        batches.len(),
        history.attempts.len(),
        history.summary(),
        reads.len()
    );
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for b in &batches {
        if let Outcome::Unknown(why) = &b.outcome {
            // Without the node's address: "connection refused", "503", ...
            let why = why.split_once(": ").map_or(why.as_str(), |(_, rest)| rest);
            *reasons.entry(why.chars().take(60).collect()).or_default() += 1;
        }
    }
    eprintln!("batches: unknown outcomes by reason: {reasons:#?}");
    let mut problems: Vec<String> = batches.iter().filter_map(|b| b.answer_problem.clone()).collect();
    for log in &reads {
        problems.extend(partial_batches(log, &sizes));
    }
    problems.extend(cluster.check(&history, CHECK_TIMEOUT).await);
    for url in cluster.urls() {
        let log = checker::read_visible(&url).await.expect("a final read");
        problems.extend(partial_batches(&log, &sizes));
    }
    checker::assert_clean("batches", &problems);
    assert_monitor_clean("batches monitor", monitor.stop().await);
}

// ==== known limitation: the persisted commit index is written behind ====

/// Was a known limitation (failed on 57158af, passes since f246984): a
/// restarted node reloaded a commit index (and applied state) written
/// behind, so until it heard from the leader it showed a shorter visible
/// log than it showed before the kill. The node is
/// restarted partitioned, so the window lasts; its visible end is read
/// right before the kill and right after the restart (the monitor, a
/// sampler, can miss the window).
#[tokio::test]
#[ignore = "slow (~16 s): scripts/slow-tests.sh runs it"]
async fn a_restarted_node_never_shows_a_shorter_visible_log() {
    let (mut cluster, leader) = start("restart visible end").await;
    let monitor = VisibleMonitor::start(cluster.urls(), Duration::from_millis(20));
    let load = Load::start(cluster.urls(), load_config());
    let mut shrunk = Vec::new();
    for round in 0..3 {
        assert_progress(&load, 100, &format!("round {round}")).await;
        let follower = (leader + 1 + round % 2) % cluster.len();
        // Restarted where it cannot hear from the leader, it shows what its
        // own files say is committed.
        let before = checker::read_visible(&cluster.url(follower)).await.map(|l| l.end());
        cluster.kill(follower);
        cluster.partition(follower, Mode::Drop);
        cluster.restart(follower).await;
        let after = checker::read_visible(&cluster.url(follower)).await.map(|l| l.end());
        eprintln!("restart visible end: node {follower} showed end {before:?} before the kill, {after:?} after");
        if let (Ok(before), Ok(after)) = (before, after) {
            shrunk.extend(
                (after < before).then(|| {
                    format!("node {follower}: visible end {before} before the kill, {after} after the restart")
                }),
            );
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        cluster.heal();
        cluster.wait_for_leader(LEADER_TIMEOUT).await;
    }
    assert_progress(&load, 50, "at the end").await;
    let history = load.stop().await;
    check_and_report(&cluster, "restart visible end", &history).await;
    eprintln!(
        "restart visible end: the monitor made {} complete reads",
        monitor.complete_reads()
    );
    checker::assert_clean("restart visible end", &shrunk);
    assert_monitor_clean("restart visible end monitor", monitor.stop().await);
}

// ==== 9. randomized schedules ====

pub(super) async fn transfer_leadership(cluster: &TestCluster, leader: usize, to: usize) -> String {
    let Ok(status) = cluster.cluster_status(to).await else {
        return format!("node {to} did not answer /cluster");
    };
    let id = status.node_id.clone();
    match send(
        reqwest::Method::POST,
        format!("{}/cluster/leader", cluster.url(leader)),
        Some("application/json"),
        Some(format!("{{\"id\":{id}}}")),
        Duration::from_secs(10),
    )
    .await
    {
        Ok(r) if r.status == 200 => "200".to_string(),
        Ok(r) => format!("{} {}", r.status, r.body),
        Err(e) => e,
    }
}

/// What every node says (`/cluster`), its log tail, and where the files
/// are kept: the evidence for a schedule that failed without panicking.
async fn failure_evidence(cluster: &mut TestCluster) -> String {
    let mut out = Vec::new();
    for i in 0..cluster.len() {
        match cluster.cluster_status(i).await {
            Ok(s) => out.push(format!("node {i} /cluster: {}", s.raw)),
            Err(e) => out.push(format!("node {i} /cluster: {e}")),
        }
    }
    for i in 0..cluster.len() {
        out.push(cluster.log_tail(i, 25));
    }
    out.push(format!("cluster files kept in {}", cluster.keep_files().display()));
    out.join("\n  ")
}

/// A node replaced under load: wiped and started again, so that it joins
/// under a new id (`pick` 5); also restarted as soon as it sees itself a
/// learner (6); or with the leader killed as soon as the leader lists it
/// as a learner, and started again a moment later (7).
async fn replace_node(
    cluster: &mut TestCluster,
    monitor: &VisibleMonitor,
    victim: usize,
    leader: Option<usize>,
    pick: u64,
) -> String {
    cluster.wipe_and_restart(victim, |url| monitor.node_wiped(url)).await;
    let Ok(new_id) = cluster.cluster_status(victim).await.map(|s| s.node_id) else {
        return format!("replace {victim}: it does not answer");
    };
    let watched = match (pick, leader) {
        (7, Some(l)) if l != victim => l,
        (7, _) => return format!("replace {victim} (it led: no other leader to kill)"),
        _ => victim,
    };
    let learner = eventually(Duration::from_secs(10), || async {
        cluster
            .cluster_status(watched)
            .await
            .is_ok_and(|s| s.members.iter().any(|m| m.id == new_id && !m.voter))
    })
    .await;
    match (pick, learner) {
        (5, _) => format!("replace {victim}"),
        (_, false) => format!("replace {victim} (the join finished before it could be cut)"),
        (6, true) => {
            cluster.restart(victim).await;
            format!("replace {victim}, restarted as a learner")
        }
        _ => {
            cluster.kill(watched);
            tokio::time::sleep(Duration::from_millis(200 + cluster.rng().below(1300))).await;
            cluster.restart(watched).await;
            format!("replace {victim}, leader {watched} killed with it a learner")
        }
    }
}

/// Waits until the leader lists three voters at three URLs and nothing
/// else: a replaced node's join has finished.
async fn settle_membership(cluster: &TestCluster) -> Result<(), String> {
    wait_membership(cluster, Duration::from_secs(45), |s| {
        let urls: BTreeSet<&str> = s.members.iter().map(|m| m.url.as_str()).collect();
        voters(s).len() == 3 && s.members.len() == 3 && urls.len() == 3
    })
    .await
    .map(|_| ())
}

/// Step kinds (`pick` in `run_schedule`): 0-7 in every schedule, 8 and 9
/// in the schedules whose settings allow them (`Settings::extras`).
const DISK_FULL: u64 = 8;
const POWER_CUT: u64 = 9;

fn step_kind(pick: u64) -> &'static str {
    match pick {
        0 => "kill+restart",
        1 => "stop/cont",
        2 | 3 => "partition",
        4 => "transfer",
        5 => "replace",
        6 => "replace, joiner restarted",
        7 => "replace, leader killed",
        DISK_FULL => "disk full",
        _ => "power cut",
    }
}

/// What schedule `n` runs with. The failpoint cycles every 3 schedules and
/// the fsync mode every 3 shifted by `n / 3`, so that every failpoint
/// meets every mode within 9 schedules; a third of them cache writes
/// (`never` and `interval` in turn). Every 4th fills disks.
struct Settings {
    failpoint: &'static str,
    fsync: &'static str,
    disk: bool,
}

impl Settings {
    fn of(n: usize) -> Settings {
        let fsync = match ((n + n / 3) % 3, (n / 3) % 2) {
            (1, 0) => "never",
            (1, _) => "interval",
            _ => "always",
        };
        Settings {
            // Joins stop once after adding their learner (the answer lost,
            // or the request hanging), for the reconciler to finish.
            failpoint: ["", "join-after-learner:error", "join-after-learner:hang"][n % 3],
            fsync,
            disk: n % 4 == 2,
        }
    }

    fn config(&self) -> ClusterConfig {
        let mut extra_args: Vec<String> = Vec::new();
        if self.fsync != "always" {
            extra_args.extend(["--fsync".into(), self.fsync.into()]);
        }
        if self.disk {
            extra_args.extend(["--max-segment-bytes".into(), schedule_steps::SEGMENT.into()]);
        }
        ClusterConfig {
            env: vec![(distlog::cluster::FAILPOINT_ENV.into(), self.failpoint.into())],
            extra_args,
            disk: self.disk.then(|| schedule_steps::DISK.into()),
            ..config()
        }
    }

    /// The step kinds past 0-7 this schedule may take.
    fn extras(&self) -> Vec<u64> {
        let mut extras = Vec::new();
        if self.disk {
            extras.push(DISK_FULL);
        }
        if self.fsync != "always" {
            extras.push(POWER_CUT);
        }
        extras
    }
}

/// The next step's kind: each extra kind weighs as much as four of the
/// others (it is what the schedule was set up for), and the last steps are
/// the extra kinds not yet taken, if any (`left`: steps left, this one
/// included).
fn pick_step(rng: &mut XorShift, extras: &[u64], done: &[u64], left: usize) -> u64 {
    let missing: Vec<u64> = extras.iter().copied().filter(|e| !done.contains(e)).collect();
    if let Some(&first) = missing.first()
        && missing.len() >= left
    {
        return first;
    }
    let r = rng.below(8 + 4 * extras.len() as u64);
    match r.checked_sub(8) {
        None => r,
        Some(extra) => extras[(extra / 4) as usize],
    }
}

#[test]
fn schedule_settings_mix_every_failpoint_with_every_fsync_mode_and_force_their_extra_steps() {
    let settings: Vec<Settings> = (0..36).map(Settings::of).collect();
    for failpoint in ["", "join-after-learner:error", "join-after-learner:hang"] {
        for fsync in ["always", "never", "interval"] {
            assert!(
                settings.iter().any(|s| s.failpoint == failpoint && s.fsync == fsync),
                "no schedule with failpoint {failpoint:?} and fsync {fsync}"
            );
        }
    }
    assert!(
        settings.iter().any(|s| s.disk && s.fsync != "always"),
        "disk and power cut together"
    );
    let mut rng = XorShift::new(7);
    for left in [1, 2] {
        let pick = pick_step(&mut rng, &[DISK_FULL, POWER_CUT], &[], left);
        assert_eq!(pick, DISK_FULL, "the last steps are the extras not yet taken");
    }
    assert_eq!(pick_step(&mut rng, &[DISK_FULL, POWER_CUT], &[DISK_FULL], 1), POWER_CUT);
}

async fn kill_and_restart(cluster: &mut TestCluster, victim: usize) -> String {
    cluster.kill(victim);
    tokio::time::sleep(Duration::from_millis(200 + cluster.rng().below(1500))).await;
    cluster.restart(victim).await;
    format!("kill+restart {victim}")
}

async fn stop_and_cont(cluster: &mut TestCluster, victim: usize) -> String {
    cluster.stop(victim);
    tokio::time::sleep(Duration::from_millis(200 + cluster.rng().below(2000))).await;
    cluster.cont(victim);
    format!("stop/cont {victim}")
}

async fn partition_and_heal(cluster: &mut TestCluster, victim: usize) -> String {
    let mode = [Mode::Drop, Mode::Sever, Mode::Stall][cluster.rng().index(3)];
    cluster.partition(victim, mode);
    tokio::time::sleep(Duration::from_millis(300 + cluster.rng().below(2000))).await;
    cluster.heal();
    format!("partition {victim} {mode:?}")
}

async fn transfer_to_another(cluster: &mut TestCluster, leader: Option<usize>) -> String {
    let Some(l) = leader else {
        return "transfer skipped (no leader)".to_string();
    };
    let len = cluster.len();
    let to = (l + 1 + cluster.rng().index(len - 1)) % len;
    let answer = transfer_leadership(cluster, l, to).await;
    format!("transfer {l}->{to}: {answer}")
}

/// A power cut (`schedule_steps::power_cut`) with the waits around it:
/// before, until every node holds the commit offset (so that no node is
/// still behind from an earlier step: that would be a second failure);
/// after, for the membership if the node took a new id, and again until
/// every node holds the commit offset (the cut node caught up) before the
/// next step, since write caching may lose acknowledged writes to a power
/// cut plus another failure before that.
async fn power_cut_step(cluster: &mut TestCluster, monitor: &VisibleMonitor, victim: usize) -> Result<String, String> {
    schedule_steps::wait_all_hold_commit(cluster)
        .await
        .map_err(|why| format!("before a power cut: {why}"))?;
    let frames = 1 + cluster.rng().below(30);
    let hole = frames > 1 && cluster.rng().below(2) == 0;
    let (step, new_id) = schedule_steps::power_cut(cluster, monitor, victim, frames, hole).await;
    if new_id {
        settle_membership(cluster)
            .await
            .map_err(|why| format!("{step}: the membership never settled: {why}"))?;
    }
    let commit = schedule_steps::wait_all_hold_commit(cluster)
        .await
        .map_err(|why| format!("{step}: {why}"))?;
    Ok(format!("{step}, all at commit {commit}"))
}

/// The writes of one schedule beyond its loads (a disk-full step's MiB
/// batches), and the next sequence number for them.
#[derive(Default)]
struct Batches {
    attempts: Vec<Attempt>,
    next_seq: u64,
}

/// One step of kind `pick`; Err when the cluster did not come through it.
async fn run_step(
    cluster: &mut TestCluster,
    monitor: &VisibleMonitor,
    load: &Load,
    batches: &mut Batches,
    pick: u64,
    fsync: &str,
) -> Result<String, String> {
    let leader = cluster.leader().await;
    let victim = match (leader, cluster.rng().chance(60)) {
        // The leader is killed with a follower's join under way.
        (Some(l), _) if pick == 7 => (l + 1 + cluster.rng().index(2)) % cluster.len(),
        (Some(l), true) => l,
        _ => {
            let len = cluster.len();
            cluster.rng().index(len)
        }
    };
    Ok(match pick {
        0 => {
            // With write caching a crashed node's committed mark trails
            // what it synced, not what it showed: it restarts showing what
            // its tables (written every 200 ms) had applied, and the rest
            // once the leader's commit index reaches it (a known limit:
            // seed 16633563797250497655 saw 133 -> 79). Values at an offset
            // are still held to on every node.
            if fsync != "always" {
                monitor.node_wiped(&cluster.url(victim));
            }
            kill_and_restart(cluster, victim).await
        }
        1 => stop_and_cont(cluster, victim).await,
        2 | 3 => partition_and_heal(cluster, victim).await,
        4 => transfer_to_another(cluster, leader).await,
        DISK_FULL => {
            let hold = Duration::from_millis(500 + cluster.rng().below(2500));
            let full =
                schedule_steps::fill_disk_under_load(cluster, load, victim, leader, hold, batches.next_seq).await?;
            batches.next_seq += 10_000;
            batches.attempts.extend(full.attempts);
            full.step
        }
        POWER_CUT => {
            let role = if leader == Some(victim) { "leader" } else { "follower" };
            format!(
                "{} ({role} when picked)",
                power_cut_step(cluster, monitor, victim).await?
            )
        }
        _ => {
            let step = replace_node(cluster, monitor, victim, leader, pick).await;
            settle_membership(cluster)
                .await
                .map_err(|why| format!("{step}: the membership never settled: {why}"))?;
            step
        }
    })
}

/// Waits for an agreed leader and then for 20 more acknowledged writes;
/// Err saying which did not come.
async fn wait_leader_and_progress(cluster: &TestCluster, load: &Load) -> Result<(), &'static str> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    while cluster.leader().await.is_none() {
        if Instant::now() > deadline {
            return Err("no leader");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match load.wait_for_more_acks(20, PROGRESS_TIMEOUT).await {
        true => Ok(()),
        false => Err("no progress"),
    }
}

/// One seeded schedule; Err with the problems when its check fails.
/// Its steps and writes are added to `tally` as it goes.
async fn run_schedule(n: usize, tally: SharedTally) -> Result<String, String> {
    let settings = Settings::of(n);
    let mut cluster = TestCluster::start(settings.config()).await;
    let seed = cluster.seed();
    let line = format!(
        "seed {seed}, failpoint {:?}, fsync {}, disk {}",
        settings.failpoint,
        settings.fsync,
        if settings.disk { schedule_steps::DISK } else { "-" }
    );
    eprintln!("schedule {n}: {line}");
    schedule_steps::tally(&tally).schedules.insert(n, line);
    cluster.wait_for_leader(LEADER_TIMEOUT).await;
    let monitor = VisibleMonitor::start(cluster.urls(), MONITOR_EVERY);
    let load = Load::start(cluster.urls(), load_config());
    // Idempotent producers alongside, retrying each record until answered:
    // the checker holds them to exactly once (`checker::check_producers`).
    let producers = Load::start(cluster.urls(), producer_config());
    if !load.wait_for_more_acks(30, PROGRESS_TIMEOUT).await {
        return Err(format!("seed {seed}: no progress at the start"));
    }
    let extras = settings.extras();
    let steps = 3 + cluster.rng().index(4);
    let mut done = Vec::new();
    let mut picks = Vec::new();
    let mut batches = Batches::default();
    for s in 0..steps {
        let pick = pick_step(cluster.rng(), &extras, &picks, steps - s);
        let step = run_step(&mut cluster, &monitor, &load, &mut batches, pick, settings.fsync).await;
        let waited = match &step {
            Ok(_) => wait_leader_and_progress(&cluster, &load).await.map_err(str::to_string),
            Err(why) => Err(why.clone()),
        };
        if let Ok(step) = step {
            eprintln!("schedule {n}: {step}");
            // A disk-full step counts as one only if the node said its disk
            // was full (a review finding: skipped or unreached fills counted).
            let kind = match step_kind(pick) {
                "disk full" if step.contains("SKIPPED") || step.contains("said full: false") => {
                    "disk full, not reached"
                }
                kind => kind,
            };
            done.push(step);
            picks.push(pick);
            *schedule_steps::tally(&tally).steps.entry(kind).or_default() += 1;
        }
        if let Err(why) = waited {
            let evidence = failure_evidence(&mut cluster).await;
            let history = load.stop().await;
            schedule_steps::tally(&tally).add_history(&history);
            return Err(format!(
                "seed {seed}: {why} after {done:?} ({})\n  {evidence}",
                history.summary()
            ));
        }
    }
    if !producers.wait_for_more_acks(5, PROGRESS_TIMEOUT).await {
        let evidence = failure_evidence(&mut cluster).await;
        return Err(format!(
            "seed {seed}: the producers made no progress after {done:?}\n  {evidence}"
        ));
    }
    let mut history = load.stop().await;
    history.merge(producers.stop().await);
    history.attempts.extend(batches.attempts);
    let mut problems = cluster.check(&history, CHECK_TIMEOUT).await;
    let monitor_problems = monitor.stop().await;
    problems.extend(monitor_problems);
    {
        let mut tally = schedule_steps::tally(&tally);
        tally.add_history(&history);
        tally.add_problems(&problems);
    }
    let duplicates = problems.iter().filter(|p| p.starts_with("duplicate on")).count();
    let summary = format!(
        "seed {seed}: {done:?}; {}; duplicates in the logs: {duplicates}",
        history.summary()
    );
    if problems.is_empty() {
        Ok(summary)
    } else {
        let mut shown: Vec<String> = problems.into_iter().take(20).collect();
        shown.insert(0, summary);
        shown.push(failure_evidence(&mut cluster).await);
        Err(shown.join("\n  "))
    }
}

/// `DISTLOG_SCHEDULES` schedules (default 20) from number
/// `DISTLOG_SCHEDULE_FIRST` (default 0): a schedule's settings follow from
/// its number, so a replay names it (with `DISTLOG_TEST_SEED`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: DISTLOG_SCHEDULES (default 20) randomized fault schedules"]
async fn randomized_fault_schedules() {
    let number = |name: &str, default: usize| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let count = number("DISTLOG_SCHEDULES", 20);
    let first = number("DISTLOG_SCHEDULE_FIRST", 0);
    let tally = SharedTally::default();
    let mut passed = 0;
    let mut failures = Vec::new();
    let mut verdicts = Vec::new();
    for n in first..first + count {
        // A panic inside a schedule (a harness wait that timed out) is a
        // failed schedule, not the end of the run.
        let verdict = match tokio::spawn(run_schedule(n, tally.clone())).await {
            Ok(Ok(summary)) => {
                passed += 1;
                eprintln!("schedule {n} passed: {summary}");
                "passed"
            }
            Ok(Err(problems)) => {
                eprintln!("schedule {n} FAILED: {problems}");
                failures.push(format!("schedule {n}: {problems}"));
                "FAILED"
            }
            Err(e) => {
                let why = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                eprintln!("schedule {n} PANICKED: {why}");
                failures.push(format!("schedule {n} panicked: {why}"));
                "PANICKED"
            }
        };
        let line = schedule_steps::tally(&tally)
            .schedules
            .get(&n)
            .cloned()
            .unwrap_or_default();
        verdicts.push(format!("schedule {n}: {verdict}: {line}"));
    }
    eprintln!(
        "schedules run/passed: {count}/{passed}\n  {}\n  {}",
        verdicts.join("\n  "),
        schedule_steps::tally(&tally).summary()
    );
    assert!(
        failures.is_empty(),
        "schedules run/passed: {count}/{passed}\n{}",
        failures.join("\n")
    );
}

// ==== 10. storage fault: a follower loses acknowledged records on disk ====

/// (offset, position, length) of every frame in a store file, up to the
/// first that does not parse (zeros past the data, or a torn frame).
fn frames_in(store: &[u8]) -> Vec<(u64, usize, usize)> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 27 <= store.len() {
        let len = u32::from_le_bytes(store[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len < 19 || at + 8 + len > store.len() {
            break;
        }
        let offset = u64::from_le_bytes(store[at + 11..at + 19].try_into().expect("8 bytes"));
        frames.push((offset, at, 8 + len));
        at += 8 + len;
    }
    frames
}

/// The newest store file of a data directory (the active segment's).
fn active_store(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .expect("the data directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "store"))
        .max()
        .expect("a store file")
}

/// The first and last offsets of the frames in a data directory's active
/// store file (`None`: it holds none).
pub(super) fn active_store_offsets(dir: &std::path::Path) -> Option<(u64, u64)> {
    let bytes = std::fs::read(active_store(dir)).expect("read the store");
    let frames = frames_in(&bytes);
    Some((frames.first()?.0, frames.last()?.0))
}

/// Zeroes, in node `i`'s active store file, every frame from offset
/// `from` on; returns the offsets zeroed.
pub(super) fn zero_tail(dir: &std::path::Path, from: u64) -> Vec<u64> {
    zero_frames(dir, from..=u64::MAX)
}

/// Records in a member's data directory that its last run was in another
/// boot of the machine, as after the reboot a power cut brings (`raft/last_run`:
/// only then may a bad frame be a torn write rather than rot).
pub(super) fn pretend_rebooted(dir: &std::path::Path) {
    let path = dir.join("raft").join("last_run");
    let bytes = std::fs::read(&path).expect("a member records raft/last_run at each start");
    let text = String::from_utf8_lossy(&bytes);
    let (_, json) = text.split_once('\n').expect("a checksum line");
    let mut run: serde_json::Value = serde_json::from_str(json).expect("raft/last_run is JSON");
    run["boot_id"] = serde_json::Value::String("a boot before the power cut".into());
    let json = serde_json::to_vec(&run).expect("JSON");
    let mut document = format!("crc32:{:08x}\n", crc32fast::hash(&json)).into_bytes();
    document.extend_from_slice(&json);
    std::fs::write(&path, document).expect("write raft/last_run");
}

/// Zeroes, in a data directory's active store file, the frames whose
/// offsets are in `range`; returns the offsets zeroed.
pub(super) fn zero_frames(dir: &std::path::Path, range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    let active = active_store(dir);
    let mut bytes = std::fs::read(&active).expect("read the store");
    let frames = frames_in(&bytes);
    let zeroed: Vec<(u64, usize, usize)> = frames.into_iter().filter(|(o, _, _)| range.contains(o)).collect();
    let Some(&(_, start, _)) = zeroed.first() else {
        panic!("no frame at offsets {range:?} in {}", active.display());
    };
    let (_, last_at, last_len) = *zeroed.last().expect("a frame");
    bytes[start..last_at + last_len].fill(0);
    std::fs::write(&active, &bytes).expect("write the store back");
    eprintln!(
        "storage fault: zeroed bytes {start}..{} of {} (offsets {:?})",
        last_at + last_len,
        active.display(),
        zeroed.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    zeroed.iter().map(|f| f.0).collect()
}

/// A 3-node cluster on 4 KiB segments holding 300 acknowledged records,
/// converged, with a follower killed: what a rot test starts from.
struct RotSetup {
    cluster: TestCluster,
    leader_url: String,
    faulty: usize,
    history: History,
    old_id: Value,
    /// The killed follower's segment stores, in order (at least three).
    stores: Vec<std::path::PathBuf>,
}

async fn a_follower_killed_with_sealed_segments(what: &str) -> RotSetup {
    let config = ClusterConfig {
        extra_args: vec!["--max-segment-bytes".into(), "4096".into()],
        ..config()
    };
    let (mut cluster, leader) = start_with(what, config).await;
    let faulty = (leader + 1) % cluster.len();
    let leader_url = cluster.url(leader);
    let mut history = History::default();
    for seq in 0..300 {
        history.attempts.push(write_acked(&leader_url, MANUAL, seq).await);
    }
    let (converged, _) = checker::wait_converged(&cluster.urls(), CHECK_TIMEOUT).await;
    assert!(converged, "the three nodes converge before the fault");
    let old_id = cluster.cluster_status(faulty).await.expect("status").node_id;

    cluster.kill(faulty);
    let mut stores: Vec<std::path::PathBuf> = std::fs::read_dir(cluster.data_dir(faulty))
        .expect("the data directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "store"))
        .collect();
    stores.sort();
    assert!(stores.len() >= 3, "several sealed segments: {stores:?}");
    RotSetup {
        cluster,
        leader_url,
        faulty,
        history,
        old_id,
        stores,
    }
}

/// Issue 19 item 15: a follower whose sealed segment rotted where the
/// engine checks it at open (its last frame) refused to start at all
/// (`Log::open`: checksum mismatch). With a leader in touch with a
/// majority, it moves that segment and the ones after it aside (to
/// `<data dir>/quarantine/`, nothing deleted), starts under a new id (the
/// storage-fault path), catches up, and nothing acknowledged is lost.
#[tokio::test]
#[ignore = "slow (~17 s): scripts/slow-tests.sh runs it"]
async fn a_follower_with_a_rotten_sealed_segment_moves_it_aside_and_catches_up_under_a_new_id() {
    let RotSetup {
        mut cluster,
        leader_url,
        faulty,
        mut history,
        old_id,
        stores,
    } = a_follower_killed_with_sealed_segments("rotten sealed segment").await;
    // The last byte of the second segment's last frame.
    let rotten = &stores[1];
    let mut bytes = std::fs::read(rotten).expect("read the store");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    std::fs::write(rotten, &bytes).expect("write the store back");
    eprintln!("rotten sealed segment: flipped the last byte of {}", rotten.display());
    let moving: Vec<std::ffi::OsString> = stores[1..]
        .iter()
        .map(|p| p.file_name().expect("a name").to_owned())
        .collect();
    let rotten_bytes = bytes;

    cluster.restart(faulty).await;
    let new_id = cluster.cluster_status(faulty).await.expect("status").node_id;
    assert_ne!(old_id, new_id, "a log that lost frames it held restarts under a new id");
    for seq in 300..310 {
        history.attempts.push(write_acked(&leader_url, MANUAL, seq).await);
    }
    check_and_report(&cluster, "rotten sealed segment", &history).await;
    let quarantine = cluster.data_dir(faulty).join("quarantine");
    let moved: Vec<std::path::PathBuf> = std::fs::read_dir(&quarantine)
        .expect("a quarantine directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(moved.len(), 1, "one cut: {moved:?}");
    for name in &moving {
        assert!(moved[0].join(name).exists(), "{name:?} was moved aside, not deleted");
    }
    let kept = std::fs::read(moved[0].join(&moving[0])).expect("the rotten segment, moved");
    assert_eq!(kept, rotten_bytes, "moved as it was");
}

/// A follower whose sealed segment rotted inside (a frame the open does not
/// check; the start's checksum scan finds it): with a leader in touch with
/// a majority that lists it, the log is cut before the bad frame, the node
/// starts under a new id, catches up, and nothing acknowledged is lost (the
/// cut is gated on that leader: a one-node cluster refuses instead, see
/// `process::a_one_node_cluster_whose_sealed_segment_rotted_inside_keeps_every_file`).
#[tokio::test]
#[ignore = "slow (~15 s): scripts/slow-tests.sh runs it"]
async fn a_follower_whose_sealed_segment_rotted_inside_cuts_it_with_a_leader_and_catches_up_under_a_new_id() {
    let what = "segment rotted inside";
    let RotSetup {
        mut cluster,
        leader_url,
        faulty,
        mut history,
        old_id,
        stores,
    } = a_follower_killed_with_sealed_segments(what).await;
    let rotten = &stores[1];
    let mut bytes = std::fs::read(rotten).expect("read the store");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(rotten, &bytes).expect("write the store back");
    eprintln!("{what}: flipped a byte in the middle of {}", rotten.display());

    cluster.restart(faulty).await;
    let new_id = cluster.cluster_status(faulty).await.expect("status").node_id;
    assert_ne!(old_id, new_id, "a log cut before a bad frame restarts under a new id");
    assert!(
        std::fs::read_to_string(cluster.log_path(faulty))
            .is_ok_and(|log| log.contains("a frame inside the log is corrupt: cutting the log before it")),
        "{what}: the cut was decided with a leader:\n{}",
        cluster.log_tail(faulty, 30)
    );
    for seq in 300..310 {
        history.attempts.push(write_acked(&leader_url, MANUAL, seq).await);
    }
    check_and_report(&cluster, what, &history).await;
    assert!(
        !cluster.data_dir(faulty).join("raft").join("cut").exists(),
        "the cut's decision goes once the repair is on disk"
    );
    // What the cut took was copied aside first, the rotten segment as it was.
    let quarantine = cluster.data_dir(faulty).join("quarantine");
    let copies: Vec<std::path::PathBuf> = std::fs::read_dir(&quarantine)
        .expect("a quarantine directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(copies.len(), 1, "one cut: {copies:?}");
    let name = rotten.file_name().expect("a name");
    let kept = std::fs::read(copies[0].join(name)).expect("the rotten segment, copied");
    assert_eq!(kept, bytes, "copied as it was");
    for later in &stores[2..] {
        let name = later.file_name().expect("a name");
        assert!(
            copies[0].join(name).exists(),
            "{name:?}, after the rotten one, kept too"
        );
    }
}

/// Was a known limitation (failed on 57158af, passes since f246984, the
/// storage-fault repair): a follower whose disk lost acknowledged records
/// came back with a shorter log and still voted and led: with the leader
/// dead and the third node behind, the two elected it, its blank entry
/// took the lost records' offsets, and the old leader truncated them on
/// its return ("truncating uncommitted Raft entries keep=29 end=32").
#[tokio::test]
async fn a_follower_that_lost_acknowledged_records_on_disk_does_not_lose_them_for_the_cluster() {
    let (mut cluster, leader) = start("storage fault").await;
    let behind = (leader + 1 + cluster.rng().index(2)) % cluster.len();
    let faulty = 3 - leader - behind;
    eprintln!("storage fault: leader {leader}, faulty follower {faulty}, node {behind} left behind");
    let leader_url = cluster.url(leader);
    let mut history = History::default();
    for seq in 0..10 {
        history.attempts.push(write_acked(&leader_url, MANUAL, seq).await);
    }
    let (converged, _) = checker::wait_converged(&cluster.urls(), CHECK_TIMEOUT).await;
    assert!(converged, "the three nodes converge before the fault");

    // Node `behind` misses the next records: only the leader and the
    // faulty follower hold them.
    cluster.partition(behind, Mode::Drop);
    for seq in 10..30 {
        history.attempts.push(write_acked(&leader_url, MANUAL, seq).await);
    }
    let last_acked = history.acked().filter_map(Attempt::acked_offset).max().expect("acks");
    let holds_all = eventually(Duration::from_secs(10), || {
        let c = &cluster;
        async move {
            c.cluster_status(faulty).await.is_ok_and(|s| {
                s.members
                    .iter()
                    .find(|m| m.id == s.node_id)
                    .and_then(|m| m.match_offset)
                    .is_some_and(|o| o >= last_acked)
            })
        }
    })
    .await;
    assert!(
        holds_all,
        "the faulty follower holds every acknowledged record before the fault"
    );

    cluster.kill(faulty);
    let mut acked_offsets: Vec<u64> = history.acked().filter_map(Attempt::acked_offset).collect();
    acked_offsets.sort_unstable();
    let from = acked_offsets[acked_offsets.len() - 3];
    let zeroed = zero_tail(cluster.data_dir(faulty), from);
    assert!(zeroed.contains(&last_acked));

    // The only node holding every acknowledged record goes down before
    // the faulty one comes back: the two left are the faulty follower and
    // the one that missed the records.
    cluster.kill(leader);
    cluster.heal();
    cluster.restart(faulty).await;
    // Whatever the two left decide within a few seconds...
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in [faulty, behind] {
        match cluster.cluster_status(i).await {
            Ok(s) => eprintln!("storage fault: with the leader down, node {i} says {}", s.raw),
            Err(e) => eprintln!("storage fault: with the leader down, node {i}: {e}"),
        }
    }
    // ...once the old leader is back, every acknowledged record is there.
    cluster.restart(leader).await;
    cluster.wait_for_leader(LEADER_TIMEOUT).await;
    check_and_report(&cluster, "storage fault", &history).await;
}
