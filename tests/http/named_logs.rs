//! Named logs on a standalone node (`/logs`, `/logs/{name}`, the log routes
//! under `/logs/{name}/`): the whole life of a log, every refusal of the
//! contract, settings and records over a restart, what interrupted changes
//! leave, retention changed at run time, auto-creation, ACL scopes and the
//! `log` label of the metrics.

use std::path::Path;
use std::time::Duration;

use crate::common;

use common::{client, get_json, start};
use distlog::auth::SecurityConfig;
use serde_json::{Value, json};

async fn send(method: reqwest::Method, url: String, body: Option<&str>) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = client().request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, response.json().await.unwrap_or(Value::Null), headers)
}

async fn put(url: &str, name: &str, body: Option<&str>) -> (u16, Value) {
    let (status, body, _) = send(reqwest::Method::PUT, format!("{url}/logs/{name}"), body).await;
    (status, body)
}

async fn append(url: &str, name: &str, record: &str) -> (u16, Value) {
    let (status, body, _) = send(reqwest::Method::POST, format!("{url}/logs/{name}/"), Some(record)).await;
    (status, body)
}

#[tokio::test]
async fn a_named_log_is_created_written_read_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(common::config(dir.path())).await;
    let url = &node.url;

    let (status, body, headers) = send(reqwest::Method::PUT, format!("{url}/logs/orders"), None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["location"], "/logs/orders");
    assert_eq!(body["name"], "orders");
    assert_eq!(
        body["settings"],
        json!({"replicas": 1, "retention_bytes": null, "retention_ms": null, "max_record_bytes": null})
    );
    assert_eq!(body["next_offset"], 0);
    assert_eq!(put(url, "orders", Some("{}")).await.0, 200, "the same settings again");
    assert_eq!(
        put(url, "orders", Some(r#"{"replicas": 1}"#)).await.0,
        200,
        "1 is the default here"
    );
    let (status, body) = put(url, "orders", Some(r#"{"retention_ms": 60000}"#)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("log_exists")), "{body}");
    assert_eq!(body["settings"]["retention_ms"], Value::Null, "the settings it has");

    for i in 0..3 {
        let (status, body, headers) = send(
            reqwest::Method::POST,
            format!("{url}/logs/orders/"),
            Some(&format!(r#"{{"n":{i}}}"#)),
        )
        .await;
        assert_eq!((status, body["offset"].as_u64()), (201, Some(i)), "{body}");
        assert_eq!(headers["location"], format!("/logs/orders/{i}"));
    }
    let (status, record) = get_json(&format!("{url}/logs/orders/1")).await;
    assert_eq!((status, &record["value"]), (200, &json!({"n": 1})));
    let (status, range) = get_json(&format!("{url}/logs/orders/?from=1&limit=5")).await;
    assert_eq!(status, 200, "{range}");
    assert_eq!(range["records"].as_array().map(Vec::len), Some(2), "{range}");
    assert_eq!(common::next_offset(url).await, 0, "the default log is another log");
    assert_eq!(get_json(&format!("{url}/1")).await.0, 404);
    assert_eq!(
        get_json(&format!("{url}/logs/default/0")).await.0,
        404,
        "default is the default log"
    );

    let (status, position, _) = send(
        reqwest::Method::PUT,
        format!("{url}/logs/orders/consumers/billing"),
        Some(r#"{"offset": 2}"#),
    )
    .await;
    assert_eq!((status, position["lag_records"].as_u64()), (200, Some(1)), "{position}");
    assert_eq!(
        get_json(&format!("{url}/consumers/billing")).await.0,
        404,
        "positions are per log"
    );

    let (status, list) = get_json(&format!("{url}/logs")).await;
    assert_eq!(status, 200);
    assert_eq!(list["logs"][0]["name"], "orders");
    assert_eq!(list["logs"][0]["next_offset"], 3);
    let (status, one) = get_json(&format!("{url}/logs/orders")).await;
    assert_eq!((status, one["next_offset"].as_u64()), (200, Some(3)));
    assert_eq!(one["leader"], Value::Null, "a standalone log has no group");
    let (status, default) = get_json(&format!("{url}/logs/default")).await;
    assert_eq!((status, default["name"].as_str()), (200, Some("default")));

    let (status, _, _) = send(reqwest::Method::DELETE, format!("{url}/logs/orders"), None).await;
    assert_eq!(status, 204);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("logs")).unwrap().collect();
    assert!(left.is_empty(), "its files are gone, not only renamed: {left:?}");
    let (status, body) = get_json(&format!("{url}/logs/orders/0")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("log_not_found")));
    let (status, body, _) = send(reqwest::Method::DELETE, format!("{url}/logs/orders"), None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("log_not_found")));
    assert_eq!(get_json(&format!("{url}/logs")).await.1, json!({"logs": []}));

    assert_eq!(
        put(url, "orders", None).await.0,
        201,
        "a name deleted can be taken again"
    );
    let (status, body) = append(url, "orders", "{}").await;
    assert_eq!(
        (status, body["offset"].as_u64()),
        (201, Some(0)),
        "a new log starts at 0"
    );
}

#[tokio::test]
async fn names_settings_and_limits_are_refused_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.named_logs.max_logs = 2;
    let node = start(config).await;
    let url = &node.url;

    for bad in ["Orders", ".hidden", "a%20b", "default", &"x".repeat(101)] {
        let (status, body) = put(url, bad, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_log_name")),
            "{bad}: {body}"
        );
    }
    let (status, body) = put(url, "a", Some(r#"{"replicas": 3}"#)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("not_enough_nodes")),
        "{body}"
    );
    assert_eq!((body["replicas"].as_u64(), body["nodes"].as_u64()), (Some(3), Some(1)));
    let (status, body) = put(url, "a", Some(r#"{"replicas": 2}"#)).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("replicas")), "{body}");
    let (status, body) = put(url, "a", Some(r#"{"retention_bytes": 0}"#)).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("retention_bytes")),
        "{body}"
    );
    let (status, body) = put(url, "a", Some(r#"{"max_record_bytes": 1099511627776}"#)).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("max_record_bytes")),
        "{body}"
    );
    let (status, body) = put(url, "a", Some(r#"{"colour": "red"}"#)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_json")), "{body}");
    let (status, body) = put(url, "a", Some("{")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_json")), "{body}");

    let (status, body) = append(url, "nope", "{}").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("log_not_found")),
        "no silent creation"
    );
    assert_eq!(get_json(&format!("{url}/logs/nope")).await.0, 404);
    assert_eq!(
        get_json(&format!("{url}/logs/BAD/0")).await.1["code"],
        "invalid_log_name"
    );

    let (status, _) = put(url, "a", Some(r#"{"max_record_bytes": 16}"#)).await;
    assert_eq!(status, 201);
    let (status, body) = append(url, "a", r#"{"far": "more than sixteen bytes"}"#).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("too_large")),
        "the log's own limit"
    );
    assert_eq!(
        common::post_json(url, r#"{"far": "more than sixteen bytes"}"#)
            .await
            .status(),
        201
    );
    assert_eq!(put(url, "b", None).await.0, 201);
    let (status, body) = put(url, "c", None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("too_many_logs")), "{body}");
    assert_eq!(body["max"], 2);

    let patch = |body: &'static str| send(reqwest::Method::PATCH, format!("{url}/logs/a"), Some(body));
    let (status, body, _) = patch(r#"{"replicas": 1}"#).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("replicas")), "{body}");
    let (status, body, _) = patch(r#"{"max_record_bytes": 10}"#).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("max_record_bytes")),
        "{body}"
    );
    let (status, body, _) = send(reqwest::Method::PATCH, format!("{url}/logs/zz"), Some("{}")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("log_not_found")));
}

#[tokio::test]
async fn logs_their_settings_and_records_survive_a_restart_and_leftovers_go() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(common::config(dir.path())).await;
    let url = node.url.clone();
    assert_eq!(put(&url, "orders", Some(r#"{"retention_ms": 86400000}"#)).await.0, 201);
    assert_eq!(put(&url, "audit", None).await.0, 201);
    for _ in 0..5 {
        assert_eq!(append(&url, "orders", r#"{"x":1}"#).await.0, 201);
    }
    node.server.shutdown().await.unwrap();
    // What a crash in the middle of a creation and of a deletion leaves.
    std::fs::create_dir_all(dir.path().join("logs/.creating.half")).unwrap();
    std::fs::create_dir_all(dir.path().join("logs/.deleting.audit-old.17/consumers")).unwrap();

    let node = start(common::config(dir.path())).await;
    let url = &node.url;
    let (status, orders) = get_json(&format!("{url}/logs/orders")).await;
    assert_eq!((status, orders["next_offset"].as_u64()), (200, Some(5)));
    assert_eq!(orders["settings"]["retention_ms"], 86_400_000);
    assert_eq!(get_json(&format!("{url}/logs/audit")).await.0, 200);
    let names: Vec<String> = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "only the two logs remain: {names:?}");
    assert_eq!(append(url, "orders", "{}").await.1["offset"], 5);
}

#[tokio::test]
async fn a_directory_without_settings_is_set_aside_not_served() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs/stray")).unwrap();
    let node = start(common::config(dir.path())).await;
    let (status, body) = get_json(&format!("{}/logs/stray", node.url)).await;
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("stray") && error.contains("no settings"), "{error}");
    assert_eq!(get_json(&format!("{}/logs", node.url)).await.1, json!({"logs": []}));
}

#[tokio::test]
async fn retention_changed_at_run_time_applies_at_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.log.max_segment_bytes = 4096;
    config.log.max_record_bytes = 1024;
    config.retention_check = Duration::from_millis(50);
    let node = start(config).await;
    let url = &node.url;
    assert_eq!(put(url, "small", None).await.0, 201);
    let record = format!(r#"{{"pad":"{}"}}"#, "x".repeat(500));
    for _ in 0..40 {
        assert_eq!(append(url, "small", &record).await.0, 201);
    }
    let lowest = || async { get_json(&format!("{url}/logs/small")).await.1["lowest_offset"].as_u64() };
    assert_eq!(lowest().await, Some(0), "no retention: everything kept");
    let (status, body, _) = send(
        reqwest::Method::PATCH,
        format!("{url}/logs/small"),
        Some(r#"{"retention_bytes": 8192}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["effective"]["retention_bytes"], 8192);
    common::eventually(Duration::from_secs(10), "retention to delete segments", || async {
        lowest().await.unwrap_or(0) > 0
    })
    .await;
    let (_, body, _) = send(
        reqwest::Method::PATCH,
        format!("{url}/logs/small"),
        Some(r#"{"retention_bytes": null}"#),
    )
    .await;
    assert_eq!(
        body["settings"]["retention_bytes"],
        Value::Null,
        "back to the node's flag"
    );
}

#[tokio::test]
async fn auto_create_makes_a_log_on_its_first_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.named_logs.auto_create = true;
    let node = start(config).await;
    let url = &node.url;
    assert_eq!(
        get_json(&format!("{url}/logs/new/0")).await.0,
        404,
        "a read creates nothing"
    );
    let (status, body) = append(url, "new", r#"{"a":1}"#).await;
    assert_eq!((status, body["offset"].as_u64()), (201, Some(0)), "{body}");
    let (status, log) = get_json(&format!("{url}/logs/new")).await;
    assert_eq!((status, log["settings"]["replicas"].as_u64()), (200, Some(1)));
}

#[tokio::test]
async fn metrics_label_each_log() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(common::config(dir.path())).await;
    let url = &node.url;
    assert_eq!(put(url, "orders", None).await.0, 201);
    assert_eq!(append(url, "orders", "{}").await.0, 201);
    assert_eq!(append(url, "orders", "{}").await.0, 201);
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("distlog_log_next_offset{log=\"orders\"} 2\n"), "{text}");
    assert!(text.contains("distlog_log_next_offset{log=\"default\"} 0\n"), "{text}");
    assert!(
        text.contains("distlog_records_appended_total{log=\"orders\"} 2\n"),
        "{text}"
    );
    assert_eq!(text.matches("# TYPE distlog_log_next_offset ").count(), 1, "one family");
    assert!(
        text.contains(r#"route="/logs/{name}/""#),
        "requests labelled by template"
    );
    send(reqwest::Method::DELETE, format!("{url}/logs/orders"), None).await;
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("log=\"orders\""), "a deleted log's series go with it");
}

const ALICE: &str = "alice-token-0123456789abcdef0123456789";
const BOB: &str = "bob-token-0123456789abcdef0123456789ab";
const ROOT: &str = "root-token-0123456789abcdef0123456789a";

async fn as_who(token: &str, method: reqwest::Method, url: String) -> u16 {
    let request = client().request(method.clone(), url).bearer_auth(token);
    let request = match method {
        reqwest::Method::POST => request.header("content-type", "application/json").body("{}"),
        _ => request,
    };
    request.send().await.unwrap().status().as_u16()
}

fn secured(dir: &Path) -> distlog::node::NodeConfig {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let tokens = write("tokens", &format!("alice {ALICE}\nbob {BOB}\nroot {ROOT}\n"));
    let acl = write(
        "acl",
        "alice produce:orders\nalice consume:orders\nbob manage:team-*\nbob consume:team-*\nroot admin\n",
    );
    let mut config = common::config(&dir.join("data"));
    config.security = SecurityConfig {
        token_file: Some(tokens),
        acl_file: Some(acl),
        ..SecurityConfig::default()
    };
    config
}

#[tokio::test]
async fn acl_scopes_limit_actions_to_the_logs_they_name() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let node = start(secured(dir.path())).await;
    let url = &node.url;
    assert_eq!(as_who(ROOT, Method::PUT, format!("{url}/logs/orders")).await, 201);
    assert_eq!(
        as_who(ALICE, Method::PUT, format!("{url}/logs/audit")).await,
        403,
        "no manage"
    );
    assert_eq!(as_who(ROOT, Method::PUT, format!("{url}/logs/audit")).await, 201);

    assert_eq!(as_who(ALICE, Method::POST, format!("{url}/logs/orders/")).await, 201);
    assert_eq!(as_who(ALICE, Method::GET, format!("{url}/logs/orders/0")).await, 200);
    assert_eq!(as_who(ALICE, Method::GET, format!("{url}/logs/orders")).await, 200);
    assert_eq!(as_who(ALICE, Method::POST, format!("{url}/logs/audit/")).await, 403);
    assert_eq!(
        as_who(ALICE, Method::POST, format!("{url}/")).await,
        403,
        "the default log is another"
    );
    assert_eq!(
        as_who(ALICE, Method::GET, format!("{url}/logs")).await,
        403,
        "the list names every log"
    );
    assert_eq!(as_who(ALICE, Method::DELETE, format!("{url}/logs/orders")).await, 403);

    assert_eq!(as_who(BOB, Method::PUT, format!("{url}/logs/team-a")).await, 201);
    assert_eq!(as_who(BOB, Method::PUT, format!("{url}/logs/orders")).await, 403);
    assert_eq!(
        as_who(BOB, Method::GET, format!("{url}/logs/team-a/0")).await,
        404,
        "allowed, empty"
    );
    assert_eq!(
        as_who(BOB, Method::POST, format!("{url}/logs/team-a/")).await,
        403,
        "manage is not produce"
    );
    assert_eq!(as_who(BOB, Method::DELETE, format!("{url}/logs/team-a")).await, 204);
    assert_eq!(as_who(ROOT, Method::GET, format!("{url}/logs")).await, 200);
}

#[tokio::test]
async fn a_log_that_does_not_open_at_start_is_set_aside_and_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(common::config(dir.path())).await;
    assert_eq!(
        put(&node.url, "big", Some(r#"{"max_record_bytes": 100000}"#)).await.0,
        201
    );
    assert_eq!(put(&node.url, "fine", None).await.0, 201);
    node.server.shutdown().await.unwrap();

    // Segments too small for the log's records: its settings no longer open.
    let mut config = common::config(dir.path());
    config.log.max_segment_bytes = 4096;
    config.log.max_record_bytes = 1024;
    let node = start(config).await;
    let url = &node.url;
    assert_eq!(
        get_json(&format!("{url}/logs/fine")).await.0,
        200,
        "the others are served"
    );
    let (status, body) = get_json(&format!("{url}/logs/big")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("storage_unavailable")),
        "{body}"
    );
    assert_eq!(append(url, "big", "{}").await.0, 503);
    assert_eq!(put(url, "big", None).await.0, 503, "not taken while set aside");
    let (status, _, _) = send(reqwest::Method::DELETE, format!("{url}/logs/big"), None).await;
    assert_eq!(status, 204, "a log set aside can be deleted");
    assert_eq!(put(url, "big", None).await.0, 201, "and its name taken again");
}

#[tokio::test]
async fn deleting_a_log_ends_its_event_streams_and_lets_go_of_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(common::config(dir.path())).await;
    let url = node.url.clone();
    assert_eq!(put(&url, "quiet", None).await.0, 201);
    let stream = tokio::spawn({
        let url = url.clone();
        async move {
            let mut response = client()
                .get(format!("{url}/logs/quiet/"))
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            // Heartbeats come and go; the stream ends when its log does.
            while let Ok(Some(_)) = response.chunk().await {}
        }
    });
    common::eventually(Duration::from_secs(5), "the event stream to be open", || async {
        let text = client()
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .any(|l| l.starts_with("distlog_sse_subscribers ") && !l.ends_with(" 0"))
    })
    .await;
    let (status, _, _) = send(reqwest::Method::DELETE, format!("{url}/logs/quiet"), None).await;
    assert_eq!(status, 204);
    tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("the event stream ends with its log")
        .unwrap();

    // Files open under this node's logs/ (other tests share the process's fds).
    let logs_dir = dir.path().join("logs");
    let held = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.starts_with(&logs_dir))
            .count()
    };
    for i in 0..30 {
        let name = format!("cycle-{i}");
        assert_eq!(put(&url, &name, None).await.0, 201);
        assert_eq!(append(&url, &name, "{}").await.0, 201);
        let (status, _, _) = send(reqwest::Method::DELETE, format!("{url}/logs/{name}"), None).await;
        assert_eq!(status, 204);
    }
    assert_eq!(held(), 0, "deleted logs hold no files");
}
