//! Consistency recorded in the snapshot, on the real path: an ext4 filesystem on a loop device,
//! mounted, with a writer appending and fsyncing all the time, backed up by the real
//! backup-agent to a real appliance.
//!
//! - `--consistency point-in-time`: the manifest says point-in-time/freeze with its duration;
//!   the writer stalls for the freeze and writes again after it; the restored image is clean
//!   for `e2fsck -fn` (a frozen ext4 has its journal flushed).
//! - `--consistency live`: the manifest says live.
//! - a failing pre_capture hook fails the backup before the appliance hears of it (nothing was
//!   read), the post_capture hook still runs and the filesystem is writable.
//!
//! Needs root, losetup, mkfs.ext4, e2fsck and the kernel's loop driver; prints `SKIPPED`
//! otherwise. LVM snapshots need device-mapper, which this host lacks: the substitution is
//! unit-tested in ferry-engine (`backup::substitute`) and runs for real in the guest tier.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use ferry_format::consistency::{Consistency, Method};
use ferry_format::Manifest;

const MIB: u64 = 1 << 20;
/// The rate cap that makes the read (and so the freeze) last a few seconds.
const SLOW: &str = "40Mbit";

/// One capture at a time: they share the agent's run directory lock (/run/ferry).
static SERIAL: Mutex<()> = Mutex::new(());

