//! The bootability report, made before the reboot by reading back what is on the target:
//! Windows — a virtio storage driver file present, its service boot-start, and a device
//! binding (CriticalDeviceDatabase or DriverDatabase) read back from the hive; Linux —
//! every fstab entry resolves, an initramfs contains virtio, and the UEFI fallback loader
//! exists when an ESP is given; with the target's NICs, each configured interface and whether
//! it will come up ([`network`]).

pub mod initrd;
mod network;

pub use network::network;

use crate::fsutil::{self, ci_resolve};
use crate::hive::{Hive, RegValue};
use crate::windows::{self, registry};
use crate::FixupError;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One check. A failed critical check means the system will most likely not boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub critical: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn push(
        &mut self,
        name: impl Into<String>,
        ok: bool,
        critical: bool,
        detail: impl Into<String>,
    ) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            critical,
            detail: detail.into(),
        });
    }

    /// True when every critical check passed.
    pub fn bootable(&self) -> bool {
        self.checks.iter().all(|c| c.ok || !c.critical)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            let mark = match (c.ok, c.critical) {
                (true, _) => "ok  ",
                (false, true) => "FAIL",
                (false, false) => "warn",
            };
            writeln!(f, "{mark} {}: {}", c.name, c.detail)?;
        }
        write!(
            f,
            "{}",
            if self.bootable() {
                "bootable"
            } else {
                "NOT bootable"
            }
        )
    }
}

// ---- Windows -----------------------------------------------------------------------

/// Is `svc` bound to a virtio PCI id: a CDDB entry naming it, or a DriverDatabase
/// DeviceIds entry whose INF exists in DriverInfFiles.
fn windows_binding(
    h: &Hive,
    ccs: &str,
    svc: &str,
) -> Result<Option<String>, crate::hive::HiveError> {
    let ids = registry::VIRTIO_IDS
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case(svc))
        .map_or(&[][..], |(_, ids)| *ids);
    for id in ids {
        let cddb = format!(
            "{ccs}\\Control\\CriticalDeviceDatabase\\pci#{}",
            id.to_lowercase()
        );
        if h.get(&cddb, "Service")?
            .as_ref()
            .and_then(RegValue::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case(svc))
        {
            return Ok(Some(format!(
                "CriticalDeviceDatabase pci#{}",
                id.to_lowercase()
            )));
        }
        if let Some(k) = h.open(&format!("DriverDatabase\\DeviceIds\\PCI\\{id}"))? {
            for v in h.values(k)? {
                if h.open(&format!("DriverDatabase\\DriverInfFiles\\{}", v.name))?
                    .is_some()
                {
                    return Ok(Some(format!("DriverDatabase PCI\\{id} -> {}", v.name)));
                }
            }
        }
    }
    Ok(None)
}

/// Reads the Windows volume at `root` back: is a virtio storage driver ready to boot?
pub fn windows(root: &Path) -> Result<Report, FixupError> {
    let mut r = Report::default();
    let path = ci_resolve(root, windows::SYSTEM_HIVE).ok_or_else(|| FixupError::Missing {
        what: "the SYSTEM hive".into(),
        detail: format!("no {} under {}", windows::SYSTEM_HIVE, root.display()),
    })?;
    let herr = |source| FixupError::Hive {
        path: path.clone(),
        source,
    };
    let h = Hive::from_bytes(fsutil::read(&path)?).map_err(herr)?;
    let ccs = windows::current_control_set(&h).map_err(herr)?;
    let mut ready = Vec::new();
    for svc in ["viostor", "vioscsi"] {
        let file = ci_resolve(root, &format!("{}/{svc}.sys", windows::SYSTEM_DRIVERS));
        let start = h
            .get(&format!("{ccs}\\Services\\{svc}"), "Start")
            .map_err(herr)?
            .and_then(|v| v.as_dword());
        let binding = windows_binding(&h, &ccs, svc).map_err(herr)?;
        r.push(
            format!("{svc} driver file"),
            file.is_some(),
            false,
            file.map_or("missing".into(), |f| f.display().to_string()),
        );
        r.push(
            format!("{svc} boot start"),
            start == Some(0),
            false,
            start.map_or("no service key".into(), |s| {
                format!("{ccs}\\Services\\{svc}\\Start = {s}")
            }),
        );
        r.push(
            format!("{svc} device binding"),
            binding.is_some(),
            false,
            binding.clone().unwrap_or("none".into()),
        );
        if r.checks.iter().rev().take(3).all(|c| c.ok) {
            ready.push(svc);
        }
    }
    let detail = if ready.is_empty() {
        "neither viostor nor vioscsi is fully installed".into()
    } else {
        ready.join(", ")
    };
    r.push(
        "virtio storage driver ready",
        !ready.is_empty(),
        true,
        detail,
    );
    Ok(r)
}

