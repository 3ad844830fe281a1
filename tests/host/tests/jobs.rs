//! Unattended restores end to end on this host (issue: restore jobs): the real appliance, a job
//! created by MAC before the "machine" boots, and `restore-agent agent --once --root FAKE` where
//! FAKE holds a fake /sys and /proc and image files standing in for /dev nodes. Results are
//! checked with `cmp` and the appliance's own `jobs show --json` / `agents --json`.

mod common;

use std::fs;

use common::machine::*;
use common::*;

const MIB: u64 = 1 << 20;

/// Console output is plain lines for a serial console: timestamped, no CR, no escapes.
fn assert_plain_console(out: &str) {
    assert!(
        !out.contains('\r') && !out.contains('\x1b'),
        "console output has control characters:\n{out}"
    );
    for line in out.lines() {
        assert!(
            line.len() > 21 && line.as_bytes()[10] == b'T' && line[..21].ends_with("Z "),
            "not a timestamped line: {line:?}"
        );
    }
}

#[test]
fn job_created_by_mac_before_the_machine_boots_restores_its_disk() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("disk.img");
    make_image(&src, 64 * MIB, 21);
    let snapshot = a.backup("web01", &[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let enroll = a.token("enroll");

    // The job exists before the machine boots; only the MAC is known.
    let job = create_job(
        &a,
        "52:54:00:AA:00:01",
        &snapshot,
        "disk=auto",
        &["--then", "reboot"],
    );
    assert_eq!(show(&a, &job)["job"]["state"], "pending");

    let m = machine("52:54:00:aa:00:01", &[("vda", 64 * MIB)]);
    let out = a.run_agent_approved(&enroll, m.path(), "52:54:00:aa:00:01");
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    log(format!("agent console:\n{out}"));
    assert_plain_console(&out);
    assert!(
        out.contains("enrolled as agent agent-525400aa0001"),
        "{out}"
    );
    assert!(out.contains(&format!("job {job} succeeded")), "{out}");
    assert!(
        out.contains("host mode leaves this machine running"),
        "{out}"
    );
    cmp(&src, &m.path().join("dev/vda"));

    let v = show(&a, &job);
    let j = &v["job"];
    assert_eq!(j["state"], "succeeded", "{v}");
    assert_eq!(j["agent"], "agent-525400aa0001");
    assert_eq!(j["resolved"][0]["target"], "/dev/vda");
    assert_eq!(j["progress"]["bytes_total"], 64 * MIB);
    assert_eq!(j["progress"]["bytes_done"], 64 * MIB);
    let events = v["events"].as_array().unwrap();
    let phases: Vec<&str> = events
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases.first(), Some(&"plan"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"done"), "{phases:?}");
    assert!(events
        .iter()
        .all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z'))));

    let agents = json(
        a.appliance()
            .args(["agents", "--json", "--data"])
            .arg(a.data()),
    );
    let agent = &agents.as_array().unwrap()[0];
    assert_eq!(agent["agent"], "agent-525400aa0001");
    assert_eq!(agent["state"], "succeeded");
    assert_eq!(agent["job"], job.as_str());
    let inv = &agent["inventory"];
    assert_eq!(inv["nics"][0]["mac"], "52:54:00:aa:00:01");
    assert_eq!(inv["disks"][0]["name"], "vda");
    assert_eq!(inv["disks"][0]["size"], 64 * MIB);
    assert_eq!(inv["disks"][0]["serial"], "FAKE-vda");
    assert_eq!(inv["firmware"], "bios");
    assert_eq!(inv["cpu"]["count"], 1);
    assert!(agent.get("credential_hash").is_none(), "{agent}");
    // The human views work too.
    let table = ok(a.appliance().args(["agents", "--data"]).arg(a.data()));
    assert!(
        table.contains("agent-525400aa0001") && table.contains("succeeded"),
        "{table}"
    );
    let text = ok(a
        .appliance()
        .args(["jobs", "show", "--data"])
        .arg(a.data())
        .arg(&job));
    assert!(
        text.contains("state     succeeded") && text.contains("disk -> /dev/vda"),
        "{text}"
    );
}

#[test]
fn jobs_that_cannot_be_placed_fail_with_a_reason_and_touch_no_disk() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("disk.img");
    make_image(&src, 32 * MIB, 5);
    let snapshot = a.backup("db01", &[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let enroll = a.token("enroll");

    // (what, MAC, disks, --map, reason fragment)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, u64)], &'a str, &'a str);
    let cases: [Case; 4] = [
        (
            "target too small",
            "52:54:00:bb:00:01",
            &[("vda", 16 * MIB)],
            "disk=/dev/vda",
            "/dev/vda is too small",
        ),
        (
            "target missing",
            "52:54:00:bb:00:02",
            &[("vda", 32 * MIB)],
            "disk=/dev/vdb",
            "/dev/vdb for disk disk does not exist",
        ),
        (
            "auto ambiguous",
            "52:54:00:bb:00:03",
            &[("vda", 32 * MIB), ("vdb", 64 * MIB)],
            "disk=auto",
            "auto is ambiguous",
        ),
        (
            "auto without a fit",
            "52:54:00:bb:00:04",
            &[("vda", 16 * MIB)],
            "disk=auto",
            "no blank disk of at least",
        ),
    ];
    for (what, mac, disks, map, fragment) in cases {
        let job = create_job(&a, mac, &snapshot, map, &[]);
        let m = machine(mac, disks);
        let before: Vec<Vec<u8>> = disks
            .iter()
            .map(|(n, _)| fs::read(m.path().join("dev").join(n)).unwrap())
            .collect();
        let out = a.run_agent_approved(&enroll, m.path(), mac);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "{what}: the agent should exit non-zero:\n{stdout}"
        );
        assert_plain_console(&stdout);
        assert!(
            stdout.contains(&format!("job {job} FAILED")) && stdout.contains(fragment),
            "{what}: console:\n{stdout}"
        );

        let v = show(&a, &job);
        let reason = v["job"]["state"]["failed"]["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {v}"));
        assert!(reason.contains(fragment), "{what}: {reason}");
        assert!(
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["level"] == "error"),
            "{what}: {v}"
        );
        for ((n, _), old) in disks.iter().zip(before) {
            assert!(
                fs::read(m.path().join("dev").join(n)).unwrap() == old,
                "{what}: /dev/{n} was changed"
            );
        }
    }
}
