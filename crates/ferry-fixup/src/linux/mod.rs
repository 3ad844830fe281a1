//! Linux fix-up: the pure transforms of [`transform`] wrapped in a thin read–transform–
//! write layer over a mounted root (`root: &Path`). [`plan`] reads and computes every
//! edit; [`apply`] writes them, keeping each old file as `<name>.ferry-orig`. Running
//! update-initramfs/dracut/grub in a chroot is the caller's job: [`LinuxPlan::commands`]
//! lists what to run.
//!
//! With [`Params::beacon`] the plan also installs the first-boot beacon ([`beacon`]).
//!
//! Symlinks inside the target are never followed for reading or writing: an absolute
//! link in a mounted root points into the host.

pub mod beacon;
mod network;
pub mod source_agent;
pub mod transform;

pub use transform::{chroot_commands, os_family, ChrootCommand, DeviceMap, OsFamily};

use crate::{fsutil, Change, FixupError};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Suffix of the kept original of a rewritten or removed file.
pub const ORIG_SUFFIX: &str = ".ferry-orig";

/// systemd units of the old hypervisor's tools, disabled by removing their
/// multi-user.target.wants links.
pub const VMWARE_UNITS: &[&str] = &[
    "vmtoolsd.service",
    "open-vm-tools.service",
    "vmware-tools.service",
    "vgauthd.service",
    "vmware-vmblock-fuse.service",
];
const WANTS_DIR: &str = "etc/systemd/system/multi-user.target.wants";

#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Old device names (as the files spell them) to filesystem UUIDs.
    pub devices: DeviceMap,
    /// The boot disk's name on the new machine, for grub-install on BIOS.
    pub boot_disk: Option<String>,
    pub uefi: bool,
    /// Leave open-vm-tools / vmware-tools enabled.
    pub keep_old_tools: bool,
    /// Install the first-boot beacon with this config (systemd systems only).
    pub beacon: Option<beacon::BeaconInstall>,
    /// A migration's cutover: disable the source agent and delete its credential
    /// ([`source_agent`]).
    pub retire_source_agent: bool,
    /// Carry the network configuration to the target's NICs ([`network`]); without it, only
    /// MAC-bound rules are dropped.
    pub network: Option<NetworkParams>,
}

/// The target's NICs and the job's rules, for the network fix-up.
#[derive(Debug, Clone, Default)]
pub struct NetworkParams {
    pub targets: Vec<crate::network::TargetNic>,
    pub rules: crate::network::NetworkRules,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FileAction {
    Write {
        before: Option<String>,
        after: String,
    },
    RemoveFile,
    RemoveLink {
        target: String,
    },
    /// A secret removed for good (never kept aside).
    DeleteSecret,
}

/// One file edit; `path` is relative to the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEdit {
    pub path: PathBuf,
    pub what: String,
    pub action: FileAction,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinuxPlan {
    pub family: OsFamily,
    pub edits: Vec<FileEdit>,
    pub notes: Vec<String>,
    /// To run in the chroot after [`apply`], in order.
    pub commands: Vec<ChrootCommand>,
    /// The first-boot beacon to install ([`beacon`]).
    pub beacon: Option<beacon::BeaconPlan>,
    /// Why the beacon [`Params::beacon`] asked for is not installed (also a note).
    pub beacon_refused: Option<String>,
    /// With [`Params::network`]: each configured interface as it will come up.
    pub network: Vec<String>,
}

impl LinuxPlan {
    /// The plan as changes for `--dry-run` printing and the report.
    pub fn changes(&self) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .edits
            .iter()
            .map(|e| {
                let (before, after) = match &e.action {
                    FileAction::Write {
                        before: Some(b),
                        after,
                    } => {
                        let (old, new) = changed_lines(b, after);
                        (Some(old), Some(new))
                    }
                    FileAction::Write {
                        before: None,
                        after,
                    } => (None, Some(after.clone())),
                    FileAction::RemoveFile => (
                        Some("present".into()),
                        Some(format!(
                            "removed, kept as {}{ORIG_SUFFIX}",
                            e.path.display()
                        )),
                    ),
                    FileAction::RemoveLink { target } => {
                        (Some(format!("-> {target}")), Some("removed".into()))
                    }
                    FileAction::DeleteSecret => (Some("present".into()), Some("deleted".into())),
                };
                Change::edit(&e.path, &e.what, before, after)
            })
            .collect();
        out.extend(self.beacon.iter().map(beacon::BeaconPlan::change));
        out.extend(self.notes.iter().map(|n| Change::note(None, n)));
        out.extend(self.commands.iter().map(|c| Change::GuestCommand {
            argv: c.argv.clone(),
            why: c.why,
        }));
        out
    }
}

