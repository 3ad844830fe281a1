//! A snapshot's Windows facts (what a backup job of the rescue image records): signed into the
//! manifest, bounded, and a hibernated volume refused for restore unless the job allows it.

use std::time::SystemTime;

use ferry_format::agent::{JobFor, JobOptions, Mapping, Then};
use ferry_format::manifest::OsFacts;
use ferry_store::jobs::NewJob;
use ferry_store::StoreError;
use ferry_test_support::store::{chunk, disk, new_store, CS};

fn windows(hibernated: bool) -> OsFacts {
    OsFacts {
        family: "windows".into(),
        version: Some("Windows NT 10.0 build 17763 server (Windows Server 2019 Standard)".into()),
        boot_mode: Some("uefi".into()),
        volume: Some("vda2".into()),
        hibernated: Some(hibernated),
        fast_startup: Some(true),
        ..OsFacts::default()
    }
}

fn job(snapshot: &str, allow_hibernated: bool) -> NewJob {
    NewJob {
        snapshot: snapshot.into(),
        for_: JobFor::Mac("52:54:00:00:00:01".into()),
        mappings: vec!["sda=auto".parse::<Mapping>().unwrap()],
        then: Then::None,
        overwrite: false,
        options: JobOptions {
            allow_hibernated,
            ..JobOptions::default()
        },
    }
}

#[test]
fn a_hibernated_windows_snapshot_is_refused_for_restore_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let now = SystemTime::now();
    let (a, fa) = chunk(1);
    store.put_chunk(&a, &fa).unwrap();
    let commit = |machine: &str, os: Option<OsFacts>| {
        let session = store.start_session(machine, CS, now).unwrap();
        let (index, mut req) = disk(&[a]);
        store.put_index(&session, "sda", &index, now).unwrap();
        req.os = os;
        store.commit(&session, &req, &signer, now)
    };

    let clean = commit("win-clean", Some(windows(false))).unwrap();
    assert_eq!(store.manifest(&clean).unwrap().os, Some(windows(false)));
    store.create_job(job(&clean, false), now).unwrap();

    let hib = commit("win-hib", Some(windows(true))).unwrap();
    let e = store.create_job(job(&hib, false), now).unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("Windows volume vda2 held a hibernation image")
            && e.contains("Fast Startup on, which is on")
            && e.contains("--allow-hibernated"),
        "{e}"
    );
    store.create_job(job(&hib, true), now).unwrap();

    // Facts out of bounds are refused before anything is signed.
    let mut long = windows(false);
    long.version = Some("x".repeat(300));
    let e = commit("win-long", Some(long)).unwrap_err().to_string();
    assert!(e.contains("os.version"), "{e}");
}
