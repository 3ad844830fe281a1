//! Firmware for bare metal: the files the shipped modules ask for (`modinfo -F firmware`), taken
//! from Debian's firmware packages, with each package's copyright file carried next to them and
//! its licences recorded in manifest.json.
//!
//! Many server NICs and HBAs load firmware at probe or link-up time (Broadcom bnx2/bnx2x/tg3,
//! QLogic, Realtek, Intel ice, old Intel e100); without it a PXE-booted server has no network and
//! its job never arrives. The image never carries a file no shipped module asks for: `--firmware`
//! only chooses which packages are consulted.
//!
//! Layout in the initramfs: `/lib/firmware/FILE` exactly as the package has it (a compressed
//! `FILE.xz`/`FILE.zst` stays compressed: the kernel's loader tries those suffixes),
//! `/usr/share/doc/PACKAGE/copyright` for every package a file came from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::apt::{self, PrivateApt};
use crate::cpio::{Archive, Entry, Kind};
use crate::tools::run;

/// `--firmware`: which Debian packages the requested files are taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No firmware: the smallest image, for virtual machines.
    None,
    /// The packages of common server NICs and HBAs.
    Common,
    /// Also the packages of rarer NICs (Cavium, Myricom, Netronome, NetXen) and firmware-linux-free.
    All,
}

/// Broadcom (bnx2, bnx2x; tg3 is in misc-nonfree), Intel (ice, e100: intel-misc in
/// bookworm-backports, misc-nonfree in bookworm), QLogic (qede, qla), Realtek.
pub const COMMON_PACKAGES: [&str; 6] = [
    "firmware-bnx2",
    "firmware-bnx2x",
    "firmware-intel-misc",
    "firmware-misc-nonfree",
    "firmware-qlogic",
    "firmware-realtek",
];
/// Added by `all`.
pub const MORE_PACKAGES: [&str; 5] = [
    "firmware-cavium",
    "firmware-myricom",
    "firmware-netronome",
    "firmware-netxen",
    "firmware-linux-free",
];

impl Level {
    pub fn packages(self) -> Vec<&'static str> {
        match self {
            Level::None => Vec::new(),
            Level::Common => COMMON_PACKAGES.to_vec(),
            Level::All => COMMON_PACKAGES.into_iter().chain(MORE_PACKAGES).collect(),
        }
    }
}

/// Requested firmware file (as the module names it, maybe with `*`) → the modules asking.
pub type Requests = BTreeMap<String, BTreeSet<String>>;

/// `modinfo -F firmware` of every `.ko` under `modules_dir` (the staged, decompressed tree).
pub fn requests(modules_dir: &Path) -> Result<Requests> {
    let mut out = Requests::new();
    let mut stack = vec![modules_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(module) = name.strip_suffix(".ko") else {
                continue;
            };
            let o = run(
                Command::new("modinfo").args(["-F", "firmware"]).arg(&path),
                "kmod",
            )?;
            for file in String::from_utf8_lossy(&o.stdout).lines() {
                let file = file.trim();
                if !file.is_empty() {
                    out.entry(file.to_owned())
                        .or_default()
                        .insert(crate::catalog::normalise(module));
                }
            }
        }
    }
    Ok(out)
}

/// An unpacked firmware package.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Where `dpkg-deb -x` put it.
    pub root: PathBuf,
}

/// `dpkg-deb -x DEB DIR/NAME`, refusing a package that is not a firmware package.
pub fn unpack(deb: &Path, dir: &Path) -> Result<Package> {
    let field = |f: &str| crate::tools::deb_field(deb, f);
    let name = field("Package")?;
    let version = field("Version")?;
    if !name.starts_with("firmware-") || name.contains('/') {
        bail!(
            "use {}: package {name:?} is not a firmware-* package",
            deb.display()
        );
    }
    let root = dir.join(&name);
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root),
        "dpkg",
    )?;
    Ok(Package {
        name,
        version,
        root,
    })
}

