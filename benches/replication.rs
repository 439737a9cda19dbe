//! Replication measurements, printed rather than asserted:
//!
//! 1. catch-up: a leader holds ~1 GiB of 1 KiB records (appended with
//!    `--fsync never` semantics, which gives the leader's own append rate);
//!    a new follower copies it all; records/s and MB/s of both.
//! 2. tail latency: records posted to the leader at a steady rate over
//!    HTTP; for each, the time from the leader's 201 to the record being
//!    readable on the follower; p50 and p99.
//!
//! `cargo bench --bench replication` (set `DISTLOG_BENCH_MB` for another size).

use std::time::{Duration, Instant};

use distlog::log::Durability;
use distlog::mode::ModeConfig;
use distlog::node::{Node, NodeConfig};
use distlog::replication::FollowConfig;

const RECORD: usize = 1024;

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.log.durability = Durability::Never;
    config
}

async fn ephemeral() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

fn record(i: u64) -> Vec<u8> {
    let mut value = format!("{{\"i\":{i},\"pad\":\"").into_bytes();
    value.resize(RECORD - 2, b'x');
    value.extend_from_slice(b"\"}");
    value
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks what is here; nothing to list.
    }
    let megabytes: u64 = std::env::var("DISTLOG_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let records = megabytes * 1024 * 1024 / RECORD as u64;
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let follower_dir = tempfile::tempdir().expect("temp dir");
    let leader = Node::start(config(leader_dir.path()), ephemeral().await)
        .await
        .expect("leader starts");
    let leader_url = format!("http://{}", leader.local_addr());

    println!(
        "filling the leader over HTTP with {records} records of {RECORD} bytes ({megabytes} MiB), NDJSON batches of 1000 from 4 producers..."
    );
    let batch: String = (0..1000u64)
        .map(|i| String::from_utf8(record(i)).expect("utf8") + "\n")
        .collect();
    let batches = records / 1000;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let (client, url, batch) = (client.clone(), leader_url.clone(), batch.clone());
            tokio::spawn(async move {
                for n in (p..batches).step_by(4) {
                    let response = client
                        .post(format!("{url}/"))
                        .header("content-type", "application/x-ndjson")
                        .body(batch.clone())
                        .send()
                        .await
                        .expect("post");
                    assert_eq!(response.status(), 201);
                    if p == 0 && n % (batches / 10).max(1) < 4 {
                        println!("  {} batches, {:.1}s", n, started.elapsed().as_secs_f64());
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.expect("producer");
    }
    let fill_time = started.elapsed();
    let written = leader.log().next_offset();
    let leader_rate = written as f64 / fill_time.as_secs_f64();
    println!(
        "leader append over HTTP (--fsync never): {:.0} records/s, {:.0} MB/s",
        leader_rate,
        leader_rate * RECORD as f64 / 1e6
    );

    println!("starting a follower {written} records behind...");
    let mut follower_config = config(follower_dir.path());
    follower_config.mode = ModeConfig::Replica(FollowConfig::new(&leader_url));
    let started = Instant::now();
    let follower = Node::start(follower_config, ephemeral().await)
        .await
        .expect("follower starts");
    let mut appended = follower.log().subscribe();
    let mut last_report = Instant::now();
    while *appended.borrow_and_update() < written {
        let _ = tokio::time::timeout(Duration::from_secs(1), appended.changed()).await;
        if last_report.elapsed() > Duration::from_secs(5) {
            println!(
                "  follower at {} after {:.1}s",
                follower.log().next_offset(),
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    let catch_up = started.elapsed();
    let follower_rate = written as f64 / catch_up.as_secs_f64();
    println!(
        "catch-up: {:.0} records/s, {:.0} MB/s in {:.1}s = {:.2}x the leader's own append rate",
        follower_rate,
        follower_rate * RECORD as f64 / 1e6,
        catch_up.as_secs_f64(),
        follower_rate / leader_rate
    );

    println!("tail latency at 1000 records/s for 10 s...");
    let start_offset = follower.log().next_offset();
    let mut follower_next = follower.log().subscribe();
    let watcher = tokio::spawn(async move {
        // When each offset became readable on the follower.
        let mut arrivals = Vec::new();
        let mut seen = start_offset;
        while seen < start_offset + 10_000 {
            if follower_next.changed().await.is_err() {
                break;
            }
            let next = *follower_next.borrow_and_update();
            let now = Instant::now();
            arrivals.extend((seen..next).map(|offset| (offset, now)));
            seen = next;
        }
        arrivals
    });
    let client = reqwest::Client::new();
    let body = String::from_utf8(record(0)).expect("utf8");
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    let mut producers = Vec::new();
    for _ in 0..10_000 {
        ticks.tick().await;
        let (client, url, body) = (client.clone(), leader_url.clone(), body.clone());
        producers.push(tokio::spawn(async move {
            let response = client.post(format!("{url}/")).body(body).send().await.expect("post");
            let acked = Instant::now();
            let offset = response.json::<serde_json::Value>().await.expect("json")["offset"]
                .as_u64()
                .expect("offset");
            (offset, acked)
        }));
    }
    let mut acks = std::collections::HashMap::new();
    for producer in producers {
        let (offset, acked) = producer.await.expect("producer");
        acks.insert(offset, acked);
    }
    let arrivals = watcher.await.expect("watcher");
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(offset, arrived)| acks.get(offset).map(|acked| arrived.saturating_duration_since(*acked)))
        .collect();
    latencies.sort();
    println!(
        "tail latency (leader 201 -> readable on the follower): p50 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    follower.shutdown().await.expect("follower stops");
    leader.shutdown().await.expect("leader stops");
}
