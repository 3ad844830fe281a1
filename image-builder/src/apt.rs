//! A private apt for the packages an image is built from (the kernel, firmware): its own
//! sources.list, state and cache directories under image-builder's cache. The host's apt
//! configuration is never read or touched, so a build does not depend on what the host enabled.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::tools::run;

/// bookworm and bookworm-backports, `main` (the kernel, firmware-linux-free) and
/// `non-free-firmware` (Debian's firmware packages).
pub const SOURCES_LIST: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main non-free-firmware
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main non-free-firmware
";

pub struct PrivateApt {
    dir: PathBuf,
    /// An exclusive flock on `CACHE/apt/lock`, held while this apt is in use: apt runs with its
    /// own locking off (it would want the host's lock files), and two builds sharing a cache
    /// (CI lanes, a build host) must not update the lists or download into it at once.
    _lock: Flock<std::fs::File>,
}

impl PrivateApt {
    /// Creates the directories under `CACHE/apt` and runs `apt-get update` against them.
    pub fn update(cache: &Path) -> Result<Self> {
        let dir = cache.join("apt");
        for d in ["etc", "state/lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(d))
                .with_context(|| format!("create {}", dir.join(d).display()))?;
        }
        let lock_path = dir.join("lock");
        let lock = std::fs::File::create(&lock_path)
            .with_context(|| format!("create {}", lock_path.display()))?;
        let lock = match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((lock, _)) => {
                eprintln!(
                    "apt: waiting for another build's apt ({})",
                    lock_path.display()
                );
                Flock::lock(lock, FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .with_context(|| format!("lock {}", lock_path.display()))?
            }
        };
        std::fs::write(dir.join("etc/sources.list"), SOURCES_LIST)?;
        let apt = PrivateApt { dir, _lock: lock };
        eprintln!(
            "apt: update (private sources: bookworm, bookworm-backports) in {}",
            apt.dir.display()
        );
        run(apt.command("apt-get").arg("update"), "apt")?;
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (k, v) in [
            ("Dir::Etc::SourceList", self.dir.join("etc/sources.list")),
            ("Dir::Etc::SourceParts", PathBuf::from("/nonexistent")),
            ("Dir::State", self.dir.join("state")),
            ("Dir::Cache", self.dir.join("cache")),
        ] {
            cmd.arg("-o").arg(format!("{k}={}", v.display()));
        }
        cmd.args([
            "-o",
            "APT::Sandbox::User=root",
            "-o",
            "Debug::NoLocking=1",
            "-q",
        ]);
        cmd
    }

    /// Package names matching an `apt-cache search --names-only` regex.
    pub fn search_names(&self, regex: &str) -> Result<Vec<String>> {
        let out = run(
            self.command("apt-cache")
                .args(["search", "--names-only"])
                .arg(regex),
            "apt",
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// The newest version of `package` in the sources (`apt-cache madison`), or `None`.
    pub fn newest_version(&self, package: &str) -> Result<Option<String>> {
        let out = run(self.command("apt-cache").arg("madison").arg(package), "apt")?;
        let mut best: Option<String> = None;
        for v in parse_madison(&String::from_utf8_lossy(&out.stdout), package) {
            best = match best {
                Some(b) if !version_greater(&v, &b)? => Some(b),
                _ => Some(v),
            };
        }
        Ok(best)
    }

    /// `apt-get download PACKAGE=VERSION` into `dir`; returns the file.
    pub fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        if let Some(hit) = cached(dir, package, Some(version)) {
            return Ok(hit);
        }
        eprintln!("apt: download {package} {version}");
        run(
            self.command("apt-get")
                .current_dir(dir)
                .arg("download")
                .arg(format!("{package}={version}")),
            "apt",
        )?;
        cached(dir, package, Some(version)).with_context(|| {
            format!(
                "find the downloaded {package} {version} in {}",
                dir.display()
            )
        })
    }
}

/// Versions from `apt-cache madison` lines: `pkg | 20230210-5 | http://… bookworm/… Packages`.
pub fn parse_madison(text: &str, package: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('|').map(str::trim);
            (f.next()? == package).then(|| f.next().map(str::to_owned))?
        })
        .collect()
}

/// `dpkg --compare-versions A gt B`: Debian version order (epochs, tildes) is dpkg's to define.
fn version_greater(a: &str, b: &str) -> Result<bool> {
    let status = Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .context("run dpkg --compare-versions")?;
    Ok(status.success())
}

/// A `PACKAGE_VERSION_ARCH.deb` in `dir` (apt escapes `:` of an epoch as `%3a`); without a
/// version, the last in name order.
pub fn cached(dir: &Path, package: &str, version: Option<&str>) -> Option<PathBuf> {
    let prefix = match version {
        Some(v) => format!("{package}_{}_", v.replace(':', "%3a")),
        None => format!("{package}_"),
    };
    let mut hits: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
        .collect();
    hits.sort();
    hits.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madison_lines_give_versions_of_that_package_only() {
        let text = " firmware-bnx2 | 20240909-2~bpo12+1 | http://deb.debian.org/debian bookworm-backports/non-free-firmware amd64 Packages\n\
                    firmware-bnx2 |  20230210-5 | http://deb.debian.org/debian bookworm/non-free-firmware amd64 Packages\n\
                    firmware-bnx2x | 20230210-5 | http://deb.debian.org/debian bookworm/non-free-firmware amd64 Packages\n";
        assert_eq!(
            parse_madison(text, "firmware-bnx2"),
            ["20240909-2~bpo12+1", "20230210-5"]
        );
        assert!(parse_madison("", "x").is_empty());
    }

    #[test]
    fn dpkg_orders_backports_after_stable() {
        assert!(version_greater("20240909-2~bpo12+1", "20230210-5").unwrap());
        assert!(!version_greater("1.0~rc1", "1.0").unwrap());
    }

    #[test]
    fn cached_debs_are_found_by_package_and_version() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "firmware-bnx2_20230210-5_all.deb",
            "firmware-bnx2x_20230210-5_all.deb",
            "pkg_1%3a2.0_amd64.deb",
        ] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        let name =
            |p: Option<PathBuf>| p.map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
        assert_eq!(
            name(cached(d.path(), "firmware-bnx2", None)).as_deref(),
            Some("firmware-bnx2_20230210-5_all.deb")
        );
        assert_eq!(
            name(cached(d.path(), "pkg", Some("1:2.0"))).as_deref(),
            Some("pkg_1%3a2.0_amd64.deb")
        );
        assert!(cached(d.path(), "firmware-bnx2", Some("1")).is_none());
    }
}
