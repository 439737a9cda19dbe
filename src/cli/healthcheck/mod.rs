//! `distlog healthcheck`: a container's health check without a shell or
//! curl. It reads the node's own settings from the same `DISTLOG_*`
//! variables `serve` does, so the image's `HEALTHCHECK` works unchanged
//! with HTTPS (`tls`: the node's own certificate, or a CA) and with
//! `--protect-metrics` (an admin's bearer token from the node's token file).

mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth::{Acl, Action};

#[derive(Args)]
pub struct HealthcheckArgs {
    /// The node's base URL [default: http://<DISTLOG_LISTEN>, https:// with --tls-cert, with 0.0.0.0
    /// or [::] as the loopback address, else 127.0.0.1:8080].
    #[arg(long, env = "DISTLOG_HEALTHCHECK_URL", value_name = "URL")]
    url: Option<String>,

    /// Milliseconds to wait for the answer.
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    timeout_ms: u64,

    /// PEM CA certificates that sign the node's certificate, for its advertise URL's host name
    /// [default: --tls-client-ca, --peer-ca]. Not needed for the node's own --tls-cert, which is
    /// accepted as it is (a self-signed one too).
    #[arg(long, env = "DISTLOG_HEALTHCHECK_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// The bearer token to send, an admin's for a node with --protect-metrics [default: the token of
    /// the first principal in --token-file that --acl lets administer].
    #[arg(
        long,
        env = "DISTLOG_HEALTHCHECK_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    #[command(flatten)]
    node: NodeSettings,
}

/// The node's settings the check needs, from the variables (or flags) `serve` reads.
#[derive(Args)]
#[command(next_help_heading = "The node's settings (read from its DISTLOG_* variables)")]
struct NodeSettings {
    /// The node's --listen.
    #[arg(long, env = "DISTLOG_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// The node's --tls-cert: check over https, and accept this certificate.
    #[arg(long, env = "DISTLOG_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The node's --tls-key: with --tls-client-ca and no --peer-cert, the check's client key.
    #[arg(long, env = "DISTLOG_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The node's --tls-client-ca: a CA to check its certificate by; the node then asks for a
    /// client certificate, and the check shows --peer-cert (else --tls-cert).
    #[arg(long, env = "DISTLOG_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// The node's --peer-ca: a CA to check its certificate by.
    #[arg(long, env = "DISTLOG_PEER_CA", value_name = "FILE")]
    peer_ca: Option<PathBuf>,
    /// The node's --peer-cert: the client certificate the check shows a node that asks for one.
    #[arg(long, env = "DISTLOG_PEER_CERT", value_name = "FILE")]
    peer_cert: Option<PathBuf>,
    /// The node's --peer-key.
    #[arg(long, env = "DISTLOG_PEER_KEY", value_name = "FILE")]
    peer_key: Option<PathBuf>,
    /// The node's --advertise-url: its host is the name a CA-signed certificate is checked for.
    #[arg(long, env = "DISTLOG_ADVERTISE_URL", value_name = "URL")]
    advertise_url: Option<String>,
    /// The node's --token-file: where the default token comes from.
    #[arg(long, env = "DISTLOG_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The node's --acl: which principal of --token-file may administer.
    #[arg(long, env = "DISTLOG_ACL", value_name = "FILE")]
    acl: Option<PathBuf>,
}

/// `http(s)://<the listen address>`, the wildcard address as loopback.
fn default_base(node: &NodeSettings) -> String {
    let listen = node.listen.as_deref().and_then(|l| super::units::listen(l).ok());
    let mut addr = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if node.tls_cert.is_some() { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

/// The host of a URL, without an IPv6 address's brackets.
fn host_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    Some(url.host_str()?.trim_matches(['[', ']']).to_string())
}

/// The token of the first principal in the node's token file that its ACL lets administer (any,
/// without an ACL: then every principal may).
fn admin_token(node: &NodeSettings) -> anyhow::Result<Option<String>> {
    let Some(file) = &node.token_file else {
        return Ok(None);
    };
    let acl = node.acl.as_deref().map(Acl::load).transpose()?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", file.display()))?;
    let pairs = crate::auth::word_pairs(&text, "<principal> <token>")
        .map_err(|(line, why)| anyhow::anyhow!("{}, line {line}: {why}", file.display()))?;
    Ok(pairs
        .into_iter()
        .find(|(_, principal, _)| {
            acl.as_ref()
                .is_none_or(|acl| acl.allows(principal, Action::Admin, None))
        })
        .map(|(_, _, token)| token.to_string()))
}

fn tls_trust(args: &HealthcheckArgs, url: &str) -> tls::TlsTrust {
    let node = &args.node;
    let name = node
        .advertise_url
        .as_deref()
        .and_then(host_of)
        .or_else(|| host_of(url))
        .unwrap_or_else(|| "localhost".into());
    // rustls shows a client certificate only to a node that asks for one.
    let identity = match (&node.peer_cert, &node.peer_key, &node.tls_cert, &node.tls_key) {
        (Some(cert), Some(key), _, _) => Some((cert.clone(), key.clone())),
        (_, _, Some(cert), Some(key)) if node.tls_client_ca.is_some() => Some((cert.clone(), key.clone())),
        _ => None,
    };
    tls::TlsTrust {
        pinned: node.tls_cert.clone(),
        cas: [&args.ca, &node.tls_client_ca, &node.peer_ca]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        name,
        identity,
    }
}

fn client(args: &HealthcheckArgs, url: &str) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_millis(args.timeout_ms));
    if url.starts_with("https://") {
        builder = builder.use_preconfigured_tls(tls::client_config(&tls_trust(args, url))?);
    }
    Ok(builder.build()?)
}

async fn check(args: &HealthcheckArgs, url: &str) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let token = match &args.token {
        Some(token) => Some(token.trim().to_string()),
        None => admin_token(&args.node)?,
    };
    let mut request = client(args, url)?.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Ok((status, body))
}

/// `distlog healthcheck`: GET /readyz; 200 is healthy, anything else (or no answer) is not.
pub fn healthcheck(args: HealthcheckArgs) -> std::process::ExitCode {
    let base = args.url.clone().unwrap_or_else(|| default_base(&args.node));
    let url = format!("{}/readyz", base.trim_end_matches('/').trim_end_matches("/readyz"));
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(check(&args, &url)));
    match result {
        Ok((status, _)) if status == reqwest::StatusCode::OK => std::process::ExitCode::SUCCESS,
        Ok((status, body)) => {
            eprintln!("distlog healthcheck: {url} answered {status}: {}", body.trim());
            std::process::ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("distlog healthcheck: {url}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
