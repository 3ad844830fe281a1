//! Fix-up of freshly restored disks, run from the rescue system: find the restored OS on the
//! target disks (partitions, LVM volumes activated from those disks only), mount it with its
//! own fstab, apply the file fix-ups, run the guest's own tools in a chroot (initramfs, GRUB),
//! create the UEFI fallback loader, read the result back into a bootability report, and undo
//! every mount and activation.
//!
//! Every external tool is the rescue image's (blkid, lvm, mount, chroot) or the guest's own
//! (update-initramfs, grub-install). Only the target disks are looked at: an identically named
//! VG or filesystem on another disk of this machine is never activated or mounted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_sys::tool::Tool;
use serde::Serialize;

use crate::linux::transform::{is_unstable_device, DeviceMap};
use crate::report::{self, initrd, Report};
use crate::{Change, FixupError};

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

/// A block device as `blkid -o export` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDev {
    pub dev: String,
    pub fstype: String,
    pub uuid: String,
    pub label: String,
    pub partuuid: String,
}

/// Parses `blkid -o export` output for several devices (blank-line separated).
pub fn parse_blkid(text: &str) -> Vec<BlockDev> {
    let mut out = Vec::new();
    let mut cur = BlockDev::default();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.is_empty() {
            // A record without DEVNAME gets its device from the caller.
            if cur != BlockDev::default() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim_matches('"').to_owned();
        match k {
            "DEVNAME" => cur.dev = v,
            "TYPE" => cur.fstype = v,
            "UUID" => cur.uuid = v,
            "LABEL" => cur.label = v,
            "PARTUUID" => cur.partuuid = v,
            _ => {}
        }
    }
    out
}

/// The names the old machine may have given disk number `index` (0-based, snapshot order) whose
/// source was `source`: its own name when it was read from a device, and the usual SCSI/IDE/
/// virtio/Xen names by position.
pub fn old_disk_names(index: usize, source: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(name) = source.strip_prefix("/dev/") {
        if !name.contains('/') {
            out.push(name.to_owned());
        }
    }
    if let Some(letter) = u8::try_from(index)
        .ok()
        .filter(|i| *i < 26)
        .map(|i| (b'a' + i) as char)
    {
        for p in ["sd", "hd", "vd", "xvd"] {
            let n = format!("{p}{letter}");
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// `/dev/<disk><N>` (or `<disk>p<N>` when the disk name ends in a digit, like nvme0n1).
pub fn partition_name(disk: &str, slot: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("/dev/{disk}p{slot}")
    } else {
        format!("/dev/{disk}{slot}")
    }
}

/// One restored disk: every name the old machine may have used for it, and its partitions by
/// slot (`T` is a device node or a filesystem UUID).
pub type DiskPartitions<T> = (Vec<String>, Vec<(u32, T)>);

/// Old device names → filesystem UUIDs: each restored disk's partitions under every name the
/// old machine may have used for it.
pub fn device_map(disks: &[DiskPartitions<String>]) -> DeviceMap {
    let mut map = DeviceMap::new();
    for (names, parts) in disks {
        for name in names {
            for (slot, uuid) in parts {
                map.insert(partition_name(name, *slot), uuid.clone());
            }
        }
    }
    map
}

/// An fstab entry to mount before the chroot step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabMount {
    pub spec: String,
    pub dir: String,
    pub fstype: String,
}

/// The on-disk filesystems of fstab that the boot tools write to or read from (/boot, /boot/efi,
/// /usr, /var and below), parents before children; swap, network, virtual and noauto entries are
/// left out.
pub fn fstab_mounts(fstab: &str) -> Vec<FstabMount> {
    let mut out: Vec<FstabMount> = fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (spec, dir, fstype) = (*f.first()?, *f.get(1)?, *f.get(2)?);
            let opts = f.get(3).copied().unwrap_or("defaults");
            let wanted = ["/boot", "/usr", "/var"]
                .iter()
                .any(|p| dir == *p || dir.starts_with(&format!("{p}/")));
            let disk_fs = matches!(
                fstype,
                "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "vfat" | "auto"
            );
            (wanted && disk_fs && !opts.split(',').any(|o| o == "noauto")).then(|| FstabMount {
                spec: spec.to_owned(),
                dir: dir.to_owned(),
                fstype: fstype.to_owned(),
            })
        })
        .collect();
    out.sort_by_key(|m| m.dir.matches('/').count());
    out
}

