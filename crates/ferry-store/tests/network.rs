//! The source's network configuration in a commit: copied into the signed manifest, and a
//! configuration out of bounds refused before anything is read or signed.

use std::time::SystemTime;

use ferry_format::network::{ConfigSystem, Interface, NetworkConfig, MAX_INTERFACES};
use ferry_format::Manifest;
use ferry_store::StoreError;
use ferry_test_support::store::{chunk, disk, new_store, CS};

fn network() -> NetworkConfig {
    NetworkConfig {
        interfaces: vec![
            Interface {
                name: "ens192".into(),
                mac: Some("00:50:56:aa:00:01".into()),
                driver: Some("vmxnet3".into()),
                pci_path: Some("pci-0000:0b:00.0".into()),
                addresses: vec!["10.1.2.3/24".parse().unwrap()],
                gateways: vec!["10.1.2.1".parse().unwrap()],
                system: ConfigSystem::Networkd,
                file: "/etc/systemd/network/10-ens192.network".into(),
                ..Interface::default()
            },
            Interface {
                name: "ens224".into(),
                mac: Some("00:50:56:aa:00:02".into()),
                system: ConfigSystem::Unconfigured,
                ..Interface::default()
            },
        ],
    }
}

#[test]
fn a_commit_records_its_network_in_the_signed_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let now = SystemTime::now();
    let session = store.start_session("web01", CS, now).unwrap();
    let (a, fa) = chunk(1);
    store.put_chunk(&a, &fa).unwrap();
    let (index, mut req) = disk(&[a]);
    store.put_index(&session, "sda", &index, now).unwrap();
    req.network = Some(network());
    let id = store.commit(&session, &req, &signer, now).unwrap();

    let signed = store
        .signed_manifest(&id, &signer.public_key().key_id())
        .unwrap();
    signer
        .public_key()
        .verify(signed.manifest.as_bytes(), &signed.signature)
        .unwrap();
    let m: Manifest = serde_json::from_str(&signed.manifest).unwrap();
    m.check().unwrap();
    assert_eq!(m.network, Some(network()));
    assert_eq!(store.manifest(&id).unwrap().network, Some(network()));

    // Without one, the manifest has no `network` key at all (as before the field).
    let session = store.start_session("web02", CS, now).unwrap();
    store.put_index(&session, "sda", &index, now).unwrap();
    let (_, plain) = disk(&[a]);
    let id = store.commit(&session, &plain, &signer, now).unwrap();
    let signed = store
        .signed_manifest(&id, &signer.public_key().key_id())
        .unwrap();
    assert!(
        !signed.manifest.contains("\"network\""),
        "{}",
        signed.manifest
    );
}

#[test]
fn a_network_out_of_bounds_is_refused_and_the_session_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let now = SystemTime::now();
    let session = store.start_session("web01", CS, now).unwrap();
    let (a, fa) = chunk(1);
    store.put_chunk(&a, &fa).unwrap();
    let (index, req) = disk(&[a]);
    store.put_index(&session, "sda", &index, now).unwrap();

    let one = network().interfaces[0].clone();
    let too_many = NetworkConfig {
        interfaces: (0..300)
            .map(|n| Interface {
                name: format!("eth{n}"),
                ..one.clone()
            })
            .collect(),
    };
    let mut upper = network();
    upper.interfaces[1].mac = Some("00:50:56:AA:00:02".into());
    for (bad, piece) in [(too_many, "at most 256 interfaces"), (upper, "lowercase")] {
        let mut big = req.clone();
        big.network = Some(bad);
        match store.commit(&session, &big, &signer, now) {
            Err(StoreError::Invalid(e)) => {
                assert!(
                    e.contains("network configuration") && e.contains(piece),
                    "{e}"
                )
            }
            other => panic!("{piece}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(MAX_INTERFACES, 256);
    assert!(store.list_snapshots(None).unwrap().is_empty());
    // Nothing was signed or consumed: the same session commits without it.
    let id = store.commit(&session, &req, &signer, now).unwrap();
    assert_eq!(store.manifest(&id).unwrap().network, None);
}
