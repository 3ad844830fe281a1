//! The rescue image's root filesystem, declared as data in `initramfs/rootfs.txt` (format described
//! in that file, frozen): `dir`, `file`, `slink` and `nod` lines, like the kernel's gen_init_cpio,
//! and `prog` lines: a program of the build host with the shared libraries it needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cpio::{Archive, Entry, Kind};
use crate::tools;

/// One parsed line; `file` sources are still unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decl {
    Dir {
        path: String,
        perm: u32,
    },
    File {
        path: String,
        perm: u32,
        source: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    Node {
        path: String,
        perm: u32,
        kind: char,
        major: u32,
        minor: u32,
    },
    /// A program of the build host (`host`, an absolute path), installed at `path` with mode 0755
    /// together with every shared library it loads; `package` is the Debian package to install
    /// when the build host lacks it.
    Prog {
        path: String,
        host: String,
        package: String,
    },
}

/// Where `@name` file sources come from.
pub struct Sources<'a> {
    /// Directory relative file sources are resolved against (`initramfs/`).
    pub base: &'a Path,
    pub agent: &'a Path,
    pub busybox: &'a Path,
}

pub fn parse(text: &str, origin: &str) -> Result<Vec<Decl>> {
    let mut out = Vec::new();
    for (no, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let perm = |s: &str| {
            u32::from_str_radix(s, 8)
                .with_context(|| format!("parse {origin}:{}: bad mode {s:?}", no + 1))
        };
        let num = |s: &str| {
            s.parse::<u32>()
                .with_context(|| format!("parse {origin}:{}: bad number {s:?}", no + 1))
        };
        let decl = match f.as_slice() {
            ["dir", path, mode] => Decl::Dir {
                path: path.to_string(),
                perm: perm(mode)?,
            },
            ["file", path, mode, source] => Decl::File {
                path: path.to_string(),
                perm: perm(mode)?,
                source: source.to_string(),
            },
            ["slink", path, target] => Decl::Symlink {
                path: path.to_string(),
                target: target.to_string(),
            },
            ["nod", path, mode, kind @ ("c" | "b"), major, minor] => Decl::Node {
                path: path.to_string(),
                perm: perm(mode)?,
                kind: if *kind == "b" { 'b' } else { 'c' },
                major: num(major)?,
                minor: num(minor)?,
            },
            ["prog", path, host, package] if host.starts_with('/') => Decl::Prog {
                path: path.to_string(),
                host: host.to_string(),
                package: package.to_string(),
            },
            ["prog", ..] => bail!(
                "parse {origin}:{}: expected `prog PATH HOSTPATH PACKAGE` with an absolute HOSTPATH, got {line:?}",
                no + 1
            ),
            _ => bail!(
                "parse {origin}:{}: expected dir/file/slink/nod/prog line, got {line:?}",
                no + 1
            ),
        };
        out.push(decl);
    }
    Ok(out)
}

/// Resolves a `file` source to a host path.
fn source_path(source: &str, src: &Sources) -> PathBuf {
    match source {
        "@agent" => src.agent.to_path_buf(),
        "@busybox" => src.busybox.to_path_buf(),
        rel => src.base.join(rel),
    }
}

