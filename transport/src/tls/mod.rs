//! Mutual TLS for the cluster's ports, and the identities it proves.
//!
//! Every node of a secured cluster holds a certificate of the cluster's own certificate
//! authority whose DNS name says who it is: `coordinator.sluice`, `<id>.worker.sluice` or
//! `<name>.admin.sluice` ([`Identity`]). Both sides of every control and data connection
//! present one (mutual TLS), so after the handshake each side knows who the other is, and the
//! cluster binds what a peer may do to that name rather than to what its frames claim: a
//! worker registers only under its certificate's id, only an admin submits or cancels.
//!
//! The configurations are TLS 1.3 only, X25519 only and without session tickets: nothing
//! here needs older clients, and fixed handshake sizes keep the simulation's schedule the
//! same from run to run (ring's randomness is outside madsim's seed; sizes are not).

mod identity;
mod issue;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

pub use identity::{Identity, IdentityError};
pub use issue::{issue_ca, issue_node, load_issuer, IssueError, IssuedCert, Issuer, Validity};
pub use stream::NetStream;

/// Why TLS could not be set up, or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file it was ("certificate", "private key", "CA certificate").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file held no usable certificate or key.
    #[error("{path} holds no {what} in PEM form")]
    Empty {
        /// What was looked for.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The files were read but rustls refused them (a key that does not match the
    /// certificate, an unsupported key type).
    #[error("the TLS settings are not usable: {0}")]
    Config(String),
    /// A handshake did not complete (the peer's certificate is not of the cluster's
    /// authority, expired, names someone else, or the peer speaks no TLS).
    #[error("TLS handshake with {peer} failed: {source}")]
    Handshake {
        /// The peer's address.
        peer: String,
        /// Why.
        source: std::io::Error,
    },
    /// The handshake took too long.
    #[error("TLS handshake with {peer} did not complete within {seconds} s")]
    HandshakeTimeout {
        /// The peer's address.
        peer: String,
        /// The limit.
        seconds: u64,
    },
    /// The peer's certificate is valid but names no Sluice identity, or several.
    #[error("the certificate of {peer} is not usable in a Sluice cluster: {source}")]
    Identity {
        /// The peer's address.
        peer: String,
        /// Why.
        source: IdentityError,
    },
}

/// Where a node's TLS files are: the cluster's CA certificate (the only authority it trusts),
/// and the node's own certificate chain and private key, all PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) peers must chain to.
    pub ca: PathBuf,
    /// This node's certificate (chain), leaf first.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// A node's TLS: it accepts and dials with mutual authentication against the cluster's CA
/// and knows its own identity. Cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    server: tokio_rustls::TlsAcceptor,
    client: tokio_rustls::TlsConnector,
    me: Identity,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// The one crypto provider: ring, with X25519 only (see the module documentation).
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    Arc::new(p)
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates in the PEM file at `path` (at least one).
pub fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let text = String::from_utf8_lossy(&pem);
    load_certs_pem(&text).map_err(|e| match e {
        TlsError::Config(why) if why.contains("no certificate") => TlsError::Empty {
            what,
            path: path.to_path_buf(),
        },
        TlsError::Config(why) => config_error(format!("{}: {why}", path.display())),
        other => other,
    })
}

/// The private key in the PEM file at `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "private key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Empty {
        what: "private key",
        path: path.to_path_buf(),
    })
}

/// The certificates in PEM text (at least one).
pub fn load_certs_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(config_error)?;
    if certs.is_empty() {
        return Err(config_error("no certificate in the PEM text"));
    }
    Ok(certs)
}

/// The private key in PEM text.
pub fn load_key_pem(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(config_error)
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c.clone()).map_err(config_error)?;
    }
    Ok(Arc::new(roots))
}

impl ClusterTls {
    /// Reads `files` and builds both sides of the node's TLS; the node's identity is the
    /// Sluice name in its own certificate.
    pub fn from_files(files: &TlsFiles) -> Result<Self, TlsError> {
        let ca = load_certs(&files.ca, "CA certificate")?;
        let chain = load_certs(&files.cert, "certificate")?;
        let key = load_key(&files.key)?;
        Self::new(&ca, chain, key).map_err(|e| match e {
            TlsError::Config(why) => TlsError::Config(format!(
                "{why} (certificate {}, key {}, CA {})",
                files.cert.display(),
                files.key.display(),
                files.ca.display()
            )),
            TlsError::Identity { source, .. } => TlsError::Identity {
                peer: format!("this node ({})", files.cert.display()),
                source,
            },
            other => other,
        })
    }

    /// Builds the node's TLS from certificates and a key already in memory.
    pub fn new(
        ca: &[CertificateDer<'static>],
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let me = Identity::of_certificate(&chain[0]).map_err(|source| TlsError::Identity {
            peer: "this node".into(),
            source,
        })?;
        let roots = roots(ca)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(config_error)?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config_error)?;
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config_error)?;
        client.resumption = rustls::client::Resumption::disabled();
        Ok(ClusterTls {
            server: Arc::new(server).into(),
            client: Arc::new(client).into(),
            me,
        })
    }

    /// Who this node is.
    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// Completes the server side of a handshake on an accepted connection within `timeout`;
    /// the connection and the identity its certificate proves.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        peer: &str,
        timeout: std::time::Duration,
    ) -> Result<(NetStream, Identity), TlsError> {
        let handshake = self.server.accept(stream::Flushing(tcp));
        let tls = within(timeout, peer, handshake).await?;
        let who = identity::of_peer(tls.get_ref().1.peer_certificates(), peer)?;
        Ok((NetStream::Server(Box::new(tls)), who))
    }

    /// Completes the client side of a handshake with the peer that must be `expected` (its
    /// certificate must carry that name) within `timeout`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        expected: &Identity,
        peer: &str,
        timeout: std::time::Duration,
    ) -> Result<NetStream, TlsError> {
        let name = ServerName::try_from(expected.dns_name()).map_err(|e| TlsError::Identity {
            peer: peer.to_string(),
            source: IdentityError::BadName(e.to_string()),
        })?;
        let handshake = self.client.connect(name, stream::Flushing(tcp));
        let tls = within(timeout, peer, handshake).await?;
        // rustls matched the name (wildcards included); the identity rules are stricter: the
        // certificate must name exactly one Sluice identity, and it must be this one.
        let found = identity::of_peer(tls.get_ref().1.peer_certificates(), peer)?;
        if found != *expected {
            return Err(TlsError::Identity {
                peer: peer.to_string(),
                source: IdentityError::Unexpected {
                    expected: expected.dns_name(),
                    found: found.dns_name(),
                },
            });
        }
        Ok(NetStream::Client(Box::new(tls)))
    }
}

async fn within<T>(
    timeout: std::time::Duration,
    peer: &str,
    handshake: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, TlsError> {
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(source)) => Err(TlsError::Handshake {
            peer: peer.to_string(),
            source,
        }),
        Err(_) => Err(TlsError::HandshakeTimeout {
            peer: peer.to_string(),
            seconds: timeout.as_secs(),
        }),
    }
}

/// TLS for a REST port: the server's certificate and key, no client certificates (clients
/// authenticate with bearer tokens).
pub fn rest_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs(cert, "certificate")?;
    let key = load_key(key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts the CA certificates in `ca` (tests and tools that
/// call a TLS REST port).
pub fn rest_client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = roots(&load_certs(ca, "CA certificate")?)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
