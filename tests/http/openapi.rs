//! `openapi.yaml` against the running server: every documented path
//! exists, every answer's status is documented for its operation, and JSON
//! bodies carry what their schema requires.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{client, post_json, start_in};
use serde_json::Value;

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn resolve<'a>(spec: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(
                spec,
                spec.pointer(pointer).unwrap_or_else(|| panic!("dangling {reference}")),
            )
        }
        None => node,
    }
}

/// Checks `value` against the parts of JSON Schema the spec uses.
fn conforms(spec: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    let schema = resolve(spec, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            conforms(spec, part, value)?;
        }
    }
    if let Some(any) = schema.get("oneOf").and_then(Value::as_array)
        && !any.iter().any(|part| conforms(spec, part, value).is_ok())
    {
        return Err(format!("{value} matches none of oneOf"));
    }
    let nullable = schema.get("nullable") == Some(&Value::Bool(true));
    match schema.get("type").and_then(Value::as_str) {
        Some(_) if nullable && value.is_null() => return Ok(()),
        Some("object") if !value.is_object() => return Err(format!("{value} is not an object")),
        Some("array") if !value.is_array() => return Err(format!("{value} is not an array")),
        Some("integer") if !value.is_u64() => return Err(format!("{value} is not an integer")),
        Some("string") if !value.is_string() => return Err(format!("{value} is not a string")),
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{value} is not one of {allowed:?}"));
    }
    for key in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        let key = key.as_str().unwrap();
        if value.get(key).is_none() {
            return Err(format!("{value} lacks required {key}"));
        }
    }
    if let (Some(properties), Some(object)) = (schema.get("properties").and_then(Value::as_object), value.as_object()) {
        for (key, property) in properties {
            if let Some(field) = object.get(key) {
                conforms(spec, property, field).map_err(|e| format!("{key}: {e}"))?;
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for item in array {
            conforms(spec, items, item)?;
        }
    }
    Ok(())
}

/// Checks one live answer against the operation `method path` of the spec.
async fn check(spec: &Value, path: &str, method: &str, response: reqwest::Response) {
    let status = response.status().as_u16().to_string();
    let operation = &spec["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let documented = operation["responses"]
        .get(&status)
        .unwrap_or_else(|| panic!("{method} {path} answered {status}, which the spec does not list"));
    let documented = resolve(spec, documented);
    if status == "204" {
        return;
    }
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .unwrap_or_default();
    let content = &documented["content"];
    assert!(
        content.get(&content_type).is_some(),
        "{method} {path} {status} answered {content_type}, documented {content}"
    );
    if content_type == "application/json" {
        let body: Value = response.json().await.unwrap();
        conforms(spec, &content[&content_type]["schema"], &body)
            .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}"));
    }
}

#[tokio::test]
async fn the_spec_describes_the_running_server() {
    let spec = spec();
    let documented: BTreeSet<&str> = spec["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    let served = BTreeSet::from([
        "/",
        "/{offset}",
        "/status",
        "/healthz",
        "/readyz",
        "/metrics",
        "/replication/frames",
        "/cluster",
        "/cluster/join",
        "/cluster/members/{id}",
        "/cluster/leader",
        "/consumers",
        "/consumers/{name}",
        "/logs",
        "/logs/{name}",
        "/logs/{name}/",
        "/logs/{name}/{offset}",
        "/logs/{name}/consumers",
        "/logs/{name}/consumers/{consumer}",
        "/logs/{name}/replication/frames",
        "/ui",
        "/ui/",
        "/ui/{asset}",
    ]);
    assert_eq!(documented, served, "paths in openapi.yaml and the router differ");

    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let url = node.url.as_str();
    let c = client();
    check(&spec, "/", "post", post_json(url, r#"{"event":"signup"}"#).await).await;
    let ndjson = c
        .post(format!("{url}/"))
        .header("content-type", "application/x-ndjson")
        .body("1\n2\n");
    check(&spec, "/", "post", ndjson.send().await.unwrap()).await;
    let binary = c
        .post(format!("{url}/"))
        .header("content-type", "application/octet-stream")
        .body(vec![1u8, 2, 3]);
    check(&spec, "/", "post", binary.send().await.unwrap()).await;
    for (content_type, body) in [("application/json", "{"), ("text/plain", "x"), ("application/json", "")] {
        let bad = c
            .post(format!("{url}/"))
            .header("content-type", content_type)
            .body(body);
        check(&spec, "/", "post", bad.send().await.unwrap()).await;
    }
    for query in [
        "",
        "?from=0&limit=2",
        "?from=99",
        "?limit=x",
        "?from=4&wait_ms=10",
        "?from=0&limit=99999999999999999999",
        "?from=99999999999999999999",
        "?from_timestamp=0",
        "?from_timestamp=99999999999999999999&wait_ms=10",
        "?from_timestamp=x",
        "?tail=2",
        "?tail=0",
        "?from=0&from_timestamp=0",
        "?tail=1&from=0",
    ] {
        check(&spec, "/", "get", c.get(format!("{url}/{query}")).send().await.unwrap()).await;
    }
    for offset in ["0", "3", "99", "x"] {
        check(
            &spec,
            "/{offset}",
            "get",
            c.get(format!("{url}/{offset}")).send().await.unwrap(),
        )
        .await;
    }
    let raw = c.get(format!("{url}/3")).header("accept", "application/octet-stream");
    check(&spec, "/{offset}", "get", raw.send().await.unwrap()).await;
    for path in ["/status", "/healthz", "/readyz", "/metrics"] {
        check(&spec, path, "get", c.get(format!("{url}{path}")).send().await.unwrap()).await;
    }
    let cross_origin = c
        .post(format!("{url}/"))
        .header("origin", "https://elsewhere.example")
        .body("{}");
    check(&spec, "/", "post", cross_origin.send().await.unwrap()).await;
    for path in ["/", "/{offset}"] {
        let options = c.request(
            reqwest::Method::OPTIONS,
            format!("{url}{}", path.replace("{offset}", "3")),
        );
        check(&spec, path, "options", options.send().await.unwrap()).await;
        let preflight = c
            .request(reqwest::Method::OPTIONS, format!("{url}/"))
            .header("origin", "https://elsewhere.example")
            .header("access-control-request-method", "POST");
        check(&spec, path, "options", preflight.send().await.unwrap()).await;
    }
    for query in [
        "?from=0",
        "?from=99",
        "",
        "?from=0&max_bytes=10&wait_ms=5",
        "?from=0&max_bytes=0",
        "?from=0&max_records=0",
    ] {
        let response = c.get(format!("{url}/replication/frames{query}")).send().await.unwrap();
        check(&spec, "/replication/frames", "get", response).await;
    }
    for (template, path) in [
        ("/ui", "/ui"),
        ("/ui/", "/ui/"),
        ("/ui/{asset}", "/ui/main.js"),
        ("/ui/{asset}", "/ui/console.css"),
        ("/ui/{asset}", "/ui/no-such-file.js"),
    ] {
        check(
            &spec,
            template,
            "get",
            c.get(format!("{url}{path}")).send().await.unwrap(),
        )
        .await;
    }
    // A standalone node has no cluster: 404 not_a_cluster.
    check(
        &spec,
        "/cluster",
        "get",
        c.get(format!("{url}/cluster")).send().await.unwrap(),
    )
    .await;
    let join = c.post(format!("{url}/cluster/join")).body(r#"{"url":"http://x"}"#);
    check(&spec, "/cluster/join", "post", join.send().await.unwrap()).await;
    check_consumers(&spec, url).await;
    check_named_logs(&spec, url).await;
}

/// Every answer of the named-log routes: creation, refusals, records, deletion.
async fn check_named_logs(spec: &Value, url: &str) {
    let c = client();
    let with_body = |method: reqwest::Method, path: &str, body: &str| {
        c.request(method, format!("{url}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    use reqwest::Method;
    for (name, body) in [
        ("orders", ""),
        ("orders", "{}"),
        ("orders", r#"{"retention_ms": 5}"#),
        ("x", r#"{"replicas": 3}"#),
        ("x", r#"{"replicas": 2}"#),
        ("x", "{"),
        ("Bad", "{}"),
        ("default", "{}"),
    ] {
        let response = with_body(Method::PUT, &format!("/logs/{name}"), body).await.unwrap();
        check(spec, "/logs/{name}", "put", response).await;
    }
    for body in [r#"{"retention_bytes": 4096}"#, r#"{"replicas": 1}"#, "{"] {
        let response = with_body(Method::PATCH, "/logs/orders", body).await.unwrap();
        check(spec, "/logs/{name}", "patch", response).await;
    }
    for path in ["/logs/orders", "/logs/default", "/logs/nope", "/logs/Bad"] {
        check(
            spec,
            "/logs/{name}",
            "get",
            c.get(format!("{url}{path}")).send().await.unwrap(),
        )
        .await;
    }
    check(spec, "/logs", "get", c.get(format!("{url}/logs")).send().await.unwrap()).await;
    for (name, body) in [("orders", r#"{"a":1}"#), ("orders", "{"), ("nope", "{}")] {
        let response = with_body(Method::POST, &format!("/logs/{name}/"), body).await.unwrap();
        check(spec, "/logs/{name}/", "post", response).await;
    }
    for query in ["", "?from=0", "?from=99", "?limit=x"] {
        let response = c.get(format!("{url}/logs/orders/{query}")).send().await.unwrap();
        check(spec, "/logs/{name}/", "get", response).await;
    }
    for path in ["/logs/orders/0", "/logs/orders/9", "/logs/orders/x", "/logs/nope/0"] {
        let response = c.get(format!("{url}{path}")).send().await.unwrap();
        check(spec, "/logs/{name}/{offset}", "get", response).await;
    }
    let response = with_body(Method::PUT, "/logs/orders/consumers/a", r#"{"offset": 1}"#)
        .await
        .unwrap();
    check(spec, "/logs/{name}/consumers/{consumer}", "put", response).await;
    let response = c.get(format!("{url}/logs/orders/consumers")).send().await.unwrap();
    check(spec, "/logs/{name}/consumers", "get", response).await;
    let response = c
        .get(format!("{url}/logs/orders/replication/frames?from=0"))
        .send()
        .await
        .unwrap();
    check(spec, "/logs/{name}/replication/frames", "get", response).await;
    for _ in 0..2 {
        let response = c.delete(format!("{url}/logs/orders")).send().await.unwrap();
        check(spec, "/logs/{name}", "delete", response).await;
    }
}

/// Every answer of the consumer routes, on a log of a few records.
async fn check_consumers(spec: &Value, url: &str) {
    let c = client();
    let put = |name: &str, body: &str| {
        c.put(format!("{url}/consumers/{name}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    for (name, body) in [
        ("a", r#"{"offset": 1}"#),
        ("a", r#"{"offset": 2, "expected": 0}"#),
        ("a", r#"{"offset": 2, "expected": 1}"#),
        ("a", r#"{"offset": 99999}"#),
        ("a", "{"),
        ("a%20b", r#"{"offset": 1}"#),
    ] {
        check(spec, "/consumers/{name}", "put", put(name, body).await.unwrap()).await;
    }
    let huge = format!(r#"{{"offset": 1, "x": "{}"}}"#, "x".repeat(5000));
    check(spec, "/consumers/{name}", "put", put("a", &huge).await.unwrap()).await;
    for name in ["a", "nobody", "a%20b"] {
        let get = c.get(format!("{url}/consumers/{name}")).send().await.unwrap();
        check(spec, "/consumers/{name}", "get", get).await;
    }
    check(
        spec,
        "/consumers",
        "get",
        c.get(format!("{url}/consumers")).send().await.unwrap(),
    )
    .await;
    for name in ["a", "a"] {
        let delete = c.delete(format!("{url}/consumers/{name}")).send().await.unwrap();
        check(spec, "/consumers/{name}", "delete", delete).await;
    }
}

/// A one-node cluster (`--peers` naming only itself) answers as documented:
/// the cluster routes, skipped offsets, the cluster's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_describes_a_cluster_node() {
    let spec = spec();
    let dir = tempfile::tempdir().unwrap();
    let port = common::cluster::free_ports(1)[0];
    let url = format!("http://127.0.0.1:{port}");
    let mut config = common::config(dir.path());
    config.mode = distlog::mode::ModeConfig::Member(Box::new(distlog::mode::ClusterSettings {
        peers: vec![url.clone()],
        advertise_url: None,
        peer_advertise_url: None,
        routes: Default::default(),
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
        write_timeout: Duration::from_secs(5),
        ready_lag: 2000,
        replica_timeout: Duration::from_secs(600),
        bootstrap_expect: None,
        rejoin: false,
        forward_writes: false,
        append_window: 8,
        peer_client: distlog::replication::FollowConfig::new(""),
    }));
    let _node = common::start_on(config, format!("127.0.0.1:{port}").parse().unwrap()).await;
    let c = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let view: Value = loop {
        let view: Value = c
            .get(format!("{url}/cluster"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if view["leader_id"].is_u64() && c.get(format!("{url}/readyz")).send().await.unwrap().status() == 200 {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a one-node cluster elects itself: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = view["node_id"].as_u64().unwrap();
    check(
        &spec,
        "/cluster",
        "get",
        c.get(format!("{url}/cluster")).send().await.unwrap(),
    )
    .await;
    check(&spec, "/", "post", post_json(&url, r#"{"event":"clustered"}"#).await).await;
    // Offset 0 is the membership entry the cluster was formed with.
    let control = c.get(format!("{url}/0")).send().await.unwrap();
    assert_eq!(control.status(), 404);
    check(
        &spec,
        "/{offset}",
        "get",
        c.get(format!("{url}/0")).send().await.unwrap(),
    )
    .await;
    check(&spec, "/", "get", c.get(format!("{url}/?from=0")).send().await.unwrap()).await;
    for path in ["/status", "/readyz", "/metrics"] {
        check(&spec, path, "get", c.get(format!("{url}{path}")).send().await.unwrap()).await;
    }
    let to_self = c
        .post(format!("{url}/cluster/leader"))
        .body(format!(r#"{{"id":{id}}}"#));
    check(&spec, "/cluster/leader", "post", to_self.send().await.unwrap()).await;
    let to_nobody = c.post(format!("{url}/cluster/leader")).body(r#"{"id":1}"#);
    check(&spec, "/cluster/leader", "post", to_nobody.send().await.unwrap()).await;
    let remove = c.delete(format!("{url}/cluster/members/1"));
    check(&spec, "/cluster/members/{id}", "delete", remove.send().await.unwrap()).await;
    let bad = c.delete(format!("{url}/cluster/members/x"));
    check(&spec, "/cluster/members/{id}", "delete", bad.send().await.unwrap()).await;
    let bad_join = c.post(format!("{url}/cluster/join")).body(r#"{"url":"ftp://x"}"#);
    check(&spec, "/cluster/join", "post", bad_join.send().await.unwrap()).await;
}
