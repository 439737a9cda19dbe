//! TLS, mutual TLS, tokens and the ACL, with certificates made here (rcgen).

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, start};
use distlog::auth::{SecurityConfig, TlsFiles};
use distlog::node::{Node as Server, NodeConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, date_time_ymd,
};
use serde_json::Value;

const ALICE_TOKEN: &str = "alice-0123456789abcdef0123456789abcdef";
const BOB_TOKEN: &str = "bob-0123456789abcdef0123456789abcdef00";
const REPLICA_TOKEN: &str = "replica-0123456789abcdef0123456789abcd";

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for `cn`, signed by this CA: (cert PEM, key PEM).
    fn issue(&self, cn: &str, server: bool, expired: bool) -> (String, String) {
        let sans = if server {
            vec!["localhost".to_string()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Files for one test: a server certificate and key, CAs, tokens, an ACL.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: Ca::new("distlog test CA"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn server_files(&self, client_ca: bool) -> TlsFiles {
        let (cert, key) = self.ca.issue("localhost", true, false);
        TlsFiles {
            cert: self.write("server.pem", &cert),
            key: self.write("server.key", &key),
            client_ca: client_ca.then(|| self.write("ca.pem", &self.ca.cert.pem())),
        }
    }

    fn client(&self, identity: Option<(String, String)>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca.cert.pem().as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder().add_root_certificate(ca);
        if let Some((cert, key)) = identity {
            builder = builder.identity(reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

fn secured(data: &Path, security: SecurityConfig) -> NodeConfig {
    NodeConfig {
        security,
        ..common::config(data)
    }
}

fn https(server: &Server) -> String {
    format!("https://localhost:{}", server.local_addr().port())
}

async fn post(client: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client.post(format!("{url}/")).body(r#"{"secret":true}"#);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn https_round_trip_and_plain_http_is_refused_cleanly() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let security = SecurityConfig {
        tls: Some(pki.server_files(false)),
        ..SecurityConfig::default()
    };
    let node = start(secured(data.path(), security)).await;
    let url = https(&node.server);
    let client = pki.client(None);
    assert_eq!(post(&client, &url, None).await.status(), 201);
    let record: Value = get(&client, &format!("{url}/0"), None).await.json().await.unwrap();
    assert_eq!(record["value"]["secret"], true);

    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/0", node.server.local_addr().port()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP must not be served"
    );
    assert_eq!(
        get(&client, &format!("{url}/0"), None).await.status(),
        200,
        "the server still serves HTTPS"
    );
}

#[tokio::test]
async fn bad_certificate_files_stop_startup_with_a_clear_message() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let good = pki.server_files(false);
    let (_, other_key) = pki.ca.issue("other", true, false);
    let (expired_cert, expired_key) = pki.ca.issue("localhost", true, true);
    let cases = [
        (
            TlsFiles {
                cert: pki.dir.path().join("missing.pem"),
                ..good.clone()
            },
            "missing.pem",
        ),
        (
            TlsFiles {
                key: pki.write("other.key", &other_key),
                ..good.clone()
            },
            "does not match",
        ),
        (
            TlsFiles {
                cert: pki.write("expired.pem", &expired_cert),
                key: pki.write("expired.key", &expired_key),
                client_ca: None,
            },
            "expired",
        ),
    ];
    for (files, expected) in cases {
        let security = SecurityConfig {
            tls: Some(files),
            ..SecurityConfig::default()
        };
        let listener = common::listener("127.0.0.1:0".parse().unwrap()).await;
        let error = Server::start(secured(data.path(), security), listener)
            .await
            .err()
            .expect("startup fails");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[tokio::test]
async fn mutual_tls_admits_only_valid_client_certificates() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let acl = pki.write("acl", "alice produce\nalice consume\n");
    let security = SecurityConfig {
        tls: Some(pki.server_files(true)),
        acl_file: Some(acl),
        ..SecurityConfig::default()
    };
    let node = start(secured(data.path(), security)).await;
    let url = https(&node.server);

    let alice = pki.client(Some(pki.ca.issue("alice", false, false)));
    assert_eq!(post(&alice, &url, None).await.status(), 201);
    assert_eq!(get(&alice, &format!("{url}/0"), None).await.status(), 200);

    let mallory = pki.client(Some(pki.ca.issue("mallory", false, false)));
    let denied = post(&mallory, &url, None).await;
    assert_eq!(denied.status(), 403, "a valid certificate without a grant is forbidden");

    let anonymous = pki.client(None);
    assert!(
        anonymous.get(format!("{url}/0")).send().await.is_err(),
        "no certificate: refused in the handshake"
    );
    let foreign = Ca::new("foreign CA");
    let stranger = pki.client(Some(foreign.issue("alice", false, false)));
    assert!(
        stranger.get(format!("{url}/0")).send().await.is_err(),
        "another CA: refused"
    );
    let expired = pki.client(Some(pki.ca.issue("alice", false, true)));
    assert!(
        expired.get(format!("{url}/0")).send().await.is_err(),
        "expired: refused"
    );

    let metrics = get(&alice, &format!("{url}/metrics"), None).await.text().await.unwrap();
    assert!(
        metrics.contains(r#"distlog_auth_failures_total{reason="bad_certificate"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"distlog_auth_failures_total{reason="forbidden"}"#));
}

#[tokio::test]
async fn tokens_identify_and_the_acl_decides_each_action() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let tokens = pki.write("tokens", &format!("alice {ALICE_TOKEN}\nbob {BOB_TOKEN}\n"));
    let acl = pki.write("acl", "alice produce\nbob consume\n");
    let security = SecurityConfig {
        token_file: Some(tokens),
        acl_file: Some(acl),
        protect_metrics: true,
        ..SecurityConfig::default()
    };
    let node = start(secured(data.path(), security)).await;
    let url = node.url.clone();
    let client = reqwest::Client::new();

    assert_eq!(post(&client, &url, Some(ALICE_TOKEN)).await.status(), 201);
    let missing = post(&client, &url, None).await;
    assert_eq!(missing.status(), 401);
    assert!(
        missing.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], "no_credentials");
    let bad = post(&client, &url, Some("not-a-token-not-a-token-not-a-token-x")).await;
    assert_eq!(bad.status(), 401);
    assert!(
        bad.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    let forbidden = post(&client, &url, Some(BOB_TOKEN)).await;
    assert_eq!(forbidden.status(), 403);
    let body: Value = forbidden.json().await.unwrap();
    assert_eq!(
        (body["code"].as_str(), body["action"].as_str()),
        (Some("forbidden"), Some("produce"))
    );

    for path in ["/0", "/?from=0", "/status", "/replication/frames?from=0"] {
        assert_eq!(
            get(&client, &format!("{url}{path}"), Some(BOB_TOKEN)).await.status(),
            200,
            "bob consumes {path}"
        );
        assert_eq!(
            get(&client, &format!("{url}{path}"), Some(ALICE_TOKEN)).await.status(),
            403,
            "alice may not consume {path}"
        );
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            get(&client, &format!("{url}{path}"), Some(BOB_TOKEN)).await.status(),
            403,
            "{path} needs admin"
        );
        assert_eq!(
            get(&client, &format!("{url}{path}"), None).await.status(),
            401,
            "{path} is protected"
        );
    }

    let text = distlog::api::recorder().render();
    for reason in ["no_credentials", "bad_token", "forbidden"] {
        assert!(
            text.contains(&format!(r#"distlog_auth_failures_total{{reason="{reason}"}}"#)),
            "{reason}"
        );
    }
    assert!(
        !text.contains(ALICE_TOKEN) && !text.contains(BOB_TOKEN),
        "tokens never reach metrics"
    );
}

#[tokio::test]
async fn without_an_acl_every_authenticated_principal_may_do_everything_and_health_stays_open() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let tokens = pki.write("tokens", &format!("alice {ALICE_TOKEN}\n"));
    let security = SecurityConfig {
        token_file: Some(tokens),
        ..SecurityConfig::default()
    };
    let node = start(secured(data.path(), security)).await;
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &node.url, Some(ALICE_TOKEN)).await.status(), 201);
    assert_eq!(
        get(&client, &format!("{}/0", node.url), Some(ALICE_TOKEN))
            .await
            .status(),
        200
    );
    assert_eq!(get(&client, &format!("{}/0", node.url), None).await.status(), 401);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            get(&client, &format!("{}{path}", node.url), None).await.status(),
            200,
            "{path} is open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secured_follower_replicates_from_a_secured_leader() {
    let pki = Pki::new();
    let (leader_data, follower_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tokens = pki.write("tokens", &format!("alice {ALICE_TOKEN}\nreplica {REPLICA_TOKEN}\n"));
    let acl = pki.write("acl", "alice produce\nalice consume\nreplica consume\n");
    let leader_security = SecurityConfig {
        tls: Some(pki.server_files(true)),
        token_file: Some(tokens.clone()),
        acl_file: Some(acl.clone()),
        ..SecurityConfig::default()
    };
    let leader = start(secured(leader_data.path(), leader_security)).await;
    let leader_url = https(&leader.server);

    let (replica_cert, replica_key) = pki.ca.issue("replica", false, false);
    let mut config = common::follower_config(follower_data.path(), &leader_url);
    {
        let follow = common::follow_mut(&mut config);
        follow.ca = Some(pki.write("leader-ca.pem", &pki.ca.cert.pem()));
        follow.identity = Some((
            pki.write("replica.pem", &replica_cert),
            pki.write("replica.key", &replica_key),
        ));
        follow.token = Some(REPLICA_TOKEN.to_string());
    }
    config.security = SecurityConfig {
        token_file: Some(tokens),
        acl_file: Some(acl),
        ..SecurityConfig::default()
    };
    let follower = start(config).await;

    let alice = pki.client(Some(pki.ca.issue("alice", false, false)));
    for _ in 0..20 {
        assert_eq!(post(&alice, &leader_url, None).await.status(), 201);
    }
    let client = reqwest::Client::new();
    let status_url = format!("{}/status", follower.url);
    eventually(Duration::from_secs(20), "the follower to catch up", || {
        let (client, status_url) = (client.clone(), status_url.clone());
        async move {
            let status: Value = get(&client, &status_url, Some(REPLICA_TOKEN))
                .await
                .json()
                .await
                .unwrap_or_default();
            status["next_offset"] == 20
        }
    })
    .await;
    let record = get(&client, &format!("{}/19", follower.url), Some(ALICE_TOKEN)).await;
    assert_eq!(record.status(), 200, "the follower applies its own auth to its readers");
    assert_eq!(get(&client, &format!("{}/19", follower.url), None).await.status(), 401);
}

#[tokio::test]
async fn reload_swaps_the_certificate_while_open_connections_keep_working() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let files = pki.server_files(false);
    let security = SecurityConfig {
        tls: Some(files.clone()),
        ..SecurityConfig::default()
    };
    let node = start(secured(data.path(), security)).await;
    let url = https(&node.server);
    let old_client = pki.client(None);
    assert_eq!(post(&old_client, &url, None).await.status(), 201);

    // Rotate to a certificate from a new CA, then reload (what SIGHUP does).
    let new_ca = Ca::new("rotated CA");
    let (cert, key) = new_ca.issue("localhost", true, false);
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    node.server.reload_tls().unwrap();

    assert_eq!(
        get(&old_client, &format!("{url}/0"), None).await.status(),
        200,
        "the kept-alive connection from before the reload still works"
    );
    let fresh_old_trust = pki.client(None);
    assert!(
        fresh_old_trust.get(format!("{url}/0")).send().await.is_err(),
        "new connections get the new certificate"
    );
    let new_trust = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(new_ca.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    assert_eq!(get(&new_trust, &format!("{url}/0"), None).await.status(), 200);

    std::fs::write(&files.key, "garbage").unwrap();
    assert!(node.server.reload_tls().is_err(), "a bad reload is refused");
    assert_eq!(
        get(&new_trust, &format!("{url}/0"), None).await.status(),
        200,
        "and the old certificate stays"
    );
}
