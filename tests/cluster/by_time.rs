//! Reads by time in a cluster: the leader stamps records, and a new
//! leader whose clock is an hour behind goes on from its predecessor's
//! stamps rather than back in time; `from_timestamp` works on a follower.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::{ClusterConfig, TestCluster};
use common::rt;
use serde_json::Value;

const HOUR_MS: i64 = 3_600_000;

async fn write(url: &str, body: String) {
    let answer = rt::http()
        .post(format!("{url}/"))
        .body(body)
        .send()
        .await
        .expect("a write");
    assert_eq!(answer.status(), 201, "a write to {url}");
}

async fn page(url: &str) -> Option<Value> {
    let answer = rt::http().get(url).send().await.ok()?;
    answer.status().is_success().then_some(())?;
    answer.json().await.ok()
}

/// `(offset, timestamp)` of every record `url` shows, once it shows `count`.
async fn stamps_once_all_shown(url: &str, count: usize) -> Vec<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(answer) = page(&format!("{url}/?from=0&limit=1000")).await {
            let records = answer["records"].as_array().expect("records");
            if records.len() == count {
                return records
                    .iter()
                    .map(|r| (r["offset"].as_u64().unwrap(), r["timestamp"].as_u64().unwrap()))
                    .collect();
            }
        }
        assert!(Instant::now() < deadline, "{url} never showed {count} records");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn transfer_leadership(cluster: &TestCluster, leader: usize, to: usize) {
    let id = cluster.cluster_status(to).await.expect("the target's /cluster").node_id;
    let answer = rt::http()
        .post(format!("{}/cluster/leader", cluster.url(leader)))
        .header("content-type", "application/json")
        .body(format!("{{\"id\":{id}}}"))
        .send()
        .await
        .expect("a leadership transfer");
    assert_eq!(answer.status(), 200, "the transfer to node {to}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_with_a_clock_behind_never_stamps_earlier_and_followers_find_times() {
    let mut cluster = TestCluster::start(ClusterConfig::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    for n in 0..10 {
        write(&cluster.url(leader), format!(r#"{{"before":{n}}}"#)).await;
    }
    // A follower restarts an hour behind and is made the leader.
    let behind = (leader + 1) % cluster.len();
    cluster.set_node_args(behind, vec![format!("--clock-skew-ms={}", -HOUR_MS)]);
    cluster.restart(behind).await;
    stamps_once_all_shown(&cluster.url(behind), 10).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    transfer_leadership(&cluster, leader, behind).await;
    assert_eq!(cluster.wait_for_leader(Duration::from_secs(20)).await, behind);
    for n in 0..10 {
        write(&cluster.url(behind), format!(r#"{{"after":{n}}}"#)).await;
    }

    let follower = (behind + 1) % cluster.len();
    let stamps = stamps_once_all_shown(&cluster.url(follower), 20).await;
    assert!(
        stamps.windows(2).all(|w| w[0].1 <= w[1].1),
        "stamps go backwards in log order: {stamps:?}"
    );
    let (last_before, first_after) = (stamps[9].1, stamps[10].1);
    assert!(
        first_after >= last_before,
        "the new leader stamped {first_after} after {last_before}"
    );

    // From a time on a follower: the first record stamped at or after it.
    let newest = stamps[19].1;
    for (i, &(offset, time)) in stamps.iter().enumerate() {
        let url = format!("{}/?from_timestamp={time}&limit=1", cluster.url(follower));
        let answer = page(&url).await.expect("a read by time");
        let first_at_or_after = stamps.iter().find(|(_, t)| *t >= time).expect("itself");
        assert_eq!(
            answer["records"][0]["offset"], first_at_or_after.0,
            "record {i} at {offset}"
        );
    }
    let past = page(&format!("{}/?from_timestamp={}", cluster.url(follower), newest + 1))
        .await
        .expect("a read past the newest");
    assert_eq!(past["records"], serde_json::json!([]));
    assert!(past["next_offset"].as_u64().unwrap() > stamps[19].0);
}
