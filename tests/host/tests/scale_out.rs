//! Issue 16's scaled-out run: two appliance nodes, each with its own data directory (as on two
//! hosts: the same keys and config.json), on one S3 cluster and one PostgreSQL. 50 backup agents
//! (different machines sharing half of their data) back up at once, half of them given node A
//! first and half node B; mid-run node A is killed, one Ceph OSD is stopped and GC runs from
//! node A's directory while the backups go on through node B, deleting garbage planted before
//! the run (so its exclusive chunk lock meets B's uploads). Then 10 restores at once, spread
//! over both nodes (A back), each `cmp`-identical, and GC reports nothing missing.
//!
//! Runs with `FERRY_TEST_STORAGE=s3 FERRY_TEST_RECORDS=pg` only (scripts/test's scaled-out
//! step): it stops and starts an OSD of the cluster `FERRY_TEST_S3_ENV` belongs to.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferry_test_support::storage::{is_pg, is_s3, test_storage};
use ferry_test_support::store::{ago, numbered_chunk, set_mark};

const AGENTS: usize = 50;
const RESTORES: usize = 10;
/// Unreferenced chunks planted before the run, for the mid-run GC to delete.
const GARBAGE: u64 = 24;
const DISK: usize = 4 << 20;
const CHUNK_SIZE: &str = "262144";

/// `scripts/s3-cluster` on the cluster the tests use.
fn s3_cluster(args: &[&str]) -> String {
    let env = PathBuf::from(std::env::var_os("FERRY_TEST_S3_ENV").expect("FERRY_TEST_S3_ENV"));
    let dir = env.parent().expect("the cluster's directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/s3-cluster");
    let (verb, rest) = args.split_first().expect("a verb");
    ok(Command::new(script).arg(verb).arg(dir).args(rest))
}

/// Starts the OSD again however the test ends: the cluster is shared with the next tests.
struct StoppedOsd(&'static str);

impl Drop for StoppedOsd {
    fn drop(&mut self) {
        s3_cluster(&["start-node", self.0]);
    }
}

/// Machine `i`'s disk: the first half the same on every machine, the second its own.
fn make_disk(path: &Path, i: usize) {
    let mut bytes = vec![0u8; DISK];
    Rng::new(1).fill(&mut bytes[..DISK / 2]);
    Rng::new(1000 + i as u64).fill(&mut bytes[DISK / 2..]);
    fs::write(path, bytes).unwrap();
}

fn agent(kind: &str, urls: &str, token: &str, ca: &Path) -> Command {
    let mut c = Command::new(bin(kind));
    c.args([
        if kind == "backup-agent" {
            "backup"
        } else {
            "restore"
        },
        "--json",
    ])
    .args(["--retry-window", "120s", "--appliance", urls])
    .args(["--token", token, "--ca"])
    .arg(ca)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// The agent's JSON report and its log; on failure, the nodes' warnings too.
fn finish(child: Child, what: &str, node_logs: &[&Path]) -> (serde_json::Value, String) {
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        for l in node_logs {
            let text = fs::read_to_string(l).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            eprintln!("--- {}: last warnings", l.display());
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
        }
    }
    assert!(out.status.success(), "{what}: {}\n{err}", out.status);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what} --json: {e}"));
    (v, err)
}

fn gc(data: &Path) -> serde_json::Value {
    let out = ok(Command::new(bin("appliance"))
        .args(["gc", "--json", "--data"])
        .arg(data));
    serde_json::from_str(&out).expect("gc --json")
}

