//! Manifest signatures and the trust bundle an agent pins.
//!
//! The appliance signs `SIGNING_CONTEXT || manifest bytes` with Ed25519. The trust bundle
//! (`ca.pem`, written by `appliance init`) is a PEM file with the appliance's CA certificate
//! (`CERTIFICATE`, pins TLS) and the manifest signing key (`PUBLIC KEY`, SubjectPublicKeyInfo of
//! an Ed25519 key): one file pins both.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ED25519};

use crate::FormatError;

/// Domain separation: a signature over a manifest can never be replayed as anything else.
pub const SIGNING_CONTEXT: &[u8] = b"ferry-manifest-v1\0";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An Ed25519 public key that verifies manifests.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(pub [u8; 32]);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.key_id())
    }
}

impl SigningKey {
    /// Short id: the first 8 bytes of BLAKE3 of the key, in hex.
    pub fn key_id(&self) -> String {
        hex::encode(&blake3::hash(&self.0).as_bytes()[..8])
    }

    pub fn to_pem(&self) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem_block("PUBLIC KEY", &der)
    }

    pub fn from_spki_der(der: &[u8]) -> Result<Self, FormatError> {
        match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            Some(key) if key.len() == 32 => Ok(SigningKey(key.try_into().unwrap_or([0; 32]))),
            _ => Err(FormatError::Trust(
                "the PUBLIC KEY block is not an Ed25519 key".into(),
            )),
        }
    }

    /// Verify `signature` (base64) over `manifest` bytes.
    pub fn verify(&self, manifest: &[u8], signature_b64: &str) -> Result<(), FormatError> {
        let sig = B64
            .decode(signature_b64.trim())
            .map_err(|_| FormatError::Signature("the signature is not valid base64".into()))?;
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(manifest);
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(&msg, &sig)
            .map_err(|_| {
                FormatError::Signature(format!(
                    "the manifest signature does not verify with the pinned signing key {}",
                    self.key_id()
                ))
            })
    }
}

/// What an agent pins: the CA certificates (DER) and the manifest signing key.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    pub ca_certs: Vec<Vec<u8>>,
    pub signing_key: SigningKey,
}

impl TrustBundle {
    pub fn from_pem(text: &str) -> Result<Self, FormatError> {
        let mut ca_certs = Vec::new();
        let mut signing_key = None;
        for (label, der) in pem_blocks(text)? {
            match label.as_str() {
                "CERTIFICATE" => ca_certs.push(der),
                "PUBLIC KEY" => signing_key = Some(SigningKey::from_spki_der(&der)?),
                _ => {}
            }
        }
        if ca_certs.is_empty() {
            return Err(FormatError::Trust(
                "no CERTIFICATE block: give the ca.pem that `appliance init` wrote".into(),
            ));
        }
        let signing_key = signing_key.ok_or_else(|| {
            FormatError::Trust(
                "no PUBLIC KEY block (manifest signing key): give the ca.pem that `appliance init` wrote".into(),
            )
        })?;
        Ok(TrustBundle {
            ca_certs,
            signing_key,
        })
    }

    /// SHA-256 fingerprint of the first CA certificate, as `openssl x509 -fingerprint -sha256` prints it.
    pub fn ca_fingerprint(&self) -> String {
        fingerprint(&self.ca_certs[0])
    }
}

/// `AB:CD:…` SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, FormatError> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            if l.trim() == end {
                closed = true;
                break;
            }
            b64.push_str(l.trim());
        }
        if !closed {
            return Err(FormatError::Trust(format!(
                "PEM block {label} is not terminated"
            )));
        }
        let der = B64
            .decode(&b64)
            .map_err(|_| FormatError::Trust(format!("PEM block {label} is not valid base64")))?;
        out.push((label.to_string(), der));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    #[test]
    fn sign_verify_and_bundle_round_trip() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key = SigningKey(kp.public_key().as_ref().try_into().unwrap());
        let manifest = br#"{"version":1}"#;
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(manifest);
        let sig = B64.encode(kp.sign(&msg).as_ref());
        key.verify(manifest, &sig).unwrap();
        assert!(key.verify(br#"{"version":2}"#, &sig).is_err());

        let pem = format!(
            "{}{}",
            pem_block("CERTIFICATE", b"not really a cert"),
            key.to_pem()
        );
        let bundle = TrustBundle::from_pem(&pem).unwrap();
        assert_eq!(bundle.signing_key, key);
        assert_eq!(bundle.ca_certs, vec![b"not really a cert".to_vec()]);
        assert!(TrustBundle::from_pem(&pem_block("CERTIFICATE", b"x")).is_err());
    }
}
