//! Freeze and thaw of a real ext4 filesystem on a loop device: writes block while frozen and
//! go through after `end`, after Drop, after SIGTERM to the capturing process, after that
//! process is killed (SIGKILL: its guardian process thaws), and after both are killed once
//! `cleanup_stale` runs.
//!
//! Needs root, `losetup`, `mkfs.ext4` and `mount`; prints `SKIPPED: reason` otherwise. The
//! crash and signal cases run the capture in a child process: this test binary again, with
//! `FERRY_CAPTURE_CHILD_*` set, running `child_capture_then_wait`.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::{sh, skip_reason, Ext4, EXT4_TOOLS};
use ferry_capture::{cleanup_stale, Capture, CaptureRequest, Consistency, Method, Mode};

/// A write that has not finished in this long is taken as blocked by the freeze.
const BLOCKED: Duration = Duration::from_secs(1);
/// A write after the thaw must finish within this.
const UNBLOCKED: Duration = Duration::from_secs(20);

/// The mounted ext4 of a test, with what the tests ask of it.
struct Fs(Ext4);

impl std::ops::Deref for Fs {
    type Target = Ext4;
    fn deref(&self) -> &Ext4 {
        &self.0
    }
}

impl Fs {
    fn new() -> Fs {
        Fs(Ext4::new(64 << 20).unwrap())
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn request(&self) -> CaptureRequest {
        CaptureRequest::new(
            vec![self.loopdev.clone()],
            Mode::PointInTime,
            self.run_dir(),
        )
    }

    /// Start writing (and fsyncing) a file in a thread; the receiver gets the result.
    fn write(&self, name: &str) -> mpsc::Receiver<std::io::Result<()>> {
        let path = self.mnt.join(name);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = std::fs::write(&path, b"data")
                .and_then(|()| std::fs::File::open(&path)?.sync_all());
            let _ = tx.send(r);
        });
        rx
    }
}

fn assert_blocked(rx: &mpsc::Receiver<std::io::Result<()>>, what: &str) {
    assert!(
        rx.recv_timeout(BLOCKED).is_err(),
        "{what}: a write finished while the filesystem should be frozen"
    );
}

fn assert_done(rx: &mpsc::Receiver<std::io::Result<()>>, what: &str) {
    match rx.recv_timeout(UNBLOCKED) {
        Ok(r) => r.unwrap_or_else(|e| panic!("{what}: write failed: {e}")),
        Err(_) => panic!("{what}: a write is still blocked: the filesystem was not thawed"),
    }
}

#[test]
fn freeze_blocks_writes_until_end() {
    if let Some(why) = skip_reason(&EXT4_TOOLS) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let fs = Fs::new();
    let cap = Capture::begin(&fs.request()).unwrap();
    let found: Vec<_> = cap.sources()[0]
        .filesystems
        .iter()
        .map(|f| f.mount_point.clone())
        .collect();
    assert_eq!(found, std::slice::from_ref(&fs.mnt));
    assert!(
        fs.run_dir().join("frozen").exists(),
        "no state file while frozen"
    );
    let rx = fs.write("during");
    assert_blocked(&rx, "frozen");
    let report = cap.end().unwrap();
    assert_done(&rx, "after end");
    assert!(
        !fs.run_dir().join("frozen").exists(),
        "state file left after thaw"
    );
    match report.consistency {
        Consistency::PointInTime { method, frozen, .. } => {
            assert_eq!(method, Method::Freeze);
            assert_eq!(frozen, std::slice::from_ref(&fs.mnt));
        }
        other => panic!("recorded as {other}"),
    }
    assert!(report.freeze >= BLOCKED, "{:?}", report.freeze);
}

#[test]
fn a_freeze_past_its_limit_is_thawed_and_fails_the_capture() {
    if let Some(why) = skip_reason(&EXT4_TOOLS) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let fs = Fs::new();
    let mut req = fs.request();
    req.max_freeze = Some(Duration::from_secs(2));
    let cap = Capture::begin(&req).unwrap();
    let rx = fs.write("during");
    assert_blocked(&rx, "frozen");
    // No end(): the watchdog thaws.
    assert_done(&rx, "after the limit");
    let e = cap.end().unwrap_err().to_string();
    assert!(e.contains("held past its limit of 2s"), "{e}");
    assert!(!fs.run_dir().join("frozen").exists());
}

#[test]
fn drop_thaws_and_live_freezes_nothing() {
    if let Some(why) = skip_reason(&EXT4_TOOLS) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let fs = Fs::new();
    let cap = Capture::begin(&fs.request()).unwrap();
    let rx = fs.write("during");
    assert_blocked(&rx, "frozen");
    drop(cap);
    assert_done(&rx, "after drop");

    let mut live = fs.request();
    live.mode = Mode::Live;
    let cap = Capture::begin(&live).unwrap();
    assert_done(&fs.write("live"), "live capture");
    assert_eq!(cap.end().unwrap().consistency, Consistency::Live);
}

