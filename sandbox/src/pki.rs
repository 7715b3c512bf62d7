//! Throwaway certificate authorities for the sandbox's TLS servers (the apiserver, a Console with
//! TLS): a fresh CA and one serving certificate it signed.

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and one serving certificate it signed.
pub struct ServingCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The serving certificate then the CA, for a rustls server.
    pub chain_der: Vec<CertificateDer<'static>>,
    pub key_der: PrivateKeyDer<'static>,
}

/// A fresh CA named `ca_name` and a certificate for `sans` (IP literals become IP SANs).
pub fn serving_cert(ca_name: &str, sans: &[String]) -> Result<ServingCert> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, ca_name);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?).context("self-signing the CA")?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans.to_vec()).context("certificate SANs")?;
    params.distinguished_name.push(DnType::CommonName, sans.first().map(String::as_str).unwrap_or("localhost"));
    let cert = params.signed_by(&key, &ca).context("signing the serving certificate")?;
    Ok(ServingCert {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        chain_der: vec![cert.der().clone(), ca.der().clone()],
        key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}
