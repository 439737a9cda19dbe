//! What a `--follow` replica is told: its leader, how it pulls, and the
//! identity it pulls with.

use std::path::PathBuf;
use std::time::Duration;

const PULL_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct FollowConfig {
    /// The leader's base URL, e.g. `http://leader:8080`.
    pub leader: String,
    /// Discard the local log at start and copy the leader's from scratch.
    pub reset: bool,
    /// Bytes of frames asked for per pull.
    pub pull_bytes: u64,
    /// The most bytes of one unfinished batch (frames waiting for the
    /// batch's last one) held across pulls; past it the follower gives up
    /// on the pull and starts it over. It must exceed the leader's largest
    /// batch: its `--max-request-bytes` plus 27 bytes a record. Default:
    /// four pulls (32 MiB), twice a default leader's largest batch.
    pub max_unfinished_batch_bytes: u64,
    /// How long one pull waits on the leader for new records.
    pub poll_wait: Duration,
    /// Retry delays grow from the first to the second.
    pub backoff: (Duration, Duration),
    /// CA certificates (PEM) that sign an `https://` leader's certificate.
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for a leader that requires mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// A bearer token for a leader that requires one.
    pub token: Option<String>,
}

impl FollowConfig {
    pub fn new(leader: impl Into<String>) -> Self {
        FollowConfig {
            leader: leader.into().trim_end_matches('/').to_string(),
            reset: false,
            pull_bytes: PULL_BYTES,
            max_unfinished_batch_bytes: 4 * PULL_BYTES,
            poll_wait: Duration::from_secs(10),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            ca: None,
            identity: None,
            token: None,
        }
    }

    /// The HTTP client the follower pulls with, carrying its identity.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        self.builder()?
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    /// The client a cluster member reaches its peers with: the same
    /// identity, and no redirect followed by itself. A redirect re-sends a
    /// request, body and forwarded identity included, to whatever the
    /// answer names, without the token when the port differs and past
    /// `--peer-route`: a member decides where its requests go.
    pub fn peer_client(&self) -> Result<reqwest::Client, String> {
        self.builder()?
            .redirect(reqwest::redirect::Policy::none())
            // Well under a write's deadline (--write-timeout-ms, 5 s by
            // default): a forward that could not connect is then known to
            // have sent nothing (`no_leader`), not timed out unknown.
            .connect_timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    fn builder(&self) -> Result<reqwest::ClientBuilder, String> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &self.ca {
            let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?)
                .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", ca.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.identity {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                format!(
                    "{} and {}: not a usable certificate and key: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
            builder = builder.identity(identity);
        }
        if let Some(token) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the follow token holds characters a header cannot carry".to_string())?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member's requests go where it sends them: a `307` comes back to
    /// it (a forwarded write turns it into `no_leader`), never followed by
    /// the client with the body and the forwarded identity.
    #[tokio::test]
    async fn the_peer_client_follows_no_redirect() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("a connection");
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let answer = "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/\r\n\
                          content-length: 0\r\nconnection: close\r\n\r\n";
            let _ = conn.write_all(answer.as_bytes()).await;
        });
        let client = FollowConfig::new(&url).peer_client().expect("a client");
        let answer = client.post(&url).body("{}").send().await.expect("the 307 itself");
        assert_eq!(answer.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
    }
}
