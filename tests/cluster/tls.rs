//! A three-node cluster over mutual TLS: the nodes serve HTTPS, require
//! client certificates signed by the test CA, and reach each other as a
//! client whose certificate says CN "peer" (`--peer-ca`, `--peer-cert`,
//! `--peer-key`), which the ACL grants `cluster`. A writer's certificate
//! (CN "writer") may produce and consume but not speak Raft; a client
//! without a certificate is refused.

use crate::common;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{exclusive, free_ports};
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
    /// server certificate names 127.0.0.1 (and localhost).
    fn issue(&self, cn: &str, server: bool) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        if server {
            params.subject_alt_names = vec![
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::DnsName("localhost".try_into().expect("a DNS name")),
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
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
        let (server_cert, server_key) = ca.issue(&format!("node{i}"), true);
        let (peer_cert, peer_key) = ca.issue("peer", false);
        let server_cert = write(&root, &format!("node{i}.pem"), &server_cert);
        let server_key = write(&root, &format!("node{i}.key"), &server_key);
        let peer_cert = write(&root, &format!("peer{i}.pem"), &peer_cert);
        let peer_key = write(&root, &format!("peer{i}.key"), &peer_key);
        let log_path = root.join(format!("node{i}.log"));
        let log = File::create(&log_path).expect("a node log");
        nodes.logs.push(log_path);
        let mut command = Command::new(env!("CARGO_BIN_EXE_distlog"));
        command.arg("serve");
        if peer_port {
            command.args(["--peer-listen", &format!("127.0.0.1:{}", peer_ports[i])]);
        }
        let child = command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(root.join(format!("node{i}-data")))
            .arg("--peers")
            .arg(&peers)
            .arg("--advertise-url")
            .arg(&urls[i])
            .args(["--election-timeout-min-ms", "300"])
            .args(["--election-timeout-max-ms", "600"])
            .args(["--heartbeat-ms", "75"])
            .arg("--tls-cert")
            .arg(&server_cert)
            .arg("--tls-key")
            .arg(&server_key)
            .arg("--tls-client-ca")
            .arg(&ca_pem)
            .arg("--acl")
            .arg(&acl)
            .arg("--peer-ca")
            .arg(&ca_pem)
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
        nodes.children.push(child);
    }

    let writer = client(&ca, Some(&writer_identity));

    // All three nodes, asked by the writer, agree on one leader: every vote
    // and append between them went over mutual TLS as "peer".
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader_url = loop {
        for (i, child) in nodes.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("node {i} exited: {status}");
            }
        }
        let mut views = Vec::new();
        for url in &urls {
            views.push(cluster_view(&writer, url).await);
        }
        let leaders: Vec<Option<&str>> = views
            .iter()
            .map(|v| v.as_ref().ok().and_then(|v| v["leader_url"].as_str()))
            .collect();
        if let Some(Some(first)) = leaders.first()
            && leaders.iter().all(|l| l == &Some(*first))
        {
            break first.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no leader all three nodes agree on within 20 s: {views:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
