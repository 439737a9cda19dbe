//! Security: who a caller is and what they may do.
//!
//! - Transport (`tls`): HTTPS with rustls from PEM files, optionally
//!   requiring client certificates (mutual TLS); a client certificate's
//!   subject common name is its principal. Reloaded on demand (SIGHUP).
//! - Tokens (`tokens`): `Authorization: Bearer <token>` maps to a principal.
//! - Policy (`acl`): which principal may `produce`, `consume` or `admin`.
//! - `policy`: given what a caller presented, who they are and whether
//!   they may act. The HTTP guard that applies it per route is `api::guard`.
//!
//! With none of the flags given, everything is open (and the server says so
//! once at startup).

mod acl;
mod policy;
mod tls;
mod tokens;
pub mod x509;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use acl::{Acl, Action};

/// Failed authentications and authorizations, labelled by `reason`.
pub(crate) const AUTH_FAILURES: &str = "distlog_auth_failures_total";

/// HELP text for the metric this module's callers record.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        AUTH_FAILURES,
        "Requests and TLS handshakes refused for authentication or authorization, by reason."
    );
}
pub use policy::{AuthFailure, Policy, Principal};
pub use tls::{ClientCertificate, PeerInfo, ReloadableTls, TlsFiles};
pub use tokens::{MIN_TOKEN_LEN, Tokens};

/// The security flags, as given.
#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    pub tls: Option<TlsFiles>,
    pub token_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    /// Require `admin` for `/metrics`, `/healthz` and `/readyz`.
    pub protect_metrics: bool,
}

impl SecurityConfig {
    pub fn is_open(&self) -> bool {
        self.tls.is_none() && self.token_file.is_none() && self.acl_file.is_none()
    }
}

/// Why the security configuration cannot be used; startup stops with it.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read {}: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}, line {line}: {why}", file.display())]
    Invalid { file: PathBuf, line: usize, why: String },
    #[error("{}: {why}", file.display())]
    Pem { file: PathBuf, why: String },
    #[error("the certificate in {} expired {expired_days} days ago", file.display())]
    Expired { file: PathBuf, expired_days: i64 },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("--acl needs a way to identify callers: give --token-file or --tls-client-ca")]
    AclWithoutIdentity,
}

impl AuthConfigError {
    fn read(file: &Path, source: std::io::Error) -> Self {
        AuthConfigError::Read {
            file: file.to_path_buf(),
            source,
        }
    }
}

/// A line-oriented policy file: `<a> <b>` pairs, blank lines and `#`
/// comments ignored. Errors carry the 1-based line number.
pub(crate) type LineError = (usize, String);

/// The `<a> <b>` pairs of `text`, each with its line number; `shape` names
/// the two words in the error for a malformed line.
pub(crate) fn word_pairs<'a>(text: &'a str, shape: &str) -> Result<Vec<(usize, &'a str, &'a str)>, LineError> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(first), Some(second), None) = (words.next(), words.next(), words.next()) else {
            return Err((i + 1, format!("expected `{shape}`")));
        };
        pairs.push((i + 1, first, second));
    }
    Ok(pairs)
}

/// Reads and parses a policy file, naming the file and line of an error.
pub(crate) fn load_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, LineError>,
) -> Result<T, AuthConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthConfigError::read(path, e))?;
    parse(&text).map_err(|(line, why)| AuthConfigError::Invalid {
        file: path.to_path_buf(),
        line,
        why,
    })
}

/// The loaded security setup of a server.
pub struct Security {
    pub tls: Option<Arc<ReloadableTls>>,
    pub policy: Option<Arc<Policy>>,
}

impl Security {
    pub fn load(config: &SecurityConfig) -> Result<Security, AuthConfigError> {
        let tls = config.tls.as_ref().map(ReloadableTls::load).transpose()?.map(Arc::new);
        let tokens = config.token_file.as_deref().map(Tokens::load).transpose()?;
        let acl = config.acl_file.as_deref().map(Acl::load).transpose()?;
        let mtls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if acl.is_some() && tokens.is_none() && !mtls {
            return Err(AuthConfigError::AclWithoutIdentity);
        }
        let identifies = tokens.is_some() || mtls;
        let policy =
            (identifies || acl.is_some()).then(|| Arc::new(Policy::new(tokens, acl, mtls, config.protect_metrics)));
        if config.is_open() {
            tracing::warn!(
                "security is off: plain HTTP, no authentication, no ACL; anyone who reaches the port may read and write"
            );
        } else {
            tracing::info!(
                tls = tls.is_some(),
                mutual_tls = mtls,
                tokens = config.token_file.is_some(),
                acl = config.acl_file.is_some(),
                protect_metrics = config.protect_metrics,
                "security is on"
            );
        }
        Ok(Security { tls, policy })
    }
}
