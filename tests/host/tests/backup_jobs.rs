//! Backup jobs for rescue agents (issue 13, item 1) on this host: the real appliance, a job
//! created by MAC, `restore-agent agent --once --root FAKE` reading the fake machine's disk
//! files; the snapshot it commits is restored with the restore CLI and checked with `cmp`, its
//! manifest says `offline`. Refusals: a disk the machine lacks, restore-only flags, and an
//! `offline` claim from anything but an agent's backup job.

mod common;

use common::machine::*;
use common::*;

const MIB: u64 = 1 << 20;

#[test]
fn a_rescue_agent_backs_up_its_disks_and_the_snapshot_restores_identically() {
    let a = Appliance::start();
    let mac = "52:54:00:bb:00:01";
    // vda holds data, vdb is blank: `auto` reads vda only.
    let m = machine(mac, &[("vda", 48 * MIB), ("vdb", 16 * MIB)]);
    let vda = m.path().join("dev/vda");
    make_image(&vda, 48 * MIB, 33);

    let created = json(
        a.appliance()
            .args(["jobs", "create", "--json", "--backup", "--data"])
            .arg(a.data())
            .args(["--mac", mac, "--machine", "oldbox", "--disk", "auto"])
            // With `none` the agent would wait for a next job even with --once.
            .args(["--then", "poweroff"]),
    );
    let job = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["kind"], "backup", "{created}");
    assert_eq!(created["backup"]["machine"], "oldbox");

    let enroll = a.token("enroll");
    let out = a.run_agent_approved(&enroll, m.path(), mac);
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    log(format!("agent console:\n{console}"));
    assert!(out.status.success(), "{out:?}");
    assert!(
        console.contains(&format!("job {job}: back up /dev/vda as machine oldbox")),
        "{console}"
    );
    assert!(
        console.contains(&format!("job {job} succeeded: snapshot oldbox-")),
        "{console}"
    );

    let v = show(&a, &job);
    let j = &v["job"];
    assert_eq!(j["state"], "succeeded", "{v}");
    assert_eq!(j["backup_resolved"], serde_json::json!(["vda"]), "{v}");
    let snapshot = j["backup"]["snapshot"]
        .as_str()
        .expect("committed snapshot");
    assert_eq!(j["snapshot"], snapshot);
    assert_eq!(j["progress"]["bytes_total"], 48 * MIB);
    let phases: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases.first(), Some(&"plan"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"done"), "{phases:?}");

    // The appliance signed what it recorded: offline, one disk named as the machine calls it.
    let manifest: serde_json::Value = serde_json::from_str(&a.manifest_json(snapshot)).unwrap();
    assert_eq!(manifest["consistency"]["mode"], "offline", "{manifest}");
    assert_eq!(manifest["machine"], "oldbox");
    let disks: Vec<&str> = manifest["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(disks, ["vda"]);

    // Restored elsewhere, byte for byte.
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("restored.img");
    a.restore(snapshot, &[("vda", &target)], &[]);
    cmp(&vda, &target);

    // The agent is enrolled now: a job naming a disk it lacks is refused at creation.
    let agent = j["agent"].as_str().unwrap();
    let refused = run(a
        .appliance()
        .args(["jobs", "create", "--backup", "--data"])
        .arg(a.data())
        .args(["--agent", agent, "--machine", "oldbox", "--disk", "nvme9n1"]));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("this machine has no disk nvme9n1 (it has: vda, vdb)"),
        "{err}"
    );
    // Restore-only flags do not mix with --backup.
    for extra in [
        &["--map", "vda=auto"][..],
        &["--overwrite"],
        &["--snapshot", snapshot],
    ] {
        let r = run(a
            .appliance()
            .args(["jobs", "create", "--backup", "--data"])
            .arg(a.data())
            .args(["--agent", agent, "--machine", "oldbox"])
            .args(extra));
        assert!(!r.status.success(), "{extra:?} accepted");
    }
}

#[test]
fn only_a_rescue_agents_backup_job_may_claim_offline() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("disk.img");
    make_image(&img, 8 * MIB, 5);
    let out = run(a
        .backup_cmd("web01", &[&img])
        .args(["--consistency", "offline"]));
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only a rescue agent's backup job records a snapshot as offline"),
        "{err}"
    );
    let store = ferry_store::Store::open(&a.data()).unwrap();
    assert!(store.snapshot_ids().unwrap().is_empty());
}
