//! The pinned trust bundle (`ca.pem`, read from the rescue image, the kernel command line's
//! stamped settings or `--ca`): PEM blocks, the CA certificates and the Ed25519 SPKI.
#![no_main]

use ferry_format::signing::TrustBundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bundle) = TrustBundle::from_pem(text) {
        assert!(!bundle.ca_certs.is_empty());
        let _ = bundle.ca_fingerprint();
        // The key reads back from its own PEM.
        let again = TrustBundle::from_pem(&format!(
            "{}{}",
            ferry_format::signing::pem_block("CERTIFICATE", &bundle.ca_certs[0]),
            bundle.signing_key.to_pem()
        ))
        .expect("a bundle written from a parsed one reads back");
        assert_eq!(again.signing_key, bundle.signing_key);
    }
});