#[test]
fn fifty_agents_and_ten_restores_over_two_nodes_through_a_node_kill_and_a_ceph_node_stop() {
    if !(is_s3() && is_pg()) {
        println!(
            "SKIPPED: needs FERRY_TEST_STORAGE=s3 FERRY_TEST_RECORDS=pg (docs/development.md, \
             \"Backends\")"
        );
        return;
    }
    let mut a = Appliance::start_on(&test_storage());
    // Node B as on another host: a data directory of its own with A's keys and config.json.
    let b_data = a.dir.path().join("node-b");
    fs::create_dir_all(b_data.join("keys")).unwrap();
    for f in ["config.json", "ca.pem"] {
        fs::copy(a.data().join(f), b_data.join(f)).unwrap();
    }
    for e in fs::read_dir(a.data().join("keys")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), b_data.join("keys").join(e.file_name())).unwrap();
    }
    let b = Node::start(&b_data, a.dir.path().join("node-b.log"));
    // Garbage for the GC that runs mid-run: chunks nothing references, unused for 20 days,
    // so its deletions hold the chunk lock exclusively while node B takes uploads.
    {
        let store = ferry_store::Store::open(&a.data()).expect("open the store from A's directory");
        for n in 0..GARBAGE {
            let (id, frame) = numbered_chunk(7 << 40 | n);
            store.put_chunk(&id, &frame).expect("store a garbage chunk");
            set_mark(&store, &id, ago(20 * 86_400));
        }
    }
    let (log_a, log_b) = (
        a.dir.path().join("serve.log"),
        a.dir.path().join("node-b.log"),
    );
    let node_logs = [log_a.as_path(), log_b.as_path()];
    let ab = format!("{},{}", a.url(), b.url());
    let ba = format!("{},{}", b.url(), a.url());

    let work = tempfile::tempdir().unwrap();
    let disks: Vec<PathBuf> = (0..AGENTS)
        .map(|i| {
            let p = work.path().join(format!("m{i:02}.img"));
            make_disk(&p, i);
            p
        })
        .collect();

    let t = Instant::now();
    let backups: Vec<Child> = disks
        .iter()
        .enumerate()
        .map(|(i, disk)| {
            agent(
                "backup-agent",
                if i % 2 == 0 { &ab } else { &ba },
                &a.backup,
                &a.ca(),
            )
            .args(["--rate-limit", "0", "--chunk-size", CHUNK_SIZE])
            .args(["--machine", &format!("m{i:02}"), "--disk"])
            .arg(disk)
            .spawn()
            .expect("start backup-agent")
        })
        .collect();
    // Mid-run: node A dies, an OSD stops, and GC runs from A's directory while B serves.
    std::thread::sleep(Duration::from_secs(3));
    a.kill();
    let killed_at = t.elapsed();
    let osd = StoppedOsd("1");
    s3_cluster(&["stop-node", osd.0]);
    let gc_started = Instant::now();
    let during = gc(&a.data());
    log(format!(
        "node A killed at {:.1} s; osd.1 stopped; GC during the backups ({:.1} s): {during}",
        killed_at.as_secs_f64(),
        gc_started.elapsed().as_secs_f64()
    ));
    assert_eq!(during["removed_chunks"], GARBAGE, "{during}");
    let (results, logs): (Vec<serde_json::Value>, Vec<String>) = backups
        .into_iter()
        .enumerate()
        .map(|(i, c)| finish(c, &format!("backup of m{i:02}"), &node_logs))
        .unzip();
    // Agents that were talking to A when it died carried on through B.
    let moved = logs
        .iter()
        .filter(|l| {
            l.contains(&format!(
                "node {} cannot be reached: moving to {}",
                a.url(),
                b.url()
            ))
        })
        .count();
    let count = |what: &str| {
        node_logs
            .iter()
            .map(|l| {
                fs::read_to_string(l)
                    .unwrap_or_default()
                    .matches(what)
                    .count()
            })
            .sum::<usize>()
    };
    log(format!(
        "{moved} backup agents moved from node A to node B; the nodes catalogued {} stored but uncatalogued chunks and asked for {} missing ones at index uploads",
        count("was stored but not catalogued"),
        count("chunks the store lacks")
    ));
    assert!(
        moved > 0,
        "no agent was talking to node A when it was killed"
    );
    let backup_secs = t.elapsed().as_secs_f64();
    let uploaded: u64 = results
        .iter()
        .map(|r| r["bytes_uploaded"].as_u64().unwrap_or(0))
        .sum();
    log(format!(
        "{AGENTS} backups of {} MiB each in {backup_secs:.1} s, {:.1} MiB uploaded (half of \
         each disk is shared)",
        DISK >> 20,
        uploaded as f64 / (1 << 20) as f64
    ));
    assert_eq!(during["missing_chunks"], 0, "{during}");
    drop(osd);

    // Ten restores at once, half given A (back up) first, half B.
    a.serve();
    let t = Instant::now();
    let restores: Vec<(usize, PathBuf, Child)> = (0..RESTORES)
        .map(|k| {
            let i = k * (AGENTS / RESTORES);
            let dest = work.path().join(format!("r{i:02}.img"));
            let child = agent(
                "restore-agent",
                if k % 2 == 0 { &ab } else { &ba },
                &a.restore,
                &a.ca(),
            )
            .args(["--snapshot", results[i]["snapshot"].as_str().unwrap()])
            .arg("--target")
            .arg(format!("m{i:02}={}", dest.display()))
            .spawn()
            .expect("start restore-agent");
            (i, dest, child)
        })
        .collect();
    for (i, dest, child) in restores {
        finish(child, &format!("restore of m{i:02}"), &node_logs);
        cmp(&disks[i], &dest);
    }
    log(format!(
        "{RESTORES} restores at once in {:.1} s, every one cmp-identical",
        t.elapsed().as_secs_f64()
    ));
    let after = gc(&b_data);
    assert_eq!(after["missing_chunks"], 0, "{after}");
    assert_eq!(after["snapshots"], AGENTS as u64, "{after}");
}
