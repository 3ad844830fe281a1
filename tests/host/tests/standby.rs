//! A migration's standby target end to end on this host (issue 11, docs/migration.md "Standby
//! target"): the real appliance, a source machine with snapshots taken by `backup-agent backup`,
//! and the real `restore-agent agent --root FAKE` (image files stand in for /dev nodes, as in
//! tests/jobs.rs) bound to it by `appliance migrations create --agent MAC`. The standby restores
//! S1, then applies S2 as a delta; `migrations show --json` must say it is in sync with S2, the
//! image must equal the source at S2 (cmp), and `prune --keep 1` must keep the basis.

mod common;

use std::fs;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::machine::*;
use common::*;

const MIB: u64 = 1 << 20;
const MAC: &str = "52:54:00:cc:00:01";

/// The standby agent process, killed when the test ends (also when it fails).
struct Standby(Child);

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn migration(a: &Appliance, id: &str) -> serde_json::Value {
    json(
        a.appliance()
            .args(["migrations", "show", "--json", "--data"])
            .arg(a.data())
            .arg(id),
    )
}

/// Wait until the standby reports `snapshot` as its basis; returns `migrations show --json`.
fn wait_in_sync(a: &Appliance, id: &str, snapshot: &str, agent: &mut Child) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let v = migration(a, id);
        if v["standby"]["basis"] == snapshot {
            return v;
        }
        if let Ok(Some(status)) = agent.try_wait() {
            panic!(
                "the standby agent exited ({status}) before it was in sync with {snapshot}: {v}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "the standby never got in sync with {snapshot}: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn snapshot_ids(a: &Appliance) -> Vec<String> {
    let v = json(
        a.appliance()
            .args(["snapshots", "--json", "--machine", "web1", "--data"])
            .arg(a.data()),
    );
    v.as_array()
        .expect("snapshots --json is a list")
        .iter()
        .map(|s| s["snapshot"].as_str().expect("snapshot id").to_string())
        .collect()
}

#[test]
fn a_standby_applies_each_new_snapshot_and_its_basis_survives_prune() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("disk.img");
    make_image(&src, 64 * MIB, 31);
    let s1 = a.backup("web1", &[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    ok(a.appliance()
        .args(["sources", "set", "web1", "--keep", "4", "--data"])
        .arg(a.data()));

    // The standby target boots (host mode) and the operator approves it by its MAC.
    let m = machine(MAC, &[("vda", 64 * MIB)]);
    let console = work.path().join("standby.log");
    let enroll = a.token("enroll");
    let mut agent = Standby(
        a.agent_cmd(&enroll, m.path())
            .arg("--once")
            .stdout(fs::File::create(&console).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start restore-agent agent"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run(a
        .appliance()
        .args(["agents", "approve", "--data"])
        .arg(a.data())
        .args(["--mac", MAC]))
    .status
    .success()
    {
        assert!(Instant::now() < deadline, "the standby never enrolled");
        std::thread::sleep(Duration::from_millis(200));
    }

    let created = json(
        a.appliance()
            .args(["migrations", "create", "--json", "--data"])
            .arg(a.data())
            .args([
                "--machine",
                "web1",
                "--agent",
                MAC,
                "--map",
                "disk=/dev/vda",
            ]),
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["agent"], "agent-525400cc0001", "{created}");
    assert_eq!(created["state"], "syncing");

    // S1: the first apply of this boot, a full seeded sync.
    let v = wait_in_sync(&a, &id, &s1, &mut agent.0);
    cmp(&src, &m.path().join("dev/vda"));
    let first = v["standby"]["bytes_written"].as_u64().unwrap();

    // The source changes 3 MiB in place; S2 is applied as a delta.
    {
        let f = fs::OpenOptions::new().write(true).open(&src).unwrap();
        write_region(&f, 20 * MIB, 3 * MIB as usize, "random", &mut Rng::new(99));
        f.sync_all().unwrap();
    }
    let s2 = a.backup("web1", &[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let v = wait_in_sync(&a, &id, &s2, &mut agent.0);
    cmp(&src, &m.path().join("dev/vda"));
    let second = v["standby"]["bytes_written"].as_u64().unwrap();
    log(format!(
        "standby: S1 wrote {first} bytes, S2 (3 MiB changed) wrote {second} bytes"
    ));
    assert!(
        v["standby_state"]
            .as_str()
            .unwrap()
            .starts_with(&format!("in sync with snapshot {s2}, taken ")),
        "{v}"
    );
    assert_eq!(v["lag_seconds"], 0, "{v}");
    assert_eq!(v["newest_snapshot"], s2.as_str());
    assert_eq!(v["job_state"], "running");
    assert!(
        second < 16 * MIB,
        "the delta of 3 MiB changed wrote {second} bytes"
    );
    let job = show(&a, v["job"].as_str().unwrap());
    let events: Vec<&str> = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        events
            .iter()
            .any(|m| m.starts_with(&format!("in sync with snapshot {s2}, taken "))),
        "{events:?}"
    );

    // Hold the standby at S2, take S3: prune --keep 1 keeps the basis S2 (and the newest).
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let s3 = a.backup("web1", &[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ok(a
        .appliance()
        .args(["prune", "--machine", "web1", "--keep", "1", "--data"])
        .arg(a.data()));
    log(format!("prune --keep 1:\n{out}"));
    let left = snapshot_ids(&a);
    assert!(!left.contains(&s1), "{left:?}");
    assert!(left.contains(&s2) && left.contains(&s3), "{left:?}");
    let v = migration(&a, &id);
    assert_eq!(v["standby"]["basis"], s2.as_str(), "{v}");
    assert_eq!(v["newest_snapshot"], s3.as_str(), "{v}");

    // Cancelled: nothing is pinned any more and the next prune may take S2.
    ok(a.appliance()
        .args(["migrations", "cancel", "--data"])
        .arg(a.data())
        .arg(&id));
    let v = migration(&a, &id);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(
        v["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["what"]["state"]["to"] == "cancelled"),
        "{v}"
    );
    let text = ok(a
        .appliance()
        .args(["migrations", "show", "--data"])
        .arg(a.data())
        .arg(&id));
    assert!(text.contains("syncing -> cancelled"), "{text}");
    let console = fs::read_to_string(&console).unwrap();
    log(format!("standby console:\n{console}"));
    assert!(
        console.contains(&format!("in sync with snapshot {s2}")),
        "{console}"
    );
}
