//! Peers on a port of their own (`--peer-listen`): a client that holds
//! every `--max-connections` on the followers cannot keep them from
//! electing a new leader, as it does when peers and clients share the port
//! and its cap; the peer-only routes answer 404 on the client port; the
//! peer port asks for the peer token like the client port did.
//!
//! The nodes are spawned here rather than by `TestCluster`, whose proxies
//! and routes know one URL a node.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::cluster::{exclusive, free_ports};
use common::raw_http::{content_length, read_head};

/// The client connection cap of every node in these tests.
const MAX_CONNECTIONS: usize = 8;

/// Three `distlog serve --peers` processes, killed on drop.
struct Nodes {
    dir: std::path::PathBuf,
    children: Vec<Option<Child>>,
    urls: Vec<String>,
    /// Each node's peer URL while it serves one.
    peer_urls: Vec<Option<String>>,
    /// The peer URL each node has when it serves one (ports picked up front).
    reserved_peer_urls: Vec<String>,
    seeds: Vec<String>,
    extra: Vec<String>,
    logs: Vec<std::path::PathBuf>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for log in &self.logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(400).collect();
                eprintln!("==== {} ====", log.display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

impl Nodes {
    /// Starts three nodes in `dir`. With `peer_port`, each serves its peers
    /// on a port of its own, and the seeds are those peer URLs when
    /// `seeds_are_peer_urls` (else the client URLs).
    fn start(dir: &Path, peer_port: bool, seeds_are_peer_urls: bool, extra: &[String]) -> Nodes {
        let ports = free_ports(6);
        let urls: Vec<String> = ports[..3].iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        let reserved_peer_urls: Vec<String> = ports[3..].iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        let seeds: Vec<String> = match seeds_are_peer_urls {
            true => reserved_peer_urls.clone(),
            false => urls.clone(),
        };
        let mut nodes = Nodes {
            dir: dir.to_path_buf(),
            children: (0..3).map(|_| None).collect(),
            urls,
            peer_urls: vec![None; 3],
            reserved_peer_urls,
            seeds,
            extra: extra.to_vec(),
            logs: (0..3).map(|i| dir.join(format!("node{i}.log"))).collect(),
        };
        for i in 0..3 {
            nodes.spawn(i, peer_port);
        }
        nodes
    }

    /// Starts node `i` (again, on its data directory), with a peer port or
    /// without (its `peer_urls` entry then None).
    fn spawn(&mut self, i: usize, peer_port: bool) {
        let url = &self.urls[i];
        let listen = |url: &str| url.trim_start_matches("http://").to_string();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.logs[i])
            .expect("a node log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_distlog"));
        command
            .arg("serve")
            .args(["--listen", &listen(url)])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{i}-data")))
            .args(["--peers", &self.seeds.join(",")])
            .args(["--advertise-url", url])
            .args(["--max-connections", &MAX_CONNECTIONS.to_string()])
            // Connections peers pooled while the cluster formed are
            // closed soon: an election needs new ones.
            .args(["--idle-timeout-ms", "2s"])
            // The client's silent connections are held, not timed out.
            .args(["--header-timeout-ms", "60s"])
            .args(["--election-timeout-min-ms", "300", "--election-timeout-max-ms", "600"])
            .args(["--heartbeat-ms", "75"])
            .args(&self.extra)
            .env("RUST_LOG", "info,distlog::access=off")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("a log handle")))
            .stderr(Stdio::from(file));
        self.peer_urls[i] = peer_port.then(|| self.reserved_peer_urls[i].clone());
        if let Some(peer_url) = &self.peer_urls[i] {
            command.args(["--peer-listen", &listen(peer_url)]);
        }
        self.children[i] = Some(command.spawn().expect("distlog starts"));
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.logs[i]).unwrap_or_default()
    }
}

/// A keep-alive connection of the test's own to a node's client port,
/// opened before the client fills the port: the test asks through it while
/// every other connection is refused.
struct Probe(TcpStream);

impl Probe {
    async fn open(url: &str) -> Probe {
        let addr = url.trim_start_matches("http://");
        Probe(TcpStream::connect(addr).await.expect("the probe connects"))
    }

    /// One request on the connection: the status and the JSON body.
    async fn ask(&mut self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.0.write_all(request.as_bytes()).await.expect("the probe sends");
        let head = read_head(&mut self.0).await;
        let mut answer = vec![0u8; content_length(&head)];
        self.0.read_exact(&mut answer).await.expect("the probe reads");
        let status = head[9..12].parse().expect("a status code");
        (status, serde_json::from_slice(&answer).unwrap_or(Value::Null))
    }

