//! The fix-up session: each named step logs a line and is kept for the outcome; the mounts and
//! LVM activations it made are undone by `teardown`, whatever happened.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::devices::{
    blkid, device_map, fstab_mounts, old_disk_names, partitions, resolve_spec, BlockDev,
    DiskPartitions,
};
use super::tools::{chroot, decompress_in, last_line, tool, unmount};
use super::{Level, LogLine, Options, Outcome, RestoredDisk, Step};
use crate::linux::transform::DeviceMap;
use crate::report::{self, initrd, Report};
use crate::{FixupError, GuestTask};

pub(super) struct Session<'a> {
    pub(super) opts: &'a Options,
    pub(super) steps: Vec<Step>,
    /// Mounted directories, in mount order.
    pub(super) mounts: Vec<PathBuf>,
    /// PVs whose VGs were activated.
    pub(super) vg_devices: Vec<String>,
    pub(super) log: &'a mut dyn FnMut(&LogLine),
}

impl Session<'_> {
    fn step(&mut self, what: &str, ok: bool, detail: String, since: Instant) {
        let seconds = since.elapsed().as_secs_f64();
        (self.log)(&LogLine {
            level: if ok { Level::Info } else { Level::Warn },
            step: what.to_owned(),
            detail: detail.clone(),
            seconds: Some(seconds),
        });
        self.steps.push(Step {
            what: what.to_owned(),
            ok,
            detail,
            seconds,
        });
    }

    pub(super) fn fix(&mut self, disks: &[RestoredDisk]) -> Result<Outcome, FixupError> {
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
            beacon: self.opts.beacon.clone(),
            retire_source_agent: self.opts.retire_source_agent,
            network: self.opts.network.clone(),
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
        if self.opts.beacon.is_some() {
            let t = Instant::now();
            let what = "install the first-boot beacon";
            match (&plan.beacon, &plan.beacon_refused) {
                (Some(b), _) => self.step(what, true, b.change().to_string(), t),
                (None, why) => self.step(what, false, why.clone().unwrap_or_default(), t),
            }
        }

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
            let name = cmd.argv.join(" ");
            if cmd.why == GuestTask::BootConfig && !defaults_changed {
                self.step(
                    &name,
                    true,
                    "not needed: etc/default/grub unchanged, grub.cfg edited in place".into(),
                    t,
                );
                continue;
            }
            if cmd.why == GuestTask::BiosBootLoader && !root.join("usr/lib/grub/i386-pc").is_dir() {
                self.step(&name, false, "the guest has no BIOS GRUB (usr/lib/grub/i386-pc): install grub-pc and run grub-install on the boot disk".into(), t);
                continue;
            }
            match chroot(root, &cmd.argv, self.opts.tool_timeout, &self.opts.work) {
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
        if let Some(n) = &self.opts.network {
            out.report.checks.extend(report::network(root, &n.targets)?);
        }
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
                format!(
                    "this rescue image has no virtio-win: nothing injected; add it with `{}`",
                    report::ADD_VIRTIO_WIN
                ),
                t,
            ),
        }
        let mut network = Vec::new();
        if let Some(n) = &self.opts.network {
            let t = Instant::now();
            let (checks, changes) = crate::network::windows::fixup(root, n)?;
            network = checks;
            self.step(
                "network",
                true,
                format!(
                    "{} adapter(s) mapped{}",
                    network.len(),
                    if changes.is_empty() {
                        ""
                    } else {
                        "; their static settings go to C:\\ferry\\network.cmd, run on the first boot by the FerryNetwork service"
                    }
                ),
                t,
            );
            out.changes.extend(changes);
        }
        out.report = report::windows(root)?;
        if self.opts.drivers.is_none() {
            // Before the network checks: the storage checks alone say whether it boots.
            let storage_ready = out.report.bootable();
            out.report.checks.push(report::no_virtio_win(storage_ready));
        }
        out.report.checks.extend(network);
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
    pub(super) fn teardown(&mut self) {
        while !self.mounts.is_empty() {
            self.unmount_last();
        }
        let _ = tool("sync", &[]);
        if !self.vg_devices.is_empty() {
            let list = self.vg_devices.join(",");
            if let Err(e) = tool("lvm", &["vgchange", "-an", "--devices", &list]) {
                (self.log)(&LogLine {
                    level: Level::Warn,
                    step: "deactivate LVM".into(),
                    detail: e,
                    seconds: None,
                });
            }
        }
    }
}
