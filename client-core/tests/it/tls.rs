//! `wss://`: the client speaks TLS (rustls) to a server behind a TLS-terminating proxy, trusts
//! only certificates it should, and carries its token in the URL.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use taskflow_client_core::{Client, ClientConfig, ClientEvent, ConnectionState, ServerConfig};
use taskflow_testkit::server::TestServer;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::support::{add_task, next_event, synced};

/// A TLS front for `upstream` with a fresh self-signed certificate for `localhost`;
/// returns its port and the certificate (DER).
async fn tls_proxy(upstream: std::net::SocketAddr) -> (u16, Vec<u8>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert = certified.cert.der().to_vec();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(vec![CertificateDer::from(cert.clone())], key)
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return; // a client that does not trust us
                };
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    (port, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_over_wss_with_a_trusted_private_certificate_and_a_token() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(dir.path()).await;
    let (port, cert) = tls_proxy(server.addr).await;
    let url = format!("wss://localhost:{port}/api/v1/sync");

    let mut trusted = ServerConfig::new(&url)
        .expect("url")
        .with_token(server.account.access_token.clone());
    trusted.extra_roots.push(cert);
    let client_dir = tempfile::tempdir().expect("dir");
    let a = Client::open(ClientConfig {
        data_dir: client_dir.path().to_owned(),
        user: "ann".into(),
        server: Some(trusted),
    })
    .await
    .expect("opens");
    let board = a
        .create_board_as(server.register_board("Secure").await, "Secure")
        .await
        .expect("create");
    add_task(&a, board, "over TLS").await;
    synced(&a, board).await;

    // Without the private root the certificate is refused and nothing is sent.
    let untrusted_dir = tempfile::tempdir().expect("dir");
    let b = Client::open(ClientConfig {
        data_dir: untrusted_dir.path().to_owned(),
        user: "bob".into(),
        server: Some(ServerConfig::new(&url).expect("url")),
    })
    .await
    .expect("opens");
    let mut events = b.subscribe();
    let ClientEvent::Connection(ConnectionState::Offline { error, .. }) =
        next_event(&mut events, |e| {
            matches!(e, ClientEvent::Connection(ConnectionState::Offline { .. }))
        })
        .await
    else {
        unreachable!()
    };
    assert!(error.contains("certificate"), "{error}");
}

#[test]
fn the_token_travels_percent_encoded_in_the_query() {
    let plain = ServerConfig::new("ws://h:1/api/v1/sync").expect("url");
    assert_eq!(
        plain.connect_url(Some("a b/+=é")),
        "ws://h:1/api/v1/sync?token=a%20b%2F%2B%3D%C3%A9"
    );
    let with_query = ServerConfig::new("ws://h:1/s?x=1").expect("url");
    assert_eq!(with_query.connect_url(Some("t")), "ws://h:1/s?x=1&token=t");
    assert_eq!(
        ServerConfig::new("ws://h:1/s")
            .expect("url")
            .connect_url(None),
        "ws://h:1/s"
    );
    for bad in ["http://h/s", "h:1/s", "ws:///s", ""] {
        assert!(ServerConfig::new(bad).is_err(), "{bad}");
    }
}