    async fn cluster(&mut self) -> Value {
        let (status, body) = self.ask("GET", "/cluster", "").await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Until `deadline`: the leader every probe names, once they agree on one
/// (its node id) other than the one at `not`, polling often enough to keep
/// the probes open.
async fn agreed_leader(probes: &mut [Probe], not: Option<&str>, deadline: Instant) -> Option<(u64, String)> {
    loop {
        let mut named = Vec::new();
        for probe in probes.iter_mut() {
            let view = probe.cluster().await;
            named.push((
                view["leader_id"].as_u64(),
                view["leader_url"].as_str().map(str::to_string),
            ));
        }
        if let Some((Some(id), Some(url))) = named.first().cloned()
            && named.iter().all(|(other, _)| *other == Some(id))
            && Some(url.as_str()) != not
        {
            return Some((id, url));
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that holds every connection it can get on `url`: it connects
/// again and again, and keeps each connection the node serves (saying
/// nothing); those it is refused (503) close. Ends when the task is aborted.
fn fill(url: &str) -> tokio::task::JoinHandle<()> {
    let addr = url.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        let mut held = tokio::task::JoinSet::new();
        loop {
            if let Ok(mut stream) = TcpStream::connect(&addr).await {
                held.spawn(async move {
                    // Returns when the node answers (503) or closes it.
                    let mut byte = [0u8; 1];
                    let _ = stream.read(&mut byte).await;
                });
            }
            while held.try_join_next().is_some() {}
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Whether one more connection to `url` is refused with 503.
async fn refused(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let mut answer = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut answer)).await,
        Ok(Ok(_)) if answer.ends_with(b"503")
    )
}

/// Forms a cluster, fills both followers' client ports, kills the leader:
/// the leader the two followers then agree on within 10 s, if any, and the
/// followers' probes.
async fn fill_followers_and_kill_the_leader(nodes: &mut Nodes) -> (Option<(u64, String)>, Vec<Probe>, Vec<usize>) {
    let mut probes = Vec::new();
    for url in &nodes.urls {
        probes.push(probe_when_up(url).await);
    }
    let (_, leader_url) = agreed_leader(&mut probes, None, Instant::now() + Duration::from_secs(30))
        .await
        .expect("the cluster forms and elects a leader");
    let leader = nodes.urls.iter().position(|u| *u == leader_url).expect("a node's URL");
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // Connections the followers pooled between them while the cluster
    // formed idle out (--idle-timeout-ms 2s): the election must open new ones.
    let idle_out = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < idle_out {
        for probe in probes.iter_mut() {
            probe.cluster().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fillers: Vec<_> = followers.iter().map(|f| fill(&nodes.urls[*f])).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut full = true;
        for f in &followers {
            full &= refused(&nodes.urls[*f]).await;
        }
        if full {
            break;
        }
        assert!(Instant::now() < deadline, "the followers' client ports never filled");
        for probe in probes.iter_mut() {
            probe.cluster().await;
        }
    }
    nodes.kill(leader);
    let killed = Instant::now();
    let mut follower_probes: Vec<Probe> = Vec::new();
    for (i, probe) in probes.into_iter().enumerate() {
        if i != leader {
            follower_probes.push(probe);
        }
    }
    let elected = agreed_leader(
        &mut follower_probes,
        Some(&leader_url),
        Instant::now() + Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "peer_port: after the leader was killed: {} in {} ms",
        elected.as_ref().map_or("no leader", |_| "a new leader"),
        killed.elapsed().as_millis()
    );
    for filler in &fillers {
        assert!(!filler.is_finished(), "the client kept filling");
    }
    // The client goes on holding the ports while the caller checks.
    std::mem::forget(fillers);
    (elected, follower_probes, followers)
}

/// A probe on `url` once the node answers there, and has started (a
/// member answers 503 `starting` until then).
async fn probe_when_up(url: &str) -> Probe {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = url.trim_start_matches("http://");
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut probe = Probe::open(url).await;
    loop {
        let (status, body) = probe.ask("GET", "/cluster", "").await;
        if !(status == 503 && body["code"] == "starting") {
            return probe;
        }
        assert!(Instant::now() < deadline, "{url} did not start: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (~13 s): scripts/slow-tests.sh runs it"]
async fn a_client_holding_the_followers_client_connections_does_not_cost_quorum_with_a_peer_port() {
    let _exclusive = exclusive().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Seeds given as the peer URLs: formation finds the nodes there.
    let mut nodes = Nodes::start(dir.path(), true, true, &[]);
    let (elected, mut probes, followers) = fill_followers_and_kill_the_leader(&mut nodes).await;
    let (_, leader_url) = elected.expect("the followers elect a leader over their peer port");
    let new_leader = followers
        .iter()
        .position(|f| nodes.urls[*f] == leader_url)
        .expect("a follower leads");
    // And it commits: a write through the test's own connection.
    let (status, body) = probes[new_leader].ask("POST", "/", r#"{"after":"failover"}"#).await;
    assert_eq!(status, 201, "{body}");
    let view = probes[new_leader].cluster().await;
    for member in view["members"].as_array().expect("members") {
        let i = nodes
            .urls
            .iter()
            .position(|u| Some(u.as_str()) == member["url"].as_str());
        let i = i.expect("a node's URL");
        assert_eq!(member["peer_url"].as_str(), nodes.peer_urls[i].as_deref(), "{view}");
    }
}

/// The same on main's design: peers and clients share the port and its
/// cap, and the followers refuse each other's votes (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (~14 s): scripts/slow-tests.sh runs it"]
async fn without_a_peer_port_a_client_holding_the_followers_connections_costs_quorum() {
    let _exclusive = exclusive().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = Nodes::start(dir.path(), false, false, &[]);
    let (elected, _probes, followers) = fill_followers_and_kill_the_leader(&mut nodes).await;
    assert_eq!(
        elected, None,
        "no leader while the client holds the followers' connections"
    );
    let refused_peer = followers.iter().any(|f| nodes.log(*f).contains("too_many_connections"));
    assert!(
        refused_peer,
        "a follower says its peer refused it with 503 too_many_connections"
    );
}

const PEER_TOKEN: &str = "peer-token-0123456789abcdef0123456789abcdef";
const WRITER_TOKEN: &str = "writer-token-0123456789abcdef0123456789abcd";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_routes_are_served_on_the_peer_port_only_and_still_need_the_peer_token() {
    let _exclusive = exclusive().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    let acl = dir.path().join("acl");
    let peer_token = dir.path().join("peer-token");
    std::fs::write(&tokens, format!("peer {PEER_TOKEN}\nwriter {WRITER_TOKEN}\n")).expect("tokens");
    std::fs::write(&acl, "peer cluster\nwriter produce\nwriter consume\n").expect("acl");
    std::fs::write(&peer_token, PEER_TOKEN).expect("peer token");
    let path = |p: &Path| p.display().to_string();
    let extra = [
        "--token-file".to_string(),
        path(&tokens),
        "--acl".into(),
        path(&acl),
        "--peer-token-file".into(),
        path(&peer_token),
    ];
    // Seeds given as the client URLs: formation finds the nodes there too.
    let nodes = Nodes::start(dir.path(), true, false, &extra);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let answer = http
            .get(format!("{}/cluster", nodes.urls[0]))
            .bearer_auth(WRITER_TOKEN)
            .send()
            .await;
        if let Ok(answer) = answer
            && answer.status() == 200
        {
            let view: Value = answer.json().await.expect("JSON");
            if view["leader_id"].is_u64() && view["members"].as_array().is_some_and(|m| m.len() == 3) {
                break view;
            }
        }
        assert!(Instant::now() < deadline, "no leader with three members");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["peer_url"].as_str(), nodes.peer_urls[0].as_deref(), "{view}");

    // On the client port, the peer-only routes are elsewhere, even to a peer.
    for (method, route) in [
        (reqwest::Method::POST, "/raft/vote"),
        (reqwest::Method::POST, "/raft/pre-vote"),
        (reqwest::Method::POST, "/raft/append"),
        (reqwest::Method::POST, "/cluster/join"),
        (reqwest::Method::POST, "/cluster/leader"),
        (reqwest::Method::DELETE, "/cluster/members/1"),
    ] {
        let answer = http
            .request(method.clone(), format!("{}{route}", nodes.urls[1]))
            .bearer_auth(PEER_TOKEN)
            .body("{}")
            .send()
            .await
            .expect("an answer");
        assert_eq!(answer.status(), 404, "{method} {route}");
        let body: Value = answer.json().await.expect("a JSON error");
        assert_eq!(body["code"], "peer_port_only", "{method} {route}: {body}");
        assert_eq!(body["peer_url"].as_str(), nodes.peer_urls[1].as_deref(), "{body}");
    }
    // The client routes are not on the peer port.
    let peer = nodes.peer_urls[1].clone().expect("a peer URL");
    let answer = http
        .post(format!("{peer}/"))
        .bearer_auth(WRITER_TOKEN)
        .body("{}")
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), 404);

    // On the peer port, the peer token is asked for as before.
    let vote = |token: Option<&'static str>| {
        let mut request = http
            .post(format!("{peer}/raft/vote"))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(vote(None).await.expect("an answer").status(), 401);
    assert_eq!(vote(Some(WRITER_TOKEN)).await.expect("an answer").status(), 403);
    let with_token = vote(Some(PEER_TOKEN)).await.expect("an answer").status();
    assert_eq!(with_token, 409, "past the guard: a vote that names no target node");
    let status = http
        .get(format!("{peer}/cluster"))
        .bearer_auth(WRITER_TOKEN)
        .send()
        .await
        .expect("an answer");
    assert_eq!(status.status(), 200, "formation reads GET /cluster on the peer port");

    // An operator may name a member by its peer URL: it is the member at its URL.
    let leader_peer_url = view["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["id"] == view["leader_id"]))
        .and_then(|m| m["peer_url"].as_str())
        .expect("the leader's peer URL")
        .to_string();
    let join = http
        .post(format!("{leader_peer_url}/cluster/join"))
        .bearer_auth(PEER_TOKEN)
        .json(&serde_json::json!({"url": nodes.reserved_peer_urls[2]}))
        .send()
        .await
        .expect("an answer");
    let status = join.status();
    let body: Value = join.json().await.expect("JSON");
    assert_eq!(status, 200, "{body}");
    let members = body["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "no member added at the peer URL: {body}");
}

/// Turning `--peer-listen` on in a running cluster, one node at a time: a
/// restarted voter asks the leader to record its peer URL, and the others
/// reach it there from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (~15 s): scripts/slow-tests.sh runs it"]
async fn a_member_restarted_with_a_peer_port_has_it_recorded_and_is_reached_there() {
    let _exclusive = exclusive().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = Nodes::start(dir.path(), false, false, &[]);
    let http = reqwest::Client::new();
    let urls = nodes.urls.clone();
    let view_of = |i: usize| {
        let url = format!("{}/cluster", urls[i]);
        let http = http.clone();
        async move {
            let answer = http.get(url).send().await.ok()?;
            answer.json::<Value>().await.ok()
        }
    };
    let mut turned_on = Vec::new();
    for i in [2, 0, 1] {
        // Every node agrees on a leader with the three members recorded as
        // turned on so far.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut settled = true;
            for j in 0..3 {
                let view = view_of(j).await.unwrap_or(Value::Null);
                let members = view["members"].as_array().cloned().unwrap_or_default();
                settled &= view["leader_id"].is_u64() && members.len() == 3;
                for member in &members {
                    let k = nodes
                        .urls
                        .iter()
                        .position(|u| Some(u.as_str()) == member["url"].as_str());
                    let expected = k.and_then(|k| turned_on.contains(&k).then(|| nodes.reserved_peer_urls[k].clone()));
                    settled &= member["peer_url"].as_str() == expected.as_deref() && member["voter"] == true;
                }
            }
            if settled {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not settled with {turned_on:?} on a peer port"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        nodes.kill(i);
        nodes.spawn(i, true);
        turned_on.push(i);
    }
    // The last one restarted is recorded too, and a write commits on all three.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = view_of(0).await.unwrap_or(Value::Null);
        let members = view["members"].as_array().cloned().unwrap_or_default();
        let all = members.len() == 3 && members.iter().all(|m| m["peer_url"].is_string());
        if all && let Some(leader) = view["leader_url"].as_str() {
            let write = http
                .post(format!("{leader}/"))
                .body(r#"{"all":"peer ports"}"#)
                .send()
                .await;
            if write.is_ok_and(|w| w.status() == 201) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the last restarted node was not recorded: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..3 {
        let (status, body) = {
            let answer = http
                .post(format!("{}/raft/vote", nodes.urls[i]))
                .body("{}")
                .send()
                .await
                .expect("an answer");
            (answer.status(), answer.text().await.unwrap_or_default())
        };
        assert_eq!(status, 404, "node {i}: {body}");
    }
}

/// The peer port turned on for every node at once (compose's `up -d` after
/// the flag was added, or a restart after an outage): the membership still
/// has no peer URLs, so every node first reaches the others at their client
/// ports. It must follow the `404 peer_port_only` there to the peer port,
/// elect a leader and record the peer URLs.
#[tokio::test]
#[ignore = "slow (~14 s): scripts/slow-tests.sh runs it"]
async fn a_whole_cluster_restarted_with_peer_ports_turned_on_elects_a_leader() {
    let _exclusive = exclusive().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = Nodes::start(dir.path(), false, false, &[]);
    let http = reqwest::Client::new();
    let wrote = |url: String| {
        let http = http.clone();
        async move {
            let answer = http
                .post(format!("{url}/"))
                .body(r#"{"before":"peer ports"}"#)
                .send()
                .await;
            answer.is_ok_and(|a| a.status() == 201)
        }
    };
    let written = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for url in &nodes.urls {
                if wrote(url.clone()).await {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(written.await, "no write before the restart");
    for i in 0..3 {
        nodes.kill(i);
    }
    for i in 0..3 {
        nodes.spawn(i, true);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = false;
        for url in nodes.urls.clone() {
            let view = match http.get(format!("{url}/cluster")).send().await {
                Ok(answer) => answer.json::<Value>().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            let members = view["members"].as_array().cloned().unwrap_or_default();
            let recorded = members.len() == 3 && members.iter().all(|m| m["peer_url"].is_string());
            if recorded && let Some(leader) = view["leader_url"].as_str() {
                done = wrote(leader.to_string()).await;
            }
        }
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no leader with the peer URLs recorded 30 s after turning peer ports on everywhere:\n{}",
            nodes.log(0).lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET url` as JSON (`Null` when it does not answer), following no redirect.
async fn json_at(http: &reqwest::Client, url: &str) -> Value {
    match http.get(url).send().await {
        Ok(answer) => answer.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Heartbeat batches node `url` answered 200 (`distlog_http_requests_total`).
async fn heartbeats_taken(http: &reqwest::Client, url: &str) -> u64 {
    let text = match http.get(format!("{url}/metrics")).send().await {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let series = r#"distlog_http_requests_total{method="POST",route="/raft/heartbeats",status="200"} "#;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A named log's group reaches a member at the peer port the cluster group records for it. A
/// group's own membership keeps the URLs its members had when it was made, and an idle group
/// sends nothing but heartbeats, which go in batches that do not learn a new peer port from a
/// `404 peer_port_only`. Before the fix the member, restarted with `--peer-listen`, got no
/// heartbeat of the named log again: each batch went to its client port and was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_logs_heartbeats_follow_a_member_to_its_new_peer_port() {
    let _exclusive = exclusive().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = Nodes::start(dir.path(), false, false, &[]);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .timeout(Duration::from_secs(15))
        .build()
        .expect("a client");
    let deadline = Instant::now() + Duration::from_secs(30);
    let log_leader = loop {
        let view = json_at(&http, &format!("{}/cluster", nodes.urls[0])).await;
        if let Some(leader) = view["leader_url"]
            .as_str()
            .filter(|_| view["members"].as_array().is_some_and(|m| m.len() == 3))
        {
            let created = http
                .put(format!("{leader}/logs/orders"))
                .json(&serde_json::json!({"replicas": 3}))
                .send()
                .await;
            if created.is_ok_and(|c| c.status().is_success()) {
                let described = json_at(&http, &format!("{leader}/logs/orders")).await;
                if let Some(log_leader) = described["leader"].as_str() {
                    break log_leader.to_string();
                }
            }
        }
        assert!(Instant::now() < deadline, "no named log with a leader: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A member that follows the log: it gets the log's heartbeats.
    let k = (0..3).find(|i| nodes.urls[*i] != log_leader).expect("a follower");
    nodes.kill(k);
    nodes.spawn(k, true);
    let peer_url = nodes.reserved_peer_urls[k].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = json_at(&http, &format!("{}/cluster", nodes.urls[(k + 1) % 3])).await;
        let recorded = view["members"].as_array().is_some_and(|members| {
            members
                .iter()
                .any(|m| m["peer_url"].as_str() == Some(peer_url.as_str()))
        });
        if recorded {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never recorded {peer_url}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = heartbeats_taken(&http, &nodes.urls[k]).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = heartbeats_taken(&http, &nodes.urls[k]).await;
        if now > before + 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {k} took {} heartbeat batches in 20 s after its peer port was recorded; its log:\n{}",
            now - before,
            nodes.log(k).lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    for i in 0..3 {
        nodes.kill(i);
    }
}
