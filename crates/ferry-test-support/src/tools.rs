//! The real disk tools in host tests (sfdisk, mkfs, lvm, blkid…) and the sparse image files they
//! work on.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

/// [`run`] with `stdin` written to the command's input.
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

/// Run a command and return its output whatever its exit status (LVM's warnings about
/// inherited file descriptors silenced).
pub fn output(cmd: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(cmd)
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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

/// A loop device over an image file, detached on drop.
pub struct Loop(pub String);

impl Loop {
    /// `losetup -f --show` with extra arguments (offset, size limit, sector size…); `None` (the
    /// test is skipped, saying so) when loop devices do not work here.
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

/// The number after `prefix` on the first line of a tool's `out` that starts with it
/// (`Block size:` in dumpe2fs output, `blocksize = ` in xfs_db's); panics when there is none.
pub fn number_after(out: &str, prefix: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}"))
        .trim()
        .parse()
        .unwrap()
}

/// The free extents (first block, length in blocks) that `dumpe2fs` lists in its output `out`,
/// sorted. With bigalloc a listed range ends at the first block of its last free cluster: the
/// length counts that whole cluster.
pub fn dumpe2fs_free_extents(out: &str) -> Vec<(u64, u64)> {
    let bs = number_after(out, "Block size:");
    let cluster_blocks = out
        .lines()
        .find_map(|l| l.strip_prefix("Cluster size:"))
        .map_or(1, |c| c.trim().parse::<u64>().unwrap() / bs);
    let mut free = Vec::new();
    for list in out
        .lines()
        .filter_map(|l| l.strip_prefix("  Free blocks: "))
    {
        for item in list.split(", ").filter(|s| !s.trim().is_empty()) {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
            free.push((a, b - a + cluster_blocks));
        }
    }
    free.sort();
    free
}

/// `sgdisk -i SLOT DEV` as key/value pairs (`"First sector"` → `"2048 (at 1024.0 KiB)"`).
pub fn sgdisk_info(dev: &str, slot: u32) -> HashMap<String, String> {
    run("sgdisk", &["-i", &slot.to_string(), dev])
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
