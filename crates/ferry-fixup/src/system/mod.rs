//! Fix-up of freshly restored disks, run from the rescue system: find the restored OS on the
//! target disks (partitions, LVM volumes activated from those disks only), mount it with its
//! own fstab, apply the file fix-ups, run the guest's own tools in a chroot (initramfs, GRUB),
//! create the UEFI fallback loader, read the result back into a bootability report, and undo
//! every mount and activation.
//!
//! Every external tool is the rescue image's (blkid, lvm, mount, chroot) or the guest's own
//! (update-initramfs, grub-install). Only the target disks are looked at: an identically named
//! VG or filesystem on another disk of this machine is never activated or mounted.
//!
//! The parts: `devices` finds what is on the restored disks (blkid, partitions, the names the
//! old machine used, fstab), `session` mounts, fixes and reports in named steps and undoes its
//! mounts, `tools` runs the rescue image's and the guest's tools.

mod devices;
mod session;
mod tools;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::report::Report;
use crate::{Change, FixupError};

pub use devices::{
    device_map, fstab_mounts, old_disk_names, parse_blkid, partition_name, resolve_spec, BlockDev,
    DiskPartitions, FstabMount,
};

/// One restored disk: its name and source in the snapshot, and the device it is on now.
#[derive(Debug, Clone)]
pub struct RestoredDisk {
    pub name: String,
    /// Where the backup read it (`/dev/sda`, an image path): old device names come from here.
    pub source: String,
    pub device: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The machine boots with UEFI (the rescue system was started by UEFI firmware).
    pub uefi: bool,
    /// A virtio-win shaped driver directory for Windows guests.
    pub drivers: Option<PathBuf>,
    /// Scratch directory for mount points.
    pub work: PathBuf,
    /// Longest a single guest tool (update-initramfs, grub-install) may run.
    pub tool_timeout: Duration,
    /// Install the first-boot beacon into a restored Linux system (`linux::beacon`).
    pub beacon: Option<crate::linux::beacon::BeaconInstall>,
    /// A migration's cutover: disable the source agent in the restored Linux system and delete
    /// its credential (`linux::source_agent`).
    pub retire_source_agent: bool,
    /// Carry the network configuration to this machine's NICs (`linux::NetworkParams`).
    pub network: Option<crate::linux::NetworkParams>,
}

/// One step and how it went, for the job's events.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: String,
    pub ok: bool,
    pub detail: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Outcome {
    /// linux or windows; `None` when no OS was found on the disks.
    pub os: Option<String>,
    /// The device holding the root filesystem (or the Windows volume).
    pub root: Option<String>,
    pub changes: Vec<Change>,
    pub steps: Vec<Step>,
    pub report: Report,
    pub seconds: f64,
}

/// How a live log line should be shown. There is no error level: a failed step does not stop
/// the fix-up, and whether the system will boot is the report's verdict ([`Report`]'s critical
/// checks), which the caller shows as errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// A step that did what it should (or found nothing to do).
    Info,
    /// A step that failed or was skipped for a reason the operator must see.
    Warn,
}

/// One line of the fix-up's live log, given to `run`'s callback as each step ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    pub level: Level,
    /// The step: "mount /boot", "edit files", the command run in the chroot, ...
    pub step: String,
    pub detail: String,
    /// How long the step took; `None` for a line that is not a timed step.
    pub seconds: Option<f64>,
}

/// `fix-up: <step>: [FAILED: ]<detail>[ (<seconds>s)]`, the console's form.
impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let failed = match self.level {
            Level::Info => "",
            Level::Warn => "FAILED: ",
        };
        write!(f, "fix-up: {}: {failed}{}", self.step, self.detail)?;
        match self.seconds {
            Some(s) => write!(f, " ({s:.1}s)"),
            None => Ok(()),
        }
    }
}

/// Finds, mounts, fixes and reports the OS on `disks`. `log` sees one line per step as it
/// ends. Errors only when nothing could be looked at; a failed step is in the outcome.
pub fn run(
    disks: &[RestoredDisk],
    opts: &Options,
    log: &mut dyn FnMut(&LogLine),
) -> Result<Outcome, FixupError> {
    let start = Instant::now();
    let mut s = session::Session {
        opts,
        steps: Vec::new(),
        mounts: Vec::new(),
        vg_devices: Vec::new(),
        log,
    };
    let r = s.fix(disks);
    s.teardown();
    let mut out = r?;
    out.steps = std::mem::take(&mut s.steps);
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

/// The facts of each Windows volume among `partitions` (`(name, device)`, such as `("vda2",
/// "/dev/vda2")`): every partition that starts with an NTFS boot sector is mounted read-only
/// (ntfs3) under `mnt`, read with [`crate::windows::facts::facts`] when it holds a SYSTEM
/// hive, and unmounted. For a backup job, before its disks are read. A volume that cannot be
/// mounted or read is a warning in the second list, never a failure.
pub fn windows_facts(
    partitions: &[(String, PathBuf)],
    mnt: &std::path::Path,
) -> (Vec<ferry_format::manifest::OsFacts>, Vec<String>) {
    let (mut found, mut warnings) = (Vec::new(), Vec::new());
    for (name, dev) in partitions {
        let mut boot = [0u8; 11];
        let ntfs = std::fs::File::open(dev)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut boot))
            .is_ok()
            && &boot[3..11] == b"NTFS    ";
        if !ntfs {
            continue;
        }
        if let Err(e) = std::fs::create_dir_all(mnt) {
            warnings.push(format!("{name}: create {}: {e}", mnt.display()));
            continue;
        }
        let _ = tools::tool("modprobe", &["ntfs3"]);
        let (d, m) = (dev.display().to_string(), mnt.display().to_string());
        if let Err(e) = tools::tool("mount", &["-t", "ntfs3", "-o", "ro,noatime", &d, &m]) {
            warnings.push(format!(
                "{name}: mount read-only to read its Windows facts: {e}"
            ));
            continue;
        }
        if crate::fsutil::ci_resolve(mnt, crate::windows::SYSTEM_HIVE).is_some() {
            match crate::windows::facts::facts(mnt, name) {
                Ok(f) => found.push(f),
                Err(e) => warnings.push(format!("{name}: {e}")),
            }
        }
        tools::unmount(mnt);
    }
    (found, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_read_as_before() {
        let line = |level, seconds| LogLine {
            level,
            step: "mount /boot".into(),
            detail: "UUID=x is not on the restored disks".into(),
            seconds,
        };
        assert_eq!(
            line(Level::Warn, Some(0.26)).to_string(),
            "fix-up: mount /boot: FAILED: UUID=x is not on the restored disks (0.3s)"
        );
        assert_eq!(
            line(Level::Info, None).to_string(),
            "fix-up: mount /boot: UUID=x is not on the restored disks"
        );
    }
}
