//! The health check's HTTPS client: which server certificate it accepts and
//! which client certificate it shows.
//!
//! The check connects to the node's own listener over loopback, so the
//! names in the node's certificate (its advertise host, `node1`,
//! `distlog-0.distlog-peers...`) never match the address dialled. A
//! certificate is accepted when it is, byte for byte, the first certificate
//! of the node's own `--tls-cert` file (which the check reads from the same
//! `DISTLOG_TLS_CERT` the node does: no CA is needed, self-signed works), or
//! when it chains to one of the given CAs (`--ca`, `DISTLOG_TLS_CLIENT_CA`,
//! `DISTLOG_PEER_CA`) under the name of the advertise URL's host. The
//! handshake's signatures are checked either way, so the server must hold
//! the certificate's key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What the check trusts and shows, as read from files.
pub struct TlsTrust {
    /// The node's own certificate (the first of its `--tls-cert` chain).
    pub pinned: Option<PathBuf>,
    /// CA files whose certificates sign the node's.
    pub cas: Vec<PathBuf>,
    /// The name the node's certificate must carry when checked against `cas`.
    pub name: String,
    /// A client certificate and key, for a node that requires them.
    pub identity: Option<(PathBuf, PathBuf)>,
}

fn read_certs(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read certificates from {}: {e}", file.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: no certificate in this file", file.display());
    Ok(certs)
}

/// The rustls client configuration for the check.
pub fn client_config(trust: &TlsTrust) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = trust
        .pinned
        .as_deref()
        .map(read_certs)
        .transpose()?
        .and_then(|chain| chain.into_iter().next());
    let mut roots = RootCertStore::empty();
    for file in &trust.cas {
        for ca in read_certs(file)? {
            roots
                .add(ca)
                .with_context(|| format!("{}: not a usable CA certificate", file.display()))?;
        }
    }
    let by_ca = if roots.is_empty() {
        None
    } else {
        let name = ServerName::try_from(trust.name.clone())
            .with_context(|| format!("{:?} is not a host name to check a certificate against", trust.name))?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
        Some((verifier, name))
    };
    anyhow::ensure!(
        pinned.is_some() || by_ca.is_some(),
        "nothing to trust the node's certificate by: give --ca (DISTLOG_HEALTHCHECK_CA) or --tls-cert"
    );
    let verifier = Arc::new(NodeCertificate {
        pinned,
        by_ca,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &trust.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| anyhow::anyhow!("cannot read the key {}: {e}", key.display()))?;
            builder.with_client_auth_cert(read_certs(cert)?, key)?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts the node's own certificate, or one a trusted CA signed for its name.
#[derive(Debug)]
struct NodeCertificate {
    pinned: Option<CertificateDer<'static>>,
    by_ca: Option<(Arc<WebPkiServerVerifier>, ServerName<'static>)>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NodeCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .as_ref()
            .is_some_and(|own| own.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.by_ca {
            Some((verifier, name)) => verifier.verify_server_cert(end_entity, intermediates, name, ocsp_response, now),
            None => Err(rustls::Error::General(
                "the server's certificate is not the one in --tls-cert (DISTLOG_TLS_CERT) now: changed without a SIGHUP?"
                    .into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
