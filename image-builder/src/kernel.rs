//! The kernel: a Debian `linux-image-*` package, given or fetched from bookworm-backports with the
//! private apt ([`crate::apt`]), unpacked with `dpkg-deb -x`. The default is Linux 6.12 from
//! bookworm-backports: it has ntfs3 and compressed modules.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::apt::PrivateApt;
use crate::tools::run;

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The root the package was unpacked into (holds `boot/` and `lib/modules/`).
    pub root: PathBuf,
    /// `uname -r`, e.g. `6.12.95+deb12-amd64`.
    pub version: String,
    pub vmlinuz: PathBuf,
    pub package: String,
    pub package_version: String,
    /// mtime of the vmlinuz in the package: the default SOURCE_DATE_EPOCH.
    pub build_epoch: u64,
}

impl Kernel {
    /// `ROOT/lib/modules/VERSION`.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.version)
    }
}

/// True for `linux-image-6.12.<abi>-amd64-unsigned` (not -cloud-, -rt-, or a -dbg package).
pub fn is_default_kernel_package(name: &str) -> bool {
    name.strip_prefix("linux-image-6.12.")
        .and_then(|rest| rest.strip_suffix("-amd64-unsigned"))
        .is_some_and(|abi| !abi.is_empty() && !abi.contains('-'))
}

/// Sort key for `linux-image-6.12.95+deb12-amd64-unsigned`: the numbers in the name.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Downloads (or reuses from `cache`) the newest bookworm-backports 6.12 kernel package.
pub fn fetch_default_deb(cache: &Path) -> Result<PathBuf> {
    let debs = cache.join("debs");
    match fetch_with_private_apt(cache, &debs) {
        Ok(p) => Ok(p),
        Err(e) => {
            if let Some(cached) = newest_cached(&debs) {
                eprintln!(
                    "warning: fetch kernel package failed ({e:#}); using cached {}",
                    cached.display()
                );
                return Ok(cached);
            }
            bail!(
                "fetch the default kernel (linux-image-6.12.*-amd64-unsigned from bookworm-backports) \
                 failed: {e:#}\nPass a kernel package with --kernel-deb FILE (e.g. from \
                 `apt-get download linux-image-6.12.<abi>-amd64-unsigned` with bookworm-backports enabled)"
            )
        }
    }
}

fn fetch_with_private_apt(cache: &Path, debs: &Path) -> Result<PathBuf> {
    let apt = PrivateApt::update(cache)?;
    let Some(pkg) = apt
        .search_names("^linux-image-6\\.12\\..*-amd64-unsigned$")?
        .into_iter()
        .filter(|n| is_default_kernel_package(n))
        .max_by_key(|n| version_key(n))
    else {
        bail!("find linux-image-6.12.*-amd64-unsigned in bookworm-backports: no such package");
    };
    if let Some(hit) = crate::apt::cached(debs, &pkg, None) {
        eprintln!("kernel: using cached {}", hit.display());
        return Ok(hit);
    }
    let version = apt
        .newest_version(&pkg)?
        .with_context(|| format!("find a version of {pkg}"))?;
    apt.download(&pkg, &version, debs)
}

fn newest_cached(debs: &Path) -> Option<PathBuf> {
    std::fs::read_dir(debs)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            n.ends_with(".deb") && n.split('_').next().is_some_and(is_default_kernel_package)
        })
        .max_by_key(|p| version_key(&p.file_name().unwrap_or_default().to_string_lossy()))
}

/// Unpacks `deb` into `dir` and locates vmlinuz and the module tree.
pub fn unpack(deb: &Path, dir: &Path) -> Result<Kernel> {
    let field = |f: &str| crate::tools::deb_field(deb, f);
    let package = field("Package")?;
    let package_version = field("Version")?;
    if !package.starts_with("linux-image-") {
        bail!(
            "use {}: package {package} is not a linux-image-* package",
            deb.display()
        );
    }
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir), "dpkg")?;
    let modroot = [dir.join("lib/modules"), dir.join("usr/lib/modules")]
        .into_iter()
        .find(|p| p.is_dir())
        .with_context(|| format!("find lib/modules in {}", deb.display()))?;
    let version = std::fs::read_dir(&modroot)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("find a kernel version under {}", modroot.display()))?;
    let root = modroot
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} is not under <root>/lib/modules", modroot.display()))?
        .to_path_buf();
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{version}"));
    if !vmlinuz.exists() {
        bail!(
            "find {}: the package has no kernel image",
            vmlinuz.display()
        );
    }
    let build_epoch = std::fs::metadata(&vmlinuz)?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(Kernel {
        root,
        version,
        vmlinuz,
        package,
        package_version,
        build_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_generic_unsigned_flavour() {
        assert!(is_default_kernel_package(
            "linux-image-6.12.95+deb12-amd64-unsigned"
        ));
        assert!(!is_default_kernel_package(
            "linux-image-6.12.95+deb12-cloud-amd64-unsigned"
        ));
        assert!(!is_default_kernel_package(
            "linux-image-6.12.95+deb12-rt-amd64-unsigned"
        ));
        assert!(!is_default_kernel_package(
            "linux-image-6.12.95+deb12-amd64"
        ));
        let mut v = [
            "linux-image-6.12.9+deb12-amd64-unsigned",
            "linux-image-6.12.95+deb12-amd64-unsigned",
        ];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v[1], "linux-image-6.12.95+deb12-amd64-unsigned");
    }
}
