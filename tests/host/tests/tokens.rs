//! Scoped credentials and retention through the real binaries (issue 9, scoped credentials):
//! `appliance token create|list|revoke`, `backup-agent`, `restore-agent`, `appliance prune`
//! against a real `appliance serve` on 127.0.0.1.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// A small raw disk image whose content depends on `seed`.
fn image(dir: &Path, name: &str, seed: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut data = vec![0u8; 256 << 10];
    Rng::new(seed).fill(&mut data);
    std::fs::write(&path, data).unwrap();
    path
}

fn backup_cmd(a: &Appliance, token: &str, machine: &str, disk: &Path) -> Command {
    let mut c = Command::new(bin("backup-agent"));
    c.args(["backup", "--json", "--retry-window", "10s", "--appliance"])
        .arg(a.url())
        .args(["--token", token, "--machine", machine, "--ca"])
        .arg(a.ca())
        .arg("--disk")
        .arg(format!("sda={}", disk.display()));
    c
}

fn backup(a: &Appliance, token: &str, machine: &str, disk: &Path) -> String {
    let out = ok(&mut backup_cmd(a, token, machine, disk));
    let v: serde_json::Value = serde_json::from_str(&out).expect("backup --json");
    v["snapshot"].as_str().unwrap().to_string()
}

/// `token create --json ARGS`: (id, token).
fn create(a: &Appliance, args: &[&str]) -> (String, String) {
    let out = ok(a
        .appliance()
        .args(["token", "create", "--json", "--data"])
        .arg(a.data())
        .args(args));
    let v: serde_json::Value = serde_json::from_str(&out).expect("token create --json");
    (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

fn token_list(a: &Appliance) -> Vec<serde_json::Value> {
    let out = ok(a
        .appliance()
        .args(["token", "list", "--json", "--data"])
        .arg(a.data()));
    serde_json::from_str(&out).expect("token list --json")
}

fn snapshots_of(a: &Appliance, machine: &str) -> Vec<String> {
    let out = ok(a
        .appliance()
        .args(["snapshots", "--json", "--machine", machine, "--data"])
        .arg(a.data()));
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    v.iter()
        .map(|s| s["snapshot"].as_str().unwrap().to_string())
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_backup_token_needs_a_scope_and_writes_only_its_machines() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let disk = image(work.path(), "disk.img", 1);

    let err = fails(
        a.appliance()
            .args(["token", "create", "--role", "backup", "--data"])
            .arg(a.data()),
    );
    assert!(
        err.contains("--machine") && err.contains("--all-machines"),
        "{err}"
    );

    let (id, web01) = create(&a, &["--role", "backup", "--machine", "web01"]);
    backup(&a, &web01, "web01", &disk);
    let err = fails(&mut backup_cmd(&a, &web01, "db01", &disk));
    assert!(
        err.contains("403") && err.contains("db01") && err.contains("web01") && err.contains(&id),
        "backup-agent should pass on the appliance's refusal: {err}"
    );
    assert!(snapshots_of(&a, "db01").is_empty());
}

#[test]
fn a_flood_from_one_token_does_not_prune_another_tokens_snapshots() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let (b_id, genuine) = create(
        &a,
        &[
            "--role",
            "backup",
            "--machine",
            "m01",
            "--name",
            "m01's agent",
        ],
    );
    let (a_id, flooder) = create(&a, &["--role", "backup", "--machine", "m*"]);

    let mut genuine_snaps = Vec::new();
    for seed in 0..2 {
        genuine_snaps.push(backup(
            &a,
            &genuine,
            "m01",
            &image(work.path(), "g.img", seed),
        ));
    }
    let mut flood = Vec::new();
    for seed in 0..10 {
        flood.push(backup(
            &a,
            &flooder,
            "m01",
            &image(work.path(), "f.img", 100 + seed),
        ));
    }

    let dry = ok(a
        .appliance()
        .args([
            "prune",
            "--machine",
            "m01",
            "--keep",
            "2",
            "--dry-run",
            "--data",
        ])
        .arg(a.data()));
    for s in &genuine_snaps {
        let line = dry
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == s))
            .unwrap();
        assert!(line.starts_with("keep") && line.contains(&b_id), "{dry}");
    }
    assert_eq!(
        dry.lines()
            .filter(|l| l.starts_with("would remove"))
            .count(),
        8,
        "{dry}"
    );
    assert_eq!(
        snapshots_of(&a, "m01").len(),
        12,
        "a dry run removes nothing"
    );

    ok(a.appliance()
        .args(["prune", "--machine", "m01", "--keep", "2", "--data"])
        .arg(a.data()));
    let mut left = snapshots_of(&a, "m01");
    left.sort();
    let mut want: Vec<String> = genuine_snaps.iter().chain(&flood[8..]).cloned().collect();
    want.sort();
    assert_eq!(left, want, "the newest 2 of each token stay");
    assert!(!a_id.is_empty());
}

