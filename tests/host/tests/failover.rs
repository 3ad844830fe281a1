//! Several appliance nodes (issue 16, item 3): two `appliance serve` processes share one store;
//! agents are given both URLs. The node an agent is talking to is killed in the middle of a
//! backup and in the middle of a restore (the agent is held with SIGSTOP at a point where it
//! has work in flight, so the kill always lands mid-run): each agent moves to the other node
//! and carries on in the same upload session or restore, and the restore is `cmp`-identical.
//!
//! Two nodes on one local directory are safe on one host (every record update holds an flock);
//! across hosts the nodes share an S3 bucket and PostgreSQL instead (docs/store.md).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;
const IMAGE_SIZE: u64 = 96 * MIB;
/// Small chunks: many requests, so the agent always has some in flight.
const CHUNK_SIZE: &str = "262144";

fn signal(child: &Child, sig: &str) {
    ok(Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]));
}

/// Wait until `cond` holds (or the agent has exited: then the kill would come too late).
fn wait_until(what: &str, child: &mut Child, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("the agent finished ({status}) before {what}: the test cannot kill a node mid-run:\n{err}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "waited 120 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().expect("wait for the agent");
    assert!(
        out.status.success(),
        "{what} failed after a node was killed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The agent's log says it left `from` for `to`.
fn assert_moved(out: &Output, from: &str, to: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("node {from} cannot be reached: moving to {to}")),
        "the agent's log does not show it moving from {from} to {to}:\n{err}"
    );
}

#[test]
fn agents_move_to_the_other_node_mid_backup_and_mid_restore() {
    let mut a = Appliance::start();
    let mut b = Node::start(&a.data(), a.dir.path().join("serve-b.log"));
    let work = tempfile::tempdir().expect("tempdir");
    let image = work.path().join("source.img");
    make_image(&image, IMAGE_SIZE, 16);
    let ab = format!("{},{}", a.url(), b.url());
    let ba = format!("{},{}", b.url(), a.url());

    // Backup: talking to A; A dies while the agent holds an open session with chunks in flight.
    let t = Instant::now();
    let mut backup = Command::new(bin("backup-agent"))
        .args([
            "backup",
            "--json",
            "--rate-limit",
            "0",
            "--machine",
            "web01",
        ])
        .args(["--chunk-size", CHUNK_SIZE, "--parallel", "2"])
        .args(["--retry-window", "60s", "--appliance", &ab])
        .args(["--token", &a.backup, "--ca"])
        .arg(a.ca())
        .arg("--disk")
        .arg(&image)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start backup-agent");
    let chunks = a.data().join("chunks");
    let stored = || {
        fs::read_dir(&chunks)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|d| fs::read_dir(d.path()).map(|r| r.count()).unwrap_or(0))
            .sum::<usize>()
    };
    wait_until("the backup stored 20 chunks", &mut backup, || {
        stored() >= 20
    });
    signal(&backup, "STOP");
    a.kill();
    let at_kill = stored();
    signal(&backup, "CONT");
    let out = finish(backup, "the backup");
    assert_moved(&out, &a.url(), &b.url());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("backup --json");
    let snapshot = v["snapshot"].as_str().expect("snapshot id").to_string();
    log(format!(
        "backup: node A killed with {at_kill} chunks stored, finished on node B as {snapshot} \
         ({:.1} s)",
        t.elapsed().as_secs_f64()
    ));

    // Restore: A is back and first in the list; it dies with the target part-written.
    a.serve();
    let dest = work.path().join("restored.img");
    let t = Instant::now();
    let mut restore = Command::new(bin("restore-agent"))
        .args([
            "restore",
            "--json",
            "--snapshot",
            &snapshot,
            "--parallel",
            "2",
        ])
        .args(["--retry-window", "60s", "--appliance", &ab])
        .args(["--token", &a.restore, "--ca"])
        .arg(a.ca())
        .arg("--target")
        .arg(format!("source={}", dest.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start restore-agent");
    // Bytes the restore has allocated in the (sparse) target so far.
    let written = || fs::metadata(&dest).map(|m| m.blocks() * 512).unwrap_or(0);
    wait_until("the restore wrote 8 MiB", &mut restore, || {
        written() >= 8 * MIB
    });
    signal(&restore, "STOP");
    a.kill();
    let at_kill = written();
    signal(&restore, "CONT");
    let out = finish(restore, "the restore");
    assert_moved(&out, &a.url(), &b.url());
    cmp(&image, &dest);
    log(format!(
        "restore: node A killed with {} MiB written, finished on node B, cmp-identical ({:.1} s)",
        at_kill / MIB,
        t.elapsed().as_secs_f64()
    ));

    // With the first node in the list down from the start, the agent goes to the next one at
    // once instead of waiting out a backoff.
    a.serve();
    b.kill();
    let t = Instant::now();
    let out = ok(Command::new(bin("restore-agent"))
        .args(["restore", "--json", "--snapshot", &snapshot, "--overwrite"])
        .args(["--retry-window", "60s", "--appliance", &ba])
        .args(["--token", &a.restore, "--ca"])
        .arg(a.ca())
        .arg("--target")
        .arg(format!("source={}", dest.display())));
    let v: serde_json::Value = serde_json::from_str(&out).expect("restore --json");
    assert_eq!(v["bytes_fetched"].as_u64(), Some(0), "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "a dead first node cost {:?}",
        t.elapsed()
    );
    cmp(&image, &dest);
}
