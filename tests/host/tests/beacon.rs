//! The first-boot beacon binary against a real appliance: a job picked up and running gets a
//! one-time beacon credential (as the agent's fix-up asks for it); the beacon, run on a temp root
//! holding its installed files, reports once and removes them, and `appliance jobs show` says the
//! job booted; a second run is refused (410) and still cleans up; with a wrong CA it retries
//! within its bound, fails, and leaves its files for the next boot.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::machine::{create_job, show};
use common::*;
use ferry_format::agent::beacon::{BeaconConfig, BeaconIssued};
use ferry_format::agent::{Disk, EnrollReply, EnrollRequest, Inventory, Job, Nic};
use ferry_test_support::https::{load_trust, Client};

const MIB: u64 = 1 << 20;
const MAC: &str = "52:54:00:be:ac:01";
/// The files the fix-up installs, relative to the root.
const FILES: [&str; 4] = [
    "etc/ferry/beacon.conf",
    "etc/systemd/system/ferry-beacon.service",
    "etc/systemd/system/multi-user.target.wants/ferry-beacon.service",
    "usr/local/lib/ferry/beacon",
];

/// Enroll a machine by HTTP as the rescue agent does, approve it, pick its job up and start
/// it; return the job's beacon credential.
fn running_job_credential(a: &Appliance, job: &str) -> String {
    let addr: SocketAddr = format!("127.0.0.1:{}", a.port).parse().unwrap();
    let c = Client::new(&load_trust(&a.ca()), addr, Duration::from_secs(30));
    let enroll = a.token("enroll");
    let req = EnrollRequest {
        inventory: Inventory {
            disks: vec![Disk {
                name: "vda".into(),
                size: 64 * MIB,
                model: None,
                serial: Some("FAKE-vda".into()),
                wwn: None,
                logical_sector_size: 512,
                physical_sector_size: 512,
                blank: true,
                removable: false,
                holds: None,
                protected: None,
            }],
            nics: vec![Nic {
                name: "eth0".into(),
                mac: MAC.into(),
                carrier: Some(true),
                driver: None,
                pci_path: None,
                predictable: None,
            }],
            ..Default::default()
        },
        version: "test".into(),
        resume: vec![],
    };
    let body = serde_json::to_vec(&req).unwrap();
    let me: EnrollReply =
        serde_json::from_slice(&c.ok("POST", "/agents/enroll", &enroll, Some(&body), 200)).unwrap();
    ok(a.appliance()
        .args(["agents", "approve", "--data"])
        .arg(a.data())
        .args(["--mac", MAC]));
    let handed: Job = serde_json::from_slice(&c.ok(
        "GET",
        &format!("/agents/{}/job", me.agent),
        &me.credential,
        None,
        200,
    ))
    .unwrap();
    assert_eq!(handed.id, job);
    c.ok(
        "PUT",
        &format!("/agents/{}/jobs/{job}/state", me.agent),
        &me.credential,
        Some(br#""running""#),
        204,
    );
    let issued: BeaconIssued = serde_json::from_slice(&c.ok(
        "POST",
        &format!("/agents/{}/jobs/{job}/beacon", me.agent),
        &me.credential,
        None,
        200,
    ))
    .unwrap();
    issued.credential
}

/// The beacon's files under `root`, as the fix-up installs them.
fn install(root: &Path, config: &BeaconConfig) {
    for rel in FILES {
        std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
    }
    std::fs::write(root.join(FILES[0]), config.to_text().unwrap()).unwrap();
    std::fs::write(root.join(FILES[1]), "[Unit]\n").unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/ferry-beacon.service",
        root.join(FILES[2]),
    )
    .unwrap();
    std::fs::copy(bin("beacon"), root.join(FILES[3])).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "migrated-web01\n").unwrap();
}

fn present(root: &Path) -> Vec<&'static str> {
    FILES
        .into_iter()
        .filter(|r| root.join(r).symlink_metadata().is_ok())
        .collect()
}

fn beacon(root: &Path, bound: &str) -> std::process::Output {
    run(Command::new(bin("beacon"))
        .arg("--root")
        .arg(root)
        .args(["--give-up-after", bound]))
}

#[test]
fn the_beacon_reports_once_then_removes_itself() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("disk.img");
    make_image(&src, 4 * MIB, 7);
    let snapshot = a.backup("web01", &[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let job = create_job(&a, MAC, &snapshot, "disk=auto", &[]);
    let credential = running_job_credential(&a, &job);
    let config = BeaconConfig {
        url: a.url(),
        job: job.clone(),
        credential,
        ca_pem: std::fs::read_to_string(a.ca()).unwrap(),
    };

    // A wrong CA: every attempt fails, it retries within its bound and keeps its files.
    let other = tempfile::tempdir().unwrap();
    ok(Command::new(bin("appliance"))
        .args(["init", "--data"])
        .arg(other.path().join("data")));
    let wrong = BeaconConfig {
        ca_pem: std::fs::read_to_string(other.path().join("data/ca.pem")).unwrap(),
        ..config.clone()
    };
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &wrong);
    let t = Instant::now();
    let out = beacon(root.path(), "3s");
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("trying again") && err.contains("kept for the next boot"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(present(root.path()), FILES.to_vec());
    assert!(show(&a, &job)["beacon"].get("booted").is_none());

    // The right CA: reported once, every file removed, the job says when it booted.
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &config);
    let out = beacon(root.path(), "30s");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("recorded this system's first boot"), "{err}");
    assert_eq!(present(root.path()), Vec::<&str>::new(), "{err}");
    let v = show(&a, &job);
    let b = &v["beacon"];
    assert!(
        b["booted"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    assert_eq!(b["hostname"], "migrated-web01", "{v}");
    assert!(
        b["address"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{v}"
    );
    let text = ok(a
        .appliance()
        .args(["jobs", "show", "--data"])
        .arg(a.data())
        .arg(&job));
    assert!(text.contains("booted    "), "{text}");

    // A second run with the same credential is refused and still removes everything.
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &config);
    let out = beacon(root.path(), "30s");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("410") && err.contains("spent"), "{err}");
    assert_eq!(present(root.path()), Vec::<&str>::new(), "{err}");
    assert_eq!(show(&a, &job)["beacon"], v["beacon"]);
}
