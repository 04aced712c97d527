//! HTTPS and WSS: TLS terminated by the server itself (rustls) when it is given a certificate.
//!
//! axum's own `serve` speaks plain TCP only, so with TLS the server runs its own accept loop: each
//! connection is handshaken (with a deadline, so a silent client cannot hold a task forever) and
//! then served by hyper with upgrades enabled, which the WebSocket route needs. Only HTTP/1.1 is
//! offered (ALPN), since WebSocket upgrades are an HTTP/1.1 mechanism.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::config::TlsConfig;
use crate::StartError;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the PEM files and builds the acceptor.
pub fn acceptor(files: &TlsConfig) -> Result<TlsAcceptor, StartError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| StartError::Tls(format!("{what}: {e}"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| fail(&files.cert.display().to_string(), &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(&files.cert.display().to_string(), &e))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!("{}: no certificate in it", files.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| fail(&files.key.display().to_string(), &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| fail("certificate and key", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS connections until `stop` turns true.
pub async fn serve(listener: TcpListener, app: Router, acceptor: TlsAcceptor, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = stop.wait_for(|stopping| *stopping) => return Ok(()),
        };
        // As for plain TCP: small frames in pairs must not wait for delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, mut stop) = (acceptor.clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            let builder = Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(app));
            let mut connection = std::pin::pin!(connection);
            // At shutdown an idle keep-alive connection is closed rather than waited for (it
            // holds the app state, and with it the hub, until the client's own idle timeout).
            let finished = tokio::select! {
                outcome = connection.as_mut() => Some(outcome),
                _ = stop.wait_for(|stopping| *stopping) => None,
            };
            let outcome = match finished {
                Some(outcome) => outcome,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = outcome {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
