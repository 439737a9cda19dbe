//! The harness the area binaries share (each has `#[path] mod common`):
//! real servers on ephemeral ports (here), raw HTTP, clusters of real
//! processes behind fault proxies, load writers and the history checker.
// Each area binary compiles all of it and uses its own part (the http
// binary no cluster, the cluster binary no in-process server): what one
// leaves unused another uses.
#![allow(dead_code)]

pub mod checker;
pub mod cluster;
pub mod fault_proxy;
pub mod raw_http;
pub mod rt;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use distlog::log::Durability;
use distlog::replication::FollowConfig;
use distlog::server::{Server, ServerConfig};

pub struct Node {
    pub server: Server,
    pub url: String,
    pub dir: PathBuf,
}

pub fn config(dir: &Path) -> ServerConfig {
    let mut config = ServerConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.log.durability = Durability::Never;
    config.shutdown_grace = Duration::from_secs(5);
    config
}

pub async fn start(config: ServerConfig) -> Node {
    let dir = config.data_dir.clone();
    let server = Server::start(config).await.expect("server starts");
    let url = format!("http://{}", server.local_addr());
    Node { server, url, dir }
}

pub async fn start_in(dir: &Path) -> Node {
    start(config(dir)).await
}

pub fn follower_config(dir: &Path, leader: &str) -> ServerConfig {
    let mut follow = FollowConfig::new(leader);
    follow.poll_wait = Duration::from_millis(500);
    follow.backoff = (Duration::from_millis(20), Duration::from_millis(200));
    ServerConfig {
        follow: Some(follow),
        ..config(dir)
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn post_json(url: &str, body: &str) -> reqwest::Response {
    client()
        .post(format!("{url}/"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Polls `check` until it holds or `timeout` passes (then panics with `what`).
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

pub async fn status(url: &str) -> serde_json::Value {
    get_json(&format!("{url}/status")).await.1
}

/// The node's `next_offset` (from `/status`).
pub async fn next_offset(url: &str) -> u64 {
    status(url).await["next_offset"].as_u64().unwrap()
}