/// Resolves an fstab device spec against the restored devices.
pub fn resolve_spec(spec: &str, devs: &[BlockDev], old: &DeviceMap) -> Option<String> {
    let spec = spec.trim_matches('"');
    let by = |f: &dyn Fn(&BlockDev) -> &str, v: &str| {
        devs.iter()
            .find(|d| !v.is_empty() && f(d).eq_ignore_ascii_case(v))
            .map(|d| d.dev.clone())
    };
    for (tag, path) in [
        ("UUID=", "/dev/disk/by-uuid/"),
        ("LABEL=", "/dev/disk/by-label/"),
        ("PARTUUID=", "/dev/disk/by-partuuid/"),
    ] {
        if let Some(v) = spec.strip_prefix(tag).or_else(|| spec.strip_prefix(path)) {
            let v = v.trim_matches('"');
            return match tag {
                "UUID=" => by(&|d| &d.uuid, v),
                "LABEL=" => by(&|d| &d.label, v),
                _ => by(&|d| &d.partuuid, v),
            };
        }
    }
    if let Some(uuid) = old.get(spec) {
        return by(&|d| &d.uuid, uuid);
    }
    devs.iter()
        .find(|d| d.dev == spec)
        .map(|d| d.dev.clone())
        .or_else(|| {
            (!is_unstable_device(spec) && Path::new(spec).exists()).then(|| spec.to_owned())
        })
}

// ---- running it ------------------------------------------------------------------------------

