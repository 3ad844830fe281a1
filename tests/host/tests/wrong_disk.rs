//! No wrong-disk write (issue 9), through the real appliance and the real `restore-agent agent`
//! on fake machines (image files stand in for /dev nodes):
//! - a disk whose partition table was wiped but whose filesystem at 1 MiB is intact is not
//!   "blank": `auto` takes the really blank disk and the other is not touched;
//! - the medium the rescue image booted from (an ISO 9660 disk) is never written, even with
//!   `--overwrite`;
//! - an agent killed mid-restore comes back (a "reboot"), shows the in-progress marker on its
//!   disk, is approved by that proof alone, resumes the running job and ends `cmp`-identical.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::machine::*;
use common::*;

const MIB: u64 = 1 << 20;

fn snapshot(
    a: &Appliance,
    work: &std::path::Path,
    size: u64,
    seed: u64,
) -> (std::path::PathBuf, String) {
    let src = work.join(format!("{seed}")).join("disk.img");
    fs::create_dir_all(src.parent().unwrap()).unwrap();
    make_image(&src, size, seed);
    let snap = a.backup("web01", &[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    (src, snap)
}

#[test]
fn auto_never_takes_a_disk_whose_filesystem_survived_a_wiped_table() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let (src, snap) = snapshot(&a, work.path(), 32 * MIB, 31);
    let mac = "52:54:00:cc:00:01";
    let m = machine(mac, &[("vda", 64 * MIB), ("vdb", 64 * MIB)]);
    // vda: the customer's data disk after `sgdisk --zap-all` (first and last MiB zero), its
    // ext4 superblock at 1 MiB + 1024 intact. The old check looked at the two ends only.
    let vda = m.path().join("dev/vda");
    let f = fs::OpenOptions::new().write(true).open(&vda).unwrap();
    f.write_all_at(&[0x53, 0xef], MIB + 1024 + 56).unwrap();
    f.write_all_at(b"customer data", 40 * MIB).unwrap();
    drop(f);
    let before = fs::read(&vda).unwrap();
    let job = create_job(&a, mac, &snap, "disk=auto", &[]);
    let out = a.run_agent_approved(&a.token("enroll"), m.path(), mac);
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{console}");
    assert!(
        console.contains("disk /dev/vda: ")
            && console.contains("holds an ext2/3/4 filesystem at offset 1 MiB"),
        "{console}"
    );
    let v = show(&a, &job);
    assert_eq!(v["job"]["resolved"][0]["target"], "/dev/vdb", "{v}");
    assert!(fs::read(&vda).unwrap() == before, "/dev/vda was written");
    // vdb holds the snapshot's 32 MiB, then zeros.
    let vdb = fs::read(m.path().join("dev/vdb")).unwrap();
    assert!(vdb[..32 * MIB as usize] == fs::read(&src).unwrap()[..]);
}

#[test]
fn the_boot_medium_is_never_written_even_with_overwrite() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let (_, snap) = snapshot(&a, work.path(), 16 * MIB, 32);
    let mac = "52:54:00:cc:00:02";
    let m = machine(mac, &[("sdb", 64 * MIB)]);
    let iso = m.path().join("dev/sdb");
    let f = fs::OpenOptions::new().write(true).open(&iso).unwrap();
    let mut pvd = vec![0u8; 80];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[40..52].copy_from_slice(b"FERRY_RESCUE");
    f.write_all_at(&pvd, 32768).unwrap();
    drop(f);
    let before = fs::read(&iso).unwrap();
    let job = create_job(&a, mac, &snap, "disk=/dev/sdb", &["--overwrite"]);
    let out = a.run_agent_approved(&a.token("enroll"), m.path(), mac);
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{console}");
    assert!(
        console.contains("never written") && console.contains("FERRY_RESCUE"),
        "{console}"
    );
    let v = show(&a, &job);
    let reason = v["job"]["state"]["failed"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("never written"), "{v}");
    assert!(
        fs::read(&iso).unwrap() == before,
        "the boot medium was written"
    );
}

#[test]
fn an_agent_killed_mid_restore_resumes_by_the_marker_on_its_disk() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let (src, snap) = snapshot(&a, work.path(), 768 * MIB, 33);
    let mac = "52:54:00:cc:00:03";
    let m = machine(mac, &[("vda", 768 * MIB)]);
    let vda = m.path().join("dev/vda");
    let enroll = a.token("enroll");
    let job = create_job(&a, mac, &snap, "disk=/dev/vda", &[]);

    // First boot: approved by the operator; killed once the marker is on the disk.
    let mut child = a
        .agent_cmd(&enroll, m.path())
        .args(["--once", "--parallel", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run(a
        .appliance()
        .args(["agents", "approve", "--data"])
        .arg(a.data())
        .args(["--mac", mac]))
    .status
    .success()
    {
        assert!(Instant::now() < deadline, "the agent never enrolled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let f = fs::File::open(&vda).unwrap();
    let mut head = vec![0u8; 32];
    loop {
        f.read_exact_at(&mut head, 0).unwrap();
        if &head[..] == b"FERRY RESTORE IN PROGRESS\0\0\0\0\0\0\0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no in-progress marker appeared on /dev/vda"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(show(&a, &job)["job"]["state"], "running");

    // "Reboot": a new enrollment, no operator. The marker is the proof.
    let out = run(a.agent_cmd(&enroll, m.path()).arg("--once"));
    let console = String::from_utf8_lossy(&out.stdout);
    log(format!("resumed agent console:\n{console}"));
    assert!(out.status.success(), "{console}");
    assert!(
        console.contains("holds the partial restore of disk disk"),
        "{console}"
    );
    assert!(
        console.contains("approved: its disks prove it was running a job"),
        "{console}"
    );
    assert!(console.contains("resuming"), "{console}");
    assert!(
        console.contains(&format!("job {job} succeeded")),
        "{console}"
    );
    cmp(&src, &vda);
    assert_eq!(show(&a, &job)["job"]["state"], "succeeded");
}
