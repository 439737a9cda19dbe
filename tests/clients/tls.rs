//! `--ca`, `--cert`/`--key` and `--token` (and the builder's `ca`,
//! `identity`, `token`) against a node that asks for all three.

use crate::cli::{distlog, stdout_lines};
use crate::common;

use std::path::{Path, PathBuf};

use distlog::auth::{SecurityConfig, TlsFiles};
use distlog::node::NodeConfig;
use distlog_client::Client;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

const TOKEN: &str = "writer-0123456789abcdef0123456789abcdef";

/// A CA and what it signs, written to `dir`: (name of the PEM file).
struct Pki {
    ca: rcgen::Certificate,
    key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "client test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        Pki { ca, key }
    }

    /// A certificate for `name` (a server's SAN too): (cert path, key path).
    fn issue(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.key).unwrap();
        (
            write(dir, &format!("{name}.pem"), &cert.pem()),
            write(dir, &format!("{name}.key"), &key.serialize_pem()),
        )
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(data: &Path, tls: TlsFiles, token_file: Option<PathBuf>) -> (common::Node, String) {
    let security = SecurityConfig {
        tls: Some(tls),
        token_file,
        ..SecurityConfig::default()
    };
    let node = common::start(NodeConfig {
        security,
        ..common::config(data)
    })
    .await;
    let url = format!("https://localhost:{}", node.server.local_addr().port());
    (node, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_and_token_flags_and_the_builder_over_tls() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let ca = write(files.path(), "ca.pem", &pki.ca.pem());
    let (cert, key) = pki.issue(files.path(), "localhost");
    let tokens = write(files.path(), "tokens", &format!("writer {TOKEN}\n"));
    let tls = TlsFiles {
        cert,
        key,
        client_ca: None,
    };
    let (node, url) = start(data.path(), tls, Some(tokens)).await;
    let ca_flag = ca.to_str().unwrap();

    let produced = distlog(
        &["produce", "--url", &url, "--ca", ca_flag, "--token", TOKEN],
        b"{\"over\":\"tls\"}\n",
    )
    .await;
    assert_eq!(stdout_lines(&produced), ["{\"offset\":0}"]);
    let refused = distlog(&["check-tail", "--url", &url, "--ca", ca_flag], b"").await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"), "{refused:?}");
    let untrusted = distlog(
        &["check-tail", "--url", &url, "--token", TOKEN, "--retry-for", "300ms"],
        b"",
    )
    .await;
    assert!(
        !untrusted.status.success(),
        "a server certificate from an unknown CA is refused"
    );

    let client = Client::builder()
        .seeds([url.clone()])
        .ca(&ca)
        .token(TOKEN)
        .build()
        .unwrap();
    let record = client.read(0).await.expect("read over TLS with a token");
    assert_eq!(record.json(), Some(&serde_json::json!({"over": "tls"})));
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_flags_and_the_builder_over_mutual_tls() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let ca = write(files.path(), "ca.pem", &pki.ca.pem());
    let (cert, key) = pki.issue(files.path(), "localhost");
    let (client_cert, client_key) = pki.issue(files.path(), "writer");
    let tls = TlsFiles {
        cert,
        key,
        client_ca: Some(ca.clone()),
    };
    let (node, url) = start(data.path(), tls, None).await;
    let [ca_flag, cert_flag, key_flag] = [&ca, &client_cert, &client_key].map(|p| p.to_str().unwrap());

    let all = ["--url", &url, "--ca", ca_flag, "--cert", cert_flag, "--key", key_flag];
    let produce: Vec<&str> = ["produce"].into_iter().chain(all).collect();
    let produced = distlog(&produce, b"{\"over\":\"mtls\"}\n").await;
    assert_eq!(stdout_lines(&produced), ["{\"offset\":0}"]);
    let no_cert = ["check-tail", "--url", &url, "--ca", ca_flag, "--retry-for", "300ms"];
    let refused = distlog(&no_cert, b"").await;
    assert!(
        !refused.status.success(),
        "no client certificate: refused in the handshake"
    );

    let client = Client::builder()
        .seeds([url.clone()])
        .ca(&ca)
        .identity(&client_cert, &client_key)
        .build()
        .unwrap();
    let record = client.read(0).await.expect("read over mutual TLS");
    assert_eq!(record.json(), Some(&serde_json::json!({"over": "mtls"})));
    node.server.shutdown().await.unwrap();
}