/// Finds, mounts, fixes and reports the OS on `disks`. `log` sees one line per step as it
/// happens. Errors only when nothing could be looked at; a failed step is in the outcome.
pub fn run(
    disks: &[RestoredDisk],
    opts: &Options,
    log: &mut dyn FnMut(&str),
) -> Result<Outcome, FixupError> {
    let start = Instant::now();
    let mut s = Session {
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

struct Session<'a> {
    opts: &'a Options,
    steps: Vec<Step>,
    /// Mounted directories, in mount order.
    mounts: Vec<PathBuf>,
    /// PVs whose VGs were activated.
    vg_devices: Vec<String>,
    log: &'a mut dyn FnMut(&str),
}

impl Session<'_> {
    fn step(&mut self, what: &str, ok: bool, detail: String, since: Instant) {
        let seconds = since.elapsed().as_secs_f64();
        (self.log)(&format!(
            "fix-up: {what}: {}{detail} ({seconds:.1}s)",
            if ok { "" } else { "FAILED: " }
        ));
        self.steps.push(Step {
            what: what.to_owned(),
            ok,
            detail,
            seconds,
        });
    }

    fn fix(&mut self, disks: &[RestoredDisk]) -> Result<Outcome, FixupError> {
        let t = Instant::now();
        let mut parts: Vec<DiskPartitions<PathBuf>> = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            parts.push((old_disk_names(i, &d.source), partitions(&d.device)));
        }
        let mut nodes: Vec<String> = disks
            .iter()
            .map(|d| d.device.display().to_string())
            .collect();
        nodes.extend(
            parts
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, n)| n.display().to_string())),
        );
        let (mut devs, errors) = blkid(&nodes);
        if !errors.is_empty() {
            self.step("probe the restored disks", false, errors.join("; "), t);
        }
        let pvs: Vec<String> = devs
            .iter()
            .filter(|d| d.fstype == "LVM2_member")
            .map(|d| d.dev.clone())
            .collect();
        if !pvs.is_empty() {
            let _ = tool("modprobe", &["dm_mod"]);
            let list = pvs.join(",");
            match tool("lvm", &["vgchange", "-ay", "--devices", &list]) {
                Ok(_) => {
                    self.vg_devices = pvs.clone();
                    let lvs = tool(
                        "lvm",
                        &[
                            "lvs",
                            "--noheadings",
                            "-o",
                            "lv_dm_path",
                            "--devices",
                            &list,
                        ],
                    )
                    .unwrap_or_default();
                    let lv_nodes: Vec<String> = lvs.split_whitespace().map(str::to_owned).collect();
                    devs.extend(blkid(&lv_nodes).0);
                }
                Err(e) => self.step("activate LVM", false, e, t),
            }
        }
        let found: Vec<String> = devs
            .iter()
            .map(|d| format!("{} {}", d.dev, d.fstype))
            .collect();
        self.step("find filesystems", true, found.join(", "), t);

        let devmap = device_map(
            &parts
                .iter()
                .map(|(names, ps)| {
                    let slots = ps
                        .iter()
                        .filter_map(|(slot, node)| {
                            let n = node.display().to_string();
                            devs.iter()
                                .find(|d| d.dev == n && !d.uuid.is_empty())
                                .map(|d| (*slot, d.uuid.clone()))
                        })
                        .collect();
                    (names.clone(), slots)
                })
                .collect::<Vec<_>>(),
        );

        let t = Instant::now();
        let root_dir = self.opts.work.join("root");
        let Some((root_dev, os)) = self.find_root(&devs, &root_dir) else {
            // Not a failure: a data disk has no OS to adapt.
            self.step(
                "find the operating system",
                true,
                "none on the restored disks (no etc/os-release or \
                 Windows/System32/config/SYSTEM): nothing to adapt"
                    .into(),
                t,
            );
            let mut report = Report::default();
            report.checks.push(report::Check {
                name: "operating system".into(),
                ok: false,
                critical: false,
                detail: "none found on the restored disks; not checked".into(),
            });
            return Ok(Outcome {
                report,
                ..Outcome::default()
            });
        };
        self.step(
            "find the operating system",
            true,
            format!("{os} on {}", root_dev.dev),
            t,
        );
        let mut out = Outcome {
            os: Some(os.to_owned()),
            root: Some(root_dev.dev.clone()),
            ..Outcome::default()
        };
        if os == "windows" {
            self.windows(&root_dir, &mut out)?;
        } else {
            self.linux(&root_dir, disks, &devs, &devmap, &mut out)?;
        }
        Ok(out)
    }

    /// Mounts each candidate filesystem at `dir` until one holds an OS; leaves that one mounted.
    fn find_root(&mut self, devs: &[BlockDev], dir: &Path) -> Option<(BlockDev, &'static str)> {
        for d in devs {
            let fstype = match d.fstype.as_str() {
                "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" => d.fstype.as_str(),
                "ntfs" => "ntfs3",
                _ => continue,
            };
            if self.mount(&d.dev, dir, fstype, None).is_err() {
                continue;
            }
            match crate::detect(dir) {
                Ok(crate::OsChoice::Windows) => return Some((d.clone(), "windows")),
                Ok(_) => return Some((d.clone(), "linux")),
                Err(_) => self.unmount_last(),
            }
        }
        None
    }

    fn linux(
        &mut self,
        root: &Path,
        disks: &[RestoredDisk],
        devs: &[BlockDev],
        devmap: &DeviceMap,
        out: &mut Outcome,
    ) -> Result<(), FixupError> {
        let t = Instant::now();
        let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap_or_default();
        let mut esp = None;
        let mut mounted = Vec::new();
        for m in fstab_mounts(&fstab) {
            let Some(dev) = resolve_spec(&m.spec, devs, devmap) else {
                self.step(
                    &format!("mount {}", m.dir),
                    false,
                    format!("{} is not on the restored disks; not mounted", m.spec),
                    t,
                );
                continue;
            };
            let dir = root.join(m.dir.trim_start_matches('/'));
            let fstype = if m.fstype == "auto" {
                devs.iter()
                    .find(|d| d.dev == dev)
                    .map_or("auto".to_owned(), |d| d.fstype.clone())
            } else {
                m.fstype.clone()
            };
            match self.mount(&dev, &dir, &fstype, None) {
                Ok(()) => {
                    if fstype == "vfat" && m.dir == "/boot/efi" {
                        esp = Some(dir.clone());
                    }
                    mounted.push(format!("{} on {}", dev, m.dir));
                }
                Err(e) => self.step(&format!("mount {}", m.dir), false, e, t),
            }
        }
        for (src, dir, fstype) in [
            ("/dev", "dev", None),
            ("proc", "proc", Some("proc")),
            ("sysfs", "sys", Some("sysfs")),
            ("tmpfs", "run", Some("tmpfs")),
        ] {
            let target = root.join(dir);
            let r = match fstype {
                None => self.mount(src, &target, "", Some("bind")),
                Some(t) => self.mount(src, &target, t, None),
            };
            if let Err(e) = r {
                self.step("prepare the chroot", false, e, t);
            }
        }
        self.step("mount the system", true, mounted.join(", "), t);

        let t = Instant::now();
        let boot_disk = disks.first().map(|d| d.device.display().to_string());
        let params = crate::linux::Params {
            devices: devmap.clone(),
            boot_disk: boot_disk.clone(),
            uefi: self.opts.uefi,
            keep_old_tools: false,
        };
        let plan = crate::linux::plan(root, &params)?;
        crate::linux::apply(root, &plan)?;
        let edited: Vec<String> = plan
            .edits
            .iter()
            .map(|e| format!("{} ({})", e.path.display(), e.what))
            .collect();
        out.changes.extend(plan.changes());
        self.step(
            "edit files",
            true,
            if edited.is_empty() {
                "nothing to change".into()
            } else {
                edited.join("; ")
            },
            t,
        );

        if self.opts.uefi {
            let t = Instant::now();
            match &esp {
                Some(e) => match crate::uefi::plan(e) {
                    Ok(c) if c.is_empty() => {
                        self.step("UEFI fallback loader", true, "already present".into(), t)
                    }
                    Ok(c) => {
                        crate::uefi::apply(e, &c)?;
                        out.changes.extend(crate::uefi::changes(&c));
                        self.step(
                            "UEFI fallback loader",
                            true,
                            format!("{} from {}", crate::uefi::FALLBACK, c[0].from.display()),
                            t,
                        );
                    }
                    Err(err) => self.step("UEFI fallback loader", false, err.to_string(), t),
                },
                None => self.step(
                    "UEFI fallback loader",
                    false,
                    "no EFI system partition mounted at /boot/efi in etc/fstab".into(),
                    t,
                ),
            }
        }

        // grub.cfg's device names were patched in place above; regenerating it (a minute under
        // emulation) is only needed when the defaults it is made from changed.
        let defaults_changed = plan
            .edits
            .iter()
            .any(|e| e.path == Path::new("etc/default/grub"));
        for cmd in &plan.commands {
            let t = Instant::now();
            let name = cmd.join(" ");
            if cmd.first().is_some_and(|c| c.ends_with("-mkconfig")) && !defaults_changed {
                self.step(
                    &name,
                    true,
                    "not needed: etc/default/grub unchanged, grub.cfg edited in place".into(),
                    t,
                );
                continue;
            }
            if cmd.iter().any(|a| a == "--target=i386-pc")
                && !root.join("usr/lib/grub/i386-pc").is_dir()
            {
                self.step(&name, false, "the guest has no BIOS GRUB (usr/lib/grub/i386-pc): install grub-pc and run grub-install on the boot disk".into(), t);
                continue;
            }
            match chroot(root, cmd, self.opts.tool_timeout, &self.opts.work) {
                Ok(o) => self.step(&name, true, last_line(&o), t),
                Err(e) => self.step(&name, false, e, t),
            }
        }

        let uuids: BTreeSet<String> = devs.iter().map(|d| d.uuid.to_lowercase()).collect();
        let labels: BTreeSet<String> = devs.iter().map(|d| d.label.clone()).collect();
        let partuuids: BTreeSet<String> = devs.iter().map(|d| d.partuuid.to_lowercase()).collect();
        let decompress = |c: initrd::Compression, data: &[u8]| {
            initrd::external_decompress(c, data).or_else(|e| {
                // The rescue image may lack the tool; the guest has the one it compressed with.
                decompress_in(root, c, data).map_err(|e2| format!("{e}; {e2}"))
            })
        };
        let input = report::LinuxInput {
            uuids: &uuids,
            labels: &labels,
            partuuids: &partuuids,
            esp: if self.opts.uefi { esp.as_deref() } else { None },
            decompress: &decompress,
        };
        out.report = report::linux(root, &input)?;
        if self.opts.uefi && esp.is_none() {
            out.report.checks.push(report::Check {
                name: "UEFI fallback loader".into(),
                ok: false,
                critical: true,
                detail: "no EFI system partition in etc/fstab (/boot/efi)".into(),
            });
        }
        Ok(())
    }

    fn windows(&mut self, root: &Path, out: &mut Outcome) -> Result<(), FixupError> {
        let t = Instant::now();
        match &self.opts.drivers {
            Some(drivers) => {
                let changes = crate::run(root, crate::OsChoice::Windows, Some(drivers), false)?;
                self.step(
                    "inject virtio drivers",
                    true,
                    format!("{} changes", changes.len()),
                    t,
                );
                out.changes.extend(changes);
            }
            None => self.step(
                "inject virtio drivers",
                false,
                "this rescue image has no virtio-win driver package: build it with one, or \
                 attach the VM's disk as SATA"
                    .into(),
                t,
            ),
        }
        out.report = report::windows(root)?;
        Ok(())
    }

    fn mount(
        &mut self,
        src: &str,
        dir: &Path,
        fstype: &str,
        option: Option<&str>,
    ) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let d = dir.display().to_string();
        let mut args = Vec::new();
        if !fstype.is_empty() {
            let _ = tool("modprobe", &[fstype]);
            args.extend(["-t", fstype]);
        }
        if let Some(o) = option {
            args.extend(["-o", o]);
        }
        args.extend([src, d.as_str()]);
        tool("mount", &args)?;
        self.mounts.push(dir.to_owned());
        Ok(())
    }

    fn unmount_last(&mut self) {
        if let Some(d) = self.mounts.pop() {
            unmount(&d);
        }
    }

    /// Unmounts in reverse order, flushes, deactivates the VGs it activated.
    fn teardown(&mut self) {
        while !self.mounts.is_empty() {
            self.unmount_last();
        }
        let _ = tool("sync", &[]);
        if !self.vg_devices.is_empty() {
            let list = self.vg_devices.join(",");
            if let Err(e) = tool("lvm", &["vgchange", "-an", "--devices", &list]) {
                (self.log)(&format!("fix-up: deactivate LVM: {e}"));
            }
        }
    }
}

