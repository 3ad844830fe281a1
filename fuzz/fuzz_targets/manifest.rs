//! The restore side's manifest path (ferry-client `Client::manifest`): a `SignedManifest` answer
//! is parsed, its Ed25519 signature verified with the pinned key, then the manifest JSON is
//! parsed and checked. Mutated signatures almost never verify, so the input's first byte picks
//! the mode: 0 = the bytes are the HTTP answer, verified as they are; otherwise the rest is
//! manifest JSON that the target signs with its own key first, so the parser and check behind
//! the verification see every input.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ferry_format::api::SignedManifest;
use ferry_format::signing::{SigningKey, SIGNING_CONTEXT};
use ferry_format::Manifest;
use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair};

fn key() -> &'static (Ed25519KeyPair, SigningKey) {
    static KEY: OnceLock<(Ed25519KeyPair, SigningKey)> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("a fixed Ed25519 seed");
        let public = SigningKey(pair.public_key().as_ref().try_into().expect("32 key bytes"));
        (pair, public)
    })
}

/// What the client does with an answer, up to the manifest it would restore from.
fn client_path(signed: &SignedManifest, public: &SigningKey) {
    if public
        .verify(signed.manifest.as_bytes(), &signed.signature)
        .is_err()
    {
        return;
    }
    let Ok(manifest) = serde_json::from_str::<Manifest>(&signed.manifest) else {
        return;
    };
    if manifest.check().is_err() {
        return;
    }
    for d in &manifest.disks {
        assert!(manifest.disk(&d.name).is_some());
    }
    let text = serde_json::to_string(&manifest).expect("a manifest serialises");
    let back: Manifest = serde_json::from_str(&text).expect("a serialised manifest reads back");
    assert_eq!(back, manifest, "manifest JSON round trip");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (pair, public) = key();
    if mode == 0 {
        if let Ok(signed) = serde_json::from_slice::<SignedManifest>(rest) {
            client_path(&signed, public);
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(text.as_bytes());
    let signed = SignedManifest {
        manifest: text.to_string(),
        signature: B64.encode(pair.sign(&msg).as_ref()),
        key_id: public.key_id(),
    };
    client_path(&signed, public);
});
