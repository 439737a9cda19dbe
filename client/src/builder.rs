//! [`ClientBuilder`]: the seeds, credentials and timings of a [`Client`].

use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::client::{Client, Settings};
use crate::error::{Error, Result};

/// Where a PEM comes from: a file read at `build()`, or bytes in hand.
#[derive(Clone, Debug)]
enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    fn read(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Pem::Bytes(bytes) => Ok(bytes.clone()),
            Pem::File(path) => std::fs::read(path)
                .map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", path.display()))),
        }
    }
}

/// Settings for a [`Client`]; start with [`Client::builder`].
///
/// ```no_run
/// # async fn run() -> Result<(), distlog_client::Error> {
/// use std::time::Duration;
/// let client = distlog_client::Client::builder()
///     .seeds(["https://node1:8080", "https://node2:8080"])
///     .token("s3cret")
///     .ca("ca.pem")
///     .identity("client.pem", "client-key.pem")
///     .request_timeout(Duration::from_secs(5))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ClientBuilder {
    seeds: Vec<String>,
    token: Option<String>,
    ca: Vec<Pem>,
    identity: Option<(Pem, Pem)>,
    settings: Settings,
    log: Option<String>,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            seeds: Vec::new(),
            token: None,
            ca: Vec::new(),
            identity: None,
            log: None,
            settings: Settings {
                request_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(2),
                retry_for: Duration::from_secs(30),
                refresh_every: Duration::from_secs(3),
                member_backoff: Backoff {
                    base: Duration::from_millis(100),
                    cap: Duration::from_secs(5),
                },
                retry_backoff: Backoff {
                    base: Duration::from_millis(50),
                    cap: Duration::from_secs(1),
                },
            },
        }
    }
}

impl ClientBuilder {
    /// Servers to ask for the cluster (any member, a standalone node or a
    /// replica); the rest is discovered.
    pub fn seeds<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.seeds.extend(seeds.into_iter().map(Into::into));
        self
    }

    /// A bearer token sent with every request.
    /// Appends, reads and consumer positions go to the named log `name`
    /// (`/logs/{name}/...`) rather than the default log (issue 22).
    pub fn log(mut self, name: impl Into<String>) -> Self {
        self.log = Some(name.into());
        self
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A CA certificate file (PEM) to trust for `https://` servers.
    pub fn ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca.push(Pem::File(path.into()));
        self
    }

    /// A CA certificate (PEM bytes) to trust.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca.push(Pem::Bytes(pem.into()));
        self
    }

    /// A client certificate and its key (PEM files), for servers that
    /// ask for one (mutual TLS).
    pub fn identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((Pem::File(cert.into()), Pem::File(key.into())));
        self
    }

    /// A client certificate and its key as PEM bytes.
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((Pem::Bytes(cert.into()), Pem::Bytes(key.into())));
        self
    }

    /// How long one request may take before its outcome is unknown
    /// (default 10 s; long polls add their wait).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// How long to keep retrying what is safe to retry (default 30 s).
    pub fn retry_for(mut self, period: Duration) -> Self {
        self.settings.retry_for = period;
        self
    }

    /// How often to ask for the cluster in the background (default 3 s).
    pub fn refresh_every(mut self, period: Duration) -> Self {
        self.settings.refresh_every = period;
        self
    }

    /// Checks the settings and makes the client. Nothing is sent yet: the
    /// cluster is asked for on the first call. Called inside a tokio
    /// runtime, the client also refreshes in the background.
    pub fn build(self) -> Result<Client> {
        if self.seeds.is_empty() {
            return Err(Error::Config("no seed URL given".into()));
        }
        for seed in &self.seeds {
            let parsed = reqwest::Url::parse(seed).map_err(|e| Error::Config(format!("seed {seed:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Error::Config(format!("seed {seed:?}: not an http(s) URL")));
            }
        }
        let prefix = match &self.log {
            None => String::new(),
            Some(name) if is_log_name(name) => format!("/logs/{name}"),
            Some(name) => {
                return Err(Error::Config(format!(
                    "log name {name:?}: 1-100 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
                )));
            }
        };
        let http = self.http_client()?;
        Ok(Client::new(http, self.seeds, self.settings, prefix))
    }

    fn http_client(&self) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.settings.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        if let Some(token) = &self.token {
            let mut headers = reqwest::header::HeaderMap::new();
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Config("the token has characters a header cannot carry".into()))?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        for ca in &self.ca {
            let pem = ca.read("CA certificate")?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("the CA certificate is not PEM: {e}")))?;
            if certificates.is_empty() {
                return Err(Error::Config("the CA file holds no certificate".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some((cert, key)) = &self.identity {
            let mut pem = cert.read("client certificate")?;
            pem.push(b'\n');
            pem.extend(key.read("client key")?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::Config(format!("the client certificate or key is not PEM: {e}")))?;
            builder = builder.identity(identity);
        }
        builder
            .build()
            .map_err(|e| Error::Config(format!("cannot make the HTTP client: {e}")))
    }
}

/// A named log's name as the server takes it (`default` is the default log's).
fn is_log_name(name: &str) -> bool {
    let first = name.bytes().next();
    first.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_needs_a_seed_that_is_an_http_url() {
        assert!(matches!(ClientBuilder::default().build(), Err(Error::Config(_))));
        let bad = ClientBuilder::default().seeds(["ftp://x"]).build();
        assert!(matches!(bad, Err(Error::Config(message)) if message.contains("not an http")));
        assert!(ClientBuilder::default().seeds(["http://127.0.0.1:1"]).build().is_ok());
    }

    #[test]
    fn a_ca_that_is_not_pem_is_refused_when_built() {
        let built = ClientBuilder::default()
            .seeds(["https://x"])
            .ca_pem(b"not a certificate".to_vec())
            .build();
        assert!(matches!(built, Err(Error::Config(_))));
    }
}