fn skip_reason() -> Option<String> {
    if !sh("id -u").trim().eq("0") {
        return Some("not root".into());
    }
    for tool in ["losetup", "mkfs.ext4", "e2fsck", "mount", "umount"] {
        if !have(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// An ext4 image on a loop device, mounted; unmounted and detached on drop, also after a
/// failed assertion.
struct Mounted {
    dir: tempfile::TempDir,
    loopdev: PathBuf,
    mnt: PathBuf,
    mounted: bool,
}

impl Mounted {
    fn new(size: u64) -> Mounted {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mnt");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(size))
            .expect("image");
        ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        let loopdev =
            PathBuf::from(ok(Command::new("losetup").args(["--find", "--show"]).arg(&img)).trim());
        let mut m = Mounted {
            dir,
            loopdev,
            mnt,
            mounted: false,
        };
        ok(Command::new("mount").arg(&m.loopdev).arg(&m.mnt));
        m.mounted = true;
        m
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            // Thaw first in case a failed test left it frozen (no-op otherwise).
            let _ = Command::new("fsfreeze")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(std::process::Stdio::null())
                .status();
            let status = Command::new("umount").arg(&self.mnt).status();
            if !status.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loopdev)
            .status();
    }
}

/// Appends 64 KiB and fsyncs, again and again, recording when each write finished.
struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<Instant>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(dir: &Path) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let path = dir.join("journal.log");
        let (s, d) = (Arc::clone(&stop), Arc::clone(&done));
        let thread = std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("open the writer's file");
            let mut rng = Rng::new(7);
            let mut buf = vec![0u8; 64 << 10];
            let mut written = 0u64;
            while !s.load(Ordering::Relaxed) {
                rng.fill(&mut buf);
                f.write_all(&buf).expect("write");
                f.sync_data().expect("fsync");
                d.lock().expect("lock").push(Instant::now());
                written += buf.len() as u64;
                // Keep the file small: start over past 8 MiB.
                if written > 8 * MIB {
                    f.set_len(0).expect("truncate");
                    written = 0;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer {
            stop,
            done,
            thread: Some(thread),
        }
    }

    fn times(&self) -> Vec<Instant> {
        self.done.lock().expect("lock").clone()
    }

    /// The longest time between two finished writes inside `from..to`.
    fn longest_stall(&self, from: Instant, to: Instant) -> Duration {
        let t: Vec<Instant> = self
            .times()
            .into_iter()
            .filter(|t| *t >= from && *t <= to + Duration::from_secs(1))
            .collect();
        t.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Incompressible files so that the capped read lasts a few seconds.
fn fill(mnt: &Path, bytes: u64) {
    sh(&format!(
        "head -c {bytes} /dev/urandom > {d}/data.bin && sync",
        d = mnt.display()
    ));
}

fn manifest(a: &Appliance, snapshot: &str) -> Manifest {
    serde_json::from_str(&a.manifest_json(snapshot)).expect("parse the manifest")
}

fn listed(a: &Appliance, snapshot: &str) -> serde_json::Value {
    let out = ok(a
        .appliance()
        .args(["snapshots", "--json", "--data"])
        .arg(a.data()));
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("snapshots --json");
    list.into_iter()
        .find(|s| s["snapshot"] == snapshot)
        .unwrap_or_else(|| panic!("{snapshot} not listed in {out}"))
}

fn table(a: &Appliance) -> String {
    ok(a.appliance().args(["snapshots", "--data"]).arg(a.data()))
}

#[test]
fn point_in_time_freezes_for_the_read_and_the_restore_is_clean() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fs = Mounted::new(96 * MIB);
    fill(&fs.mnt, 24 * MIB);
    let writer = Writer::start(&fs.mnt);
    std::thread::sleep(Duration::from_millis(300));
    let a = Appliance::start();
    let disk = format!("src={}", fs.loopdev.display());

    let started = Instant::now();
    let out = ok(a
        .backup_cmd("pit", &[])
        .args(["--disk", &disk, "--consistency", "point-in-time"])
        .args(["--rate-limit", SLOW]));
    let finished = Instant::now();
    let summary: serde_json::Value = serde_json::from_str(&out).expect("backup --json");
    let snapshot = summary["snapshot"].as_str().expect("snapshot").to_string();

    // The manifest, as signed and stored.
    let m = manifest(&a, &snapshot);
    let Consistency::PointInTime {
        method,
        frozen,
        freeze_ms,
        ..
    } = &m.consistency
    else {
        panic!("recorded as {}", m.consistency);
    };
    assert_eq!(*method, Method::Freeze);
    assert_eq!(frozen, std::slice::from_ref(&fs.mnt));
    let freeze = Duration::from_millis(*freeze_ms);
    log(format!(
        "backup took {:.1}s, frozen {:.1}s",
        (finished - started).as_secs_f64(),
        freeze.as_secs_f64()
    ));
    assert!(
        freeze >= Duration::from_secs(2),
        "a {SLOW} read of 24 MiB should freeze for seconds: {freeze:?}"
    );
    assert!(freeze <= finished - started);
    let freeze_seconds = summary["freeze_seconds"].as_f64().expect("freeze_seconds");
    assert!((freeze_seconds - freeze.as_secs_f64()).abs() < 0.01);
    assert_eq!(summary["consistency"]["mode"], "point-in-time");

    // The writer stalled for about the freeze, and wrote again once the backup was done.
    let stall = writer.longest_stall(started, finished);
    log(format!(
        "the writer's longest stall: {:.2}s",
        stall.as_secs_f64()
    ));
    assert!(
        stall >= freeze.mul_f64(0.8),
        "writes went on during a {freeze:?} freeze (longest stall {stall:?})"
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = writer.times().iter().filter(|t| **t > finished).count();
    assert!(after > 0, "the writer did not resume after the thaw");

    // The listing carries it: a column for people, the record in --json.
    assert_eq!(listed(&a, &snapshot)["consistency"]["method"], "freeze");
    let t = table(&a);
    assert!(t.contains("CONSISTENCY"), "{t}");
    assert!(t.contains("point-in-time (freeze "), "{t}");

    // The restored filesystem is clean as it is (the freeze flushed the journal).
    drop(writer);
    let restored = fs.path("restored.img");
    a.restore(&snapshot, &[("src", &restored)], &[]);
    ok(Command::new("e2fsck").arg("-fn").arg(&restored));
}

#[test]
fn live_is_recorded_as_live() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fs = Mounted::new(32 * MIB);
    let writer = Writer::start(&fs.mnt);
    let a = Appliance::start();
    let disk = format!("src={}", fs.loopdev.display());
    let out = ok(a
        .backup_cmd("live", &[])
        .args(["--disk", &disk, "--consistency", "live"]));
    let summary: serde_json::Value = serde_json::from_str(&out).expect("backup --json");
    let snapshot = summary["snapshot"].as_str().expect("snapshot");
    assert_eq!(manifest(&a, snapshot).consistency, Consistency::Live);
    assert_eq!(summary["freeze_seconds"].as_f64(), Some(0.0));
    assert_eq!(listed(&a, snapshot)["consistency"]["mode"], "live");
    // The writer never stopped: no stall anywhere near a second.
    let stall = writer.longest_stall(Instant::now() - Duration::from_secs(60), Instant::now());
    assert!(stall < Duration::from_secs(1), "{stall:?}");
}

#[test]
fn a_failing_pre_hook_fails_the_backup_before_any_read_and_post_still_runs() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fs = Mounted::new(32 * MIB);
    let a = Appliance::start();
    let post_ran = fs.path("post-ran");
    let hooks = fs.path("hooks.toml");
    std::fs::write(
        &hooks,
        format!(
            "[hooks]\npre_capture = [\"/bin/sh\", \"-c\", \"exit 3\"]\n\
             post_capture = [\"/bin/sh\", \"-c\", \"echo $FERRY_HOOK > {}\"]\ntimeout = \"30s\"\n",
            post_ran.display()
        ),
    )
    .expect("hooks file");
    let disk = format!("src={}", fs.loopdev.display());
    for mode in ["point-in-time", "auto"] {
        let _ = std::fs::remove_file(&post_ran);
        let err = fails(
            a.backup_cmd("hooked", &[])
                .args(["--disk", &disk, "--consistency", mode])
                .arg("--hooks")
                .arg(&hooks),
        );
        assert!(
            err.contains("pre-capture hook") && err.contains("exit status: 3"),
            "{mode}: {err}"
        );
        let post = std::fs::read_to_string(&post_ran).expect("the post hook did not run");
        assert_eq!(post.trim(), "post-capture");
    }
    // The appliance never heard of it: the session starts only after the sources are read.
    let sessions = a.data().join("sessions");
    let opened = std::fs::read_dir(&sessions).map_or(0, |d| d.count());
    assert_eq!(opened, 0, "a backup session was opened");
    // Nothing is left frozen: a write with fsync finishes at once.
    let t = Instant::now();
    sh(&format!(
        "echo ok > {m}/after && sync -f {m}/after",
        m = fs.mnt.display()
    ));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // The same hooks around a successful live read: both run, the snapshot says live.
    std::fs::write(
        &hooks,
        format!(
            "[hooks]\npre_capture = [\"/bin/true\"]\n\
             post_capture = [\"/bin/sh\", \"-c\", \"echo $FERRY_HOOK > {}\"]\n",
            post_ran.display()
        ),
    )
    .expect("hooks file");
    let _ = std::fs::remove_file(&post_ran);
    let out = ok(a
        .backup_cmd("hooked", &[])
        .args(["--disk", &disk, "--consistency", "live"])
        .arg("--hooks")
        .arg(&hooks));
    let summary: serde_json::Value = serde_json::from_str(&out).expect("backup --json");
    assert_eq!(summary["consistency"]["mode"], "live");
    assert!(post_ran.exists(), "post hook did not run after a live read");
}
