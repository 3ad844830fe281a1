//! The external tools: the rescue image's (blkid, lvm, mount) through [`Tool`], which names the
//! package of a missing one, and the guest's own, run in a chroot with a clean environment.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_sys::tool::Tool;

use crate::report::initrd;

pub(super) fn unmount(dir: &Path) {
    let d = dir.display().to_string();
    if tool("umount", &[&d]).is_err() {
        // Busy (a tool left a process behind): detach it so the disk is released at reboot.
        let _ = tool("umount", &["-l", &d]);
    }
}

pub(super) fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("done")
        .trim()
        .to_owned()
}

pub(super) fn tool(prog: &'static str, args: &[&str]) -> Result<String, String> {
    tool_ok(prog, args, &[0])
}

pub(super) fn tool_ok(prog: &'static str, args: &[&str], ok: &[i32]) -> Result<String, String> {
    Tool::new(prog, package(prog))
        .run_ok(args, ok)
        .map_err(|e| e.to_string())
}

/// The Debian package of each tool run here, named when the tool is missing.
fn package(prog: &str) -> &'static str {
    match prog {
        "lvm" => "lvm2",
        "modprobe" => "kmod",
        "mount" | "umount" => "mount",
        "blkid" => "util-linux",
        _ => "coreutils",
    }
}

/// Runs `cmd` inside the restored system with a clean environment, at most `timeout`.
pub(super) fn chroot(
    root: &Path,
    cmd: &[String],
    timeout: Duration,
    work: &Path,
) -> Result<String, String> {
    let log = work.join("chroot.log");
    let file = std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = file
        .try_clone()
        .map_err(|e| format!("create {}: {e}", log.display()))?;
    let mut child = Command::new("chroot")
        .arg(root)
        .args(cmd)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C")
        .env("HOME", "/root")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run chroot: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("stopped after {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if status.success() {
        Ok(text)
    } else {
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        Err(format!(
            "{status}: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }
}

/// Decompresses an initramfs segment with the guest's own tool.
pub(super) fn decompress_in(
    root: &Path,
    c: initrd::Compression,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    let tool = c.command().ok_or("not compressed")?;
    // Inside the chroot: the guest's tool reads a file the rescue system put into its /run.
    let input = root.join("run/ferry-initrd.part");
    std::fs::write(&input, data).map_err(|e| format!("write {}: {e}", input.display()))?;
    let out = Command::new("chroot")
        .arg(root)
        .args([tool, "-dc", "/run/ferry-initrd.part"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let _ = std::fs::remove_file(&input);
    let out = out.map_err(|e| format!("cannot run chroot {tool}: {e}"))?;
    if out.stdout.is_empty() {
        return Err(format!("the guest's {tool} -dc gave nothing"));
    }
    Ok(out.stdout)
}
