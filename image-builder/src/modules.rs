//! Kernel module selection and staging: the closure of the driver catalog under the kernel's
//! `modules.dep` and `modules.softdep`, decompressed, with regenerated index files.
//!
//! Inputs are the text formats `depmod` writes (frozen by kmod):
//! - `modules.dep`: `kernel/path/a.ko.xz: kernel/path/b.ko.xz kernel/path/c.ko.xz` — every hard
//!   dependency, transitively, in an order that loads correctly from right to left;
//! - `modules.softdep`: `softdep NAME pre: A B post: C` — A, B, C are module names or aliases;
//! - `modules.alias`: `alias PATTERN NAME`, used here only for exact matches of softdep aliases
//!   like `crypto-crc32c`;
//! - `modules.builtin`: `kernel/path/a.ko` per driver compiled into the kernel.
//!
//! The shipped tree holds plain `.ko` files (the agent loads them with `finit_module` without a
//! decompressor) and `modules.dep`, `modules.alias`, `modules.softdep`, `modules.builtin` regenerated
//! by `depmod -b STAGE VERSION` over the shipped modules only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::catalog::normalise;
use crate::cpio::{Archive, Entry, Kind};
use crate::tools::{self, strip_compression};

/// Parsed module indexes of one kernel.
#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// Module name → (relative path, hard dependency names).
    pub modules: BTreeMap<String, (String, Vec<String>)>,
    pub builtin: BTreeSet<String>,
    /// Module name → soft dependency names or aliases (pre and post).
    pub softdeps: BTreeMap<String, Vec<String>>,
    /// Exact alias → module names.
    pub aliases: BTreeMap<String, Vec<String>>,
}

/// The outcome of resolving a catalog against one kernel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Closure {
    /// Module names to ship, sorted.
    pub modules: BTreeSet<String>,
    /// Catalog names the kernel builds in (no file needed).
    pub builtin: Vec<String>,
    /// Catalog names the kernel has neither as module nor built in (warnings).
    pub missing: Vec<String>,
}

/// `kernel/fs/ext4/ext4.ko.xz` → `ext4`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = strip_compression(base);
    normalise(base.strip_suffix(".ko").unwrap_or(base))
}

impl ModuleIndex {
    /// Parses the four index texts (any may be empty).
    pub fn parse(dep: &str, builtin: &str, softdep: &str, alias: &str) -> Self {
        let mut idx = ModuleIndex::default();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(module_name).collect();
            idx.modules
                .insert(module_name(path), (path.trim().to_string(), deps));
        }
        idx.builtin = builtin
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(module_name)
            .collect();
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(name) = words.next() else { continue };
            let targets = idx.softdeps.entry(normalise(name)).or_default();
            targets.extend(words.filter(|w| !w.ends_with(':')).map(str::to_string));
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pat), Some(name)) =
                (words.next(), words.next(), words.next())
            {
                if !pat.contains(['*', '?', '[']) {
                    idx.aliases
                        .entry(pat.to_string())
                        .or_default()
                        .push(normalise(name));
                }
            }
        }
        idx
    }

    /// Reads the indexes of the kernel tree `lib/modules/VERSION` at `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let read = |f: &str| -> Result<String> {
            match std::fs::read_to_string(dir.join(f)) {
                Ok(s) => Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && f != "modules.dep" => {
                    Ok(String::new())
                }
                Err(e) => Err(e).with_context(|| format!("read {}", dir.join(f).display())),
            }
        };
        Ok(Self::parse(
            &read("modules.dep")?,
            &read("modules.builtin")?,
            &read("modules.softdep")?,
            &read("modules.alias")?,
        ))
    }

    /// Resolves `wanted` (normalised names) to the set of modules to ship.
    pub fn closure(&self, wanted: &[String]) -> Closure {
        let mut out = Closure::default();
        let mut queue: Vec<String> = Vec::new();
        for name in wanted {
            if self.modules.contains_key(name) {
                queue.push(name.clone());
            } else if self.builtin.contains(name) {
                out.builtin.push(name.clone());
            } else {
                out.missing.push(name.clone());
            }
        }
        while let Some(name) = queue.pop() {
            if !out.modules.insert(name.clone()) {
                continue;
            }
            let (_, deps) = &self.modules[&name];
            queue.extend(
                deps.iter()
                    .filter(|d| self.modules.contains_key(*d))
                    .cloned(),
            );
            for soft in self.softdeps.get(&name).into_iter().flatten() {
                let soft_name = normalise(soft);
                if self.modules.contains_key(&soft_name) {
                    queue.push(soft_name);
                } else if let Some(targets) = self.aliases.get(soft.as_str()) {
                    queue.extend(
                        targets
                            .iter()
                            .filter(|t| self.modules.contains_key(*t))
                            .cloned(),
                    );
                }
            }
        }
        out
    }
}

