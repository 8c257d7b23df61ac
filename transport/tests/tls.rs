//! Mutual TLS between cluster nodes: who may connect, and what the handshake proves.

use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_transport::tls::{issue_ca, ClusterTls, Identity, TlsError, Validity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(5);

fn node(ca: &sluice_transport::tls::Issuer, who: &Identity, trusted: &str) -> ClusterTls {
    let issued = ca.issue_node(who, Validity::Forever).unwrap();
    let ca_certs = vec![CertificateDer::from_pem_slice(trusted.as_bytes()).unwrap()];
    let chain = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    ClusterTls::new(&ca_certs, chain, key).unwrap()
}

/// Accepts one connection on a fresh port with `server`; what the accept returned.
async fn one_accept(server: ClusterTls) -> (String, tokio::task::JoinHandle<Result<Identity, TlsError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        let (mut stream, who) = server.accept(tcp, &peer.to_string(), WAIT).await?;
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        stream.write_all(&buf).await.unwrap();
        stream.flush().await.unwrap();
        Ok(who)
    });
    (addr, handle)
}

#[tokio::test]
async fn nodes_of_one_authority_learn_each_others_identity() {
    let ca = issue_ca("test", Validity::Forever).unwrap();
    let coordinator = node(&ca, &Identity::Coordinator, &ca.ca.cert_pem);
    let worker = node(&ca, &Identity::Worker("w1".into()), &ca.ca.cert_pem);
    assert_eq!(worker.identity(), &Identity::Worker("w1".into()));
    let (addr, server) = one_accept(coordinator).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let mut stream = worker.connect(tcp, &Identity::Coordinator, &addr, WAIT).await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    stream.flush().await.unwrap();
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
    assert_eq!(server.await.unwrap().unwrap(), Identity::Worker("w1".into()));
}

#[tokio::test]
async fn a_certificate_of_another_authority_is_refused_in_the_handshake() {
    let ca = issue_ca("ours", Validity::Forever).unwrap();
    let other = issue_ca("theirs", Validity::Forever).unwrap();
    let coordinator = node(&ca, &Identity::Coordinator, &ca.ca.cert_pem);
    // The intruder trusts our CA (it could read our public certificate) but holds a
    // certificate of its own authority claiming to be a worker.
    let intruder = node(&other, &Identity::Worker("w1".into()), &ca.ca.cert_pem);
    let (addr, server) = one_accept(coordinator).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let dialed = intruder.connect(tcp, &Identity::Coordinator, &addr, WAIT).await;
    let accepted = server.await.unwrap();
    assert!(
        matches!(accepted, Err(TlsError::Handshake { .. })),
        "the coordinator must refuse it: {accepted:?}"
    );
    // TLS 1.3: the client's handshake completes before the server checks its certificate;
    // the refusal reaches it as an alert on first use.
    if let Ok(mut s) = dialed {
        let _ = s.write_all(b"hello").await;
        let _ = s.flush().await;
        let mut buf = [0u8; 5];
        assert!(s.read_exact(&mut buf).await.is_err());
    }
}

#[tokio::test]
async fn a_server_that_is_not_the_expected_identity_is_refused_by_the_client() {
    let ca = issue_ca("ours", Validity::Forever).unwrap();
    // A worker answering where the coordinator was expected (a redirected address).
    let impostor = node(&ca, &Identity::Worker("w2".into()), &ca.ca.cert_pem);
    let worker = node(&ca, &Identity::Worker("w1".into()), &ca.ca.cert_pem);
    let (addr, _server) = one_accept(impostor).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let err = worker
        .connect(tcp, &Identity::Coordinator, &addr, WAIT)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("handshake"), "{err}");
}

#[tokio::test]
// rustls checks validity against the real wall clock, so the test dates against it too.
#[allow(clippy::disallowed_methods)]
async fn an_expired_certificate_is_refused() {
    let ca = issue_ca("ours", Validity::Forever).unwrap();
    let coordinator = node(&ca, &Identity::Coordinator, &ca.ca.cert_pem);
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(400 * 86_400);
    let issued = ca
        .issue_node(
            &Identity::Worker("w1".into()),
            Validity::Days {
                from: long_ago,
                days: 30,
            },
        )
        .unwrap();
    let expired = ClusterTls::new(
        &[CertificateDer::from_pem_slice(ca.ca.cert_pem.as_bytes()).unwrap()],
        vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let (addr, server) = one_accept(coordinator).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let _ = expired.connect(tcp, &Identity::Coordinator, &addr, WAIT).await;
    let err = server.await.unwrap().unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn a_plain_client_is_refused_within_the_handshake_timeout() {
    let ca = issue_ca("ours", Validity::Forever).unwrap();
    let coordinator = node(&ca, &Identity::Coordinator, &ca.ca.cert_pem);
    let (addr, server) = one_accept(coordinator).await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"\x00\x00\x00\x10not a tls client").await.unwrap();
    let err = server.await.unwrap().unwrap_err();
    assert!(matches!(err, TlsError::Handshake { .. }), "{err}");
}
