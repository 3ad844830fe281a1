//! The `appliance` CLI on a remote appliance (issue 14, admin API): the same commands with
//! `--appliance URL --ca FILE` and an admin token in FERRY_TOKEN, against a real `appliance
//! serve` on 127.0.0.1, answer what `--data` answers on the host; wrong roles and a wrong CA are
//! refused before anything changes.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn local(a: &Appliance, args: &[&str]) -> Command {
    let mut c = a.appliance();
    c.args(args).arg("--data").arg(a.data());
    c
}

/// The same command over the admin API, the token in the environment (not the process list).
fn remote_with(a: &Appliance, token: &str, ca: &Path, args: &[&str]) -> Command {
    let mut c = a.appliance();
    c.args(["--appliance", &a.url(), "--ca"])
        .arg(ca)
        .args(args)
        .env("FERRY_TOKEN", token);
    c
}

fn remote(a: &Appliance, args: &[&str]) -> Command {
    remote_with(a, &a.admin, &a.ca(), args)
}

fn json(out: String) -> serde_json::Value {
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn image(dir: &Path, seed: u64) -> std::path::PathBuf {
    let path = dir.join(format!("disk-{seed}.img"));
    let mut data = vec![0u8; 512 << 10];
    Rng::new(seed).fill(&mut data);
    std::fs::write(&path, data).unwrap();
    path
}

fn snapshot_ids(v: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .expect("snapshots --json is a list")
        .iter()
        .map(|s| s["snapshot"].as_str().expect("snapshot").to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn the_cli_drives_a_remote_appliance_over_the_admin_api() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    for seed in [1, 2] {
        let disk = image(work.path(), seed);
        a.backup("web-1", &[&disk]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }

    // Reads: the same answers as on the host.
    let here = snapshot_ids(&json(ok(&mut local(&a, &["snapshots", "--json"]))));
    let there = snapshot_ids(&json(ok(&mut remote(&a, &["snapshots", "--json"]))));
    assert_eq!(here.len(), 2, "{here:?}");
    assert_eq!(here, there);
    let usage_here = json(ok(&mut local(&a, &["store", "--json"])));
    let usage_there = json(ok(&mut remote(&a, &["store", "--json"])));
    assert_eq!(usage_here, usage_there);
    assert_eq!(usage_there["snapshots"], 2);

    // A token made remotely is listed on the host; revoked remotely, it stops working.
    let made = json(ok(&mut remote(
        &a,
        &[
            "token", "create", "--role", "metrics", "--name", "grafana", "--json",
        ],
    )));
    let id = made["id"].as_str().expect("id").to_string();
    let listed = json(ok(&mut local(&a, &["token", "list", "--json"])));
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in {listed}"));
    assert_eq!(row["role"], "metrics");
    ok(&mut remote(&a, &["token", "revoke", &id]));
    let listed = json(ok(&mut remote(&a, &["token", "list", "--json"])));
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert!(!row["revoked"].is_null(), "{row}");

    // Prune's plan over the API names both snapshots and removes nothing.
    let plan = ok(&mut remote(
        &a,
        &["prune", "--machine", "web-1", "--keep", "1", "--dry-run"],
    ));
    for s in &here {
        assert!(plan.contains(s.as_str()), "plan lacks {s}: {plan}");
    }
    assert_eq!(
        snapshot_ids(&json(ok(&mut local(&a, &["snapshots", "--json"])))).len(),
        2
    );

    // Deleting one snapshot remotely; a GC run (chunks younger than its 5-minute margin stay)
    // is then what its status reports.
    ok(&mut remote(&a, &["snapshots", "delete", &here[0]]));
    assert_eq!(
        snapshot_ids(&json(ok(&mut local(&a, &["snapshots", "--json"])))),
        vec![here[1].clone()]
    );
    let gc = json(ok(&mut remote(&a, &["gc", "--json"])));
    assert_eq!(gc["missing_chunks"], 0, "{gc}");
    assert_eq!(gc["snapshots"], 1, "{gc}");
    let status = json(ok(&mut remote(&a, &["gc", "--status", "--json"])));
    assert_eq!(status["last"]["report"], gc, "{status}");
    assert_eq!(status["running"], false, "{status}");
    let gone = fails(&mut remote(&a, &["snapshots", "delete", &here[0]]));
    assert!(gone.contains(here[0].as_str()), "{gone}");

    // Jobs: an unknown one is named; the list matches the host's.
    let err = fails(&mut remote(&a, &["jobs", "cancel", "job-00000000"]));
    assert!(err.contains("job-00000000"), "{err}");
    assert_eq!(
        json(ok(&mut remote(&a, &["jobs", "list", "--json"]))),
        json(ok(&mut local(&a, &["jobs", "list", "--json"])))
    );

    // A backup token is not an admin: refused, and nothing was deleted.
    let err = fails(&mut remote_with(
        &a,
        &a.backup,
        &a.ca(),
        &["snapshots", "delete", &here[1]],
    ));
    assert!(err.contains("403") || err.contains("admin"), "{err}");
    assert_eq!(
        snapshot_ids(&json(ok(&mut local(&a, &["snapshots", "--json"])))).len(),
        1
    );

    // Another appliance's CA: the TLS handshake fails, nothing is sent.
    let other = work.path().join("other");
    ok(Command::new(bin("appliance"))
        .args(["init", "--json", "--data"])
        .arg(&other));
    let err = fails(&mut remote_with(
        &a,
        &a.admin,
        &other.join("ca.pem"),
        &["snapshots", "delete", &here[1]],
    ));
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("TLS"),
        "{err}"
    );
    assert_eq!(
        snapshot_ids(&json(ok(&mut local(&a, &["snapshots", "--json"])))).len(),
        1
    );

    // Commands that need the store directory say so.
    let err = fails(&mut remote(&a, &["verify"]));
    assert!(err.contains("--data"), "{err}");
    // No token: named before connecting.
    let mut c = a.appliance();
    c.args(["--appliance", &a.url(), "--ca"])
        .arg(a.ca())
        .args(["jobs", "list"])
        .env_remove("FERRY_TOKEN");
    let err = fails(&mut c);
    assert!(err.contains("FERRY_TOKEN"), "{err}");
}
