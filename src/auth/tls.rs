//! HTTPS: rustls configured from PEM files (TLS 1.2 and 1.3, ring crypto),
//! optionally requiring client certificates signed by `--tls-client-ca`.
//! Handshakes run in each connection's own task (`server`), so that a slow
//! client never holds up others; the configuration can be reloaded while
//! connections stay open.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::AuthConfigError;
use super::x509;

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// The verified client certificate's subject common name (mutual TLS).
    pub client_cn: Option<String>,
    /// The verified client certificate itself (mutual TLS).
    pub client_cert: Option<ClientCertificate>,
}

/// A client certificate the handshake verified (its end-entity
/// certificate), shared by the requests of its connection.
#[derive(Clone, Debug)]
pub struct ClientCertificate(Arc<CertificateDer<'static>>);

impl ClientCertificate {
    pub fn new(der: CertificateDer<'static>) -> ClientCertificate {
        ClientCertificate(Arc::new(der))
    }

    /// Whether it names any host (a DNS or IP subject alternative name).
    pub fn names_hosts(&self) -> bool {
        x509::names_hosts(&self.0)
    }

    /// Whether it is valid for `host` (a DNS name or an IP address) by the
    /// rules a client holds a server's certificate to (rustls-webpki: its
    /// DNS and IP subject alternative names, wildcards as there, never the
    /// common name).
    pub fn valid_for(&self, host: &str) -> bool {
        let Ok(name) = ServerName::try_from(host) else {
            return false;
        };
        let Ok(cert) = ParsedCertificate::try_from(self.0.as_ref()) else {
            return false;
        };
        rustls::client::verify_server_name(&cert, &name).is_ok()
    }
}

fn pem_error(file: &Path, why: impl std::fmt::Display) -> AuthConfigError {
    AuthConfigError::Pem {
        file: file.to_path_buf(),
        why: why.to_string(),
    }
}

fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, AuthConfigError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| pem_error(file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(file, e))?;
    if certs.is_empty() {
        return Err(pem_error(file, "no certificate in this file"));
    }
    Ok(certs)
}

fn check_not_expired(file: &Path, cert: &CertificateDer) -> Result<(), AuthConfigError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match x509::not_after(cert) {
        Some(end) if end < now => Err(AuthConfigError::Expired {
            file: file.to_path_buf(),
            expired_days: (now - end) / 86_400,
        }),
        Some(_) => Ok(()),
        None => Err(pem_error(file, "the certificate's validity cannot be read")),
    }
}

/// Builds the rustls server configuration, checking that the certificate
/// has not expired and that the key matches it.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, AuthConfigError> {
    let certs = read_certs(&files.cert)?;
    check_not_expired(&files.cert, &certs[0])?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error(&files.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| AuthConfigError::Tls(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(ca_file)? {
                roots.add(ca).map_err(|e| pem_error(ca_file, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| pem_error(ca_file, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => pem_error(
            &files.key,
            format!("this key does not match the certificate in {}", files.cert.display()),
        ),
        other => AuthConfigError::Tls(other.to_string()),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The current TLS configuration, swapped whole on reload. Connections keep
/// the configuration they were accepted with.
pub struct ReloadableTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadableTls {
    pub fn load(files: &TlsFiles) -> Result<ReloadableTls, AuthConfigError> {
        Ok(ReloadableTls {
            current: RwLock::new(server_config(files)?),
            files: files.clone(),
        })
    }

    /// Re-reads the certificate, key and client CA. On error the old
    /// configuration stays in force.
    pub fn reload(&self) -> Result<(), AuthConfigError> {
        let fresh = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

impl ReloadableTls {
    /// The TLS handshake on an accepted connection, with the configuration
    /// current now, within `timeout`. Failures are counted and logged (at
    /// debug: clients can make as many as they like).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        remote: SocketAddr,
        timeout: Duration,
    ) -> Option<(TlsStream<TcpStream>, PeerInfo)> {
        match tokio::time::timeout(timeout, self.acceptor().accept(tcp)).await {
            Ok(Ok(stream)) => {
                let cert = stream.get_ref().1.peer_certificates().and_then(|certs| certs.first());
                let peer = PeerInfo {
                    remote,
                    client_cn: cert.and_then(|cert| x509::subject_common_name(cert)),
                    client_cert: cert.map(|cert| ClientCertificate::new(cert.clone().into_owned())),
                };
                Some((stream, peer))
            }
            Ok(Err(e)) => {
                record_handshake_failure(remote, &e);
                None
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                None
            }
        }
    }
}

fn record_handshake_failure(remote: SocketAddr, error: &std::io::Error) {
    let reason = match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoCertificatesPresented) => Some("no_credentials"),
        Some(rustls::Error::InvalidCertificate(_)) => Some("bad_certificate"),
        _ => None,
    };
    if let Some(reason) = reason {
        metrics::counter!(super::AUTH_FAILURES, "reason" => reason).increment(1);
    }
    tracing::debug!(%remote, error = %error, "TLS handshake failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate naming `hosts` (DNS names or IP addresses).
    fn certificate(hosts: &[&str]) -> ClientCertificate {
        let names = hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "peer");
        let key = rcgen::KeyPair::generate().unwrap();
        ClientCertificate::new(params.self_signed(&key).unwrap().der().clone())
    }

    #[test]
    fn a_certificate_is_valid_for_the_hosts_it_names_only() {
        let cert = certificate(&["node-1.peers.example", "10.0.0.1", "::1"]);
        assert!(cert.names_hosts());
        assert!(cert.valid_for("node-1.peers.example"));
        assert!(
            cert.valid_for("NODE-1.peers.example"),
            "DNS names are not case-sensitive"
        );
        assert!(cert.valid_for("10.0.0.1"));
        assert!(cert.valid_for("::1"));
        assert!(!cert.valid_for("node-2.peers.example"));
        assert!(!cert.valid_for("10.0.0.2"));
        assert!(!cert.valid_for("peer"), "the common name is not a host");
        assert!(!cert.valid_for("not a host"));
    }

    #[test]
    fn a_wildcard_covers_one_label() {
        let cert = certificate(&["*.peers.example"]);
        assert!(cert.valid_for("node-1.peers.example"));
        assert!(!cert.valid_for("a.b.peers.example"));
        assert!(!cert.valid_for("peers.example"));
    }

    #[test]
    fn a_certificate_without_host_names_names_no_host() {
        let cert = certificate(&[]);
        assert!(!cert.names_hosts());
        assert!(!cert.valid_for("127.0.0.1"));
    }
}
