//! Formation and removal as an operator meets them (issue 17, item 2): a
//! member the cluster removed says so, stops campaigning, answers `503
//! removed`, still says so after a restart, and rejoins only when asked,
//! without deposing the leader.

use std::time::Duration;

use super::common::cluster::TestCluster;
use super::faults::{config, eventually, get, member_ids, send, start_with, voters};

const NOTICE_TIMEOUT: Duration = Duration::from_secs(15);

/// The number of lines of node `i`'s log (all its starts) holding every one of `needles`.
fn log_lines(cluster: &TestCluster, i: usize, needles: &[&str]) -> usize {
    let text = std::fs::read_to_string(cluster.log_path(i)).unwrap_or_default();
    text.lines().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

/// Lines of node `i`'s log since its latest start holding every one of `needles`.
fn log_lines_since_start(cluster: &TestCluster, i: usize, needles: &[&str]) -> usize {
    let text = std::fs::read_to_string(cluster.log_path(i)).unwrap_or_default();
    let last_start = text.rfind("==== harness: node").unwrap_or(0);
    text[last_start..]
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// `(status, code)` of a GET.
async fn answer(url: String) -> (u16, String) {
    match get(url).await {
        Ok(reply) => (
            reply.status,
            reply.body["code"].as_str().unwrap_or_default().to_string(),
        ),
        Err(e) => (0, e),
    }
}

async fn term_of(cluster: &TestCluster, i: usize) -> u64 {
    cluster.cluster_status(i).await.unwrap_or_else(|e| panic!("{e}")).term
}

#[tokio::test]
async fn a_removed_member_says_so_stands_still_and_rejoins_only_when_asked() {
    let what = "removed member";
    let (mut cluster, leader) = start_with(what, config()).await;
    let victim = (leader + 1) % cluster.len();
    let victim_url = cluster.url(victim);
    let victim_id = cluster
        .cluster_status(victim)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .node_id
        .as_u64()
        .expect("an id");
    let reply = send(
        reqwest::Method::DELETE,
        format!("{}/cluster/members/{victim_id}", cluster.url(leader)),
        None,
        None,
        Duration::from_secs(10),
    )
    .await
    .expect("DELETE /cluster/members/{id}");
    assert_eq!(reply.status, 200, "{reply:?}");

    // It finds out, and says so: /readyz and the client routes.
    let readyz = format!("{victim_url}/readyz");
    assert!(
        eventually(NOTICE_TIMEOUT, || async {
            answer(readyz.clone()).await == (503, "removed".into())
        })
        .await,
        "{what}: /readyz never said removed: {:?}",
        get(readyz.clone()).await
    );
    let body = get(readyz.clone()).await.expect("/readyz").body;
    let why = body["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("was removed") && why.contains("POST /cluster/join"),
        "{body}"
    );
    let write = send(
        reqwest::Method::POST,
        format!("{victim_url}/"),
        Some("application/json"),
        Some(r#"{"a":1}"#.into()),
        Duration::from_secs(5),
    )
    .await
    .expect("POST /");
    assert_eq!(
        (write.status, write.body["code"].as_str()),
        (503, Some("removed")),
        "{write:?}"
    );
    assert_eq!(answer(format!("{victim_url}/?from=0")).await, (503, "removed".into()));
    let status = cluster.cluster_status(victim).await.expect("/cluster answers");
    assert!(status.raw["removed"].is_string(), "{}", status.raw);

    // Loudly: ERROR once, then WARN again while it stands removed.
    let error = ["ERROR", "REMOVED: this node is no longer a member"];
    assert!(
        eventually(NOTICE_TIMEOUT, || async { log_lines(&cluster, victim, &error) >= 1 }).await,
        "{what}: no ERROR says it was removed\n{}",
        cluster.log_tail(victim, 20)
    );
    assert!(
        eventually(NOTICE_TIMEOUT, || async {
            log_lines(&cluster, victim, &["WARN", "this node was removed from the cluster"]) >= 1
        })
        .await,
        "{what}: no WARN repeats the removal\n{}",
        cluster.log_tail(victim, 20)
    );

    assert_eq!(log_lines(&cluster, victim, &error), 1, "the ERROR is said once");

    // Restarted, it says why it does not rejoin, and does not.
    cluster.restart(victim).await;
    assert_eq!(answer(readyz.clone()).await, (503, "removed".into()));
    assert_eq!(
        log_lines_since_start(&cluster, victim, &["ERROR", "this node starts removed"]),
        1,
        "{}",
        cluster.log_tail(victim, 20)
    );

    // Asked to, it rejoins, and the leader keeps leading in the same term
    // (a removed node that campaigned would depose it).
    let term = term_of(&cluster, leader).await;
    let reply = send(
        reqwest::Method::POST,
        format!("{}/cluster/join", cluster.url(leader)),
        Some("application/json"),
        Some(format!(r#"{{"url":"{victim_url}"}}"#)),
        Duration::from_secs(30),
    )
    .await
    .expect("POST /cluster/join");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        eventually(NOTICE_TIMEOUT, || async { answer(readyz.clone()).await.0 == 200 }).await,
        "{what}: not ready after the join: {:?}",
        get(readyz.clone()).await
    );
    let status = cluster.cluster_status(leader).await.expect("/cluster");
    assert!(voters(&status).contains(&victim_id), "{}", status.raw);
    assert_eq!(member_ids(&status).len(), 3, "{}", status.raw);
    assert_eq!(
        status.leader_id.and_then(|l| l.as_u64()),
        status.node_id.as_u64(),
        "{}",
        status.raw
    );
    assert_eq!(
        status.term, term,
        "the rejoined node deposed the leader: {}",
        status.raw
    );
    let victim_status = cluster.cluster_status(victim).await.expect("/cluster");
    assert!(victim_status.raw["removed"].is_null(), "{}", victim_status.raw);
}
