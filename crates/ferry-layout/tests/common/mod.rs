//! Host test helpers: sparse images, the real tools, loop devices, applying a plan's patches.
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_format::layout::DiskLayout;
use ferry_layout::{DiskMapping, SourceDisk, TargetDisk};

pub const MIB: u64 = 1 << 20;
/// LVM commands write no backup/archive files under /etc.
pub const NO_BACKUP: &str = "backup { backup = 0 archive = 0 }";

/// True when `tool` is on PATH (tests that need it are skipped otherwise, saying so).
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: {tool} is not installed");
    }
    found
}

/// Run a command; panics with its output when it fails. Returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    run_stdin(cmd, args, None)
}

pub fn run_stdin(cmd: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = output(cmd, args, stdin);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run a command and return its output whatever its exit status.
pub fn output(cmd: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// A sparse image file of `size` bytes.
pub fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    path
}

/// Copy `src` into `dst` at byte `offset`.
pub fn write_into(dst: &Path, offset: u64, src: &Path) {
    let data = std::fs::read(src).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(dst).unwrap();
    f.write_all_at(&data, offset).unwrap();
}

/// What the restore does for a larger target: the source's bytes at the same offsets on a
/// larger (sparse) disk.
pub fn restore_copy(src: &Path, dst_name: &str, size: u64) -> PathBuf {
    let dst = src.with_file_name(dst_name);
    std::fs::copy(src, &dst).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dst)
        .unwrap()
        .set_len(size)
        .unwrap();
    dst
}

/// Write a mapping's patches into the target image.
pub fn apply(img: &Path, m: &DiskMapping) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    for p in &m.patches {
        f.write_all_at(&p.bytes, p.offset).unwrap();
    }
}

/// The layout ferry-probe reads off an image file (or block device).
pub fn probe(path: &Path) -> DiskLayout {
    let disk = ferry_image::open(path).unwrap();
    ferry_probe::probe(disk.as_ref()).unwrap()
}

pub fn source(name: &str, img: &Path) -> SourceDisk {
    let layout = probe(img);
    SourceDisk {
        name: name.into(),
        size: layout.size,
        logical_sector_size: layout.logical_sector_size,
        layout: Some(layout),
        used_bytes: 0,
    }
}

pub fn target(path: &Path, size: u64, ss: u32) -> TargetDisk {
    TargetDisk {
        path: path.to_str().unwrap().into(),
        size,
        logical_sector_size: ss,
        physical_sector_size: ss,
        serial: None,
        model: None,
        blank: true,
    }
}

/// A loop device over `img`, detached on drop.
pub struct Loop(pub String);

impl Loop {
    /// `losetup -f --show` with extra arguments; `None` (test skipped) when loop devices do not
    /// work here.
    pub fn attach(img: &Path, extra: &[&str]) -> Option<Loop> {
        let mut args = vec!["-f", "--show"];
        args.extend_from_slice(extra);
        args.push(img.to_str()?);
        let out = output("losetup", &args, None);
        if !out.status.success() {
            eprintln!(
                "SKIPPED: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Loop(String::from_utf8(out.stdout).ok()?.trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}