fn unmount(dir: &Path) {
    let d = dir.display().to_string();
    if tool("umount", &[&d]).is_err() {
        // Busy (a tool left a process behind): detach it so the disk is released at reboot.
        let _ = tool("umount", &["-l", &d]);
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("done")
        .trim()
        .to_owned()
}

/// Partitions of a whole-disk device, from sysfs, waiting briefly for their nodes.
fn partitions(device: &Path) -> Vec<(u32, PathBuf)> {
    let Some(name) = std::fs::canonicalize(device)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    else {
        return Vec::new();
    };
    let sys = Path::new("/sys/class/block").join(&name);
    let Ok(rd) = std::fs::read_dir(&sys) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let slot = std::fs::read_to_string(e.path().join("partition")).ok()?;
            Some((slot.trim().parse().ok()?, Path::new("/dev").join(n)))
        })
        .collect();
    out.sort();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.iter().any(|(_, n)| !n.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    out
}

/// Probes each node; the errors of nodes that could not be probed at all come back too.
fn blkid(nodes: &[String]) -> (Vec<BlockDev>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for n in nodes {
        // -p: probe the device itself, not a cache that predates the restore. 2: nothing found.
        match tool_ok("blkid", &["-p", "-o", "export", n], &[0, 2]) {
            Ok(text) => {
                let mut d = parse_blkid(&text);
                for x in &mut d {
                    if x.dev.is_empty() {
                        x.dev = n.clone();
                    }
                    // blkid -p reports PART_ENTRY_UUID rather than PARTUUID.
                    if x.partuuid.is_empty() {
                        x.partuuid = text
                            .lines()
                            .find_map(|l| l.strip_prefix("PART_ENTRY_UUID="))
                            .unwrap_or("")
                            .to_owned();
                    }
                }
                out.extend(d.into_iter().filter(|d| !d.fstype.is_empty()));
            }
            Err(e) => errors.push(e),
        }
    }
    (out, errors)
}

