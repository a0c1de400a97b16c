//! TLS for Herald's own listeners (gRPC, the public listener, metrics): rustls server
//! configurations built from PEM files, rebuilt when the files change (checked every second:
//! a renewed certificate is served from the next handshake, with no restart; files that do
//! not load keep the previous configuration and are logged), optionally requiring client
//! certificates from a CA (mutual TLS).
//!
//! Handshakes run beside the accept loop (a slow or silent client holds only its own task,
//! for at most ten seconds); the listener hands on connections whose handshake finished.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_secs(1);

/// A listener's certificate chain and key, and the CA whose client certificates it requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// Builds a server configuration, refusing files that do not hold what they should.
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> anyhow::Result<ServerConfig> {
    crate::channels::install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&files.cert, "certificate file")?)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no certificate in it", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "key file")?)
        .with_context(|| format!("{}: no PEM private key in it", files.key.display()))?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&read(ca, "client CA file")?) {
                roots.add(c.with_context(|| format!("{}: not PEM certificates", ca.display()))?)?;
            }
            if roots.is_empty() {
                anyhow::bail!("{}: no CA certificate in it", ca.display());
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .with_context(|| format!("{}: cannot verify clients with it", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("{} and {} do not make a certificate and its key", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A server configuration that follows its files.
pub struct Reloading {
    name: &'static str,
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    config: ArcSwap<ServerConfig>,
    stamp: parking_lot::Mutex<[u8; 32]>,
}

impl Reloading {
    /// Loads the files now (an error if they do not load) and follows them from then on.
    pub fn start(name: &'static str, files: TlsFiles, alpn: &[&[u8]]) -> anyhow::Result<Arc<Self>> {
        let config = server_config(&files, alpn)?;
        let this = Arc::new(Self {
            name,
            stamp: parking_lot::Mutex::new(stamp(&files)),
            files,
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            config: ArcSwap::from_pointee(config),
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                match weak.upgrade() {
                    Some(t) => t.reload_if_changed(),
                    None => return,
                }
            }
        });
        Ok(this)
    }

    /// Rebuilds the configuration when a file's contents changed.
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.files);
        if *self.stamp.lock() == now {
            return;
        }
        let alpn: Vec<&[u8]> = self.alpn.iter().map(Vec::as_slice).collect();
        match server_config(&self.files, &alpn) {
            Ok(c) => {
                self.config.store(Arc::new(c));
                *self.stamp.lock() = now;
                metrics::counter!(crate::telemetry::TLS_RELOADS, "listener" => self.name, "result" => "loaded").increment(1);
                tracing::info!(listener = self.name, cert = %self.files.cert.display(), "TLS certificate reloaded.");
            }
            Err(e) => {
                // Retried on the next change; the previous certificate is served meanwhile.
                *self.stamp.lock() = now;
                metrics::counter!(crate::telemetry::TLS_RELOADS, "listener" => self.name, "result" => "failed").increment(1);
                tracing::error!(listener = self.name, error = %format!("{e:#}"), "TLS files changed but do not load; serving the previous ones.");
            }
        }
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }
}

/// A digest of the files' contents (missing files count as empty).
fn stamp(files: &TlsFiles) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()].into_iter().flatten() {
        h.update(std::fs::read(p).unwrap_or_default());
        h.update([0]);
    }
    h.finalize().into()
}

/// Connections whose TLS handshake finished.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, tls: Arc<Reloading>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (sock, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot accept a connection.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = sock.set_nodelay(true);
                let (acceptor, tx, name) = (tls.acceptor(), tx.clone(), tls.name);
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed."),
                        Err(_) => tracing::debug!(listener = name, %peer, "TLS handshake timed out."),
                    }
                });
            }
        });
        Ok(Self { rx, local })
    }

    /// The connections as a stream (tonic's incoming).
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
        tokio_stream::wrappers::ReceiverStream::new(self.rx).map(|(s, _)| Ok(s))
    }
}

use futures::StreamExt as _;

/// TLS for a gRPC client: the given CAs (else the system's roots), and a client certificate.
pub fn client_config(
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    use anyhow::Context as _;
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    crate::channels::install_crypto_provider();
    let read = |p: &std::path::Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let mut config = ClientTlsConfig::new();
    match ca {
        Some(p) => config = config.ca_certificate(Certificate::from_pem(read(p)?)),
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                config = config.ca_certificate(Certificate::from_pem(pem_of(&c)));
            }
        }
    }
    if let (Some(c), Some(k)) = (cert, key) {
        config = config.identity(Identity::from_pem(read(c)?, read(k)?));
    }
    Ok(config)
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
