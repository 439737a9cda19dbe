//! A three-node cluster over mutual TLS: the nodes serve HTTPS, require
//! client certificates signed by the test CA, and reach each other as a
//! client whose certificate says CN "peer" (`--peer-ca`, `--peer-cert`,
//! `--peer-key`), which the ACL grants `cluster`. A writer's certificate
//! (CN "writer") may produce and consume but not speak Raft; a client
//! without a certificate is refused. Then peer certificates naming each
//! node's host: a peer can speak only for the member at its host.

use crate::common;

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{exclusive, free_ports};
use distlog::cluster::TypeConfig;
use openraft::impls::Vote;
use openraft::raft::VoteRequest;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::Value;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "distlog cluster test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    /// A certificate for `cn` signed by this CA, as (cert PEM, key PEM). A
    /// server certificate names 127.0.0.1 (and localhost); a client
    /// certificate names no host.
    fn issue(&self, cn: &str, server: bool) -> (String, String) {
        match server {
            true => self.issue_for(cn, &["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth),
            false => self.issue_for(cn, &[], ExtendedKeyUsagePurpose::ClientAuth),
        }
    }

    /// A certificate for `cn` naming `hosts` (IP addresses or DNS names),
    /// for `usage`.
    fn issue_for(&self, cn: &str, hosts: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = hosts
            .iter()
            .map(|host| match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*host).try_into().expect("a DNS name")),
            })
            .collect();
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// The three `distlog serve` children: killed on drop, and their logs
/// printed when the test panicked.
struct Nodes {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (i, log) in self.logs.iter().enumerate() {
                let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("(unreadable: {e})"));
                eprintln!("===== node {i} log ({}) =====\n{text}", log.display());
            }
        }
    }
}

/// What one node is started with: its server and peer identities (cert
/// PEM, key PEM), the CA it checks clients and peers by, and the ACL.
struct NodeFiles {
    server: (String, String),
    peer: (String, String),
    ca: PathBuf,
    acl: PathBuf,
}

impl Nodes {
    /// Starts node `i` listening on 127.0.0.1:`port` (and on `peer_port`
    /// for peers), advertised at `url`, with mutual TLS everywhere.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        root: &Path,
        i: usize,
        port: u16,
        peer_port: Option<u16>,
        url: &str,
        peers: &str,
        files: &NodeFiles,
    ) {
        let server_cert = write(root, &format!("node{i}.pem"), &files.server.0);
        let server_key = write(root, &format!("node{i}.key"), &files.server.1);
        let peer_cert = write(root, &format!("peer{i}.pem"), &files.peer.0);
        let peer_key = write(root, &format!("peer{i}.key"), &files.peer.1);
        let log_path = root.join(format!("node{i}.log"));
        let log = File::create(&log_path).expect("a node log");
        self.logs.push(log_path);
        let mut command = Command::new(env!("CARGO_BIN_EXE_distlog"));
        command.arg("serve");
        if let Some(peer_port) = peer_port {
            command.args(["--peer-listen", &format!("127.0.0.1:{peer_port}")]);
        }
        let child = command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(root.join(format!("node{i}-data")))
            .arg("--peers")
            .arg(peers)
            .arg("--advertise-url")
            .arg(url)
            .args(["--election-timeout-min-ms", "300"])
            .args(["--election-timeout-max-ms", "600"])
            .args(["--heartbeat-ms", "75"])
            .arg("--tls-cert")
            .arg(&server_cert)
            .arg("--tls-key")
            .arg(&server_key)
            .arg("--tls-client-ca")
            .arg(&files.ca)
            .arg("--acl")
            .arg(&files.acl)
            .arg("--peer-ca")
            .arg(&files.ca)
            .arg("--peer-cert")
            .arg(&peer_cert)
            .arg("--peer-key")
            .arg(&peer_key)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("a log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("distlog starts");
        self.children.push(child);
    }

    /// The leader nodes `live` (running, at `urls`) agree on, asked by
    /// `client`, within 20 s; not `gone` (a leader they may still name).
    async fn agreed_leader(
        &mut self,
        client: &reqwest::Client,
        urls: &[String],
        live: &[usize],
        gone: Option<&str>,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for &i in live {
                if let Ok(Some(status)) = self.children[i].try_wait() {
                    panic!("node {i} exited: {status}");
                }
            }
            let mut views = Vec::new();
            for &i in live {
                views.push(cluster_view(client, &urls[i]).await);
            }
            let leaders: Vec<Option<&str>> = views
                .iter()
                .map(|v| v.as_ref().ok().and_then(|v| v["leader_url"].as_str()))
                .collect();
            if let Some(Some(first)) = leaders.first()
                && leaders.iter().all(|l| l == &Some(*first))
                && gone != Some(*first)
            {
                return first.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no leader nodes {live:?} agree on within 20 s: {views:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("a test file");
    path
}

fn client(ca: &Ca, identity: Option<&(String, String)>) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).expect("CA PEM");
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(root)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Some((cert, key)) = identity {
        let identity = reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).expect("identity PEM");
        builder = builder.identity(identity);
    }
    builder.build().expect("client")
}

