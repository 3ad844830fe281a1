//! LVM snapshot capture on a loop-backed VG: the snapshot holds the LV as it was at `begin`
//! while the source keeps writing (nothing frozen), the substitutions point at the LV's bytes
//! on the disk, `end` removes the snapshot, and `cleanup_stale` removes one a crashed agent
//! left (found by its name prefix and tag).
//!
//! Needs root, loop devices, device-mapper with the snapshot target, the lvm2 tools, `mount`
//! and `mkfs.ext4`; prints `SKIPPED: reason` otherwise (this is the case on hosts without
//! device-mapper). tests/guest/layout.sh builds this test for musl and runs it inside the
//! rescue image under QEMU, where busybox supplies `mount` and `dd`: no `losetup` or
//! `debugfs` is needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;

use common::sh;
use ferry_capture::lvm::{SnapshotSizing, SNAPSHOT_PREFIX};
use ferry_capture::{cleanup_stale, Capture, CaptureRequest, Consistency, LvmPolicy, Method, Mode};
use ferry_sys::loopdev::LoopDevice;

/// `cleanup_stale` removes every tagged snapshot on the machine: the tests take turns.
static LVM: Mutex<()> = Mutex::new(());

fn skip_reason() -> Option<String> {
    let tools = [
        "mkfs.ext4",
        "mount",
        "umount",
        "dd",
        "pvcreate",
        "vgcreate",
        "lvcreate",
        "lvremove",
        "vgremove",
        "lvs",
        "dmsetup",
    ];
    if let Some(why) = common::skip_reason(&tools) {
        return Some(why);
    }
    if sh("dmsetup", &["version"]).is_err() {
        return Some("no device-mapper in this kernel (run in the guest tier)".into());
    }
    None
}

/// A VG on a loop device with one LV holding a mounted ext4.
struct Vg {
    dir: tempfile::TempDir,
    loopdev: PathBuf,
    vg: String,
    mnt: PathBuf,
    /// Last: detached after the VG is gone.
    _loop: LoopDevice,
}

impl Vg {
    fn new() -> Vg {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("pv.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let lo = LoopDevice::attach(&img, 0, 256 << 20).unwrap();
        let loopdev = lo.path().to_path_buf();
        let vg = format!("ferrytest{}", std::process::id());
        let l = loopdev.to_str().unwrap();
        sh("pvcreate", &["-ff", "-y", l]).unwrap();
        sh("vgcreate", &[&vg, l]).unwrap();
        sh("lvcreate", &["-y", "-n", "data", "-L", "64m", &vg]).unwrap();
        let lv = format!("/dev/{vg}/data");
        sh("mkfs.ext4", &["-q", "-F", &lv]).unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        sh("mount", &[&lv, mnt.to_str().unwrap()]).unwrap();
        Vg {
            dir,
            loopdev,
            vg,
            mnt,
            _loop: lo,
        }
    }

    fn request(&self) -> CaptureRequest {
        let mut req = CaptureRequest::new(
            vec![self.loopdev.clone()],
            Mode::PointInTime,
            self.dir.path().join("run"),
        );
        req.lvm = LvmPolicy::Snapshot(SnapshotSizing {
            percent: 50,
            min_bytes: 16 << 20,
        });
        req
    }

    fn snapshots(&self) -> Vec<String> {
        sh("lvs", &["--noheadings", "-o", "lv_name", &self.vg])
            .unwrap()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| l.starts_with(SNAPSHOT_PREFIX))
            .collect()
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.mnt.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
    }
}

impl Drop for Vg {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).output();
        let _ = Command::new("vgremove").args(["-f", &self.vg]).output();
        let _ = Command::new("pvremove").arg(&self.loopdev).output();
    }
}

/// Bytes of a device read with O_DIRECT (no stale page cache of another device's view).
fn read_direct(dev: &Path, offset: u64, len: u64) -> Vec<u8> {
    const BS: u64 = 4096;
    let out = Command::new("dd")
        .arg(format!("if={}", dev.display()))
        .args(["iflag=direct", "status=none", &format!("bs={BS}")])
        .arg(format!("skip={}", offset / BS))
        .arg(format!("count={}", len / BS))
        .output()
        .unwrap();
    assert!(out.status.success(), "dd {}", dev.display());
    out.stdout
}

#[test]
fn a_snapshot_holds_the_lv_as_it_was_while_the_source_writes() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _turn = LVM.lock().unwrap_or_else(|p| p.into_inner());
    let vg = Vg::new();
    vg.write("file", "before");
    let cap = Capture::begin(&vg.request()).unwrap();
    assert_eq!(cap.snapshots().len(), 1);
    let subs = cap.substitutions().to_vec();
    assert!(!subs.is_empty());
    assert_eq!(subs[0].disk, vg.loopdev);

    // Not frozen: a write finishes at once.
    let t = Instant::now();
    vg.write("file", "after!");
    assert!(t.elapsed() < Duration::from_secs(5));

    // The snapshot has the old content (mounted without replaying the journal: read-only).
    let snap = cap.snapshots()[0].device();
    let look = vg.dir.path().join("snap");
    std::fs::create_dir(&look).unwrap();
    let look_s = look.to_str().unwrap();
    sh(
        "mount",
        &[
            "-t",
            "ext4",
            "-o",
            "ro,noload",
            snap.to_str().unwrap(),
            look_s,
        ],
    )
    .unwrap();
    let old = std::fs::read_to_string(look.join("file"));
    sh("umount", &[look_s]).unwrap();
    assert_eq!(old.unwrap(), "before");

    // The substitution's disk range is the origin LV's bytes. Read-only first: ext4 rewrites
    // its superblock on its own (journal commits), which could land between the two reads.
    sh("mount", &["-o", "remount,ro", vg.mnt.to_str().unwrap()]).unwrap();
    let origin = PathBuf::from(format!("/dev/{}/data", vg.vg));
    let s = &subs[0];
    let len = s.len.min(1 << 20);
    assert_eq!(
        read_direct(&s.disk, s.disk_offset, len),
        read_direct(&origin, s.device_offset, len)
    );

    let report = cap.end().unwrap();
    match report.consistency {
        Consistency::PointInTime {
            method,
            frozen,
            snapshots,
            ..
        } => {
            assert_eq!(method, Method::LvmSnapshot);
            assert!(frozen.is_empty(), "{frozen:?}");
            assert_eq!(snapshots, [format!("{}/data", vg.vg)]);
        }
        other => panic!("recorded as {other}"),
    }
    assert!(vg.snapshots().is_empty(), "snapshot left after end");
}

#[test]
fn cleanup_stale_removes_a_crashed_agents_snapshot() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _turn = LVM.lock().unwrap_or_else(|p| p.into_inner());
    let vg = Vg::new();
    let cap = Capture::begin(&vg.request()).unwrap();
    // A crash: nothing of the capture's teardown runs (its run-dir lock stays with this
    // process, so the cleanup uses another run directory; snapshots are found by tag).
    std::mem::forget(cap);
    assert_eq!(vg.snapshots().len(), 1);
    let report = cleanup_stale(&vg.dir.path().join("run2")).unwrap();
    assert_eq!(report.removed_snapshots.len(), 1, "{report:?}");
    assert!(vg.snapshots().is_empty());
}
