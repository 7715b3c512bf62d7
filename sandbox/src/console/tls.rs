//! A self-signed CA and a server certificate for the Console's SANs, as a self-hosted Console
//! has by default (reference §4). Clients trust the CA's PEM.

use std::sync::Arc;

use anyhow::Context as _;
use tokio_rustls::TlsAcceptor;

/// The acceptor to serve with and the CA certificate (PEM) to hand to clients.
pub struct ConsoleTls {
    pub acceptor: TlsAcceptor,
    pub ca_pem: String,
}

/// Makes a fresh CA and a server certificate for `sans` (IP literals become IP SANs).
pub fn build_console_tls(sans: &[String]) -> anyhow::Result<ConsoleTls> {
    crate::install_crypto_provider();
    let cert = crate::pki::serving_cert("Prisma Cloud Compute Console simulator CA", sans)?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(cert.chain_der, cert.key_der)
        .context("TLS server config")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ConsoleTls { acceptor: TlsAcceptor::from(Arc::new(config)), ca_pem: cert.ca_pem })
}