#[test]
fn hooks_run_around_the_freeze_and_post_runs_on_failure() {
    if let Some(why) = skip_reason(&EXT4_TOOLS) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let fs = Fs::new();
    let log = fs.dir.path().join("hooks.log");
    let hook = |s: &str| {
        ferry_capture::Hook::new(
            ferry_capture::HookCommand::Shell(format!("echo {s} >> {}", log.display())),
            Duration::from_secs(10),
        )
    };
    let mut req = fs.request();
    req.hooks.pre = Some(hook("pre"));
    req.hooks.post = Some(hook("post"));
    Capture::begin(&req).unwrap().end().unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\npost\n");

    // The capture fails after the pre hook (a disk that is not a block device): post still
    // runs.
    std::fs::remove_file(&log).unwrap();
    let good_disks = std::mem::replace(&mut req.disks, vec![fs.dir.path().to_path_buf()]);
    assert!(Capture::begin(&req).is_err());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\npost\n");

    // The pre hook fails: the error names it, and post runs (the source must serve again).
    std::fs::remove_file(&log).unwrap();
    req.disks = good_disks.clone();
    req.hooks.pre = Some(ferry_capture::Hook::new(
        ferry_capture::HookCommand::Shell(format!("echo pre >> {}; exit 3", log.display())),
        Duration::from_secs(10),
    ));
    let e = Capture::begin(&req).err().unwrap().to_string();
    assert!(e.starts_with("pre-capture hook"), "{e}");
    assert!(e.contains("exit status: 3"), "{e}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\npost\n");

    // The same disk given twice: its filesystem is frozen once.
    req.hooks = Default::default();
    req.disks = vec![good_disks[0].clone(), good_disks[0].clone()];
    let report = Capture::begin(&req).unwrap().end().unwrap();
    match report.consistency {
        Consistency::PointInTime { frozen, .. } => assert_eq!(frozen.len(), 1),
        other => panic!("recorded as {other}"),
    }
}

/// Start this test binary as a child that freezes `fs` and waits.
fn child(fs: &Fs) -> Child {
    let ready = fs.dir.path().join("ready");
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args(["--exact", "child_capture_then_wait", "--nocapture"])
        .env("FERRY_CAPTURE_CHILD_DISK", &fs.loopdev)
        .env("FERRY_CAPTURE_CHILD_RUN", fs.run_dir())
        .env("FERRY_CAPTURE_CHILD_READY", &ready)
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !ready.exists() {
        assert!(
            t.elapsed() < UNBLOCKED,
            "the child never froze the filesystem"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The child's side (does nothing unless started by [`child`]).
#[test]
fn child_capture_then_wait() {
    let (Some(disk), Some(run), Some(ready)) = (
        std::env::var_os("FERRY_CAPTURE_CHILD_DISK"),
        std::env::var_os("FERRY_CAPTURE_CHILD_RUN"),
        std::env::var_os("FERRY_CAPTURE_CHILD_READY"),
    ) else {
        return;
    };
    let req = CaptureRequest::new(vec![disk.into()], Mode::PointInTime, run.into());
    let cap = Capture::begin(&req).unwrap();
    std::fs::write(ready, b"frozen").unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(cap);
}

#[test]
fn sigterm_thaws_before_the_process_ends() {
    if let Some(why) = skip_reason(&EXT4_TOOLS) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let fs = Fs::new();
    let mut c = child(&fs);
    let rx = fs.write("during");
    assert_blocked(&rx, "frozen by the child");
    sh("kill", &["-TERM", &c.id().to_string()]).unwrap();
    let status = c.wait().unwrap();
    assert!(!status.success(), "the child ended normally: {status}");
    assert_done(&rx, "after SIGTERM");
}

/// The guardian process the capturing child forked before it froze (its only child).
fn guardian_of(c: &Child) -> String {
    let pid = sh("pgrep", &["-P", &c.id().to_string()]).unwrap();
    assert_eq!(pid.lines().count(), 1, "one guardian: {pid}");
    pid
}

#[test]
fn a_killed_agent_is_thawed_by_its_guardian() {
    if let Some(why) = skip_reason(&EXT4_TOOLS) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let fs = Fs::new();
    let mut c = child(&fs);
    let guardian = guardian_of(&c);
    let rx = fs.write("during");
    assert_blocked(&rx, "frozen by the child");
    c.kill().unwrap(); // SIGKILL: no destructor, no signal thread
    c.wait().unwrap();
    assert_done(&rx, "after the agent's SIGKILL (the guardian thaws)");
    // The guardian is gone too; the state file is left for the next start, which finds
    // nothing frozen and clears it.
    let t = Instant::now();
    while sh("kill", &["-0", &guardian]).is_ok() {
        assert!(t.elapsed() < UNBLOCKED, "the guardian did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cleanup_stale(&fs.run_dir()).unwrap().thawed.len(), 0);
    assert!(!fs.run_dir().join("frozen").exists());
}

#[test]
fn a_crash_of_agent_and_guardian_leaves_a_freeze_that_cleanup_stale_thaws() {
    if let Some(why) = skip_reason(&EXT4_TOOLS) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let fs = Fs::new();
    let mut c = child(&fs);
    // Both killed (as a power cut of the agent's whole cgroup would): the guardian first.
    sh("kill", &["-KILL", &guardian_of(&c)]).unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let rx = fs.write("after-crash");
    assert_blocked(&rx, "still frozen after the crash");
    let report = cleanup_stale(&fs.run_dir()).unwrap();
    assert_eq!(report.thawed, std::slice::from_ref(&fs.mnt));
    assert_done(&rx, "after cleanup_stale");
    assert!(!fs.run_dir().join("frozen").exists());
    // A second cleanup finds nothing to do.
    assert_eq!(cleanup_stale(&fs.run_dir()).unwrap().thawed.len(), 0);
}