#[test]
fn revoked_and_expired_tokens_are_refused_and_list_shows_last_use() {
    let mut a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let disk = image(work.path(), "disk.img", 7);
    let (id, token) = create(
        &a,
        &[
            "--role",
            "backup",
            "--machine",
            "web01",
            "--name",
            "web01 nightly",
        ],
    );
    let (exp_id, expiring) = create(
        &a,
        &["--role", "backup", "--all-machines", "--expires", "3s"],
    );
    backup(&a, &token, "web01", &disk);
    backup(&a, &expiring, "web01", &disk);

    let row = token_list(&a)
        .into_iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert!(row["last_used"].is_string(), "{row}");
    assert_eq!(row["machines"], serde_json::json!(["web01"]));
    assert_eq!(row["state"], "active");
    let table = ok(a
        .appliance()
        .args(["token", "list", "--data"])
        .arg(a.data()));
    let line = table.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(
        line.contains("web01 nightly") && !line.ends_with("never"),
        "LAST USED should be a time: {table}"
    );
    assert!(!table.contains(&token), "token list never shows a token");

    ok(a.appliance()
        .args(["token", "revoke", &id, "--data"])
        .arg(a.data()));
    let err = fails(&mut backup_cmd(&a, &token, "web01", &disk));
    assert!(
        err.contains("401") && err.contains("revoked") && err.contains(&id),
        "{err}"
    );

    std::thread::sleep(std::time::Duration::from_secs(4));
    let err = fails(&mut backup_cmd(&a, &expiring, "web01", &disk));
    assert!(
        err.contains("401") && err.contains("expired") && err.contains(&exp_id),
        "{err}"
    );

    // The states survive a restart of the server (they are in tokens.json).
    a.kill();
    a.serve();
    let err = fails(&mut backup_cmd(&a, &token, "web01", &disk));
    assert!(err.contains("revoked"), "{err}");
    let state = |want: &str| {
        token_list(&a)
            .into_iter()
            .find(|t| t["id"] == want)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(
        (state(&id), state(&exp_id)),
        ("revoked".into(), "expired".into())
    );
}

#[test]
fn a_scoped_restore_token_restores_only_its_machines() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let web = backup(&a, &a.backup, "web01", &image(work.path(), "w.img", 1));
    let db = backup(&a, &a.backup, "db01", &image(work.path(), "d.img", 2));
    let (_, reader) = create(&a, &["--role", "restore", "--machine", "web*"]);

    let restore = |snapshot: &str, dest: &Path| {
        let mut c = a.restore_cmd(snapshot, &[("sda", dest)]);
        // restore_cmd carries the harness's all-machines restore token; the last --token wins.
        c.args(["--token", &reader]);
        run(&mut c)
    };
    let out = restore(&web, &work.path().join("web.img"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(work.path().join("web.img")).unwrap(),
        std::fs::read(work.path().join("w.img")).unwrap()
    );
    let out = restore(&db, &work.path().join("db.img"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("403") && err.contains("db01") && err.contains("web*"),
        "{err}"
    );
    assert!(
        !work.path().join("db.img").exists()
            || std::fs::metadata(work.path().join("db.img")).unwrap().len() == 0
    );
}

#[test]
fn a_tokens_json_written_before_scopes_still_loads() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    // Rewrite one record as older appliances wrote it: hash -> role and created only.
    let (id, token) = create(&a, &["--role", "backup", "--machine", "web01"]);
    let path = a.data().join("tokens.json");
    let mut table: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let hash = table
        .iter()
        .find(|(_, r)| r["id"] == id.as_str())
        .map(|(h, _)| h.clone())
        .unwrap();
    table.insert(
        hash.clone(),
        serde_json::json!({"role": "backup", "created": "2025-01-01T00:00:00Z"}),
    );
    std::fs::write(&path, serde_json::to_vec_pretty(&table).unwrap()).unwrap();

    // Old behaviour: every machine.
    backup(&a, &token, "anything", &image(work.path(), "x.img", 3));
    let legacy = format!("tok-{}", &hash[..12]);
    let row = token_list(&a)
        .into_iter()
        .find(|t| t["id"] == legacy.as_str())
        .expect("the old record is listed with an id derived from its hash");
    assert!(
        row["machines"].is_null() && row["state"] == "active",
        "{row}"
    );
    ok(a.appliance()
        .args(["token", "revoke", &legacy, "--data"])
        .arg(a.data()));
    let err = fails(&mut backup_cmd(
        &a,
        &token,
        "anything",
        &image(work.path(), "x.img", 4),
    ));
    assert!(err.contains("revoked"), "{err}");
}

/// `curl` against the appliance: (HTTP status, body). HTTP/1.1: over HTTP/2 curl reports a
/// refused upload (answered before its body is read) as a stream error instead of the answer.
fn curl(a: &Appliance, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let out = ok(Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(a.data().join("keys").join("ca.pem"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--data-binary", body])
        .arg(format!("{}/api/v1{path}", a.url())));
    let (text, code) = out.trim_end().rsplit_once('\n').unwrap();
    (code.parse().unwrap(), text.to_string())
}

#[test]
fn a_backup_session_is_usable_only_by_the_token_that_opened_it() {
    if !have("curl") {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let a = Appliance::start();
    let (_, owner) = create(&a, &["--role", "backup", "--machine", "web01"]);
    let (_, intruder) = create(&a, &["--role", "backup", "--machine", "web01"]);
    let (status, text) = curl(
        &a,
        "POST",
        "/backups",
        &owner,
        r#"{"machine":"web01","chunk_size":65536}"#,
    );
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let session = v["session"].as_str().unwrap();
    for (method, path, body) in [
        (
            "POST",
            format!("/backups/{session}/known-chunks"),
            r#"{"ids":[]}"#,
        ),
        ("PUT", format!("/backups/{session}/disks/sda/index"), "x"),
        (
            "POST",
            format!("/backups/{session}/commit"),
            r#"{"disks":[],"agent":"x"}"#,
        ),
        ("DELETE", format!("/backups/{session}"), ""),
    ] {
        let (status, text) = curl(&a, method, &path, &intruder, body);
        assert_eq!(status, 403, "{method} {path}: {text}");
        assert!(text.contains("opened by another token"), "{text}");
    }
    // The session is intact: its owner abandons it.
    let (status, text) = curl(&a, "DELETE", &format!("/backups/{session}"), &owner, "");
    assert_eq!(status, 204, "{text}");
}