/// Index files copied from the source tree so `depmod` knows the built-ins.
const COPIED_INDEXES: [&str; 3] = [
    "modules.builtin",
    "modules.builtin.modinfo",
    "modules.order",
];
/// Index files shipped in the image, as generated by `depmod` over the shipped modules.
pub const SHIPPED_INDEXES: [&str; 4] = [
    "modules.dep",
    "modules.alias",
    "modules.softdep",
    "modules.builtin",
];

/// Decompresses the closure from `src` (the kernel's `lib/modules/VERSION`) into `stage`
/// (`STAGE/lib/modules/VERSION`), runs depmod there and adds everything shipped to `archive`.
pub fn stage(
    index: &ModuleIndex,
    closure: &Closure,
    src: &Path,
    stage_root: &Path,
    version: &str,
    archive: &mut Archive,
) -> Result<()> {
    let dest = stage_root.join("lib/modules").join(version);
    std::fs::create_dir_all(&dest).with_context(|| format!("create {}", dest.display()))?;
    let prefix = format!("/lib/modules/{version}");
    for name in &closure.modules {
        let rel = &index.modules[name].0;
        let bytes = tools::read_module(&src.join(rel))?;
        let plain = strip_compression(rel);
        let target = dest.join(plain);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&target, &bytes).with_context(|| format!("write {}", target.display()))?;
        archive.insert(Entry {
            path: format!("{prefix}/{plain}"),
            perm: 0o644,
            kind: Kind::File(bytes),
        })?;
    }
    for f in COPIED_INDEXES {
        if src.join(f).exists() {
            std::fs::copy(src.join(f), dest.join(f)).with_context(|| format!("copy {f}"))?;
        }
    }
    tools::run(
        Command::new("depmod")
            .arg("-b")
            .arg(stage_root)
            .arg(version),
        "kmod",
    )?;
    for f in SHIPPED_INDEXES {
        let bytes = std::fs::read(dest.join(f)).with_context(|| format!("read generated {f}"))?;
        archive.insert(Entry {
            path: format!("{prefix}/{f}"),
            perm: 0o644,
            kind: Kind::File(bytes),
        })?;
    }
    Ok(())
}

/// Makes sure the kernel tree at `src` has a `modules.dep` (Debian's packages leave it to the
/// postinst's depmod): runs `depmod -b ROOT VERSION` on the unpacked package when it is missing.
pub fn ensure_depmod(root: &Path, version: &str) -> Result<()> {
    if root
        .join("lib/modules")
        .join(version)
        .join("modules.dep")
        .exists()
    {
        return Ok(());
    }
    tools::run(
        Command::new("depmod").arg("-b").arg(root).arg(version),
        "kmod",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
kernel/drivers/block/xen-blkfront.ko.xz:
kernel/drivers/scsi/sr_mod.ko.xz: kernel/drivers/cdrom/cdrom.ko.xz
kernel/drivers/cdrom/cdrom.ko.xz:
kernel/drivers/net/unused.ko.xz:
";
    const BUILTIN: &str = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/scsi/sd_mod.ko\n";
    const SOFTDEP: &str =
        "# Soft dependencies\nsoftdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\n";
    const ALIAS: &str = "alias crypto-crc32c crc32c_intel\nalias pci:v*d* unused\n";

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn module_names_normalise() {
        assert_eq!(
            module_name("kernel/drivers/block/xen-blkfront.ko.xz"),
            "xen_blkfront"
        );
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko"), "ext4");
        assert_eq!(module_name("kernel/x/y.ko.zst"), "y");
    }

    #[test]
    fn closure_follows_hard_and_soft_deps() {
        let idx = ModuleIndex::parse(DEP, BUILTIN, SOFTDEP, ALIAS);
        let c = idx.closure(&names(&[
            "ext4",
            "xen_blkfront",
            "sr_mod",
            "virtio_pci",
            "sd_mod",
            "nosuch",
        ]));
        let got: Vec<&str> = c.modules.iter().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "cdrom",
                "crc16",
                "crc32c_intel",
                "ext4",
                "jbd2",
                "mbcache",
                "sr_mod",
                "xen_blkfront"
            ]
        );
        assert_eq!(c.builtin, ["virtio_pci", "sd_mod"]);
        assert_eq!(c.missing, ["nosuch"]);
    }

    #[test]
    fn glob_aliases_are_not_softdep_targets() {
        let idx = ModuleIndex::parse(DEP, "", "softdep cdrom pre: pci:v*d*\n", ALIAS);
        assert!(!idx.closure(&names(&["cdrom"])).modules.contains("unused"));
    }
}
