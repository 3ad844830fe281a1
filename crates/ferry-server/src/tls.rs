//! The appliance's PKI: a CA (ECDSA P-256) made at init, a server certificate it signs, and the
//! rustls server configuration (TLS 1.2/1.3, ALPN `h2` and `http/1.1`).

use std::fs;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ferry_store::keys::{SERVER_CERT, SERVER_KEY};
use ferry_store::Store;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// Names every server certificate carries: loopback and QEMU's alias for the host.
pub const DEFAULT_NAMES: [&str; 3] = ["127.0.0.1", "10.0.2.2", "localhost"];
/// The CA outlives any appliance; the server certificate can be reissued from it.
const CA_VALIDITY_DAYS: i64 = 365 * 50;
const SERVER_VALIDITY_DAYS: i64 = 365 * 20;

/// PEM texts made by [`generate`].
pub struct Pki {
    pub ca_cert_pem: String,
    pub ca_cert_der: Vec<u8>,
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

/// The given names plus [`DEFAULT_NAMES`], without duplicates, in order.
pub fn server_names(extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in extra.iter().map(String::as_str).chain(DEFAULT_NAMES) {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

/// A new CA and a server certificate for `names` signed by it.
pub fn generate(appliance: &str, names: &[String]) -> Result<Pki> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generate the CA key")?;
    let mut ca =
        CertificateParams::new(Vec::<String>::new()).context("build the CA certificate")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("Ferry appliance CA ({appliance})"),
    );
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let ca_cert = ca.self_signed(&ca_key).context("sign the CA certificate")?;

    let server_key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generate the server key")?;
    let mut srv = CertificateParams::new(names.to_vec()).with_context(|| {
        format!("build a server certificate for {names:?}: give DNS names or IP addresses")
    })?;
    srv.distinguished_name
        .push(DnType::CommonName, format!("Ferry appliance {appliance}"));
    srv.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    srv.not_before = now - Duration::days(1);
    srv.not_after = now + Duration::days(SERVER_VALIDITY_DAYS);
    let server_cert = srv
        .signed_by(&server_key, &ca_cert, &ca_key)
        .context("sign the server certificate")?;

    Ok(Pki {
        ca_cert_pem: ca_cert.pem(),
        ca_cert_der: ca_cert.der().to_vec(),
        ca_key_pem: ca_key.serialize_pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    })
}

/// Install ring as rustls' process-wide provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The rustls configuration serving the store's server certificate.
pub fn server_config(store: &Store) -> Result<Arc<rustls::ServerConfig>> {
    let cert_path = store.keys_dir().join(SERVER_CERT);
    let key_path = store.keys_dir().join(SERVER_KEY);
    let cert_pem = fs::read(&cert_path).with_context(|| format!("read {}", cert_path.display()))?;
    let key_pem = fs::read(&key_path).with_context(|| format!("read {}", key_path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse {}", cert_path.display()))?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => bail!("{} holds no private key", key_path.display()),
        Err(e) => return Err(e).with_context(|| format!("parse {}", key_path.display())),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choose TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("use the server certificate and key")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
