//! HTTPS and WSS: TLS terminated by the server itself (rustls) when it is given a certificate.
//!
//! This builds the acceptor; [`crate::listener`] runs the handshake (with a deadline, so a silent
//! client cannot hold a task forever) before serving HTTP. Only HTTP/1.1 is offered (ALPN), since
//! WebSocket upgrades are an HTTP/1.1 mechanism.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::StartError;

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