/// The packages for `level`: `debs` when given (offline builds), else the newest of bookworm and
/// bookworm-backports through the private apt, cached in `CACHE/debs/firmware` (a failed fetch
/// falls back to cached packages with a warning).
pub fn fetch(level: Level, debs: &[PathBuf], cache: &Path) -> Result<Vec<PathBuf>> {
    if level == Level::None {
        return Ok(Vec::new());
    }
    if !debs.is_empty() {
        return Ok(debs.to_vec());
    }
    let dir = cache.join("debs/firmware");
    let names = level.packages();
    let apt = match PrivateApt::update(cache) {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!("warning: apt update for firmware failed ({e:#}); using cached packages");
            None
        }
    };
    let mut out = Vec::new();
    for name in names {
        let got = match &apt {
            Some(apt) => match apt.newest_version(name)? {
                Some(v) => Some(apt.download(name, &v, &dir)?),
                None => {
                    eprintln!("warning: firmware package {name} is in neither bookworm nor bookworm-backports; skipped");
                    None
                }
            },
            None => apt::cached(&dir, name, None),
        };
        match got {
            Some(p) => out.push(p),
            None if apt.is_none() => bail!(
                "fetch firmware package {name}: apt failed and {} has no copy. Build with \
                 --firmware none, or pass the packages with --firmware-deb FILE (from `apt-get \
                 download {name}` with non-free-firmware enabled)",
                dir.display()
            ),
            None => {}
        }
    }
    Ok(out)
}

/// One file the image carries.
#[derive(Debug, Clone, Serialize)]
pub struct Shipped {
    /// The name a module asks for.
    pub file: String,
    /// Path under /lib/firmware (the name plus the package's compression suffix, if any).
    pub stored: String,
    pub package: String,
    pub modules: Vec<String>,
    pub size: u64,
    /// From the package's DEP-5 copyright file; `None`: no paragraph names it (see the file).
    pub license: Option<String>,
}

/// A requested file no consulted package has.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub file: String,
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageReport {
    pub name: String,
    pub version: String,
    /// The licences of the files carried (DEP-5 names from its copyright file), sorted.
    pub licenses: Vec<String>,
    /// Carried in the image at /usr/share/doc/NAME/copyright.
    pub copyright_sha256: String,
    pub files: usize,
    pub bytes: u64,
}

/// manifest.json's `firmware`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub level: Level,
    /// Packages at least one carried file came from.
    pub packages: Vec<PackageReport>,
    pub files: Vec<Shipped>,
    pub missing: Vec<Missing>,
    pub bytes: u64,
}

/// What [`select`] chose, with the bytes to add.
pub struct Selection {
    pub report: Report,
    entries: Vec<Entry>,
}

const SUFFIXES: [&str; 3] = ["", ".zst", ".xz"];

/// Files under `lib/firmware` or `usr/lib/firmware` of an unpacked package, relative to it.
fn firmware_files(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for base in [root.join("lib/firmware"), root.join("usr/lib/firmware")] {
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let path = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&base) {
                    out.insert(rel.to_string_lossy().into_owned(), path);
                }
            }
        }
    }
    out
}

