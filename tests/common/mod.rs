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
pub mod small_disk;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use distlog::log::Durability;
use distlog::mode::ModeConfig;
use distlog::node::{Node as Server, NodeConfig};
use distlog::replication::FollowConfig;

pub struct Node {
    pub server: Server,
    pub url: String,
    pub dir: PathBuf,
}

pub fn config(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.log.durability = Durability::Never;
    config.shutdown_grace = Duration::from_secs(5);
    config
}

/// Starts a node on an ephemeral port.
pub async fn start(config: NodeConfig) -> Node {
    start_on(config, "127.0.0.1:0".parse().unwrap()).await
}

/// Binds `addr` (to start again where a node was) and starts a node there.
pub async fn start_on(config: NodeConfig, addr: std::net::SocketAddr) -> Node {
    let dir = config.data_dir.clone();
    let server = Server::start(config, listener(addr).await)
        .await
        .expect("server starts");
    let url = format!("http://{}", server.local_addr());
    Node { server, url, dir }
}

pub async fn start_in(dir: &Path) -> Node {
    start(config(dir)).await
}

/// A listener on `addr`, as the binary binds `--listen`.
pub async fn listener(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(addr).await.expect("bind")
}

/// The replica settings of a node started with `follower_config`.
pub fn follow_mut(config: &mut NodeConfig) -> &mut FollowConfig {
    match &mut config.mode {
        ModeConfig::Replica(follow) => follow,
        _ => panic!("not a replica's config"),
    }
}

pub fn follower_config(dir: &Path, leader: &str) -> NodeConfig {
    let mut follow = FollowConfig::new(leader);
    follow.poll_wait = Duration::from_millis(500);
    follow.backoff = (Duration::from_millis(20), Duration::from_millis(200));
    NodeConfig {
        mode: ModeConfig::Replica(follow),
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
