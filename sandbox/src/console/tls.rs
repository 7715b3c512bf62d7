//! A self-signed CA and a server certificate for the Console's SANs, as a self-hosted Console
//! has by default (reference §4). Clients trust the CA's PEM.

use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The acceptor to serve with and the CA certificate (PEM) to hand to clients.
pub struct ConsoleTls {
    pub acceptor: TlsAcceptor,
    pub ca_pem: String,
}

/// Makes a fresh CA and a server certificate for `sans` (IP literals become IP SANs).
pub fn build_console_tls(sans: &[String]) -> anyhow::Result<ConsoleTls> {
    crate::install_crypto_provider();
    let ca_key = KeyPair::generate().context("generate CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Prisma Cloud Compute Console simulator CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).context("self-sign CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().context("generate server key")?;
    let mut params = CertificateParams::new(sans.to_vec()).context("server certificate SANs")?;
    params.distinguished_name.push(DnType::CommonName, sans.first().map(String::as_str).unwrap_or("console"));
    let server_cert = params.signed_by(&server_key, &issuer).context("sign server certificate")?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone(), ca_cert.der().clone()], key)
        .context("TLS server config")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ConsoleTls { acceptor: TlsAcceptor::from(Arc::new(config)), ca_pem: ca_cert.pem() })
}