/// How an operator adds virtio-win to a built rescue image (docs/image.md, "virtio-win").
pub const ADD_VIRTIO_WIN: &str = "image-builder customize --iso ferry-rescue.iso \
     --virtio-win virtio-win.iso --out ferry-rescue-virtio.iso";

/// The check a Windows restore gets when the rescue image carries no virtio-win: nothing was
/// injected, and here is how to add it. Critical unless the restored Windows already has a
/// virtio storage driver ready (`storage_ready`, from [`windows`]'s report).
pub fn no_virtio_win(storage_ready: bool) -> Check {
    let why = if storage_ready {
        "; the restored Windows already has a virtio storage driver ready"
    } else {
        ", and the restored Windows has none of its own: it will not boot from a virtio disk"
    };
    Check {
        name: "virtio-win in the rescue image".into(),
        ok: false,
        critical: !storage_ready,
        detail: format!(
            "this rescue image has no virtio-win (no /{}), so no virtio driver was injected{why}; \
             add it with `{ADD_VIRTIO_WIN}` (or build with `image-builder build --virtio-win \
             virtio-win.iso`), boot the new image and run the job again",
            crate::RESCUE_VIRTIO_WIN
        ),
    }
}

// ---- Linux -------------------------------------------------------------------------

/// What the restored disks now offer, and where to look.
pub struct LinuxInput<'a> {
    pub uuids: &'a BTreeSet<String>,
    pub labels: &'a BTreeSet<String>,
    pub partuuids: &'a BTreeSet<String>,
    /// The mounted EFI system partition, if the machine boots with UEFI.
    pub esp: Option<&'a Path>,
    pub decompress: initrd::Decompressor<'a>,
}

/// Filesystem types that are not on a disk.
const VIRTUAL_FS: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devpts",
    "devtmpfs",
    "cgroup",
    "cgroup2",
    "nfs",
    "nfs4",
    "cifs",
    "securityfs",
    "debugfs",
    "efivarfs",
    "none",
];

/// Checks every fstab entry against what the disks offer.
pub fn check_fstab(r: &mut Report, fstab: &str, input: &LinuxInput) {
    for line in fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dev, mnt, fstype, opts) = (
            f[0],
            f.get(1).copied().unwrap_or(""),
            f.get(2).copied().unwrap_or(""),
            f.get(3).copied().unwrap_or(""),
        );
        if VIRTUAL_FS.contains(&fstype) || mnt == "none" && fstype != "swap" {
            continue;
        }
        let critical = !opts.split(',').any(|o| o == "noauto" || o == "nofail");
        let name = format!("fstab {mnt}");
        let tag = |p: &str| dev.strip_prefix(p).map(|v| v.trim_matches('"').to_owned());
        let (ok, detail) = if let Some(u) = tag("UUID=").or_else(|| tag("/dev/disk/by-uuid/")) {
            (
                input.uuids.contains(&u) || input.uuids.contains(&u.to_lowercase()),
                dev.to_owned(),
            )
        } else if let Some(l) = tag("LABEL=").or_else(|| tag("/dev/disk/by-label/")) {
            (input.labels.contains(&l), dev.to_owned())
        } else if let Some(p) = tag("PARTUUID=").or_else(|| tag("/dev/disk/by-partuuid/")) {
            (
                input.partuuids.contains(&p) || input.partuuids.contains(&p.to_lowercase()),
                dev.to_owned(),
            )
        } else if crate::linux::transform::is_unstable_device(dev) {
            (false, format!("{dev} is a hardware-dependent name"))
        } else if dev.starts_with("/dev/") {
            (true, format!("{dev} (LVM/MD/mapper name, not checked)"))
        } else {
            continue;
        };
        let detail = if ok {
            detail
        } else {
            format!("{detail} does not resolve on the restored disks")
        };
        r.push(name, ok, critical, detail);
    }
}

