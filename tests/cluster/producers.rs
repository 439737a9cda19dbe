//! Idempotent producers and conditional appends in a 3-node cluster: the
//! failures that NATS JetStream's message-id window shipped, as named tests
//! (a retry at a new leader after the old one died holding the request; a
//! follower partitioned far longer than any window; duplicates after
//! retention purged the records and every node restarted; a producer's
//! state after every node restarted), and racing conditional appends with
//! exactly one winner a round. Each ends with the checker where a history
//! is kept.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::common::checker;
use super::common::cluster::{ClusterConfig, TestCluster};
use super::common::fault_proxy::Mode;
use super::common::rt;
use super::common::writer::{Attempt, History, Load, LoadConfig, Outcome, base_url, record_body};
use super::faults::{
    CHECK_TIMEOUT, LEADER_TIMEOUT, PRODUCERS, Reply, assert_progress, check_and_report, config, eventually, get,
    load_config, producer_config, start_with,
};
use serde_json::{Value, json};

/// Producer ids of the hand-made writes here (`w<writer>`, as the writer's producer mode names them).
const MANUAL_PRODUCER: u64 = 70;

/// POST / to `node` with `headers`; the reply, or why none came within `timeout`.
async fn post_with(node: &str, headers: &[(&str, String)], body: &str, timeout: Duration) -> Result<Reply, String> {
    let url = format!("{}/", base_url(node));
    let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    let body = body.to_string();
    rt::on_harness(async move {
        let mut request = rt::http()
            .post(&url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
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

fn producer_headers(writer: u64, epoch: u32, seq: u64) -> Vec<(&'static str, String)> {
    vec![
        ("producer-id", format!("w{writer}")),
        ("producer-epoch", epoch.to_string()),
        ("producer-seq", seq.to_string()),
    ]
}

/// Record (writer, seq) as producer `w<writer>` in `epoch`, sent to the
/// leader and again after every error (to whichever node leads) until it
/// is answered: the final reply, and its attempt for the checker.
async fn produce(cluster: &TestCluster, writer: u64, epoch: u32, seq: u64) -> (Reply, Attempt) {
    let sent = Instant::now();
    let body = record_body(writer, seq);
    let deadline = sent + LEADER_TIMEOUT * 2;
    loop {
        let leader = cluster.leader().await.map(|l| cluster.url(l));
        let reply = match &leader {
            Some(url) => {
                post_with(
                    url,
                    &producer_headers(writer, epoch, seq),
                    &body,
                    Duration::from_secs(3),
                )
                .await
            }
            None => Err("no leader".into()),
        };
        match reply {
            Ok(reply) if matches!(reply.status, 200 | 201 | 409) => {
                let outcome = match reply.body["offset"].as_u64() {
                    Some(offset) => Outcome::Ack(offset),
                    None => Outcome::Failed(reply.status),
                };
                let node = leader.unwrap_or_default();
                let attempt = Attempt {
                    writer,
                    seq,
                    body,
                    first_node: node.clone(),
                    last_node: node,
                    sent,
                    done: Instant::now(),
                    outcome,
                    duplicate: reply.status == 200,
                };
                return (reply, attempt);
            }
            other => assert!(Instant::now() < deadline, "({writer},{seq}) never answered: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A history of hand-made producer writes.
fn producer_history(attempts: Vec<Attempt>) -> History {
    let mut history = History::default();
    for attempt in attempts {
        history.producers.writers.insert(attempt.writer);
        history.attempts.push(attempt);
    }
    history
}

#[tokio::test]
async fn a_retry_sent_to_a_new_leader_after_the_old_one_died_holding_the_request() {
    let what = "retry at a new leader";
    let (mut cluster, old) = start_with(what, config()).await;
    let writer = MANUAL_PRODUCER;
    let (first, first_attempt) = produce(&cluster, writer, 0, 0).await;
    assert_eq!(first.status, 201, "{first:?}");

    // The leader, cut off, takes the request and holds it: it cannot commit.
    cluster.partition(old, Mode::Drop);
    let body = record_body(writer, 1);
    let held = post_with(
        &cluster.url(old),
        &producer_headers(writer, 0, 1),
        &body,
        Duration::from_millis(800),
    )
    .await;
    assert!(
        held.as_ref().is_err() || held.as_ref().is_ok_and(|r| r.status >= 500),
        "{held:?}"
    );
    cluster.kill(old);
    cluster.heal();

    // The retry goes to whoever leads now, which never saw the request.
    let (retry, retry_attempt) = produce(&cluster, writer, 0, 1).await;
    assert_eq!(retry.status, 201, "a new leader takes the retry: {retry:?}");
    let offset = retry.body["offset"].as_u64().expect("an offset");
    // The old leader comes back with the request in its log, uncommitted:
    // it is replaced, and every retry from now on is a duplicate.
    cluster.restart(old).await;
    for _ in 0..2 {
        let (again, _) = produce(&cluster, writer, 0, 1).await;
        assert_eq!(
            (again.status, &again.body),
            (200, &json!({ "offset": offset, "duplicate": true }))
        );
    }

    // Now a leader that dies after replicating the request but before
    // answering, over and over, under two producers retrying until answered.
    let producers = Load::start(cluster.urls(), producer_config());
    assert_progress(&producers, 20, "producers before the kills").await;
    for round in 0..3 {
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        cluster.kill(leader);
        eprintln!("{what}: round {round}: leader {leader} killed");
        assert_progress(&producers, 10, "producers after a leader died").await;
        cluster.restart(leader).await;
    }
    let mut history = producers.stop().await;
    history.merge(producer_history(vec![first_attempt, retry_attempt]));
    check_and_report(&cluster, what, &history).await;
}

#[tokio::test]
async fn a_follower_partitioned_far_longer_than_any_window_rejoins_without_desync() {
    let what = "long partition";
    let (mut cluster, leader) = start_with(what, config()).await;
    let follower = (leader + 1) % cluster.len();
    cluster.partition(follower, Mode::Drop);
    let cut = Instant::now();
    let producers = Load::start(
        cluster.urls(),
        LoadConfig {
            writers: 3,
            ..producer_config()
        },
    );
    // Far more appends per producer than the 5 each keeps, and longer than
    // any election timeout many times over.
    assert_progress(&producers, 300, "producers while a follower is away").await;
    while cut.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = producers.stop().await;
    cluster.heal();
    check_and_report(&cluster, what, &history).await;

    // The follower's table is the others': whoever leads next answers each
    // producer's last append as a duplicate at its original offset, and an
    // old one as stale.
    let last: BTreeMap<u64, &Attempt> =
        history
            .acked()
            .map(|a| (a.writer, a))
            .fold(BTreeMap::new(), |mut m, (w, a)| {
                if m.get(&w).is_none_or(|b: &&Attempt| b.seq < a.seq) {
                    m.insert(w, a);
                }
                m
            });
    let old_leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    if old_leader != follower {
        cluster.kill(old_leader);
    }
    for (writer, attempt) in &last {
        let (reply, _) = produce(&cluster, *writer, 0, attempt.seq).await;
        let expected = attempt.acked_offset().expect("acked");
        assert_eq!(
            (reply.status, reply.body["offset"].as_u64()),
            (200, Some(expected)),
            "{reply:?}"
        );
        let (stale, _) = produce(&cluster, *writer, 0, attempt.seq.saturating_sub(6)).await;
        assert_eq!(stale.body["code"], "producer_sequence_stale", "{stale:?}");
    }
    if old_leader != follower {
        cluster.restart(old_leader).await;
    }
    let problems = cluster.check(&history, CHECK_TIMEOUT).await;
    checker::assert_clean(what, &problems);
}

/// `/status`'s lowest offset on node `i`.
async fn lowest_offset(cluster: &TestCluster, i: usize) -> u64 {
    let status = get(format!("{}/status", cluster.url(i))).await;
    status.map_or(0, |s| s.body["lowest_offset"].as_u64().unwrap_or(0))
}

async fn restart_every_node(cluster: &mut TestCluster) {
    for i in 0..cluster.len() {
        cluster.kill(i);
    }
    for i in 0..cluster.len() {
        cluster.restart(i).await;
    }
    cluster.wait_for_leader(LEADER_TIMEOUT).await;
}

#[tokio::test]
#[ignore = "slow (~17 s): scripts/slow-tests.sh runs it"]
async fn duplicates_after_retention_purged_the_producers_records_and_every_node_restarted() {
    let what = "retention then restart";
    let segment_args = ["--max-segment-bytes", "16384", "--retention-bytes", "65536"];
    let config = ClusterConfig {
        extra_args: segment_args.iter().map(|s| s.to_string()).collect(),
        ..config()
    };
    let (mut cluster, _) = start_with(what, config).await;
    let writer = MANUAL_PRODUCER;
    let mut offsets = Vec::new();
    for seq in 0..5 {
        let (reply, _) = produce(&cluster, writer, 0, seq).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        offsets.push(reply.body["offset"].as_u64().expect("an offset"));
    }
    // Enough other records that retention purges the producer's (a purge
    // stays 1000 entries behind what is applied, and runs every 10 s).
    let load = Load::start(cluster.urls(), load_config());
    let last = offsets[4];
    let purged = eventually(Duration::from_secs(90), || async {
        let mut all = true;
        for i in 0..cluster.len() {
            all &= lowest_offset(&cluster, i).await > last;
        }
        all
    })
    .await;
    let history = load.stop().await;
    assert!(
        purged,
        "{what}: retention never purged offset {last}: {}",
        cluster.log_tail(0, 20)
    );

    restart_every_node(&mut cluster).await;
    for (seq, offset) in offsets.iter().enumerate() {
        let (reply, _) = produce(&cluster, writer, 0, seq as u64).await;
        assert_eq!(
            (reply.status, &reply.body),
            (200, &json!({ "offset": offset, "duplicate": true })),
            "seq {seq}, purged, after every node restarted"
        );
    }
    let (next, attempt) = produce(&cluster, writer, 0, 5).await;
    assert_eq!(next.status, 201, "{next:?}");
    // Only what retention kept can be checked.
    let mut kept_from = 0;
    for i in 0..cluster.len() {
        kept_from = kept_from.max(lowest_offset(&cluster, i).await);
    }
    let mut history = history;
    history
        .attempts
        .retain(|a| a.acked_offset().is_none_or(|o| o >= kept_from));
    history.merge(producer_history(vec![attempt]));
    check_and_report(&cluster, what, &history).await;
}

#[tokio::test]
async fn a_producers_state_survives_a_restart_of_all_nodes() {
    let what = "restart of all nodes";
    let (mut cluster, _) = start_with(what, config()).await;
    let writer = MANUAL_PRODUCER;
    let mut attempts = Vec::new();
    for seq in 0..10 {
        let (reply, attempt) = produce(&cluster, writer, 2, seq).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        attempts.push(attempt);
    }
    restart_every_node(&mut cluster).await;
    let (again, _) = produce(&cluster, writer, 2, 9).await;
    assert_eq!(
        (again.status, again.body["offset"].as_u64()),
        (200, attempts[9].acked_offset()),
        "{again:?}"
    );
    let (fenced, _) = produce(&cluster, writer, 1, 10).await;
    assert_eq!((fenced.status, &fenced.body["code"]), (409, &json!("producer_fenced")));
    let (gap, _) = produce(&cluster, writer, 2, 11).await;
    assert_eq!((gap.status, &gap.body["expected_seq"]), (409, &json!(10)));
    let (next, attempt) = produce(&cluster, writer, 2, 10).await;
    assert_eq!(next.status, 201, "{next:?}");
    attempts.push(attempt);
    check_and_report(&cluster, what, &producer_history(attempts)).await;
}

#[tokio::test]
#[ignore = "slow (~20 s): scripts/slow-tests.sh runs it"]
async fn racing_conditional_appends_have_exactly_one_winner_each_round() {
    let what = "conditional race";
    let (cluster, leader) = start_with(what, config()).await;
    let mut url = cluster.url(leader);
    let rounds = 1000;
    let started = Instant::now();
    let mut last: i64 = -1;
    let mut history = History::default();
    let mut round = 0;
    // Rounds where one writer was turned away before appending (an
    // election on a loaded machine: 503 no_leader, or 307 to a new leader).
    let mut turned_away = 0;
    while round < rounds {
        let race = |writer: u64| {
            let (url, body) = (url.clone(), record_body(writer, round));
            let headers = vec![("expected-last-offset", last.to_string())];
            async move {
                let sent = Instant::now();
                let reply = post_with(&url, &headers, &body, Duration::from_secs(5)).await;
                (writer, sent, reply)
            }
        };
        let (a, b) = tokio::join!(race(PRODUCERS + 10), race(PRODUCERS + 11));
        let mut winner = None;
        let mut losers = Vec::new();
        for (writer, sent, reply) in [a, b] {
            let reply = reply.unwrap_or_else(|e| panic!("{what}: round {round}: {e}"));
            match reply.status {
                201 => {
                    let offset = reply.body["offset"].as_u64().expect("an offset");
                    assert!(winner.replace(offset).is_none(), "{what}: round {round}: two winners");
                    history.attempts.push(Attempt {
                        writer,
                        seq: round,
                        body: record_body(writer, round),
                        first_node: url.clone(),
                        last_node: url.clone(),
                        sent,
                        done: Instant::now(),
                        outcome: Outcome::Ack(offset),
                        duplicate: false,
                    });
                }
                412 => losers.push(reply.body["last_offset"].as_i64()),
                // Refused before anything was appended: it took no part.
                307 => turned_away += 1,
                503 if reply.body["code"] == "no_leader" => turned_away += 1,
                other => panic!("{what}: round {round}: {other} {:?}", reply.body),
            }
        }
        let Some(winner) = winner else {
            assert!(losers.is_empty(), "{what}: round {round}: no winner ({losers:?})");
            // Both turned away: the same round again, at the leader.
            url = cluster.url(cluster.wait_for_leader(LEADER_TIMEOUT).await);
            continue;
        };
        assert!(
            losers.iter().all(|l| *l == Some(winner as i64)) && losers.len() <= 1,
            "{what}: round {round}: the loser sees the winner {winner}: {losers:?}"
        );
        if losers.is_empty() {
            url = cluster.url(cluster.wait_for_leader(LEADER_TIMEOUT).await);
        }
        last = winner as i64;
        round += 1;
    }
    eprintln!(
        "{what}: {rounds} rounds in {:?}, {turned_away} requests turned away by elections",
        started.elapsed()
    );
    check_and_report(&cluster, what, &history).await;
}
