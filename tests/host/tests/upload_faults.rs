//! Issue 9, "no hang": the real agents against the real appliance when the appliance keeps
//! failing. Each run has a hard limit far above what it needs; reaching it fails the test.
//!
//! - A backup onto an appliance whose data directory is a tiny tmpfs that fills up ends non-zero
//!   in about its `--retry-window` (20 s) with exit status 3, naming the cause ("No space left
//!   on device"); after the space is grown the same backup succeeds and restores
//!   `cmp`-identical (needs root).
//! - A restore whose fetches of one chunk keep failing (the stored chunk replaced by a symlink
//!   loop: every GET is a 500) ends in about its window, naming the chunk and the cause;
//!   the target holds only chunks equal to the snapshot's and not its boot chunk; once the chunk
//!   is back, a rerun completes it.
//! - A restore whose appliance is stopped mid-way ends in about its window; a rerun after the
//!   appliance is back completes it.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferry_format::ChunkId;

const MIB: u64 = 1 << 20;
/// A run still going after this has hung: it is killed and the test fails.
const HANG: Duration = Duration::from_secs(120);

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Run `cmd` to its end (killed at [`HANG`], which fails the test); `during` is called every
/// 5 ms while it runs, with the time since it started.
fn run_bounded(cmd: &mut Command, logs: &Path, mut during: impl FnMut(Duration)) -> Finished {
    let (out, err) = (logs.join("stdout"), logs.join("stderr"));
    let start = Instant::now();
    let mut child = cmd
        .stdout(fs::File::create(&out).expect("stdout file"))
        .stderr(fs::File::create(&err).expect("stderr file"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still ran after {HANG:?}: it hangs\nstderr: {}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        during(start.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    };
    Finished {
        status,
        took: start.elapsed(),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

fn is_root() -> bool {
    sh("id -u").trim() == "0"
}

/// A tmpfs mounted over a directory; lazily unmounted when dropped (after the appliance).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        ok(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir));
        Tmpfs(dir.to_path_buf())
    }
    fn resize(&self, size: &str) {
        ok(Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Move the appliance's data directory onto a tmpfs of `size` (the server is restarted).
fn data_on_tmpfs(a: &mut Appliance, size: &str) -> Tmpfs {
    a.kill();
    let data = a.data();
    let orig = a.dir.path().join("data.orig");
    fs::rename(&data, &orig).expect("move data aside");
    fs::create_dir(&data).expect("mount point");
    let t = Tmpfs::mount(&data, size);
    sh(&format!(
        "cp -a '{}'/. '{}'/",
        orig.display(),
        data.display()
    ));
    a.serve();
    t
}

fn random_image(path: &Path, size: u64, seed: u64) {
    let f = fs::File::create(path).expect("image");
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; MIB as usize];
    for i in 0..size / MIB {
        rng.fill(&mut buf);
        f.write_all_at(&buf, i * MIB).expect("write image");
    }
    f.sync_all().expect("sync image");
}

#[test]
fn backup_onto_a_full_appliance_fails_within_its_retry_window_naming_the_cause() {
    if !is_root() {
        eprintln!(
            "skipped: mounting a small tmpfs for the appliance's data needs root (CI runs as root)"
        );
        return;
    }
    let mut a = Appliance::start_local(); // local only: it fills the tmpfs the chunks are written to
                                          // 16 MiB of store for 96 MiB of incompressible data: the store fills after a few chunks.
    let space = data_on_tmpfs(&mut a, "16m");
    let work = tempfile::tempdir().expect("tempdir");
    let image = work.path().join("big.img");
    random_image(&image, 96 * MIB, 9);

    let mut cmd = a.backup_cmd("full", &[image.as_path()]);
    cmd.args(["--retry-window", "20s"]);
    let r = run_bounded(&mut cmd, work.path(), |_| {});
    log(format!(
        "backup onto a full store ended in {:.1}s ({})",
        r.took.as_secs_f64(),
        r.status
    ));
    // 3: gave up retrying (a scheduler may try again later), not a refusal.
    assert_eq!(r.status.code(), Some(3), "exit status\n{}", r.stderr);
    assert!(
        r.stderr.contains("No space left on device"),
        "stderr does not name the cause:\n{}",
        r.stderr
    );
    let last = r.stderr.lines().last().unwrap_or_default();
    log(format!("its last line: {last}"));
    // It retried for the window (a full disk may be freed by GC), then gave up, in bounded time.
    assert!(
        r.took >= Duration::from_secs(19) && r.took < Duration::from_secs(60),
        "the backup ended after {:?}; expected about its 20 s retry window",
        r.took
    );

    // Nothing poisoned: with room, the same backup completes and restores byte for byte.
    space.resize("256m");
    let snap = a.backup("full", &[image.as_path()]);
    let snap = snap["snapshot"].as_str().expect("snapshot");
    let restored = work.path().join("restored.img");
    a.restore(snap, &[("big", restored.as_path())], &[]);
    cmp(&image, &restored);
    a.kill();
    drop(space);
}

/// A 1 MiB-chunk snapshot of an image whose first chunk holds data (stand-in boot code).
fn snapshot_of(a: &Appliance, image: &Path, size: u64, seed: u64) -> String {
    make_image(image, size, seed);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(image)
        .expect("image");
    // No partition table: a table without partitions would make every chunk "unused".
    let mut boot = vec![0u8; 446];
    Rng::new(seed + 1).fill(&mut boot);
    f.write_all_at(&boot, 0).expect("boot sector");
    drop(f);
    let mut cmd = a.backup_cmd("src", &[image]);
    cmd.args(["--chunk-size", &MIB.to_string()]);
    let v: serde_json::Value = serde_json::from_str(&ok(&mut cmd)).expect("backup --json");
    v["snapshot"].as_str().expect("snapshot").to_string()
}

fn restore_cmd(a: &Appliance, snapshot: &str, target: &Path, window: &str) -> Command {
    let mut c = a.restore_cmd(snapshot, &[("src", target)]);
    c.args(["--retry-window", window]);
    c
}

/// Every 1 MiB of `target` is zero or equal to `image`, and the boot chunk was not written;
/// returns how many chunks were written.
fn only_verified_chunks(image: &Path, target: &Path) -> usize {
    let (src, dst) = (
        fs::File::open(image).expect("image"),
        fs::File::open(target).expect("target"),
    );
    let size = dst.metadata().expect("stat").len();
    let (mut want, mut got) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut written = 0;
    for i in 0..size / MIB {
        src.read_exact_at(&mut want, i * MIB).expect("read image");
        dst.read_exact_at(&mut got, i * MIB).expect("read target");
        if i == 0 {
            assert!(got != want, "a failed restore wrote the boot chunk");
            continue;
        }
        if got.iter().all(|&b| b == 0) {
            continue;
        }
        assert!(
            got == want,
            "chunk {i} of the target holds bytes that are not the snapshot's"
        );
        written += 1;
    }
    written
}

#[test]
fn restore_whose_chunk_fetches_keep_failing_ends_in_bounded_time_and_writes_only_verified_data() {
    let a = Appliance::start_local(); // local only: it finds and breaks a file of chunks/
    let work = tempfile::tempdir().expect("tempdir");
    let image = work.path().join("src.img");
    let snap = snapshot_of(&a, &image, 64 * MIB, 21);

    // The last data chunk's stored file becomes a symlink to itself: opening it fails (ELOOP),
    // so every GET of it is a 500 while the other chunks arrive.
    let f = fs::File::open(&image).expect("image");
    let mut buf = vec![0u8; MIB as usize];
    let last = (1..64)
        .rev()
        .find(|i| {
            f.read_exact_at(&mut buf, i * MIB).expect("read");
            buf.iter().any(|&b| b != 0)
        })
        .expect("a data chunk");
    f.read_exact_at(&mut buf, last * MIB).expect("read");
    let id = ChunkId::of(&buf).to_hex();
    let stored = PathBuf::from(
        sh(&format!(
            "find '{}' -type f -name '{id}'",
            a.data().join("chunks").display()
        ))
        .trim(),
    );
    assert!(
        stored.is_file(),
        "chunk {id} not found in the store: {}",
        sh(&format!("find '{}' | head -20", a.data().display()))
    );
    let aside = stored.with_extension("aside");
    fs::rename(&stored, &aside).expect("move chunk aside");
    std::os::unix::fs::symlink(stored.file_name().expect("name"), &stored).expect("symlink loop");

    let target = work.path().join("target.img");
    let r = run_bounded(
        &mut restore_cmd(&a, &snap, &target, "5s"),
        work.path(),
        |_| {},
    );
    log(format!(
        "restore with chunk {last} failing ended in {:.1}s ({})",
        r.took.as_secs_f64(),
        r.status
    ));
    assert!(!r.status.success(), "the restore succeeded: {}", r.stdout);
    assert!(
        r.stderr.contains(&id)
            && r.stderr.contains("gave up after retrying")
            && r.stderr.contains("Too many levels of symbolic links"),
        "stderr does not name the chunk and the cause:\n{}",
        r.stderr
    );
    assert!(
        r.took < Duration::from_secs(30),
        "the restore ended after {:?}; expected about its 5 s retry window",
        r.took
    );
    let written = only_verified_chunks(&image, &target);
    log(format!(
        "{written} verified chunks were written, the boot chunk was not"
    ));

    // The chunk back: a rerun completes the restore.
    fs::remove_file(&stored).expect("remove symlink");
    fs::rename(&aside, &stored).expect("chunk back");
    a.restore(&snap, &[("src", target.as_path())], &["--overwrite"]);
    cmp(&image, &target);
}

#[test]
fn restore_whose_appliance_stops_mid_way_ends_in_bounded_time() {
    let mut a = Appliance::start();
    let work = tempfile::tempdir().expect("tempdir");
    let image = work.path().join("src.img");
    let snap = snapshot_of(&a, &image, 768 * MIB, 33);

    let target = work.path().join("target.img");
    let mut stopped_at = None;
    let mut seen = 0;
    let mut cmd = restore_cmd(&a, &snap, &target, "5s");
    cmd.args(["--parallel", "1"]);
    let r = run_bounded(&mut cmd, work.path(), |t| {
        let allocated = fs::metadata(&target).map(|m| m.blocks() * 512).unwrap_or(0);
        seen = seen.max(allocated);
        if stopped_at.is_none() && allocated >= 32 * MIB {
            a.kill();
            stopped_at = Some(t);
        }
    });
    let stopped_at = stopped_at.unwrap_or_else(|| {
        panic!(
            "the restore ended ({}, {:?}, {seen} bytes allocated at most) before the appliance could be stopped mid-way",
            r.status, r.took
        )
    });
    let after = r.took - stopped_at;
    log(format!(
        "appliance stopped {:.1}s into the restore; the restore ended {:.1}s later ({})",
        stopped_at.as_secs_f64(),
        after.as_secs_f64(),
        r.status
    ));
    assert!(!r.status.success(), "the restore succeeded: {}", r.stdout);
    assert!(
        r.stderr.contains("cannot reach the appliance"),
        "stderr does not name the cause:\n{}",
        r.stderr
    );
    assert!(
        after < Duration::from_secs(30),
        "the restore ended {after:?} after the appliance stopped; expected about its 5 s window"
    );
    let written = only_verified_chunks(&image, &target);
    log(format!(
        "{written} verified chunks were written, the boot chunk was not"
    ));

    a.serve();
    a.restore(&snap, &[("src", target.as_path())], &["--overwrite"]);
    cmp(&image, &target);
}