/// `*` matches any run of characters, including none (the only wildcard modules use).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut tail) = name.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return tail.len() >= part.len() && tail.ends_with(part);
        }
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Reads a package file, following symlinks only inside the package (`Link:` entries of
/// linux-firmware's WHENCE become symlinks in Debian's packages).
fn read_inside(root: &Path, path: &Path) -> Result<Vec<u8>> {
    let real =
        std::fs::canonicalize(path).with_context(|| format!("resolve {}", path.display()))?;
    let root = std::fs::canonicalize(root)?;
    if !real.starts_with(&root) {
        bail!(
            "{} points outside its package ({}): skipped",
            path.display(),
            real.display()
        );
    }
    std::fs::read(&real).with_context(|| format!("read {}", real.display()))
}

/// Where a symlinked firmware file really is, relative to the package's firmware directory
/// (`intel/ice/ddp/ice.pkg` → `intel/ice/ddp/ice-1.3.41.0.pkg`): the copyright names that.
fn link_target(root: &Path, stored: &str) -> Option<String> {
    ["lib/firmware", "usr/lib/firmware"].iter().find_map(|b| {
        let base = std::fs::canonicalize(root.join(b)).ok()?;
        let real = std::fs::canonicalize(base.join(stored)).ok()?;
        Some(
            real.strip_prefix(&base)
                .ok()?
                .to_string_lossy()
                .into_owned(),
        )
    })
}

/// The `Files:` patterns and `License:` name of each paragraph of a DEP-5 copyright file.
pub fn dep5_paragraphs(copyright: &str) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    for para in copyright.split("\n\n") {
        let mut files: Option<Vec<String>> = None;
        let mut license = None;
        let mut in_files = false;
        for line in para.lines() {
            if let Some(v) = line.strip_prefix("Files:") {
                files = Some(v.split_whitespace().map(str::to_owned).collect());
                in_files = true;
            } else if in_files && line.starts_with([' ', '\t']) {
                if let Some(f) = files.as_mut() {
                    f.extend(line.split_whitespace().map(str::to_owned));
                }
            } else {
                in_files = false;
                if let Some(v) = line.strip_prefix("License:") {
                    license = Some(v.trim().to_owned());
                }
            }
        }
        if let (Some(f), Some(l)) = (files, license) {
            if !l.is_empty() {
                out.push((f, l));
            }
        }
    }
    out
}

/// The licence of one file: the last paragraph whose pattern matches it (DEP-5's rule), its
/// compression suffix ignored.
pub fn license_of(paragraphs: &[(Vec<String>, String)], file: &str) -> Option<String> {
    let plain = [".zst", ".xz"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    paragraphs
        .iter()
        .rev()
        .find(|(pats, _)| pats.iter().any(|p| glob_match(p, plain)))
        .map(|(_, l)| l.clone())
}

/// Chooses, for every request, the first package (in `packages` order) that has the file, and
/// collects the copyright files of the packages used.
pub fn select(level: Level, requests: &Requests, packages: &[Package]) -> Result<Selection> {
    let indexes: Vec<BTreeMap<String, PathBuf>> =
        packages.iter().map(|p| firmware_files(&p.root)).collect();
    let mut files = Vec::new();
    let mut missing = Vec::new();
    let mut entries = Vec::new();
    let mut stored_names = BTreeSet::new();
    let mut used: BTreeMap<usize, (usize, u64)> = BTreeMap::new();
    for (file, modules) in requests {
        let modules: Vec<String> = modules.iter().cloned().collect();
        let mut found = false;
        for (pi, (pkg, index)) in packages.iter().zip(&indexes).enumerate() {
            let hits: Vec<(&String, &PathBuf)> = if file.contains('*') {
                index
                    .iter()
                    .filter(|(rel, _)| glob_match(file, rel))
                    .collect()
            } else {
                SUFFIXES
                    .iter()
                    .find_map(|s| index.get_key_value(&format!("{file}{s}")))
                    .into_iter()
                    .collect()
            };
            for (rel, path) in hits {
                let data = match read_inside(&pkg.root, path) {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("warning: firmware {rel} of {}: {e:#}", pkg.name);
                        continue;
                    }
                };
                found = true;
                if !stored_names.insert(rel.clone()) {
                    continue;
                }
                let size = data.len() as u64;
                let u = used.entry(pi).or_default();
                u.0 += 1;
                u.1 += size;
                files.push(Shipped {
                    file: file.clone(),
                    stored: rel.clone(),
                    package: pkg.name.clone(),
                    modules: modules.clone(),
                    size,
                    license: None,
                });
                entries.push(Entry {
                    path: format!("/lib/firmware/{rel}"),
                    perm: 0o644,
                    kind: Kind::File(data),
                });
            }
            if found {
                break;
            }
        }
        if !found {
            missing.push(Missing {
                file: file.clone(),
                modules,
            });
        }
    }
    let mut reports = Vec::new();
    for (pi, (count, bytes)) in used {
        let pkg = &packages[pi];
        let path = pkg
            .root
            .join("usr/share/doc")
            .join(&pkg.name)
            .join("copyright");
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "read {}: a firmware package's licence must travel with its files",
                path.display()
            )
        })?;
        let paragraphs = dep5_paragraphs(&String::from_utf8_lossy(&text));
        let mut names = BTreeSet::new();
        for f in files.iter_mut().filter(|f| f.package == pkg.name) {
            f.license = license_of(&paragraphs, &f.stored)
                .or_else(|| license_of(&paragraphs, &link_target(&pkg.root, &f.stored)?));
            names.insert(
                f.license.clone().unwrap_or_else(|| {
                    format!("unknown: see /usr/share/doc/{}/copyright", pkg.name)
                }),
            );
        }
        reports.push(PackageReport {
            name: pkg.name.clone(),
            version: pkg.version.clone(),
            licenses: names.into_iter().collect(),
            copyright_sha256: crate::manifest::sha256_hex(&text),
            files: count,
            bytes,
        });
        entries.push(Entry {
            path: format!("/usr/share/doc/{}/copyright", pkg.name),
            perm: 0o644,
            kind: Kind::File(text),
        });
    }
    let bytes = files.iter().map(|f| f.size).sum();
    Ok(Selection {
        report: Report {
            level,
            packages: reports,
            files,
            missing,
            bytes,
        },
        entries,
    })
}

