//! Formation and removal as an operator meets them (issue 17, item 2):
//! `--bootstrap-expect` forms a cluster from a majority of the seeds and
//! the last one joins; seeds with another seed list are named to writers,
//! on `/readyz` and in the log; a member the cluster removed says so,
//! stops campaigning, answers `503 removed`, still says so after a
//! restart, and rejoins only when asked, without deposing the leader.

use std::time::{Duration, Instant};

use super::common::cluster::{ClusterConfig, TestCluster};
use super::faults::{LEADER_TIMEOUT, config, eventually, get, member_ids, send, start_with, voters};

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
#[ignore = "slow (~11 s): scripts/slow-tests.sh runs it"]
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
    // A member that knows it is one (a node removed before it saw itself
    // in a committed membership takes itself for a new node, and joins).
    let settled = eventually(NOTICE_TIMEOUT, || async {
        cluster
            .cluster_status(victim)
            .await
            .is_ok_and(|s| s.leader_id.is_some() && s.commit_offset.is_some() && voters(&s).contains(&victim_id))
    })
    .await;
    assert!(settled, "{what}: node {victim} never knew itself a voter");
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
    eprintln!("{what}: node {victim} says: {why}");
    let removed_term = term_of(&cluster, victim).await;
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
    let node_status = get(format!("{victim_url}/status")).await.expect("/status");
    assert!(node_status.body["cluster"]["removed"].is_string(), "{node_status:?}");

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
    // Five seconds and more without a leader: no term of its own.
    assert_eq!(
        term_of(&cluster, victim).await,
        removed_term,
        "a removed node raised its term"
    );

    // Restarted, it says why it does not rejoin, and does not.
    cluster.restart(victim).await;
    assert_eq!(answer(readyz.clone()).await, (503, "removed".into()));
    // Logs are written by a background thread: the line may trail the
    // node's first answer.
    let starts_removed = ["ERROR", "this node starts removed"];
    assert!(
        eventually(NOTICE_TIMEOUT, || async {
            log_lines_since_start(&cluster, victim, &starts_removed) >= 1
        })
        .await,
        "{}",
        cluster.log_tail(victim, 20)
    );
    assert_eq!(
        log_lines_since_start(&cluster, victim, &starts_removed),
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

/// The index of the lowest seed URL: the one that forms the cluster.
fn lowest(seeds: &[String]) -> usize {
    (0..seeds.len()).min_by_key(|&i| &seeds[i]).unwrap_or(0)
}

fn highest(seeds: &[String]) -> usize {
    (0..seeds.len()).max_by_key(|&i| &seeds[i]).unwrap_or(0)
}

/// A URL nothing listens on (the discard port), standing for a typo.
const TYPO: &str = "http://127.0.0.1:9";

/// `(status, code, error)` of a write to `node`.
async fn write_to(node: &str) -> (u16, String, String) {
    let reply = send(
        reqwest::Method::POST,
        format!("{node}/"),
        Some("application/json"),
        Some(r#"{"a":1}"#.into()),
        Duration::from_secs(5),
    )
    .await;
    match reply {
        Ok(r) => (
            r.status,
            r.body["code"].as_str().unwrap_or_default().to_string(),
            r.body["error"].as_str().unwrap_or_default().to_string(),
        ),
        Err(e) => (0, String::new(), e),
    }
}

#[tokio::test]
async fn seeds_with_another_seed_list_are_named_to_writers_readyz_and_the_log() {
    let what = "another seed list";
    // The lowest seed, which forms the cluster, has a typo in its --peers.
    let cluster = TestCluster::start(ClusterConfig {
        seeds_for: Some(|i, seeds| {
            let mut own = seeds.to_vec();
            if i == lowest(seeds) {
                own[highest(seeds)] = TYPO.to_string();
            }
            own
        }),
        ..config()
    })
    .await;
    let seeds = cluster.urls();
    let (low, other) = (lowest(&seeds), highest(&seeds));
    let named = format!("seed {} has another seed list", seeds[low]);

    let url = cluster.url(other);
    let deadline = Instant::now() + NOTICE_TIMEOUT;
    let last = loop {
        let last = write_to(&url).await;
        if last.2.contains(&named) {
            break last;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: a write to node {other} never named the lowest seed's list: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((last.0, last.1.as_str()), (503, "no_leader"), "{last:?}");
    assert!(last.2.starts_with("cluster not formed: "), "{last:?}");
    assert!(last.2.contains(TYPO), "names the list's difference: {last:?}");
    let readyz = get(format!("{url}/readyz")).await.expect("/readyz");
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert!(
        readyz.body["error"].as_str().unwrap_or_default().contains(&named),
        "{readyz:?}"
    );
    assert!(
        eventually(NOTICE_TIMEOUT, || async {
            log_lines(&cluster, other, &["WARN", &named]) >= 1
        })
        .await,
        "{what}: node {other} never said it at WARN\n{}",
        cluster.log_tail(other, 20)
    );

    // The lowest seed waits for the URL it has wrong, and names the
    // seeds whose list is not its own, once it has heard from them: its
    // reason is its latest look at the seeds, which may date from before a
    // seed finished starting (503 `starting`, taken for no answer).
    let deadline = Instant::now() + NOTICE_TIMEOUT;
    let (status, error) = loop {
        let (status, _, error) = write_to(&cluster.url(low)).await;
        if error.contains("has another seed list") || Instant::now() >= deadline {
            break (status, error);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "{error}");
    assert!(error.contains(&format!("waiting for {TYPO} to answer")), "{error}");
    assert!(error.contains("has another seed list"), "{error}");
}

#[tokio::test]
async fn with_bootstrap_expect_a_majority_of_seeds_forms_the_cluster_and_the_last_joins() {
    let what = "bootstrap-expect";
    let mut cluster = TestCluster::start(ClusterConfig {
        extra_args: vec!["--bootstrap-expect".into(), "2".into()],
        // Not the lowest seed: it forms the cluster.
        held: Some(|seeds| vec![highest(seeds)]),
        ..config()
    })
    .await;
    let late = highest(&cluster.urls());
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    let status = cluster.cluster_status(leader).await.expect("/cluster");
    assert_eq!(voters(&status).len(), 2, "{what}: {}", status.raw);
    let written = write_to(&cluster.url(leader)).await;
    assert_eq!(written.0, 201, "{what}: {written:?}");

    cluster.restart(late).await;
    let late_url = cluster.url(late);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster.cluster_status(leader).await;
        let joined = status
            .as_ref()
            .is_ok_and(|s| voters(s).len() == 3 && s.members.iter().any(|m| m.url == late_url && m.voter));
        if joined {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the last seed never became a voter: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_member_with_another_max_record_bytes_is_named_at_join_and_in_cluster_status() {
    let what = "another --max-record-bytes";
    let mut cluster = TestCluster::start(ClusterConfig {
        extra_args: vec!["--bootstrap-expect".into(), "2".into()],
        held: Some(|seeds| vec![highest(seeds)]),
        ..config()
    })
    .await;
    let late = highest(&cluster.urls());
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    let ours = cluster.cluster_status(leader).await.expect("/cluster").raw["max_record_bytes"]
        .as_u64()
        .expect("the leader's max_record_bytes");
    cluster.set_node_args(late, vec!["--max-record-bytes".into(), "2048".into()]);
    cluster.restart(late).await;
    let late_url = cluster.url(late);

    // Every member's limit, in the leader's /cluster.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = cluster.cluster_status(leader).await;
        if let Ok(s) = &status
            && s.raw["members"]
                .as_array()
                .is_some_and(|members| members.len() == 3 && members.iter().any(|m| m["url"] == late_url.as_str()))
        {
            break s.raw.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the last seed never joined: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for member in status["members"].as_array().expect("members") {
        let limit = if member["url"] == late_url.as_str() { 2048 } else { ours };
        assert_eq!(member["max_record_bytes"].as_u64(), Some(limit), "{status}");
    }

    // Both sides of the join name both values.
    let leader_side = [
        "WARN",
        "a joining node's --max-record-bytes is not the leader's",
        "theirs=2048",
    ];
    let joiner_side = ["WARN", "members disagree on --max-record-bytes", "ours=2048"];
    assert!(
        eventually(NOTICE_TIMEOUT, || async {
            log_lines(&cluster, leader, &leader_side) >= 1
        })
        .await,
        "{what}: the leader did not warn\n{}",
        cluster.log_tail(leader, 20)
    );
    assert!(log_lines(&cluster, leader, &[&format!("ours={ours}")]) >= 1);
    assert!(
        log_lines(&cluster, late, &joiner_side) >= 1,
        "{what}: the joiner did not warn\n{}",
        cluster.log_tail(late, 20)
    );
}

#[tokio::test]
async fn a_removed_member_restarted_with_rejoin_asks_to_be_added_again() {
    let what = "--rejoin";
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
    let settled = eventually(NOTICE_TIMEOUT, || async {
        cluster
            .cluster_status(victim)
            .await
            .is_ok_and(|s| s.leader_id.is_some() && s.commit_offset.is_some() && voters(&s).contains(&victim_id))
    })
    .await;
    assert!(settled, "{what}: node {victim} never knew itself a voter");
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
    let readyz = format!("{victim_url}/readyz");
    assert!(
        eventually(NOTICE_TIMEOUT, || async {
            answer(readyz.clone()).await == (503, "removed".into())
        })
        .await,
        "{what}: /readyz never said removed"
    );
    let term = term_of(&cluster, leader).await;

    cluster.set_node_args(victim, vec!["--rejoin".into()]);
    cluster.restart(victim).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            answer(readyz.clone()).await.0 == 200
        })
        .await,
        "{what}: not ready again: {:?}\n{}",
        get(readyz.clone()).await,
        cluster.log_tail(victim, 20)
    );
    // Ready as a learner that caught up; made a voter just after (a fresh-clone CI run read
    // the membership between the two).
    assert!(
        eventually(Duration::from_secs(30), || async {
            let status = cluster.cluster_status(leader).await;
            status.is_ok_and(|status| voters(&status).contains(&victim_id))
        })
        .await,
        "{what}: never a voter again"
    );
    let status = cluster.cluster_status(leader).await.expect("/cluster");
    assert!(voters(&status).contains(&victim_id), "{}", status.raw);
    assert_eq!(
        status.term, term,
        "the rejoined node deposed the leader: {}",
        status.raw
    );
    assert!(log_lines_since_start(&cluster, victim, &["--rejoin: asking the leader"]) >= 1);
}

async fn id_of(cluster: &TestCluster, i: usize) -> u64 {
    let status = cluster.cluster_status(i).await.unwrap_or_else(|e| panic!("{e}"));
    status.node_id.as_u64().expect("an id")
}

/// A new node whose first seed is a removed member (still up, still
/// "initialized", refusing joins with 503 removed) joins through another.
#[tokio::test]
async fn a_new_node_joins_although_its_first_seed_was_removed() {
    let (mut cluster, mut leader) = start_with("join past a removed seed", config()).await;
    if leader == 0 {
        // The first seed must not lead: hand leadership to node 1, asked
        // again until node 0 leads and takes it (it may still be settling).
        let to = id_of(&cluster, 1).await;
        let moved = eventually(LEADER_TIMEOUT * 4, || async {
            let asked = send(
                reqwest::Method::POST,
                format!("{}/cluster/leader", cluster.url(0)),
                Some("application/json"),
                Some(format!(r#"{{"id":{to}}}"#)),
                Duration::from_secs(10),
            )
            .await;
            let leads = cluster
                .cluster_status(1)
                .await
                .is_ok_and(|s| s.leader_id.as_ref().and_then(|v| v.as_u64()) == Some(to));
            leads || asked.is_ok_and(|r| r.status == 200)
        })
        .await;
        assert!(moved, "leadership moved off the first seed");
        leader = 1;
        let settled = eventually(LEADER_TIMEOUT * 4, || async {
            cluster
                .cluster_status(1)
                .await
                .is_ok_and(|s| s.leader_id.as_ref().and_then(|v| v.as_u64()) == Some(to))
        })
        .await;
        assert!(settled, "node 1 leads");
    }
    let removed_id = id_of(&cluster, 0).await;
    let reply = send(
        reqwest::Method::DELETE,
        format!("{}/cluster/members/{removed_id}", cluster.url(leader)),
        None,
        None,
        Duration::from_secs(10),
    )
    .await
    .expect("DELETE");
    assert_eq!(reply.status, 200, "{reply:?}");
    let readyz = format!("{}/readyz", cluster.url(0));
    assert!(
        eventually(LEADER_TIMEOUT * 4, || async {
            answer(readyz.clone()).await == (503, "removed".into())
        })
        .await,
        "the first seed knows it was removed"
    );
    let added = cluster.add_node().await;
    let added_id = id_of(&cluster, added).await;
    let joined = eventually(Duration::from_secs(30), || async {
        cluster
            .cluster_status(leader)
            .await
            .is_ok_and(|s| member_ids(&s).contains(&added_id))
    })
    .await;
    assert!(joined, "the new node never joined: {}", cluster.log_tail(added, 15));
}
