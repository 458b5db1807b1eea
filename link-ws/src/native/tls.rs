//! TLS settings for `wss://`: a server certificate and key from PEM files,
//! and the roots a client trusts.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::WsError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's TLS identity: certificate chain and private key.
#[derive(Clone)]
pub struct TlsServer {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

// r[impl ws.tls.server]
impl TlsServer {
    /// Load a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1) from files.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, WsError> {
        let cert =
            std::fs::read(cert.as_ref()).map_err(crate::error::io("read certificate file"))?;
        let key = std::fs::read(key.as_ref()).map_err(crate::error::io("read key file"))?;
        Self::from_pem(&cert, &key)
    }

    /// A certificate chain and private key given as PEM text.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, WsError> {
        let certs = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WsError::Tls(format!("certificate PEM: {e}")))?;
        if certs.is_empty() {
            return Err(WsError::Tls("no certificate in the certificate PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| WsError::Tls(format!("private key PEM: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| WsError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| WsError::Tls(format!("certificate and key: {e}")))?;
        Ok(TlsServer {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Which servers a client trusts for `wss://`.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

// r[impl ws.tls.client]
impl ClientTls {
    /// Trust the operating system's root certificates.
    pub fn system_roots() -> Result<Self, WsError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "none found".into());
            return Err(WsError::Tls(format!(
                "no usable system root certificates: {why}"
            )));
        }
        Self::with_roots(roots)
    }

    /// Trust only the CA certificates in a PEM file (a private CA, or a
    /// self-signed server certificate).
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, WsError> {
        let pem = std::fs::read(path.as_ref()).map_err(crate::error::io("read CA file"))?;
        Self::from_ca_pem(&pem)
    }

    /// Trust only the CA certificates in this PEM text.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, WsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| WsError::Tls(format!("CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| WsError::Tls(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(WsError::Tls("no certificate in the CA PEM".into()));
        }
        Self::with_roots(roots)
    }

    fn with_roots(roots: rustls::RootCertStore) -> Result<Self, WsError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| WsError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

/// A certificate made at start by [`TlsServer::self_signed`], with what a
/// user needs to trust it.
#[cfg(feature = "self-signed")]
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The certificate's SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// SHA-256 of the SubjectPublicKeyInfo, base64: the form Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256_base64: String,
    /// SHA-256 of the certificate (DER), as colon-separated upper-case hex:
    /// the fingerprint browsers show in their certificate viewer.
    pub cert_sha256: String,
}

// r[impl ws.tls.self-signed]
#[cfg(feature = "self-signed")]
impl TlsServer {
    /// Make a fresh self-signed certificate (ECDSA P-256) for `names` (DNS
    /// names or IP addresses, the certificate's subject alternative names)
    /// and a server identity that uses it.
    pub fn self_signed(names: &[String]) -> Result<(TlsServer, SelfSigned), WsError> {
        use base64::Engine as _;
        use rcgen::PublicKeyData as _;
        if names.is_empty() {
            return Err(WsError::Tls(
                "a self-signed certificate needs a name".into(),
            ));
        }
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| WsError::Tls(format!("making a self-signed certificate: {e}")))?;
        let cert_pem = ck.cert.pem();
        let key_pem = ck.signing_key.serialize_pem();
        let cert_der = ck.cert.der().to_vec();
        let spki_der = ck.signing_key.subject_public_key_info();
        let sha = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
        let spki_sha256_base64 =
            base64::engine::general_purpose::STANDARD.encode(sha(&spki_der).as_ref());
        let cert_sha256 = sha(&cert_der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let server = TlsServer::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
        Ok((
            server,
            SelfSigned {
                cert_pem,
                key_pem,
                cert_der,
                spki_der,
                spki_sha256_base64,
                cert_sha256,
            },
        ))
    }
}
