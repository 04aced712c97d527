//! TLS terminated by the server: HTTPS and WSS with a certificate it was given, a refused bad
//! certificate, and plain HTTP refused on a TLS port.

mod common;

use std::sync::Arc;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use hark_server::config::{Config, TlsConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for `localhost`, written as PEM files; returns the TLS config and
/// a client configuration that trusts it.
fn certificate(dir: &std::path::Path) -> (TlsConfig, Arc<rustls::ClientConfig>) {
    let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, signed.cert.pem()).unwrap();
    std::fs::write(&key, signed.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&cert).unwrap()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (TlsConfig { cert, key }, Arc::new(client))
}

async fn tls_stream(addr: std::net::SocketAddr, client: Arc<rustls::ClientConfig>) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client);
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("TLS handshake")
}

#[tokio::test]
async fn https_and_wss_with_the_given_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (tls, client) = certificate(certs.path());
    let server = TestServer::start_with(Config { tls: Some(tls), ..Config::default() }).await;

    let mut https = tls_stream(server.addr, Arc::clone(&client)).await;
    https.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    https.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");

    let wss = tls_stream(server.addr, client).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/v1/ws", wss).await.expect("WebSocket over TLS");
    let hello = serde_json::json!({"type":"hello","id":"1","token":server.token("alice"),"protocol":[1],"device":"d"});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    let Some(Ok(Message::Text(welcome))) = ws.next().await else { panic!("no welcome") };
    let welcome: serde_json::Value = serde_json::from_str(&welcome).unwrap();
    assert_eq!((welcome["type"].as_str(), welcome["user"].as_str()), (Some("welcome"), Some("alice")));

    // Plain HTTP on the TLS port gets nowhere.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut bytes = Vec::new();
    let _ = plain.read_to_end(&mut bytes).await;
    assert!(!String::from_utf8_lossy(&bytes).contains("200 OK"));
}

#[tokio::test]
async fn a_bad_certificate_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let tls = TlsConfig { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = hark_server::clock::ManualClock::new(common::T0);
    let outcome = hark_server::start(listener, Config { tls: Some(tls), ..Config::default() }, &dir.path().join("data"), clock).await;
    assert!(matches!(outcome, Err(hark_server::StartError::Tls(_))));
    assert!(!dir.path().join("data").exists(), "nothing was set up");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_keep_alive_connections() {
    let certs = tempfile::tempdir().unwrap();
    let (tls, client) = certificate(certs.path());
    let mut server = TestServer::start_with(Config { tls: Some(tls), ..Config::default() }).await;
    // A client keeps its connection open after a request, as HTTP clients' pools do.
    let mut idle = tls_stream(server.addr, client).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 256];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::timeout(common::PATIENCE, server.stop()).await.expect("shutdown waited on an idle connection");
}
