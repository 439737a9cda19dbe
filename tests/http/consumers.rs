//! Consumer positions (`/consumers`, `/consumers/{name}`) against real
//! servers: every rule of the contract, durability over a restart, the
//! lag gauge, and a replica sending the requests to its leader.

use crate::common;

use common::{client, get_json, post_json, start};
use distlog::log::ManualClock;
use serde_json::{Value, json};

async fn put(url: &str, name: &str, body: &str) -> (u16, Value) {
    let response = client()
        .put(format!("{url}/consumers/{name}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn delete(url: &str, name: &str) -> (u16, Value) {
    let response = client().delete(format!("{url}/consumers/{name}")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A node stamping with `clock`, holding records at 1000, 2000 and 3000
/// (offsets 0 to 2); the clock is left at 5000.
async fn node_with_three(dir: &std::path::Path, clock: &ManualClock) -> common::Node {
    let mut config = common::config(dir);
    config.log.clock = clock.clock();
    let node = start(config).await;
    for time in [1000, 2000, 3000] {
        clock.set(time);
        assert_eq!(post_json(&node.url, "{}").await.status(), 201);
    }
    clock.set(5000);
    node
}

#[tokio::test]
async fn a_position_is_stored_read_listed_and_deleted_with_its_lag() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let node = node_with_three(dir.path(), &clock).await;
    let url = &node.url;

    let (status, body) = put(url, "billing", r#"{"offset": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    let behind = json!({"name": "billing", "offset": 1, "lag_records": 2, "lag_ms": 3000, "updated_ms": 5000});
    assert_eq!(body, behind, "lag_ms: now minus the stamp of offset 1");
    assert_eq!(get_json(&format!("{url}/consumers/billing")).await, (200, behind));

    clock.set(6000);
    let (status, body) = put(url, "audit", r#"{"offset": 3}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["lag_records"].as_u64(), body["lag_ms"].as_u64()),
        (Some(0), Some(0)),
        "caught up"
    );
    let (status, list) = get_json(&format!("{url}/consumers")).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "billing"]);
    assert_eq!(list["consumers"][1]["lag_ms"], 4000, "lag is measured now");

    let deleted = client()
        .delete(format!("{url}/consumers/billing"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, body) = get_json(&format!("{url}/consumers/billing")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("consumer_not_found")));
    assert_eq!(body["name"], "billing");
    let (status, body) = delete(url, "billing").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("consumer_not_found")));
    assert_eq!(
        get_json(&format!("{url}/consumers")).await.1["consumers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_conditional_put_succeeds_only_on_the_stored_offset() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start_in(dir.path()).await;
    let url = &node.url;
    for _ in 0..5 {
        post_json(url, "{}").await;
    }
    let (status, body) = put(url, "c", r#"{"offset": 1, "expected": 0}"#).await;
    assert_eq!(
        (status, &body["code"], &body["stored"]),
        (412, &json!("position_mismatch"), &Value::Null)
    );
    assert_eq!(
        put(url, "c", r#"{"offset": 1, "expected": null}"#).await.0,
        200,
        "null: none stored"
    );
    let (status, body) = put(url, "c", r#"{"offset": 2, "expected": null}"#).await;
    assert_eq!((status, &body["stored"]), (412, &json!(1)));
    let (status, body) = put(url, "c", r#"{"offset": 2, "expected": 0}"#).await;
    assert_eq!(
        (status, &body["code"], &body["stored"]),
        (412, &json!("position_mismatch"), &json!(1))
    );
    assert_eq!(
        get_json(&format!("{url}/consumers/c")).await.1["offset"],
        1,
        "a refused PUT changes nothing"
    );
    assert_eq!(put(url, "c", r#"{"offset": 2, "expected": 1}"#).await.0, 200);
    assert_eq!(
        put(url, "c", r#"{"offset": 0}"#).await.0,
        200,
        "unconditional, and it may go back"
    );
    assert_eq!(get_json(&format!("{url}/consumers/c")).await.1["offset"], 0);
}

#[tokio::test]
async fn names_offsets_and_bodies_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start_in(dir.path()).await;
    let url = &node.url;
    post_json(url, "{}").await;

    let longest = "n".repeat(128);
    assert_eq!(put(url, &longest, r#"{"offset": 0}"#).await.0, 200);
    assert_eq!(put(url, "a.B_c-9", r#"{"offset": 0}"#).await.0, 200);
    for bad in [
        "n".repeat(129),
        "a%20b".into(),
        "%C3%A9".into(),
        "a:b".into(),
        "a%2Fb".into(),
    ] {
        let (status, body) = put(url, &bad, r#"{"offset": 0}"#).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_consumer_name")),
            "{bad}"
        );
        let (status, body) = get_json(&format!("{url}/consumers/{bad}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_consumer_name")),
            "{bad}"
        );
    }

    assert_eq!(
        put(url, "c", r#"{"offset": 1}"#).await.0,
        200,
        "the next offset: caught up"
    );
    let (status, body) = put(url, "c", r#"{"offset": 2}"#).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("offset_past_end")));
    assert_eq!(
        (body["offset"].as_u64(), body["next_offset"].as_u64()),
        (Some(2), Some(1))
    );

    for body in [
        "",
        "{",
        "[]",
        r#"{"offset": -1}"#,
        r#"{"offset": "1"}"#,
        r#"{"offset": 1.5}"#,
        r#"{"expected": 1}"#,
        r#"{"offset": 0, "expected": "x"}"#,
        r#"{"offset": 0, "extra": 1}"#,
    ] {
        let (status, answer) = put(url, "c", body).await;
        assert_eq!((status, answer["code"].as_str()), (400, Some("invalid_json")), "{body}");
    }
    let huge = format!(r#"{{"offset": 0, "pad": "{}"}}"#, "x".repeat(5000));
    let (status, body) = put(url, "c", &huge).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")));
    let text = client()
        .put(format!("{url}/consumers/c"))
        .header("content-type", "text/plain")
        .body(r#"{"offset": 0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    let (status, body) = get_json(&format!("{url}/consumers/nobody")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("consumer_not_found")));
    let patch = client().patch(format!("{url}/consumers/c")).send().await.unwrap();
    assert_eq!(patch.status(), 405);
}

#[tokio::test]
async fn new_names_stop_at_max_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.limits.max_consumers = 2;
    let node = start(config).await;
    let url = &node.url;
    assert_eq!(put(url, "a", r#"{"offset": 0}"#).await.0, 200);
    assert_eq!(put(url, "b", r#"{"offset": 0}"#).await.0, 200);
    let (status, body) = put(url, "c", r#"{"offset": 0}"#).await;
    assert_eq!(
        (status, body["code"].as_str(), body["max"].as_u64()),
        (409, Some("too_many_consumers"), Some(2))
    );
    assert_eq!(
        put(url, "b", r#"{"offset": 0}"#).await.0,
        200,
        "a stored name still moves"
    );
    assert_eq!(delete(url, "a").await.0, 204);
    assert_eq!(put(url, "c", r#"{"offset": 0}"#).await.0, 200, "room again");
}

#[tokio::test]
async fn positions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start_in(dir.path()).await;
    for _ in 0..3 {
        post_json(&node.url, "{}").await;
    }
    assert_eq!(put(&node.url, "a", r#"{"offset": 2}"#).await.0, 200);
    assert_eq!(put(&node.url, "b", r#"{"offset": 1}"#).await.0, 200);
    assert_eq!(delete(&node.url, "b").await.0, 204);
    node.server.shutdown().await.unwrap();

    let node = common::start_in(dir.path()).await;
    let (status, body) = get_json(&format!("{}/consumers/a", node.url)).await;
    assert_eq!((status, body["offset"].as_u64()), (200, Some(2)));
    assert_eq!(get_json(&format!("{}/consumers/b", node.url)).await.0, 404);
}

#[tokio::test]
async fn metrics_carry_each_consumers_lag() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start_in(dir.path()).await;
    for _ in 0..5 {
        post_json(&node.url, "{}").await;
    }
    put(&node.url, "slow", r#"{"offset": 1}"#).await;
    put(&node.url, "done", r#"{"offset": 5}"#).await;
    let text = client()
        .get(format!("{}/metrics", node.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("# TYPE distlog_consumer_lag_records gauge"), "{text}");
    assert!(
        text.contains("distlog_consumer_lag_records{log=\"default\",consumer=\"slow\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains("distlog_consumer_lag_records{log=\"default\",consumer=\"done\"} 0\n"),
        "{text}"
    );
    delete(&node.url, "slow").await;
    let text = client()
        .get(format!("{}/metrics", node.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("consumer=\"slow\""),
        "a deleted consumer's series goes: {text}"
    );
}

#[tokio::test]
async fn a_replica_sends_consumer_requests_to_its_leader() {
    let (leader_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = common::start_in(leader_dir.path()).await;
    let replica = start(common::follower_config(replica_dir.path(), &leader.url)).await;
    for (method, path) in [
        (reqwest::Method::GET, "/consumers"),
        (reqwest::Method::GET, "/consumers/a"),
        (reqwest::Method::PUT, "/consumers/a"),
        (reqwest::Method::DELETE, "/consumers/a"),
    ] {
        let response = client()
            .request(method.clone(), format!("{}{path}", replica.url))
            .body(r#"{"offset": 0}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 307, "{method} {path}");
        let location = response.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(location, format!("{}{path}", leader.url), "{method} {path}");
    }
}

#[tokio::test]
async fn every_consumer_route_needs_consume() {
    const WRITER: &str = "writer-token-writer-token-writer-token-00";
    const READER: &str = "reader-token-reader-token-reader-token-00";
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let tokens = files.path().join("tokens");
    let acl = files.path().join("acl");
    std::fs::write(&tokens, format!("writer {WRITER}\nreader {READER}\n")).unwrap();
    std::fs::write(&acl, "writer produce\nreader consume\n").unwrap();
    let mut config = common::config(dir.path());
    config.security = distlog::auth::SecurityConfig {
        token_file: Some(tokens),
        acl_file: Some(acl),
        ..Default::default()
    };
    let node = start(config).await;
    let url = &node.url;
    let send = |method: reqwest::Method, path: &str, token: &str| {
        client()
            .request(method, format!("{url}{path}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(r#"{"offset": 0}"#)
            .send()
    };
    for (method, path) in [
        (reqwest::Method::PUT, "/consumers/a"),
        (reqwest::Method::GET, "/consumers/a"),
        (reqwest::Method::GET, "/consumers"),
        (reqwest::Method::DELETE, "/consumers/a"),
    ] {
        let refused = send(method.clone(), path, WRITER).await.unwrap();
        assert_eq!(refused.status(), 403, "{method} {path}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["action"], "consume");
        let allowed = send(method.clone(), path, READER).await.unwrap();
        assert!(allowed.status().is_success(), "{method} {path}: {}", allowed.status());
    }
}