async fn cluster_view(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let answer = client
        .get(format!("{url}/cluster"))
        .send()
        .await
        .map_err(|e| format!("{url}/cluster: {e:?}"))?;
    let status = answer.status();
    let body = answer.text().await.map_err(|e| format!("{url}/cluster: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}/cluster: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{url}/cluster: not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_forms_over_mutual_tls_and_refuses_strangers() {
    forms_over_mutual_tls(false).await;
}

/// The same with peers on a port of their own (`--peer-listen`): the same
/// certificates and ACL there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_peer_ports_forms_over_mutual_tls_and_refuses_strangers_there() {
    forms_over_mutual_tls(true).await;
}

async fn forms_over_mutual_tls(peer_port: bool) {
    // Held until the nodes are killed: `nodes` is declared after it, so it is dropped first.
    let _exclusive = exclusive().await;
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let ca = Ca::new();
    let ca_pem = write(&root, "ca.pem", &ca.cert.pem());
    let acl = write(&root, "acl", "peer cluster\nwriter produce\nwriter consume\n");
    let writer_identity = ca.issue("writer", false);

    let all_ports = free_ports(6);
    let (ports, peer_ports) = all_ports.split_at(3);
    let urls: Vec<String> = ports.iter().map(|p| format!("https://127.0.0.1:{p}")).collect();
    let peer_urls: Vec<String> = match peer_port {
        true => peer_ports.iter().map(|p| format!("https://127.0.0.1:{p}")).collect(),
        false => urls.clone(),
    };
    let peers = urls.join(",");

    let mut nodes = Nodes {
        children: Vec::new(),
        logs: Vec::new(),
        _dir: dir,
    };
    for (i, port) in ports.iter().enumerate() {
        let node = NodeFiles {
            server: ca.issue(&format!("node{i}"), true),
            peer: ca.issue("peer", false),
            ca: ca_pem.clone(),
            acl: acl.clone(),
        };
        let peer_listen = peer_port.then(|| peer_ports[i]);
        nodes.spawn(&root, i, *port, peer_listen, &urls[i], &peers, &node);
    }

    let writer = client(&ca, Some(&writer_identity));

    // All three nodes, asked by the writer, agree on one leader: every vote
    // and append between them went over mutual TLS as "peer".
    let leader_url = nodes.agreed_leader(&writer, &urls, &[0, 1, 2], None).await;
    assert!(urls.contains(&leader_url), "leader {leader_url} is one of {urls:?}");
    eprintln!("leader {leader_url} after {:?}", started.elapsed());

    // The writer writes through the leader; the record reaches every node.
    let write = writer
        .post(format!("{leader_url}/"))
        .header("content-type", "application/json")
        .body(r#"{"over":"mtls"}"#)
        .send()
        .await
        .expect("a write");
    assert_eq!(write.status(), 201, "{:?}", write.text().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    for url in &urls {
        loop {
            let last = match writer.get(format!("{url}/?from=0&limit=1000")).send().await {
                Ok(answer) => {
                    let status = answer.status();
                    let body: Value = answer.json().await.unwrap_or(Value::Null);
                    let found = status == 200
                        && body["records"]
                            .as_array()
                            .is_some_and(|records| records.iter().any(|r| r["value"]["over"] == "mtls"));
                    if found {
                        break;
                    }
                    format!("{status} {body}")
                }
                Err(error) => format!("{error:?}"),
            };
            assert!(Instant::now() < deadline, "{url} never served the record: {last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // No client certificate: refused in the handshake (or 401).
    let anonymous = client(&ca, None);
    for url in &urls {
        match anonymous.get(format!("{url}/?from=0")).send().await {
            Err(_) => {}
            Ok(answer) => assert_eq!(answer.status(), 401, "{url}: a client without a certificate"),
        }
    }

    // The writer's certificate is valid but does not grant `cluster`.
    for url in &peer_urls {
        let vote = writer
            .post(format!("{url}/raft/vote"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("an answer");
        assert_eq!(vote.status(), 403, "{url}: a writer may not speak Raft");
        let body: Value = vote.json().await.expect("json");
        assert_eq!(body["action"], "cluster", "{body}");
    }
    eprintln!("done after {:?}", started.elapsed());
}

/// Posts a JSON Raft RPC to node `target` at `url`, naming `sender`: the
/// status and the JSON answer.
async fn raft_post(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    target: u64,
    sender: u64,
    body: Vec<u8>,
) -> (u16, Value) {
    let answer = client
        .post(format!("{url}{path}"))
        .header("x-distlog-raft-target", target.to_string())
        .header("x-distlog-raft-sender", sender.to_string())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}{path}: {e:?}"));
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// Each node's peer certificate names its own host (node 0 is advertised
/// at `localhost`, the others at 127.0.0.1), so a peer RPC is held to the
/// host of the member it comes from. A certificate of the CA, granted
/// `cluster`, but for another node's host, cannot speak for node 0 (403
/// `peer_identity_mismatch`, nothing changes); node 0's own can. The
/// cluster forms, and elects again when its leader is killed, with every
/// vote and append checked so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_certificate_for_another_host_cannot_speak_for_a_member() {
    // Held until the nodes are killed: `nodes` is declared after it, so it is dropped first.
    let _exclusive = exclusive().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let ca = Ca::new();
    let ca_pem = write(&root, "ca.pem", &ca.cert.pem());
    let acl = write(&root, "acl", "peer cluster\nwriter produce\nwriter consume\n");
    let writer = client(&ca, Some(&ca.issue("writer", false)));
    let peer_identity = |host: &str| ca.issue_for("peer", &[host], ExtendedKeyUsagePurpose::ClientAuth);

    let ports = free_ports(3);
    let hosts = ["localhost", "127.0.0.1", "127.0.0.1"];
    let urls: Vec<String> = ports
        .iter()
        .zip(hosts)
        .map(|(p, h)| format!("https://{h}:{p}"))
        .collect();
    let peers = urls.join(",");
    let mut nodes = Nodes {
        children: Vec::new(),
        logs: Vec::new(),
        _dir: dir,
    };
    for (i, port) in ports.iter().enumerate() {
        let files = NodeFiles {
            server: ca.issue(&format!("node{i}"), true),
            peer: peer_identity(hosts[i]),
            ca: ca_pem.clone(),
            acl: acl.clone(),
        };
        nodes.spawn(&root, i, *port, None, &urls[i], &peers, &files);
    }
    let leader_url = nodes.agreed_leader(&writer, &urls, &[0, 1, 2], None).await;

    let mut ids = Vec::new();
    for url in &urls {
        let view = cluster_view(&writer, url).await.unwrap_or_else(|e| panic!("{e}"));
        ids.push(view["node_id"].as_u64().expect("a node id"));
    }
    let victim = 1;
    let term_of = |view: Result<Value, String>| view.map(|v| v["term"].as_u64());
    let term = term_of(cluster_view(&writer, &urls[victim]).await);
    let vote =
        |term: u64| serde_json::to_vec(&VoteRequest::<TypeConfig>::new(Vote::new(term, ids[0]), None)).expect("JSON");
    let high = term.clone().ok().flatten().unwrap_or_default() + 100;

    // Node 1's certificate (127.0.0.1) claiming to be node 0 (localhost).
    let impostor = client(&ca, Some(&peer_identity("127.0.0.1")));
    for path in ["/raft/vote", "/raft/pre-vote"] {
        let (status, body) = raft_post(&impostor, &urls[victim], path, ids[victim], ids[0], vote(high)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("peer_identity_mismatch")),
            "{path} from a certificate for another host: {body}"
        );
    }
    assert_eq!(
        term_of(cluster_view(&writer, &urls[victim]).await),
        term,
        "the refused vote changed the term"
    );
    let node0 = client(&ca, Some(&peer_identity("localhost")));
    let (status, body) = raft_post(&node0, &urls[victim], "/raft/pre-vote", ids[victim], ids[0], vote(high)).await;
    assert_eq!(status, 200, "a pre-vote with node 0's own certificate: {body}");

    // The leader killed: the two others elect one of them and take a write.
    let gone = urls
        .iter()
        .position(|u| *u == leader_url)
        .expect("the leader is a node");
    let _ = nodes.children[gone].kill();
    let _ = nodes.children[gone].wait();
    let live: Vec<usize> = (0..3).filter(|&i| i != gone).collect();
    let next = nodes.agreed_leader(&writer, &urls, &live, Some(&leader_url)).await;
    let write = writer
        .post(format!("{next}/"))
        .header("content-type", "application/json")
        .body(r#"{"after":"kill"}"#)
        .send()
        .await
        .expect("a write");
    assert_eq!(write.status(), 201, "{:?}", write.text().await);
}