impl Selection {
    pub fn add_to(self, archive: &mut Archive) -> Result<Report> {
        for e in self.entries {
            archive.insert(e)?;
        }
        Ok(self.report)
    }
}

/// One line for the build log.
pub fn summary(r: &Report) -> String {
    let names: Vec<&str> = r.packages.iter().map(|p| p.name.as_str()).collect();
    format!(
        "firmware ({}): {} files, {} bytes from {}; {} requested files in no consulted package",
        serde_json::to_value(r.level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        r.files.len(),
        r.bytes,
        if names.is_empty() {
            "no package".to_owned()
        } else {
            names.join(", ")
        },
        r.missing.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_the_kernel_names_them() {
        assert!(glob_match("rtl_nic/rtl8168h-2.fw", "rtl_nic/rtl8168h-2.fw"));
        assert!(!glob_match(
            "rtl_nic/rtl8168h-2.fw",
            "rtl_nic/rtl8168h-1.fw"
        ));
        assert!(glob_match(
            "qed/qed_init_values_*.bin",
            "qed/qed_init_values_zipped-8.59.1.0.bin"
        ));
        assert!(glob_match("a*b*c", "abc"));
        assert!(glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("a*b*c", "a-c-b"));
        assert!(!glob_match("a*c", "ac-"));
    }

    #[test]
    fn a_files_licence_is_the_last_dep5_paragraph_naming_it() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
                    Files: *\nLicense: non-free\n Redistributable, no modification permitted\n\n\
                    Files: debian/*\nLicense: GPL-2\n\n\
                    Files: e100/*\n rtl_nic/*\nCopyright: Intel\nLicense: other-intel\n\n\
                    Files: rtl_nic/rtl8153*.fw\nLicense: realtek\n\nLicense: GPL-2\n text\n";
        let p = dep5_paragraphs(text);
        assert_eq!(p.len(), 4);
        assert_eq!(
            license_of(&p, "e100/d101m_ucode.bin").as_deref(),
            Some("other-intel")
        );
        assert_eq!(
            license_of(&p, "rtl_nic/rtl8168h-2.fw.zst").as_deref(),
            Some("other-intel")
        );
        assert_eq!(
            license_of(&p, "rtl_nic/rtl8153a-2.fw").as_deref(),
            Some("realtek")
        );
        assert_eq!(license_of(&p, "tigon/tg3.bin").as_deref(), Some("non-free"));
        assert_eq!(license_of(&dep5_paragraphs("License: x\n"), "a"), None);
    }

    fn package(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> Package {
        let root = dir.join(name);
        for (rel, data) in files {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        Package {
            name: name.into(),
            version: "1".into(),
            root,
        }
    }

    fn req(pairs: &[(&str, &str)]) -> Requests {
        let mut r = Requests::new();
        for (f, m) in pairs {
            r.entry(f.to_string()).or_default().insert(m.to_string());
        }
        r
    }

    #[test]
    fn selection_takes_requested_files_only_with_their_licence() {
        let d = tempfile::tempdir().unwrap();
        let a = package(
            d.path(),
            "firmware-a",
            &[
                ("lib/firmware/e100/d101m_ucode.bin", b"ucode"),
                ("lib/firmware/e100/unrequested.bin", b"no"),
                ("lib/firmware/rtl_nic/x.fw.zst", b"zst"),
                (
                    "usr/share/doc/firmware-a/copyright",
                    b"Files: e100/d101m_ucode.bin\nLicense: other-intel\n",
                ),
            ],
        );
        let b = package(
            d.path(),
            "firmware-b",
            &[("lib/firmware/e100/d101m_ucode.bin", b"shadowed")],
        );
        std::os::unix::fs::symlink(
            "d101m_ucode.bin",
            a.root.join("lib/firmware/e100/alias.bin"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", a.root.join("lib/firmware/e100/escape.bin"))
            .unwrap();
        let r = req(&[
            ("e100/d101m_ucode.bin", "e100"),
            ("e100/alias.bin", "e100"),
            ("e100/escape.bin", "e100"),
            ("rtl_nic/x.fw", "r8169"),
            ("tigon/tg3.bin", "tg3"),
        ]);
        let sel = select(Level::Common, &r, &[a, b]).unwrap();
        let rep = &sel.report;
        let stored: Vec<(&str, &str)> = rep
            .files
            .iter()
            .map(|f| (f.stored.as_str(), f.package.as_str()))
            .collect();
        assert_eq!(
            stored,
            [
                ("e100/alias.bin", "firmware-a"),
                ("e100/d101m_ucode.bin", "firmware-a"),
                ("rtl_nic/x.fw.zst", "firmware-a")
            ]
        );
        let missing: Vec<&str> = rep.missing.iter().map(|m| m.file.as_str()).collect();
        assert_eq!(missing, ["e100/escape.bin", "tigon/tg3.bin"]);
        assert_eq!(rep.packages.len(), 1);
        assert_eq!(
            rep.packages[0].licenses,
            [
                "other-intel",
                "unknown: see /usr/share/doc/firmware-a/copyright"
            ]
        );
        // alias.bin links to d101m_ucode.bin: the licence of the file it names
        assert_eq!(rep.files[0].license.as_deref(), Some("other-intel"));
        assert_eq!(rep.packages[0].files, 3);
        assert_eq!(rep.bytes, 5 + 5 + 3);
        let mut archive = Archive::new();
        sel.add_to(&mut archive).unwrap();
        let files: Vec<&str> = archive
            .entries()
            .filter(|e| matches!(e.kind, Kind::File(_)))
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(
            files,
            [
                "lib/firmware/e100/alias.bin",
                "lib/firmware/e100/d101m_ucode.bin",
                "lib/firmware/rtl_nic/x.fw.zst",
                "usr/share/doc/firmware-a/copyright"
            ]
        );
    }

    #[test]
    fn a_package_without_its_copyright_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = package(d.path(), "firmware-a", &[("lib/firmware/x.bin", b"x")]);
        let err = select(Level::All, &req(&[("x.bin", "m")]), &[a])
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("licence"), "{err:#}");
    }

    #[test]
    fn levels_name_their_packages() {
        assert!(Level::None.packages().is_empty());
        assert_eq!(Level::Common.packages().len(), 6);
        assert!(Level::All.packages().contains(&"firmware-netxen"));
    }
}