/// The lines that differ between two texts, for printing: pairwise when the line count
/// is unchanged, else the region between the common head and tail.
fn changed_lines(before: &str, after: &str) -> (String, String) {
    let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let (old, new): (Vec<&str>, Vec<&str>) = if a.len() == b.len() {
        b.iter()
            .zip(&a)
            .filter(|(x, y)| x != y)
            .map(|(x, y)| (*x, *y))
            .unzip()
    } else {
        let head = b.iter().zip(&a).take_while(|(x, y)| x == y).count();
        let tail = b[head..]
            .iter()
            .rev()
            .zip(a[head..].iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        (
            b[head..b.len() - tail].to_vec(),
            a[head..a.len() - tail].to_vec(),
        )
    };
    (old.join("\n"), new.join("\n"))
}

struct Planner<'a> {
    root: &'a Path,
    edits: Vec<FileEdit>,
    notes: Vec<String>,
}

impl Planner<'_> {
    /// Reads a regular file under the root; `None` if absent; a symlink or a file that is
    /// not UTF-8 is skipped with a note.
    fn read(&mut self, rel: &str) -> Result<Option<String>, FixupError> {
        let path = self.root.join(rel);
        let Ok(meta) = path.symlink_metadata() else {
            return Ok(None);
        };
        if !meta.is_file() {
            self.notes.push(format!(
                "{rel} is not a regular file (a symlink?); left alone"
            ));
            return Ok(None);
        }
        match String::from_utf8(fsutil::read(&path)?) {
            Ok(s) => Ok(Some(s)),
            Err(_) => {
                self.notes
                    .push(format!("{rel} is not UTF-8 text; left alone"));
                Ok(None)
            }
        }
    }

    /// Plans `f(text)` for a file, if it exists (or, with `create`, as if empty).
    fn transform(
        &mut self,
        rel: &str,
        what: &str,
        create: bool,
        f: impl FnOnce(&str) -> Result<String, FixupError>,
    ) -> Result<(), FixupError> {
        let before = self.read(rel)?;
        if before.is_none() && (!create || self.root.join(rel).symlink_metadata().is_ok()) {
            return Ok(());
        }
        let after = f(before.as_deref().unwrap_or(""))?;
        if before.as_deref() != Some(after.as_str()) {
            self.edits.push(FileEdit {
                path: rel.into(),
                what: what.into(),
                action: FileAction::Write { before, after },
            });
        }
        Ok(())
    }

    /// Relative paths of the entries of a directory under the root whose names pass `keep`.
    fn list(&self, dir: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.root.join(dir)) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| keep(n))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        out.sort();
        out
    }

    fn exists(&self, rel: &str) -> bool {
        self.root.join(rel).symlink_metadata().is_ok()
    }
}

/// Reads the restored system under `root` and plans every edit.
pub fn plan(root: &Path, params: &Params) -> Result<LinuxPlan, FixupError> {
    let mut p = Planner {
        root,
        edits: Vec::new(),
        notes: Vec::new(),
    };
    let os_release = match p.read("etc/os-release")? {
        Some(s) => s,
        None => p.read("usr/lib/os-release")?.unwrap_or_default(),
    };
    let family = os_family(&os_release);
    let devs = &params.devices;

    boot_config(&mut p, devs)?;
    initramfs_config(&mut p, family)?;
    let network = match &params.network {
        Some(n) => network::plan(&mut p, n)?,
        None => {
            network_config(&mut p)?;
            Vec::new()
        }
    };
    if !params.keep_old_tools {
        old_tools(&mut p);
    }
    if params.retire_source_agent {
        let (edits, notes) = source_agent::plan(root);
        p.edits.extend(edits);
        p.notes.extend(notes);
    }
    if let Some(fstab) = p.read("etc/fstab")? {
        for dev in transform::unstable_fstab_devices(&fstab)
            .into_iter()
            .filter(|d| !devs.contains_key(d))
        {
            p.notes.push(format!("etc/fstab names {dev}, which may not exist on the new hardware, and no UUID is known for it"));
        }
    }
    if family == OsFamily::Unknown {
        p.notes.push("unknown distribution (etc/os-release): regenerate the initramfs and boot loader by hand".into());
    }
    let (beacon, beacon_refused) = match params.beacon.as_ref().map(|b| beacon::plan(root, b)) {
        None => (None, None),
        Some(Ok(b)) => (Some(b), None),
        Some(Err(why)) => {
            p.notes.push(why.clone());
            (None, Some(why))
        }
    };
    let commands = chroot_commands(family, params.boot_disk.as_deref(), params.uefi);
    Ok(LinuxPlan {
        family,
        edits: p.edits,
        notes: p.notes,
        commands,
        beacon,
        beacon_refused,
        network,
    })
}