/// Adds the declared entries to `archive`, reading file contents from the host. The libraries of
/// all `prog` entries are added once each, at the path the host's loader found them.
pub fn add_to(archive: &mut Archive, decls: &[Decl], src: &Sources) -> Result<()> {
    let mut libraries = BTreeSet::new();
    for d in decls {
        let entry = match d {
            Decl::Dir { path, perm } => Entry {
                path: path.clone(),
                perm: *perm,
                kind: Kind::Dir,
            },
            Decl::File { path, perm, source } => {
                let p = source_path(source, src);
                let data = std::fs::read(&p)
                    .with_context(|| format!("read {} for {path}", p.display()))?;
                Entry {
                    path: path.clone(),
                    perm: *perm,
                    kind: Kind::File(data),
                }
            }
            Decl::Symlink { path, target } => Entry {
                path: path.clone(),
                perm: 0o777,
                kind: Kind::Symlink(target.clone()),
            },
            Decl::Node {
                path,
                perm,
                kind,
                major,
                minor,
            } => Entry {
                path: path.clone(),
                perm: *perm,
                kind: Kind::Node {
                    kind: *kind,
                    major: *major,
                    minor: *minor,
                },
            },
            Decl::Prog {
                path,
                host,
                package,
            } => {
                let prog = tools::host_program(Path::new(host), package)
                    .with_context(|| format!("add prog {path}"))?;
                libraries.extend(prog.libraries);
                Entry {
                    path: path.clone(),
                    perm: 0o755,
                    kind: Kind::File(prog.data),
                }
            }
        };
        archive.insert(entry)?;
    }
    for lib in libraries {
        let data = std::fs::read(&lib).with_context(|| format!("read library {lib}"))?;
        // The loader is exec'd by the kernel, so it needs the x bits; libraries are only mapped.
        let perm = if tools::is_loader(&lib) { 0o755 } else { 0o644 };
        archive.insert(Entry {
            path: lib,
            perm,
            kind: Kind::File(data),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_kinds() {
        let t = "# c\ndir /tmp 1777\nfile /init 0755 @agent # pid1\nslink /bin/sh busybox\nnod /dev/console 0600 c 5 1\n";
        let d = parse(t, "t").unwrap();
        assert_eq!(
            d[0],
            Decl::Dir {
                path: "/tmp".into(),
                perm: 0o1777
            }
        );
        assert_eq!(
            d[1],
            Decl::File {
                path: "/init".into(),
                perm: 0o755,
                source: "@agent".into()
            }
        );
        assert_eq!(
            d[2],
            Decl::Symlink {
                path: "/bin/sh".into(),
                target: "busybox".into()
            }
        );
        assert_eq!(
            d[3],
            Decl::Node {
                path: "/dev/console".into(),
                perm: 0o600,
                kind: 'c',
                major: 5,
                minor: 1
            }
        );
        assert!(parse("dir /x\n", "t").is_err());
        assert!(parse("nod /x 0600 x 1 1\n", "t").is_err());
        assert_eq!(
            parse("prog /sbin/lvm /sbin/lvm lvm2\n", "t").unwrap(),
            vec![Decl::Prog {
                path: "/sbin/lvm".into(),
                host: "/sbin/lvm".into(),
                package: "lvm2".into()
            }]
        );
        assert!(parse("prog /sbin/lvm /sbin/lvm\n", "t").is_err());
        assert!(parse("prog /sbin/lvm sbin/lvm lvm2\n", "t").is_err());
    }

    #[test]
    fn missing_host_program_names_its_package() {
        let decls = parse("prog /sbin/x /nonexistent/ferry-test-prog ferry-pkg\n", "t").unwrap();
        let mut a = Archive::new();
        let src = Sources {
            base: Path::new("."),
            agent: Path::new("/nonexistent"),
            busybox: Path::new("/nonexistent"),
        };
        let e = format!("{:#}", add_to(&mut a, &decls, &src).unwrap_err());
        assert!(e.contains("apt-get install ferry-pkg"), "{e}");
        assert!(e.contains("/nonexistent/ferry-test-prog"), "{e}");
    }

    #[test]
    fn host_program_brings_its_libraries_once() {
        // /bin/ls and /bin/cp share libc and the loader: each is added once.
        if !Path::new("/bin/ls").exists() || !Path::new("/bin/cp").exists() {
            return;
        }
        let decls = parse(
            "prog /bin/ls /bin/ls coreutils\nprog /bin/cp /bin/cp coreutils\n",
            "t",
        )
        .unwrap();
        let mut a = Archive::new();
        let src = Sources {
            base: Path::new("."),
            agent: Path::new("/nonexistent"),
            busybox: Path::new("/nonexistent"),
        };
        add_to(&mut a, &decls, &src).unwrap();
        let paths: Vec<&str> = a.entries().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"bin/ls") && paths.contains(&"bin/cp"));
        assert_eq!(
            paths.iter().filter(|p| p.ends_with("/libc.so.6")).count(),
            1
        );
        let loader = a
            .entries()
            .find(|e| e.path == "lib64/ld-linux-x86-64.so.2")
            .unwrap();
        assert_eq!(loader.perm, 0o755);
    }

    #[test]
    fn repository_rootfs_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../initramfs/rootfs.txt");
        let d = parse(&std::fs::read_to_string(path).unwrap(), path).unwrap();
        assert!(d.contains(&Decl::File {
            path: "/init".into(),
            perm: 0o755,
            source: "@agent".into()
        }));
        assert!(d.contains(&Decl::Symlink {
            path: "/bin/sh".into(),
            target: "busybox".into()
        }));
    }
}
