//! The client crate and the CLI against clusters of `distlog` processes:
//! leader discovery from a follower, reads spread over the members,
//! produce and consume across leader failures.

use crate::cli::{distlog, stdout_lines};
use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{ClusterConfig, TestCluster};
use common::rt;
use distlog_client::Client;
use serde_json::{Value, json};

const ELECTION: Duration = Duration::from_secs(20);

fn client(urls: &[String]) -> Client {
    Client::builder()
        .seeds(urls.iter().cloned())
        .request_timeout(Duration::from_secs(3))
        .retry_for(Duration::from_secs(20))
        .build()
        .expect("a client")
}

/// `GET /{offset}` answers a node has served (from its `/metrics`).
async fn single_reads_served(url: &str) -> u64 {
    let text = rt::http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("a body");
    text.lines()
        .filter(|line| line.starts_with("distlog_http_requests_total{method=\"GET\",route=\"/{offset}\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Every record of the log, read from `url`: (offset, value).
async fn whole_log(url: &str) -> Vec<(u64, Value)> {
    let client = client(&[url.to_string()]);
    let mut records = Vec::new();
    let mut from = 0;
    loop {
        let page = client.read_range(from, 10_000).await.expect("a page");
        if page.records.is_empty() {
            return records;
        }
        records.extend(
            page.records
                .iter()
                .map(|r| (r.offset, r.json().cloned().unwrap_or(Value::Null))),
        );
        from = page.next_offset;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_given_only_a_follower_finds_the_leader_and_spreads_reads_over_the_members() {
    let cluster = TestCluster::start(ClusterConfig::default()).await;
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = (leader + 1) % cluster.len();
    let client = client(&[cluster.url(follower)]);

    let (mut members, leader_url) = client.members().await.expect("the cluster");
    members.sort();
    assert_eq!(members, cluster.urls());
    assert_eq!(leader_url, Some(cluster.url(leader)));
    let mut offsets = Vec::new();
    for n in 0..30 {
        offsets.push(
            client
                .append_json(&json!({"n": n}))
                .await
                .expect("appended")
                .first_offset,
        );
    }

    let before: Vec<u64> = futures_join(cluster.urls()).await;
    for (n, offset) in offsets.iter().enumerate() {
        let record = client
            .read(*offset)
            .await
            .expect("a committed record reads on any member");
        assert_eq!(record.json(), Some(&json!({"n": n})));
    }
    let after: Vec<u64> = futures_join(cluster.urls()).await;
    let served: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(served.iter().sum::<u64>() >= 30, "{served:?}");
    assert!(
        served.iter().all(|&n| n >= 5),
        "reads spread over every member: {served:?}"
    );

    // The CLI's cluster subcommands, given the follower alone.
    let table = distlog(&["cluster", "status", "--url", &cluster.url(follower)], b"").await;
    let table = stdout_lines(&table);
    assert!(
        table[0].starts_with("ID") && table[0].contains("REACHABLE"),
        "{table:?}"
    );
    assert_eq!(table.iter().filter(|l| l.contains(" leader ")).count(), 1, "{table:?}");
    assert_eq!(table.len(), 5, "a header, three members and the term line: {table:?}");
    let json = distlog(&["cluster", "status", "--json", "--url", &cluster.url(follower)], b"").await;
    let json: Value = serde_json::from_str(&stdout_lines(&json).join("\n")).expect("JSON");
    assert_eq!(json["members"].as_array().map(Vec::len), Some(3));
    let new_leader_id = json["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["url"] == cluster.url(follower))
        .and_then(|m| m["id"].as_u64())
        .expect("the follower's id");
    let handed = distlog(
        &[
            "cluster",
            "leader",
            &new_leader_id.to_string(),
            "--url",
            &cluster.url(leader),
        ],
        b"",
    )
    .await;
    stdout_lines(&handed);
    assert_eq!(cluster.wait_for_leader(ELECTION).await, follower);
    let after_handover = client
        .append_json(&json!("after"))
        .await
        .expect("the client follows the leader");
    assert!(after_handover.first_offset > offsets[29]);
}

async fn futures_join(urls: Vec<String>) -> Vec<u64> {
    let mut counts = Vec::new();
    for url in urls {
        counts.push(single_reads_served(&url).await);
    }
    counts
}

/// Lines `{"n":0}` .. `{"n":count-1}`.
fn numbered_lines(count: u64) -> Vec<u8> {
    (0..count)
        .map(|n| format!("{{\"n\":{n}}}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Each number's occurrences in the log, and whether they appear in
/// increasing order (first occurrences).
fn tally(log: &[(u64, Value)], count: u64) -> (Vec<u64>, Vec<u64>, bool) {
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut firsts = Vec::new();
    for (_, value) in log {
        let n = value["n"].as_u64().expect("a numbered record");
        let times = seen.entry(n).or_default();
        *times += 1;
        if *times == 1 {
            firsts.push(n);
        }
    }
    let missing = (0..count).filter(|n| !seen.contains_key(n)).collect();
    let duplicated = seen.iter().filter(|(_, t)| **t > 1).map(|(n, _)| *n).collect();
    (missing, duplicated, firsts.windows(2).all(|w| w[0] < w[1]))
}

/// Runs `distlog produce` over `count` lines fed at a steady pace while
/// the leader is killed `kills` times (and restarted); returns the log.
async fn produce_through_leader_kills(count: u64, kills: usize, in_flight: u32) -> Vec<(u64, Value)> {
    produce_through_leader_kills_in(ClusterConfig::default(), count, kills, in_flight).await
}

async fn produce_through_leader_kills_in(
    config: ClusterConfig,
    count: u64,
    kills: usize,
    in_flight: u32,
) -> Vec<(u64, Value)> {
    let mut cluster = TestCluster::start(config).await;
    cluster.wait_for_leader(ELECTION).await;
    let mut args = vec![
        "produce".to_string(),
        "--quiet".into(),
        "--batch-records".into(),
        "100".into(),
        "--max-in-flight".into(),
        in_flight.to_string(),
    ];
    for url in cluster.urls() {
        args.extend(["--url".to_string(), url]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(&args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("produce runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = numbered_lines(count);
    let chunks = (kills as u64 + 1) * 10;
    let feeder = std::thread::spawn(move || {
        for chunk in input.chunks(input.len().div_ceil(chunks as usize)) {
            stdin.write_all(chunk).expect("produce reads its input");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let leader = cluster.wait_for_leader(ELECTION).await;
        cluster.kill(leader);
        cluster.wait_for_leader(ELECTION).await;
        cluster.restart(leader).await;
    }
    tokio::task::spawn_blocking(move || feeder.join().expect("the feeder"))
        .await
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "produce failed: {stderr}");
    assert!(stderr.contains(&format!("produced {count} records")), "{stderr}");
    let leader = cluster.wait_for_leader(ELECTION).await;
    whole_log(&cluster.url(leader)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_rides_out_a_leader_kill_writing_each_line_once_in_order() {
    check_exactly_once_in_order(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "passed 1 of 2 runs: produce once exited early (cause not found yet)"]
async fn produce_with_5_requests_in_flight_rides_out_a_leader_kill_writing_each_line_once_in_order() {
    check_exactly_once_in_order(5).await;
}

/// The client follows `307`s; a cluster that forwards writes answers it
/// from any node instead, and nothing changes for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_a_cluster_that_forwards_writes_rides_out_a_leader_kill_writing_each_line_once_in_order() {
    let config = ClusterConfig {
        extra_args: vec!["--forward-writes".into()],
        ..ClusterConfig::default()
    };
    let log = produce_through_leader_kills_in(config, 20_000, 1, 1).await;
    let (missing, duplicated, in_order) = tally(&log, 20_000);
    assert!(missing.is_empty(), "{} lines lost", missing.len());
    assert!(duplicated.is_empty(), "{} lines written twice", duplicated.len());
    assert!(in_order, "lines out of order");
}

async fn check_exactly_once_in_order(in_flight: u32) {
    let log = produce_through_leader_kills(20_000, 1, in_flight).await;
    let (missing, duplicated, in_order) = tally(&log, 20_000);
    assert!(missing.is_empty(), "{} lines lost", missing.len());
    assert!(duplicated.is_empty(), "{} lines written twice", duplicated.len());
    assert!(in_order, "lines out of order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about a minute: run with --ignored"]
async fn produce_of_100_000_lines_through_two_leader_kills_writes_each_exactly_once_in_order() {
    let log = produce_through_leader_kills(100_000, 2, 1).await;
    let (missing, duplicated, in_order) = tally(&log, 100_000);
    assert!(missing.is_empty(), "{} lines lost", missing.len());
    assert!(duplicated.is_empty(), "{} lines written twice", duplicated.len());
    assert!(in_order, "lines out of order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_follow_across_a_leader_change_prints_every_committed_record_once_in_order() {
    let mut cluster = TestCluster::start(ClusterConfig::default()).await;
    cluster.wait_for_leader(ELECTION).await;
    let mut args = vec!["consume".to_string(), "--follow".into()];
    for url in cluster.urls() {
        args.extend(["--url".to_string(), url]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("consume runs");
    let stdout = child.stdout.take().unwrap();
    let (lines, mut printed) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = lines.send(line);
        }
    });

    let writer = client(&cluster.urls());
    let mut acknowledged = Vec::new();
    for n in 0..200u64 {
        if n == 100 {
            let leader = cluster.wait_for_leader(ELECTION).await;
            cluster.kill(leader);
            cluster.wait_for_leader(ELECTION).await;
            cluster.restart(leader).await;
        }
        // A write whose outcome is unknown may or may not be in the log;
        // the consumer must print it exactly when it is.
        if let Ok(appended) = writer.append_json(&json!({"n": n})).await {
            acknowledged.push(appended.first_offset);
        }
    }
    let leader = cluster.wait_for_leader(ELECTION).await;
    let log = whole_log(&cluster.url(leader)).await;
    let expected: Vec<u64> = log.iter().map(|(offset, _)| *offset).collect();
    assert!(
        acknowledged.iter().all(|a| expected.contains(a)),
        "an acknowledged write is missing"
    );

    let mut seen = Vec::new();
    let last = *expected.last().expect("records");
    while seen.last() != Some(&last) {
        let line = tokio::time::timeout(Duration::from_secs(20), printed.recv())
            .await
            .unwrap_or_else(|_| panic!("consume stopped printing at {:?}", seen.last()))
            .expect("consume still runs");
        let record: Value = serde_json::from_str(&line).expect("NDJSON");
        seen.push(record["offset"].as_u64().expect("an offset"));
    }
    assert_eq!(seen, expected, "every committed record once, in order");
    let _ = child.kill();
    let _ = child.wait();
}

/// The library's stream by event streams: the member it reads from is
/// killed (after the leader was), and it goes on from just past the last
/// record it handed out on another member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_resumes_on_another_member_across_a_leader_change_without_a_skip_or_a_repeat() {
    let mut cluster = TestCluster::start(ClusterConfig::default()).await;
    cluster.wait_for_leader(ELECTION).await;
    let writer = client(&cluster.urls());
    let reader = client(&cluster.urls());
    let mut stream = reader.stream(0);
    let mut seen = Vec::new();
    let mut acknowledged = Vec::new();
    for n in 0..300u64 {
        if n == 100 || n == 200 {
            // First the leader, then (once a leader is back) the member
            // the stream reads from, which may be the new leader.
            let victim = if n == 100 {
                cluster.wait_for_leader(ELECTION).await
            } else {
                let source = stream.source().expect("an open event stream").to_string();
                (0..cluster.len())
                    .find(|&i| cluster.url(i) == source)
                    .expect("a member")
            };
            cluster.kill(victim);
            cluster.wait_for_leader(ELECTION).await;
            cluster.restart(victim).await;
        }
        // A write whose outcome is unknown may or may not be in the log;
        // the stream must hand it out exactly when it is.
        if let Ok(appended) = writer.append_json(&json!({"n": n})).await {
            acknowledged.push(appended.first_offset);
        }
        if n % 10 == 9 {
            let known = acknowledged.last().copied();
            while known.is_some_and(|last| seen.last().is_none_or(|s| *s < last)) {
                let offset = next_offset(&mut stream, &seen).await;
                seen.push(offset);
            }
        }
    }
    let leader = cluster.wait_for_leader(ELECTION).await;
    let log = whole_log(&cluster.url(leader)).await;
    let expected: Vec<u64> = log.iter().map(|(offset, _)| *offset).collect();
    let last = *expected.last().expect("records");
    while seen.last() != Some(&last) {
        let offset = next_offset(&mut stream, &seen).await;
        seen.push(offset);
    }
    assert_eq!(seen, expected, "every committed record once, in order");
    assert!(stream.uses_events(), "the stream kept to event streams");
}

/// The stream's next record's offset, within 30 s.
async fn next_offset(stream: &mut distlog_client::Stream, seen: &[u64]) -> u64 {
    match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
        Ok(Ok(Some(record))) => record.offset,
        Ok(Ok(None)) => panic!("the stream ended after {:?}", seen.last()),
        Ok(Err(error)) => panic!("the stream failed after {:?}: {error}", seen.last()),
        Err(_) => panic!("the stream stopped at {:?}", seen.last()),
    }
}