/// fstab, crypttab, grub defaults, grub.cfg, BLS entries, kernel cmdline.
fn boot_config(p: &mut Planner, devs: &DeviceMap) -> Result<(), FixupError> {
    p.transform("etc/fstab", "rewrite device names to UUIDs", false, |t| {
        transform::fstab(t, devs)
    })?;
    p.transform(
        "etc/crypttab",
        "rewrite device names to UUIDs",
        false,
        |t| transform::crypttab(t, devs),
    )?;
    p.transform(
        "etc/default/grub",
        "root=/resume= to UUIDs, allow UUIDs",
        false,
        |t| transform::grub_default(t, devs),
    )?;
    let mut cmdlines = vec![
        "boot/grub/grub.cfg".to_owned(),
        "boot/grub2/grub.cfg".to_owned(),
        "etc/kernel/cmdline".to_owned(),
    ];
    cmdlines.extend(p.list("boot/loader/entries", |n| n.ends_with(".conf")));
    for rel in cmdlines {
        p.transform(&rel, "root=/resume= to UUIDs", false, |t| {
            transform::kernel_args(t, devs)
        })?;
    }
    Ok(())
}

/// initramfs-tools, dracut, mkinitcpio: make sure the virtio modules go in.
fn initramfs_config(p: &mut Planner, family: OsFamily) -> Result<(), FixupError> {
    if p.exists("etc/initramfs-tools") {
        p.transform(
            "etc/initramfs-tools/modules",
            "add virtio modules",
            true,
            transform::initramfs_modules,
        )?;
        p.transform(
            "etc/initramfs-tools/initramfs.conf",
            "include storage drivers (MODULES=most)",
            false,
            transform::initramfs_conf,
        )?;
    }
    let dracut = matches!(family, OsFamily::RedHat | OsFamily::Suse)
        || p.exists("etc/dracut.conf")
        || p.exists("etc/dracut.conf.d");
    if dracut {
        p.transform(
            "etc/dracut.conf.d/ferry-virtio.conf",
            "add virtio drivers to dracut",
            true,
            |_| Ok(transform::DRACUT_CONF.to_owned()),
        )?;
    }
    p.transform(
        "etc/mkinitcpio.conf",
        "add virtio modules",
        false,
        transform::mkinitcpio_conf,
    )?;
    Ok(())
}

/// MAC-bound network configuration: persistent-net rules, ifcfg HWADDR, notes for
/// netplan and systemd-networkd matches.
fn network_config(p: &mut Planner) -> Result<(), FixupError> {
    let rules = "etc/udev/rules.d/70-persistent-net.rules";
    if p.root
        .join(rules)
        .symlink_metadata()
        .is_ok_and(|m| m.is_file())
    {
        p.edits.push(FileEdit {
            path: rules.into(),
            what: "remove MAC-bound interface names".into(),
            action: FileAction::RemoveFile,
        });
    }
    let mut ifcfgs = p.list("etc/sysconfig/network-scripts", |n| n.starts_with("ifcfg-"));
    ifcfgs.extend(p.list("etc/sysconfig/network", |n| n.starts_with("ifcfg-")));
    for rel in ifcfgs.into_iter().filter(|r| !r.ends_with(ORIG_SUFFIX)) {
        p.transform(
            &rel,
            "drop HWADDR (old NIC's MAC)",
            false,
            transform::ifcfg_drop_hwaddr,
        )?;
    }
    let mut matchers = p.list("etc/netplan", |n| n.ends_with(".yaml"));
    matchers.extend(p.list("etc/systemd/network", |n| {
        n.ends_with(".network") || n.ends_with(".link")
    }));
    for rel in matchers {
        if let Some(text) = p.read(&rel)? {
            p.notes.extend(transform::mac_match_note(&rel, &text));
        }
    }
    Ok(())
}

/// Removes the multi-user.target.wants links of VMware's tools.
fn old_tools(p: &mut Planner) {
    for unit in VMWARE_UNITS {
        let rel = format!("{WANTS_DIR}/{unit}");
        if let Ok(target) = std::fs::read_link(p.root.join(&rel)) {
            p.edits.push(FileEdit {
                path: rel.into(),
                what: format!("disable {unit} (old hypervisor's tools)"),
                action: FileAction::RemoveLink {
                    target: target.display().to_string(),
                },
            });
        }
    }
}

/// Carries out a plan's file edits under `root`; an old file is kept as
/// `<name>.ferry-orig` (once: a second run does not overwrite the original).
pub fn apply(root: &Path, plan: &LinuxPlan) -> Result<(), FixupError> {
    for e in &plan.edits {
        let path = root.join(&e.path);
        match &e.action {
            FileAction::Write { after, .. } => {
                fsutil::backup_once(&path, ORIG_SUFFIX)?;
                fsutil::write_atomic(&path, after.as_bytes())?;
            }
            FileAction::RemoveFile => {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(ORIG_SUFFIX);
                let orig = path.with_file_name(name);
                if orig.exists() {
                    std::fs::remove_file(&path).map_err(FixupError::io("remove", &path))?;
                } else {
                    std::fs::rename(&path, &orig).map_err(FixupError::io("move aside", &path))?;
                }
            }
            FileAction::RemoveLink { .. } => {
                std::fs::remove_file(&path).map_err(FixupError::io("remove link", &path))?
            }
            FileAction::DeleteSecret => {
                std::fs::remove_file(&path).map_err(FixupError::io("delete", &path))?
            }
        }
    }
    if let Some(b) = &plan.beacon {
        beacon::apply(root, b)?;
    }
    Ok(())
}
