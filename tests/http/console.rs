//! The web console's serving side (`/ui`, see `api::console`): the page and
//! its files with their types and security headers, revalidation, `--no-ui`,
//! and the console's own writes passing the Origin check while other
//! origins' stay refused. The page itself is tested in a real browser by
//! `scripts/browser-tests.sh`.

use crate::common;

use common::{client, config, next_offset, start, start_in};
use distlog::api::CONTENT_SECURITY_POLICY;

async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_page_is_html_with_a_strict_policy_at_ui_and_ui_slash() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    for path in ["/ui", "/ui/"] {
        let page = get(&format!("{}{path}", node.url)).await;
        assert_eq!(page.status(), 200, "{path}");
        assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&page, "x-content-type-options"), "nosniff");
        assert_eq!(header(&page, "cross-origin-resource-policy"), "same-origin");
        assert_eq!(header(&page, "x-frame-options"), "DENY");
        let policy = header(&page, "content-security-policy").to_string();
        assert_eq!(policy, CONTENT_SECURITY_POLICY);
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(rule), "{rule} missing from {policy}");
        }
        assert!(
            !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
            "{policy}"
        );
        assert_eq!(header(&page, "cache-control"), "no-cache");
        let body = page.text().await.unwrap();
        assert!(body.starts_with("<!doctype html>"), "{body}");
        assert!(body.contains(r#"<script type="module" src="/ui/main.js">"#), "{body}");
    }
}

#[tokio::test]
async fn assets_have_their_content_types_and_unknown_ones_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    for (asset, content_type) in [
        ("main.js", "text/javascript; charset=utf-8"),
        ("render.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = get(&format!("{}/ui/{asset}", node.url)).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert_eq!(header(&response, "content-type"), content_type, "{asset}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff", "{asset}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{asset}");
    }
    for missing in ["/ui/nope.js", "/ui/main.js/x", "/ui/MAIN.JS", "/ui/%2e%2e%2fCargo.toml"] {
        let response = get(&format!("{}{missing}", node.url)).await;
        assert_eq!(response.status(), 404, "{missing}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{missing}");
    }
}

#[tokio::test]
async fn an_unchanged_file_is_revalidated_with_its_etag() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let url = format!("{}/ui/main.js", node.url);
    let first = get(&url).await;
    let etag = header(&first, "etag").to_string();
    let again = client().get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag"), etag);
    let stale = client()
        .get(&url)
        .header("if-none-match", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    let other = get(&format!("{}/ui/console.css", node.url)).await;
    assert_ne!(header(&other, "etag"), etag);
}

#[tokio::test]
async fn no_ui_turns_the_console_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut off = config(dir.path());
    off.console = false;
    let node = start(off).await;
    for path in ["/ui", "/ui/", "/ui/main.js"] {
        let response = get(&format!("{}{path}", node.url)).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{path}");
    }
    assert_eq!(get(&format!("{}/status", node.url)).await.status(), 200);
}

#[tokio::test]
async fn the_console_writes_as_its_own_origin_and_other_origins_stay_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let host = node.url.trim_start_matches("http://").to_string();
    let post = |origin: String, host: Option<String>| {
        let mut request = client()
            .post(format!("{}/", node.url))
            .header("content-type", "application/json")
            .header("origin", origin)
            .body(r#"{"from":"the console"}"#);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.send()
    };
    // The page at http://<host>/ui posts to the same host: accepted.
    let own = post(format!("http://{host}"), None).await.unwrap();
    assert_eq!(own.status(), 201);
    assert!(own.headers().get("access-control-allow-origin").is_none());
    let upper = post(format!("http://{}", host.to_uppercase()), None).await.unwrap();
    assert_eq!(upper.status(), 201, "host names compare without case");
    assert_eq!(next_offset(&node.url).await, 2);
    // Another host, another port, or a Host that names another site: refused.
    let port = host.rsplit_once(':').unwrap().1;
    for (origin, host_header) in [
        ("https://evil.example".to_string(), None),
        (format!("http://evil.example:{port}"), None),
        ("http://127.0.0.1:1".to_string(), None),
        (format!("http://{host}.evil.example"), None),
        ("null".to_string(), None),
        (format!("http://{host}"), Some("evil.example".to_string())),
        // DNS rebinding: a page on a name pointed at this node is "same-origin" by name.
        (
            format!("http://rebound.example:{port}"),
            Some(format!("rebound.example:{port}")),
        ),
    ] {
        let response = post(origin.clone(), host_header.clone()).await.unwrap();
        assert_eq!(response.status(), 403, "{origin} with Host {host_header:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "cross_origin", "{origin}");
    }
    assert_eq!(next_offset(&node.url).await, 2, "no refused write landed");
    // A console reached by name writes once its origin is allowed.
    let dir = tempfile::tempdir().unwrap();
    let mut named = config(dir.path());
    named.cors_origins = distlog::api::AllowedOrigins::parse(["http://node1.example:8080"]).unwrap();
    let node = start(named).await;
    let response = client()
        .post(format!("{}/", node.url))
        .header("host", "node1.example:8080")
        .header("origin", "http://node1.example:8080")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn the_console_is_open_but_the_api_it_reads_still_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "operator console-0123456789abcdef0123456789abcdef\n").unwrap();
    let mut secured = config(&dir.path().join("data"));
    secured.security.token_file = Some(tokens);
    let node = start(secured).await;
    assert_eq!(get(&format!("{}/ui", node.url)).await.status(), 200);
    assert_eq!(get(&format!("{}/ui/api.js", node.url)).await.status(), 200);
    assert_eq!(get(&format!("{}/status", node.url)).await.status(), 401);
    let signed = client()
        .get(format!("{}/status", node.url))
        .header("authorization", "Bearer console-0123456789abcdef0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
}
