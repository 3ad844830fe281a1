//! `--virtio-win PATH`: the Windows drivers the fix-up injects, carried in the rescue image.
//!
//! PATH is the virtio-win ISO or its unpacked tree, in the layout the Fedora virtio-win project
//! ships: `<Driver>/<os>/<arch>/{x.inf,x.cat,x.sys,…}` (`viostor/w10/amd64/viostor.inf`,
//! `NetKVM/w11/ARM64/netkvm.sys`). Only what ferry-fixup's Windows step reads is taken: the driver
//! folders it knows ([`DRIVER_NAMES`]: viostor, vioscsi, NetKVM, Balloon), every `<os>/<arch>`
//! folder present, and in each only the `.inf`, `.cat` and `.sys` files (the fix-up copies those;
//! the `.pdb` symbols and the installers are left out). Each folder's INF is parsed with the
//! fix-up's own parser and its service binary must be there, so what the image carries is what the
//! fix-up can use. The files go to [`RESCUE_VIRTIO_WIN`] in the image, where the agent finds them.
//!
//! An ISO is read with `xorriso -osirrox` (package xorriso, already needed for the image): the
//! root is listed, and only the driver folders are extracted, into a temporary directory.
//!
//! Refused before anything is written, each with the path and what to do: PATH missing; no
//! virtio storage driver (viostor or vioscsi) in it; a driver's `<os>/<arch>` folder without an
//! `.inf`, with an INF the fix-up cannot read, or without the binary its INF names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use ferry_fixup::fsutil::ci_resolve;
use ferry_fixup::windows::inf;
pub use ferry_fixup::RESCUE_VIRTIO_WIN;
use serde::Serialize;

use crate::cpio::{Archive, Entry, Kind};
use crate::tools::run;

/// The driver folders carried: the fix-up's own list (viostor, vioscsi, NetKVM, Balloon).
pub use ferry_fixup::windows::DRIVER_NAMES;

/// A carried file: its path relative to the package root, and its contents.
type PackageFile = (String, Vec<u8>);

/// Extensions (lower case) of the files the fix-up copies from a driver folder.
const COPIED: [&str; 3] = ["inf", "cat", "sys"];
/// Storage drivers: at least one must be present, or no Windows can boot on virtio.
const STORAGE: [&str; 2] = ["viostor", "vioscsi"];
/// Where the virtio-win ISO comes from, for the messages.
const WHERE: &str = "the virtio-win ISO (https://fedorapeople.org/groups/virt/virtio-win/\
                     direct-downloads/stable-virtio/virtio-win.iso) or its unpacked tree";

/// What `--virtio-win` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Iso,
    Tree,
}

impl SourceKind {
    /// What to do about a damaged package of this kind.
    fn fix(self) -> &'static str {
        match self {
            SourceKind::Iso => "this is not an intact virtio-win ISO: download it again",
            SourceKind::Tree => "unpack the virtio-win ISO again, or pass the ISO itself",
        }
    }
}

/// The `virtio_win` section of manifest.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub source: SourceKind,
    /// The path as given.
    pub path: String,
    /// The ISO's volume id, or the tree's directory name.
    pub label: String,
    /// The virtio-win version, when the label says it (`virtio-win-0.1.262` → `0.1.262`).
    pub version: Option<String>,
    /// Where the image carries the drivers.
    pub image_dir: String,
    pub drivers: Vec<DriverReport>,
    pub files: usize,
    pub bytes: u64,
}

/// One driver folder as carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverReport {
    /// The folder name as the package spells it (`NetKVM`).
    pub name: String,
    /// The service its INFs install (`netkvm`).
    pub service: String,
    /// Windows version folders (`2k19`, `w10`, `w11`, …), sorted.
    pub windows: Vec<String>,
    /// Architecture folders (`amd64`, `ARM64`, `x86`), sorted.
    pub architectures: Vec<String>,
    pub files: usize,
    pub bytes: u64,
}

/// The driver files read from PATH, ready to go into the image.
#[derive(Debug, Clone)]
pub struct Package {
    pub report: Report,
    /// (path relative to the package root, contents), sorted by path.
    files: Vec<PackageFile>,
}

/// Reads and checks PATH (an ISO file or a tree).
pub fn load(path: &Path) -> Result<Package> {
    let meta = std::fs::metadata(path).map_err(|e| {
        anyhow!(
            "read virtio-win {}: {e}; pass {WHERE} to --virtio-win",
            path.display()
        )
    })?;
    if meta.is_dir() {
        let label = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        return from_tree(path, path, SourceKind::Tree, label);
    }
    if !is_iso9660(path)? {
        bail!(
            "read virtio-win {}: neither a directory nor an ISO 9660 image; pass {WHERE} to \
             --virtio-win",
            path.display()
        );
    }
    let work = tempfile::Builder::new()
        .prefix("ferry-virtio-win-")
        .tempdir()
        .context("create a work directory")?;
    let read = extract_iso(path, work.path())
        .and_then(|label| from_tree(work.path(), path, SourceKind::Iso, label));
    // Extracted folders keep the ISO's modes (r-x with `genisoimage -r`): make them removable.
    let _ = make_writable(work.path());
    read
}

