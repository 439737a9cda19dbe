//! `distlog healthcheck`: a container's health check without a shell or
//! curl.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

#[derive(Args)]
pub struct HealthcheckArgs {
    /// The node's base URL (http only) [default: http://<DISTLOG_LISTEN>, with 0.0.0.0 or [::] as
    /// the loopback address, else http://127.0.0.1:8080].
    #[arg(long, env = "DISTLOG_HEALTHCHECK_URL", value_name = "URL")]
    url: Option<String>,

    /// Milliseconds to wait for the answer.
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    timeout_ms: u64,
}

/// `distlog healthcheck`: GET /readyz; 200 is healthy, anything else (or no answer) is not.
pub fn healthcheck(args: HealthcheckArgs) -> std::process::ExitCode {
    let base = args.url.unwrap_or_else(|| {
        let listen = std::env::var("DISTLOG_LISTEN")
            .ok()
            .and_then(|l| super::units::listen(&l).ok());
        let mut addr = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    });
    let url = format!("{}/readyz", base.trim_end_matches('/').trim_end_matches("/readyz"));
    let timeout = Duration::from_millis(args.timeout_ms);
    let check = async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let response = client.get(&url).send().await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::Ok((status, body))
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(check));
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
