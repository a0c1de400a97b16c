//! A TLS front for smtp-sink: a test CA and a certificate for 127.0.0.1/localhost (rcgen), and
//! a listener that terminates TLS — from the first byte, or after answering EHLO and STARTTLS
//! itself as RFC 3207 describes — then relays the session to a real smtp-sink.
#![allow(dead_code)]

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// How the front speaks before TLS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Front {
    /// TLS from the first byte.
    Implicit,
    /// Plain greeting and EHLO offering STARTTLS, then TLS.
    StartTls,
    /// Plain greeting and EHLO without STARTTLS (a relay a client must not use in clear).
    NoStartTls,
}

pub struct TlsRelay {
    pub port: u16,
    /// The test CA's certificate, PEM: what a client must trust to reach this relay.
    pub ca_pem: String,
    /// How many TLS handshakes completed.
    pub handshakes: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsRelay {
    /// Starts the front on a free loopback port, relaying to smtp-sink on `sink_port`.
    pub async fn start(front: Front, sink_port: u16) -> Self {
        Self::with_names(front, sink_port, &["localhost", "127.0.0.1"]).await
    }

    /// As `start`, with a certificate for `names` only.
    pub async fn with_names(front: Front, sink_port: u16, names: &[&str]) -> Self {
        let (config, ca_pem) = test_server_config(names);
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = serve(front, tcp, acceptor, counter, sink_port).await;
                });
            }
        });
        Self { port, ca_pem, handshakes, task }
    }
}

/// A TLS server configuration with a certificate for `names`, issued by a fresh test CA, and
/// that CA's certificate (PEM): what a client must trust.
pub fn test_server_config(names: &[&str]) -> (rustls::ServerConfig, String) {
    test_server_config_with(names, None)
}

/// A fresh self-signed CA named `name`.
pub fn test_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    herald::channels::install_crypto_provider();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// As [`test_server_config`], asking clients for a certificate `verifier` accepts.
pub fn test_server_config_with(
    names: &[&str],
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> (rustls::ServerConfig, String) {
    let ca = test_ca("Herald test CA");
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf_params.distinguished_name.push(DnType::CommonName, "server.test");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let builder = rustls::ServerConfig::builder();
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    (config, ca.pem())
}

async fn serve(
    front: Front,
    mut tcp: TcpStream,
    acceptor: TlsAcceptor,
    handshakes: Arc<std::sync::atomic::AtomicUsize>,
    sink_port: u16,
) -> std::io::Result<()> {
    if front != Front::Implicit {
        tcp.write_all(b"220 relay.test ESMTP\r\n").await?;
        let mut reader = BufReader::new(&mut tcp);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let verb = line.trim_end().to_ascii_uppercase();
            let answer: &[u8] = if verb.starts_with("EHLO") {
                match front {
                    Front::StartTls => b"250-relay.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
                    _ => b"250-relay.test\r\n250 PIPELINING\r\n",
                }
            } else if verb == "STARTTLS" && front == Front::StartTls {
                b"220 2.0.0 Ready to start TLS\r\n"
            } else if verb == "QUIT" {
                b"221 2.0.0 Bye\r\n"
            } else {
                // Nothing but EHLO, STARTTLS and QUIT is served in clear.
                b"530 5.7.0 Must issue a STARTTLS command first\r\n"
            };
            reader.get_mut().write_all(answer).await?;
            if verb == "STARTTLS" && front == Front::StartTls {
                break;
            }
            if verb == "QUIT" {
                return Ok(());
            }
        }
    }
    let mut tls = acceptor.accept(tcp).await?;
    handshakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut sink = TcpStream::connect(("127.0.0.1", sink_port)).await?;
    if front == Front::StartTls {
        // The client already has a greeting: swallow the sink's.
        let mut greeting = [0u8; 512];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            let n = sink.read(&mut greeting).await?;
            if n == 0 {
                return Ok(());
            }
            got.extend_from_slice(&greeting[..n]);
        }
    }
    tokio::io::copy_bidirectional(&mut tls, &mut sink).await?;
    Ok(())
}