/// Gives the owner write permission on every directory under `dir`, so it can be removed.
fn make_writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = std::fs::metadata(dir)?.permissions();
    perm.set_mode(perm.mode() | 0o700);
    std::fs::set_permissions(dir, perm)?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            make_writable(&e.path())?;
        }
    }
    Ok(())
}

/// Whether the file at `path` has an ISO 9660 volume descriptor at sector 16 (`CD001`).
fn is_iso9660(path: &Path) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut id = [0u8; 5];
    let read = f
        .seek(SeekFrom::Start(16 * 2048 + 1))
        .and_then(|_| f.read_exact(&mut id));
    Ok(read.is_ok() && &id == b"CD001")
}

/// Extracts the driver folders of the ISO at `iso` into `dest`; returns its volume id.
fn extract_iso(iso: &Path, dest: &Path) -> Result<String> {
    let xorriso = |args: &[&str]| -> Result<String> {
        let mut cmd = Command::new("xorriso");
        cmd.args(["-osirrox", "on", "-abort_on", "FAILURE", "-indev"])
            .arg(iso)
            .args(args);
        let out = run(&mut cmd, "xorriso").with_context(|| {
            format!(
                "read virtio-win {} as an ISO image: pass {WHERE}",
                iso.display()
            )
        })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let pvd = xorriso(&["-pvd_info"])?;
    let label = pvd
        .lines()
        .find_map(|l| l.strip_prefix("Volume Id"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let listing = xorriso(&["-ls", "/"])?;
    let mut args: Vec<String> = Vec::new();
    for name in listing.lines().filter_map(|l| {
        l.strip_prefix('\'')
            .and_then(|l| l.strip_suffix('\''))
            .filter(|n| DRIVER_NAMES.iter().any(|d| d.eq_ignore_ascii_case(n)))
    }) {
        args.push("-extract".into());
        args.push(format!("/{name}"));
        args.push(dest.join(name).display().to_string());
    }
    if !args.is_empty() {
        xorriso(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(label)
}

/// `virtio-win-0.1.262` → `0.1.262`.
pub fn version_of(label: &str) -> Option<String> {
    let v = label
        .strip_prefix("virtio-win-")
        .or_else(|| label.strip_prefix("virtio-win_"))?;
    v.starts_with(|c: char| c.is_ascii_digit())
        .then(|| v.to_owned())
}

/// Sorted subdirectories of `dir` (name, path).
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let e = e.with_context(|| format!("list {}", dir.display()))?;
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the package's driver folders under `root`; `given` is the path named in messages.
fn from_tree(root: &Path, given: &Path, source: SourceKind, label: String) -> Result<Package> {
    let shown = given.display();
    let mut files = Vec::new();
    let mut drivers = Vec::new();
    for want in DRIVER_NAMES {
        let Some(dir) = ci_resolve(root, want) else {
            continue;
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| want.to_string());
        let (report, mut found) = read_driver(&dir, &name, source.fix())
            .with_context(|| format!("use virtio-win {shown}: driver {name}"))?;
        files.append(&mut found);
        drivers.push(report);
    }
    if !drivers
        .iter()
        .any(|d| STORAGE.iter().any(|s| s.eq_ignore_ascii_case(&d.name)))
    {
        bail!(
            "use virtio-win {shown}: it holds no virtio storage driver (no viostor/ or vioscsi/ \
             folder{}); pass {WHERE}, laid out as viostor/w10/amd64/viostor.inf",
            if drivers.is_empty() {
                ", nor NetKVM/ or Balloon/".to_owned()
            } else {
                format!(
                    "; found only {}",
                    drivers
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    files.sort();
    let report = Report {
        source,
        path: given.display().to_string(),
        version: version_of(&label),
        label,
        image_dir: format!("/{RESCUE_VIRTIO_WIN}"),
        files: files.len(),
        bytes: files.iter().map(|(_, d)| d.len() as u64).sum(),
        drivers,
    };
    Ok(Package { report, files })
}

/// Reads every `<os>/<arch>` folder of one driver: its INFs checked as the fix-up reads them.
fn read_driver(dir: &Path, name: &str, fix: &str) -> Result<(DriverReport, Vec<PackageFile>)> {
    let mut files = Vec::new();
    let mut windows = BTreeSet::new();
    let mut architectures = BTreeSet::new();
    let mut services = BTreeSet::new();
    for (os, os_dir) in subdirs(dir)? {
        for (arch, leaf) in subdirs(&os_dir)? {
            let at = format!("{name}/{os}/{arch}");
            let leaf_files = read_leaf(&leaf, &at)?;
            if leaf_files.is_empty() {
                continue;
            }
            services.extend(check_leaf(&leaf_files, &at, fix)?);
            windows.insert(os.clone());
            architectures.insert(arch);
            files.extend(leaf_files);
        }
    }
    if files.is_empty() {
        bail!(
            "no <os>/<arch> folder of {name}/ holds an .inf file (expected e.g. \
             {name}/w10/amd64/{}.inf); {fix}",
            name.to_lowercase()
        );
    }
    let report = DriverReport {
        name: name.to_owned(),
        service: services.into_iter().collect::<Vec<_>>().join(", "),
        windows: windows.into_iter().collect(),
        architectures: architectures.into_iter().collect(),
        files: files.len(),
        bytes: files.iter().map(|(_, d)| d.len() as u64).sum(),
    };
    Ok((report, files))
}

/// The copied files of one folder (`at` is its package-relative path); empty when it has none.
fn read_leaf(leaf: &Path, at: &str) -> Result<Vec<PackageFile>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(leaf).with_context(|| format!("list {}", leaf.display()))? {
        let e = e.with_context(|| format!("list {}", leaf.display()))?;
        let file = e.file_name().to_string_lossy().into_owned();
        let copied = Path::new(&file)
            .extension()
            .is_some_and(|x| COPIED.iter().any(|c| x.eq_ignore_ascii_case(c)));
        if copied && e.file_type().is_ok_and(|t| t.is_file()) {
            let data =
                std::fs::read(e.path()).with_context(|| format!("read {}", e.path().display()))?;
            out.push((format!("{at}/{file}"), data));
        }
    }
    Ok(out)
}

/// A folder the fix-up may pick must hold an INF, and the fix-up takes whichever it lists
/// first: every INF must parse with its parser and name a binary that is in the folder.
/// `at` is the folder's package-relative path. Returns the INFs' service names.
fn check_leaf(files: &[PackageFile], at: &str, fix: &str) -> Result<Vec<String>> {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    let infs: Vec<&PackageFile> = files
        .iter()
        .filter(|(p, _)| p.to_lowercase().ends_with(".inf"))
        .collect();
    if infs.is_empty() {
        bail!("{at} has driver files but no .inf file, which the fix-up reads first; {fix}");
    }
    let mut services = Vec::new();
    for (inf_path, bytes) in infs {
        let d = inf::driver_from_bytes(bytes)
            .map_err(|e| anyhow!("read {inf_path}: {e}; the fix-up could not use it: {fix}"))?;
        if !files
            .iter()
            .any(|(p, _)| base(p).eq_ignore_ascii_case(&d.binary))
        {
            bail!(
                "{inf_path} names the binary {} but {at} has no such file; {fix}",
                d.binary
            );
        }
        services.push(d.service);
    }
    Ok(services)
}

impl Package {
    /// The files as image paths (`usr/share/ferry/virtio-win/viostor/w10/amd64/viostor.inf`).
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.files.iter().map(|(rel, data)| Entry {
            path: format!("/{RESCUE_VIRTIO_WIN}/{rel}"),
            perm: 0o644,
            kind: Kind::File(data.clone()),
        })
    }

    /// Adds the files to the image's archive.
    pub fn add_to(&self, archive: &mut Archive) -> Result<()> {
        for e in self.entries() {
            archive.insert(e)?;
        }
        Ok(())
    }

    /// A zstd-compressed newc layer with the files, to append to a built initrd (`customize`).
    pub fn layer(&self, mtime: u32, level: i32) -> Result<Vec<u8>> {
        let mut a = Archive::new();
        self.add_to(&mut a)?;
        zstd::bulk::compress(&a.to_bytes(mtime), level).context("compress the virtio-win layer")
    }

    /// One line per driver, for the build summary and `customize`.
    pub fn summary(&self) -> String {
        let r = &self.report;
        let mut s = format!(
            "virtio-win {} ({}{}): {} files, {} bytes in {}",
            r.path,
            r.label,
            r.version
                .as_deref()
                .map(|v| format!(", version {v}"))
                .unwrap_or_default(),
            r.files,
            r.bytes,
            r.image_dir
        );
        for d in &r.drivers {
            s.push_str(&format!(
                "\n  {:<8} {:>3} files {:>9} bytes  windows {}  arch {}",
                d.name,
                d.files,
                d.bytes,
                d.windows.join(","),
                d.architectures.join(",")
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_what_the_issue_names() {
        assert_eq!(DRIVER_NAMES, ["viostor", "vioscsi", "NetKVM", "Balloon"]);
        assert!(STORAGE.iter().all(|s| DRIVER_NAMES.contains(s)));
    }

    #[test]
    fn versions_from_labels() {
        for (label, want) in [
            ("virtio-win-0.1.262", Some("0.1.262")),
            ("virtio-win_0.1.240", Some("0.1.240")),
            ("virtio-win", None),
            ("virtio-win-latest", None),
            ("VIRTIO_WIN", None),
            ("", None),
        ] {
            assert_eq!(version_of(label).as_deref(), want, "{label}");
        }
    }
}
