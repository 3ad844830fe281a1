//! Boot fix-ups after a restore onto new hardware (ARCHITECTURE §6): once the disks'
//! bytes are written, the restored OS must learn its new hardware or it will not boot.
//!
//! - [`hive`]: an own reader/writer for Windows registry hives (the restore-agent is a
//!   static musl binary; libhivex cannot be linked). Tests check every edit with hivex.
//! - [`windows`]: virtio driver injection into an offline Windows volume, as virt-v2v's
//!   convert_windows does it: copy the .sys files, Services\<svc> boot-start,
//!   CriticalDeviceDatabase (before Windows 8) or DriverDatabase (Windows 8 and later)
//!   entries for the legacy and modern virtio PCI ids, DevicePath.
//! - [`linux`]: pure text transforms (fstab, crypttab, grub, initramfs-tools, dracut,
//!   MAC-bound network config, old hypervisor tools) in a thin plan/apply wrapper, plus
//!   the commands the caller must run in a chroot.
//! - [`report`]: the bootability report read back from what was written.
//!
//! Every fix-up is plan, then apply: the plan is a list of [`Change`]s (a file edit, a note
//! for the operator, or a command the restored system must run) that `--dry-run` prints and
//! `apply` carries out. Nothing touches the target except through a
//! `root: &Path`, so tests run on temp trees.

#![forbid(unsafe_code)]
// `is_multiple_of` is newer than the workspace's rust-version (1.85).
#![allow(clippy::manual_is_multiple_of)]

use serde::Serialize;
use std::path::{Path, PathBuf};

mod change;
pub mod fsutil;
pub mod hive;
pub mod linux;
pub mod network;
pub mod report;
pub mod system;
pub mod uefi;
pub mod windows;

pub use change::{Change, GuestTask};

/// Where the rescue image carries the virtio-win driver package (relative to its root): written
/// by `image-builder --virtio-win`, passed to the Windows fix-up by the agent when it is a
/// directory.
pub const RESCUE_VIRTIO_WIN: &str = "usr/share/ferry/virtio-win";

/// Why a fix-up failed. Messages start with the operation and name the file.
#[derive(Debug, thiserror::Error)]
pub enum FixupError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("edit registry hive {path}: {source}")]
    Hive {
        path: PathBuf,
        source: hive::HiveError,
    },
    #[error("read driver package {path}: {source}")]
    Inf {
        path: PathBuf,
        source: windows::inf::InfError,
    },
    #[error(
        "refuse to edit {path}: Windows is hibernated or was shut down with fast startup \
         (hiberfil.sys starts with {signature:?}); its next boot would resume the old \
         hardware state and lose these edits. Boot it on the old hardware and shut down fully \
         (powercfg /h off), or pass force to edit anyway"
    )]
    Hibernated { path: PathBuf, signature: String },
    #[error("find the operating system under {0}: neither Windows/System32/config/SYSTEM nor etc/os-release exists")]
    UnknownOs(PathBuf),
    #[error("find {what}: {detail}")]
    Missing { what: String, detail: String },
    #[error("transform {what}: {detail}")]
    Transform { what: String, detail: String },
    #[error("network fix-up: {0}")]
    Network(#[from] network::RulesError),
}

impl FixupError {
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> FixupError + 'a {
        move |source| FixupError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// Which OS the CLI should fix up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OsChoice {
    Linux,
    Windows,
    Auto,
}

impl std::str::FromStr for OsChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linux" => Ok(OsChoice::Linux),
            "windows" => Ok(OsChoice::Windows),
            "auto" => Ok(OsChoice::Auto),
            other => Err(format!(
                "unknown OS {other:?}: expected linux, windows or auto"
            )),
        }
    }
}

/// Detects the OS under `root`: Windows if Windows/System32/config/SYSTEM exists
/// (case-insensitively), Linux if etc/os-release exists.
pub fn detect(root: &Path) -> Result<OsChoice, FixupError> {
    if fsutil::ci_resolve(root, windows::SYSTEM_HIVE).is_some() {
        Ok(OsChoice::Windows)
    } else if root.join("etc/os-release").exists() || root.join("usr/lib/os-release").exists() {
        Ok(OsChoice::Linux)
    } else {
        Err(FixupError::UnknownOs(root.to_owned()))
    }
}

/// CLI entry: plans the fix-up for the OS under `root` and, unless `dry_run`, applies it.
/// Returns the changes (made or planned). For Linux this entry knows no old-device→UUID
/// map, so fstab/grub device names are only reported, not rewritten; callers that have
/// the backup's layout call [`linux::plan`] with [`linux::Params::devices`].
pub fn run(
    root: &Path,
    os: OsChoice,
    drivers: Option<&Path>,
    dry_run: bool,
) -> Result<Vec<Change>, FixupError> {
    run_with(root, os, drivers, None, dry_run)
}

/// [`run`], installing the first-boot beacon into a Linux system when `beacon` is given.
pub fn run_with(
    root: &Path,
    os: OsChoice,
    drivers: Option<&Path>,
    beacon: Option<linux::beacon::BeaconInstall>,
    dry_run: bool,
) -> Result<Vec<Change>, FixupError> {
    let os = match os {
        OsChoice::Auto => detect(root)?,
        other => other,
    };
    match os {
        OsChoice::Windows => {
            let drivers = drivers.ok_or_else(|| FixupError::Missing {
                what: "virtio driver package".into(),
                detail: "a Windows fix-up needs the virtio-win driver directory".into(),
            })?;
            let plan = windows::plan(root, drivers, &windows::WindowsOptions::default())?;
            let changes = plan.changes.clone();
            if !dry_run {
                windows::apply(&plan)?;
            }
            Ok(changes)
        }
        OsChoice::Linux | OsChoice::Auto => {
            let params = linux::Params {
                beacon,
                ..linux::Params::default()
            };
            let plan = linux::plan(root, &params)?;
            let changes = plan.changes();
            if !dry_run {
                linux::apply(root, &plan)?;
            }
            Ok(changes)
        }
    }
}
