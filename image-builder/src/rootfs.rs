//! The rescue image's root filesystem, declared as data in `initramfs/rootfs.txt` (format described
//! in that file, frozen): `dir`, `file`, `slink` and `nod` lines, like the kernel's gen_init_cpio.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cpio::{Archive, Entry, Kind};

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
                kind: kind.chars().next().unwrap(),
                major: num(major)?,
                minor: num(minor)?,
            },
            _ => bail!(
                "parse {origin}:{}: expected dir/file/slink/nod line, got {line:?}",
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

/// Adds the declared entries to `archive`, reading file contents from the host.
pub fn add_to(archive: &mut Archive, decls: &[Decl], src: &Sources) -> Result<()> {
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
        };
        archive.insert(entry)?;
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