/// Initramfs images under boot/ (not kdump's).
fn initrds(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root.join("boot")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (n.starts_with("initrd.img-")
                || n.starts_with("initramfs-")
                || n == "initrd.img"
                || n.starts_with("initrd-"))
                && !n.contains("kdump")
                && !n.ends_with(".ferry-orig")
        })
        .map(|e| e.path())
        .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_file()))
        .collect();
    out.sort();
    out
}

/// Virtio storage modules built into the kernel (lib/modules/*/modules.builtin).
fn builtin_virtio(root: &Path) -> bool {
    ["lib/modules", "usr/lib/modules"].iter().any(|d| {
        std::fs::read_dir(root.join(d)).is_ok_and(|rd| {
            rd.filter_map(Result::ok).any(|k| {
                std::fs::read_to_string(k.path().join("modules.builtin")).is_ok_and(|t| {
                    t.lines()
                        .any(|l| l.ends_with("/virtio_blk.ko") || l.ends_with("/virtio_scsi.ko"))
                })
            })
        })
    })
}

/// True when an initramfs listing holds a virtio storage module.
pub fn has_virtio_storage(names: &[String]) -> bool {
    names.iter().any(|n| {
        let base = n.rsplit('/').next().unwrap_or(n);
        ["virtio_blk.ko", "virtio_scsi.ko"]
            .iter()
            .any(|m| base.starts_with(m))
    })
}

/// Reads the Linux system at `root` back: fstab, initramfs, UEFI fallback loader.
pub fn linux(root: &Path, input: &LinuxInput) -> Result<Report, FixupError> {
    let mut r = Report::default();
    match std::fs::read_to_string(root.join("etc/fstab")) {
        Ok(t) => check_fstab(&mut r, &t, input),
        Err(e) => r.push("fstab", false, true, format!("read etc/fstab: {e}")),
    }
    let builtin = builtin_virtio(root);
    let images = initrds(root);
    let mut any = false;
    for img in &images {
        let data = fsutil::read(img)?;
        let (ok, detail) = match initrd::list(&data, input.decompress) {
            Ok(names) if has_virtio_storage(&names) => {
                (true, "contains virtio_blk/virtio_scsi".to_owned())
            }
            Ok(_) if builtin => (true, "virtio storage is built into the kernel".to_owned()),
            Ok(names) => (
                false,
                format!("no virtio storage module among {} files", names.len()),
            ),
            Err(e) => (false, format!("cannot list: {e}")),
        };
        any |= ok;
        r.push(format!("initramfs {}", img.display()), ok, false, detail);
    }
    let detail = if images.is_empty() {
        "no initramfs under boot/".to_owned()
    } else {
        format!("{} image(s) checked", images.len())
    };
    r.push(
        "initramfs with virtio storage",
        any || (images.is_empty() && builtin),
        true,
        detail,
    );
    if let Some(esp) = input.esp {
        let loader = ci_resolve(esp, "EFI/BOOT/BOOTX64.EFI");
        r.push(
            "UEFI fallback loader",
            loader.is_some(),
            true,
            loader.map_or("EFI/BOOT/BOOTX64.EFI missing on the ESP".into(), |p| {
                p.display().to_string()
            }),
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_virtio_win_says_so_and_how_to_add_it() {
        for storage_ready in [false, true] {
            let mut r = Report::default();
            r.push("virtio storage driver ready", storage_ready, true, "-");
            r.checks.push(no_virtio_win(storage_ready));
            let c = &r.checks[1];
            assert!(!c.ok);
            assert_eq!(c.critical, !storage_ready);
            assert_eq!(r.bootable(), storage_ready);
            let text = r.to_string();
            for want in [
                "virtio-win in the rescue image: this rescue image has no virtio-win \
                 (no /usr/share/ferry/virtio-win), so no virtio driver was injected",
                "add it with `image-builder customize --iso ferry-rescue.iso --virtio-win \
                 virtio-win.iso --out ferry-rescue-virtio.iso`",
                "image-builder build --virtio-win virtio-win.iso",
            ] {
                assert!(text.contains(want), "{want:?} not in:\n{text}");
            }
            let mark = if storage_ready { "warn" } else { "FAIL" };
            assert!(
                text.contains(&format!("{mark} virtio-win in the rescue image")),
                "{text}"
            );
        }
    }
}
