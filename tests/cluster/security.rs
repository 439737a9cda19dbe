//! A cluster with tokens and an ACL: peers authenticate like any client
//! (`--peer-token-file`), and the Raft RPCs and membership changes need the
//! ACL action `cluster`.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::{ClusterConfig, TestCluster};
use common::rt;
use serde_json::Value;

const PEER_TOKEN: &str = "peer-token-0123456789abcdef0123456789abcdef";
const WRITER_TOKEN: &str = "writer-token-0123456789abcdef0123456789abcd";

async fn get_cluster(url: &str, token: &str) -> Option<Value> {
    let answer = rt::http()
        .get(format!("{url}/cluster"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    answer.status().is_success().then_some(())?;
    answer.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_authenticate_with_their_token_and_cluster_routes_need_the_cluster_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    let acl = dir.path().join("acl");
    let peer_token = dir.path().join("peer-token");
    std::fs::write(&tokens, format!("peer {PEER_TOKEN}\nwriter {WRITER_TOKEN}\n")).expect("tokens");
    std::fs::write(&acl, "peer cluster\nwriter produce\nwriter consume\n").expect("acl");
    std::fs::write(&peer_token, PEER_TOKEN).expect("peer token");
    let path = |p: &std::path::Path| p.display().to_string();
    let cluster = TestCluster::start(ClusterConfig {
        extra_args: vec![
            "--token-file".into(),
            path(&tokens),
            "--acl".into(),
            path(&acl),
            "--peer-token-file".into(),
            path(&peer_token),
        ],
        ..ClusterConfig::default()
    })
    .await;
    let urls = cluster.urls();

    // The cluster forms and elects a leader: every vote, append and join
    // carried the peer token.
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader_url = loop {
        let mut leaders = Vec::new();
        for url in &urls {
            if let Some(view) = get_cluster(url, WRITER_TOKEN).await {
                leaders.push(view["leader_url"].as_str().map(str::to_string));
            }
        }
        if leaders.len() == urls.len()
            && let Some(Some(first)) = leaders.first()
            && leaders.iter().all(|l| l.as_deref() == Some(first.as_str()))
        {
            break first.clone();
        }
        assert!(Instant::now() < deadline, "no leader all nodes agree on: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let write = rt::http()
        .post(format!("{leader_url}/"))
        .bearer_auth(WRITER_TOKEN)
        .body(r#"{"secured":true}"#)
        .send()
        .await
        .expect("a write");
    assert_eq!(write.status(), 201);

    let vote = |token: Option<&str>| {
        let mut request = rt::http()
            .post(format!("{}/raft/vote", urls[0]))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(vote(None).await.expect("answer").status(), 401, "no credentials");
    let refused = vote(Some(WRITER_TOKEN)).await.expect("answer");
    assert_eq!(refused.status(), 403, "a writer may not speak Raft");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["action"], "cluster");

    let remove = rt::http()
        .delete(format!("{leader_url}/cluster/members/1"))
        .bearer_auth(WRITER_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(remove.status(), 403, "membership changes need the cluster action");

    let peer_view = get_cluster(&urls[1], PEER_TOKEN).await;
    assert!(peer_view.is_some(), "the cluster action includes reading the cluster");
    let peer_write = rt::http()
        .post(format!("{leader_url}/"))
        .bearer_auth(PEER_TOKEN)
        .body(r#"{"peer":"write"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(peer_write.status(), 403, "the cluster action does not include produce");
}
