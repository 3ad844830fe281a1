//! Key files under `keys/` and the manifest signer.
//!
//! `keys/signing.pk8` is the Ed25519 manifest signing key (PKCS#8 v2 DER as ring writes it, mode
//! 0600); its public half is the `PUBLIC KEY` block of the trust bundle `ca.pem`.

use std::fs;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ferry_format::signing::{SigningKey, SIGNING_CONTEXT};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::error::{io_err, Result, StoreError};
use crate::fsx;
use crate::Store;

pub const CA_KEY: &str = "ca.key";
pub const CA_CERT: &str = "ca.pem";
pub const SERVER_KEY: &str = "server.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SIGNING_KEY: &str = "signing.pk8";

/// Write a private file (mode 0600) atomically.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    fsx::write_atomic(path, data, 0o600)
}

/// A new Ed25519 key as PKCS#8 DER.
pub fn generate_signing_key() -> Result<Vec<u8>> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map(|k| k.as_ref().to_vec())
        .map_err(|_| StoreError::Key("generate an Ed25519 key: failed".into()))
}

/// Signs manifests with the store's key.
pub struct ManifestSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for ManifestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManifestSigner({})", self.public_key().key_id())
    }
}

impl ManifestSigner {
    pub fn from_pkcs8(der: &[u8]) -> Result<ManifestSigner> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|_| StoreError::Key("the signing key is not an Ed25519 PKCS#8 key".into()))?;
        Ok(ManifestSigner { pair })
    }

    pub fn public_key(&self) -> SigningKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        SigningKey(k)
    }

    /// Base64 Ed25519 signature over `SIGNING_CONTEXT || manifest`.
    pub fn sign(&self, manifest: &[u8]) -> String {
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(manifest);
        B64.encode(self.pair.sign(&msg).as_ref())
    }
}

impl Store {
    pub fn load_signer(&self) -> Result<ManifestSigner> {
        let path = self.keys_dir().join(SIGNING_KEY);
        let der = fs::read(&path).map_err(io_err("read signing key", &path))?;
        ManifestSigner::from_pkcs8(&der)
    }
}