fn tool(prog: &'static str, args: &[&str]) -> Result<String, String> {
    tool_ok(prog, args, &[0])
}

fn tool_ok(prog: &'static str, args: &[&str], ok: &[i32]) -> Result<String, String> {
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
fn chroot(root: &Path, cmd: &[String], timeout: Duration, work: &Path) -> Result<String, String> {
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
fn decompress_in(root: &Path, c: initrd::Compression, data: &[u8]) -> Result<Vec<u8>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkid_export_parses_several_devices() {
        let text = "DEVNAME=/dev/vda1\nUUID=1111\nTYPE=ext4\nPARTUUID=aaaa-01\n\nDEVNAME=/dev/vda5\nUUID=pv-uuid\nTYPE=LVM2_member\n\nDEVNAME=/dev/mapper/vg-root\nLABEL=\"my root\"\nUUID=2222\nTYPE=xfs\n";
        let d = parse_blkid(text);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].partuuid, "aaaa-01");
        assert_eq!(d[1].fstype, "LVM2_member");
        assert_eq!(d[2].label, "my root");
    }

    #[test]
    fn old_names_and_device_map() {
        assert_eq!(
            old_disk_names(0, "/srv/web.raw"),
            ["sda", "hda", "vda", "xvda"]
        );
        assert_eq!(
            old_disk_names(1, "/dev/sdc")[..2],
            ["sdc".to_string(), "sdb".into()]
        );
        assert_eq!(old_disk_names(0, "/dev/nvme0n1")[0], "nvme0n1");
        let map = device_map(&[(
            old_disk_names(0, "x"),
            vec![(1, "u1".into()), (5, "u5".into())],
        )]);
        assert_eq!(map["/dev/sda1"], "u1");
        assert_eq!(map["/dev/vda5"], "u5");
        assert_eq!(partition_name("nvme0n1", 2), "/dev/nvme0n1p2");
    }

    #[test]
    fn fstab_mounts_keep_boot_paths_in_order() {
        let fstab = "/dev/mapper/vg-root / xfs defaults 0 1\n\
                     UUID=E1 /boot/efi vfat umask=0077 0 1\n\
                     /dev/sda1 /boot ext4 defaults 0 2\n\
                     /dev/mapper/vg-swap none swap sw 0 0\n\
                     srv:/x /var/nfs nfs defaults 0 0\n\
                     /dev/sdb1 /var/lib ext4 noauto 0 0\n\
                     tmpfs /tmp tmpfs defaults 0 0\n";
        let m = fstab_mounts(fstab);
        let dirs: Vec<&str> = m.iter().map(|m| m.dir.as_str()).collect();
        assert_eq!(dirs, ["/boot", "/boot/efi"]);
    }

    #[test]
    fn specs_resolve_by_tag_old_name_or_mapper_path() {
        let devs = parse_blkid(
            "DEVNAME=/dev/vda1\nUUID=AB-CD\nTYPE=vfat\nPARTUUID=p-1\n\nDEVNAME=/dev/vda2\nUUID=u2\nTYPE=ext4\nLABEL=boot\n",
        );
        let old = device_map(&[(old_disk_names(0, "img"), vec![(2, "u2".into())])]);
        assert_eq!(
            resolve_spec("UUID=ab-cd", &devs, &old).as_deref(),
            Some("/dev/vda1")
        );
        assert_eq!(
            resolve_spec("LABEL=boot", &devs, &old).as_deref(),
            Some("/dev/vda2")
        );
        assert_eq!(
            resolve_spec("PARTUUID=p-1", &devs, &old).as_deref(),
            Some("/dev/vda1")
        );
        assert_eq!(
            resolve_spec("/dev/sda2", &devs, &old).as_deref(),
            Some("/dev/vda2")
        );
        assert_eq!(
            resolve_spec("/dev/disk/by-uuid/u2", &devs, &old).as_deref(),
            Some("/dev/vda2")
        );
        assert_eq!(resolve_spec("/dev/sdc1", &devs, &old), None);
        assert_eq!(resolve_spec("UUID=nope", &devs, &old), None);
    }
}
