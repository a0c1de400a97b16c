//! TLS for SMTP sessions: the stream a session runs over (plain TCP or rustls over TCP) and
//! the client configuration a relay's pool builds once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The byte stream under an SMTP session.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("bad PEM certificate: {0}")]
    Pem(String),
    #[error("certificate not usable as a trust anchor: {0}")]
    Anchor(String),
    #[error("'{0}' is not a valid TLS server name")]
    ServerName(String),
    #[error("bad PEM private key: {0}")]
    Key(String),
    #[error("client certificate: {0}")]
    ClientAuth(String),
}

/// A certificate chain and its private key, presented to servers that ask for one (APNs
/// certificate authentication).
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl ClientIdentity {
    /// From PEM texts: the certificate (and its chain) and the private key (PKCS#8, PKCS#1 or
    /// SEC1). The key must be the certificate's.
    pub fn from_pem(certificate: &str, private_key: &str) -> Result<Self, TlsError> {
        let chain = parse_certificates(certificate)?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(private_key.as_bytes()).map_err(|e| TlsError::Key(e.to_string()))?;
        let identity = Self { chain, key };
        // Builds a configuration once: rustls refuses a key that is not the certificate's.
        identity.config(rustls::RootCertStore::empty())?;
        Ok(identity)
    }

    fn config(&self, roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
        crate::channels::install_crypto_provider();
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::ClientAuth(e.to_string()))
    }
}

/// The certificates in a PEM text (at least one).
pub fn parse_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// A connector trusting the system's roots plus `extra_ca_pem`. The system's store is read
/// once per process.
pub fn connector(extra_ca_pem: Option<&str>) -> Result<TlsConnector, TlsError> {
    connector_with_alpn(extra_ca_pem, Vec::new())
}

/// As [`connector`], offering `alpn` protocols (`h2` for HTTP/2).
pub fn connector_with_alpn(extra_ca_pem: Option<&str>, alpn: Vec<Vec<u8>>) -> Result<TlsConnector, TlsError> {
    connector_with(extra_ca_pem, alpn, None)
}

/// As [`connector_with_alpn`], presenting `identity` when the server asks for a client
/// certificate.
pub fn connector_with(extra_ca_pem: Option<&str>, alpn: Vec<Vec<u8>>, identity: Option<&ClientIdentity>) -> Result<TlsConnector, TlsError> {
    crate::channels::install_crypto_provider();
    static SYSTEM_ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    let system = SYSTEM_ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "a system root certificate could not be loaded");
        }
        found.certs
    });
    let mut roots = rustls::RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(system.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        for cert in parse_certificates(pem)? {
            roots.add(cert).map_err(|e| TlsError::Anchor(e.to_string()))?;
        }
    }
    let mut config = match identity {
        Some(id) => id.config(roots)?,
        None => rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth(),
    };
    config.alpn_protocols = alpn;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name the relay's certificate must carry: its host name or IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}
