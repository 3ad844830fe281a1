//! What the host tests of real filesystems share: running a tool, the reason a test is skipped
//! here, and an ext4 filesystem on a loop device, mounted.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `cmd`; its trimmed stdout, or what it said on stderr.
pub fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Why a test that needs root, loop devices and `tools` cannot run here, if it cannot.
pub fn skip_reason(tools: &[&str]) -> Option<String> {
    // Not `id -u`: the rescue image (the guest tier) has no `id`.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not root".into());
    }
    for tool in tools {
        if ferry_sys::tool::find(tool).is_none() {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop devices".into());
    }
    None
}

/// The tools [`Ext4::new`] runs.
pub const EXT4_TOOLS: [&str; 4] = ["losetup", "mkfs.ext4", "mount", "umount"];

/// An ext4 filesystem (4 KiB blocks) on a loop device over a file in `dir`, mounted; thawed,
/// unmounted and detached when dropped.
pub struct Ext4 {
    pub dir: tempfile::TempDir,
    pub loopdev: PathBuf,
    pub mnt: PathBuf,
}

impl Ext4 {
    pub fn new(size: u64) -> Result<Ext4, String> {
        // Not tmpfs: some tests need the backing file's pages to be droppable.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).map_err(|e| e.to_string())?;
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(size))
            .map_err(|e| e.to_string())?;
        let img = img.to_str().ok_or("image path")?.to_string();
        sh("mkfs.ext4", &["-q", "-F", "-b", "4096", &img])?;
        let loopdev = PathBuf::from(sh("losetup", &["--find", "--show", &img])?);
        let mnt = dir.path().join("mnt");
        let fs = Ext4 { dir, loopdev, mnt };
        std::fs::create_dir(&fs.mnt).map_err(|e| e.to_string())?;
        let (dev, mnt) = (
            fs.loopdev.to_str().ok_or("dev")?,
            fs.mnt.to_str().ok_or("mnt")?,
        );
        sh("mount", &[dev, mnt])?;
        Ok(fs)
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.mnt).output();
        let _ = Command::new("umount").arg(&self.mnt).output();
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loopdev)
            .output();
    }
}
