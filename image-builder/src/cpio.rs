//! A reproducible writer for the SVR4 "newc" cpio format, the format the kernel unpacks as initramfs.
//!
//! Byte layout (frozen by the kernel, `Documentation/driver-api/early-userspace/buffer-format.rst`):
//! each entry is a 110-byte ASCII header — magic `070701` then 13 fields of 8 upper-case hex digits
//! (ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize,
//! check) — the NUL-terminated name, zero padding to a multiple of 4, the data, zero padding to a
//! multiple of 4. The archive ends with an entry named `TRAILER!!!`.
//!
//! Reproducibility (mkuimage's `MakeReproducible`): entries are sorted by path, owned by 0:0, dated
//! with one fixed mtime, and numbered with sequential inode numbers starting at 1; device numbers of
//! the entry itself are 0. Same entries + same mtime → the same bytes.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// What an entry is; the payload lives in the variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A character (`'c'`) or block (`'b'`) device node.
    Node {
        kind: char,
        major: u32,
        minor: u32,
    },
}

/// One archive member. `path` is absolute-style (`/bin/sh`) or relative; it is stored without the
/// leading `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// Permission bits only (e.g. 0o755); the file type comes from `kind`.
    pub perm: u32,
    pub kind: Kind,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

/// The newc magic, frozen.
pub const MAGIC: &[u8; 6] = b"070701";
/// The name of the end-of-archive entry, frozen.
pub const TRAILER: &str = "TRAILER!!!";

/// A set of entries keyed by normalised path: later insertions replace earlier ones.
#[derive(Default, Debug, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry, creating missing parent directories (mode 0755).
    pub fn insert(&mut self, mut entry: Entry) -> Result<()> {
        let path = normalise(&entry.path)?;
        let mut parent = String::new();
        for comp in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|x| x.1)
            .unwrap_or(&[])
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            match self.entries.get(&parent) {
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => {}
                Some(_) => bail!("add {path}: parent {parent} is not a directory"),
                None => {
                    let dir = Entry {
                        path: parent.clone(),
                        perm: 0o755,
                        kind: Kind::Dir,
                    };
                    self.entries.insert(parent.clone(), dir);
                }
            }
        }
        entry.path = path.clone();
        self.entries.insert(path, entry);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Serialises the archive: sorted by path, sequential inodes, uid/gid 0, the given mtime.
    pub fn to_bytes(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, e) in self.entries.values().enumerate() {
            write_entry(&mut out, e, i as u32 + 1, mtime);
        }
        write_trailer(&mut out);
        out
    }
}

/// Strips leading `/` and `./`, rejects empty, `.` and `..` components.
fn normalise(path: &str) -> Result<String> {
    let p = path.trim_start_matches('/');
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
        bail!("reject cpio path {path:?}: empty or contains . or ..");
    }
    Ok(parts.join("/"))
}

fn write_entry(out: &mut Vec<u8>, e: &Entry, ino: u32, mtime: u32) {
    let (ty, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &e.kind {
        Kind::Dir => (S_IFDIR, 2, &[], (0, 0)),
        Kind::File(d) => (S_IFREG, 1, d, (0, 0)),
        Kind::Symlink(t) => (S_IFLNK, 1, t.as_bytes(), (0, 0)),
        Kind::Node { kind, major, minor } => (
            if *kind == 'b' { S_IFBLK } else { S_IFCHR },
            1,
            &[],
            (*major, *minor),
        ),
    };
    let mode = ty | (e.perm & 0o7777);
    write_header(
        out,
        &e.path,
        [
            ino,
            mode,
            0,
            0,
            nlink,
            mtime,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
        ],
    );
    out.extend_from_slice(data);
    pad4(out);
}

fn write_trailer(out: &mut Vec<u8>) {
    write_header(out, TRAILER, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
}

/// `fields` = ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor.
fn write_header(out: &mut Vec<u8>, name: &str, fields: [u32; 11]) {
    out.extend_from_slice(MAGIC);
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(format!("{:08X}", name.len() + 1).as_bytes());
    out.extend_from_slice(b"00000000"); // check: unused by newc
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(4) * 4, 0);
}

/// Lists the member names of a newc archive (used by tests and `customize` to check stamps).
pub fn list(mut data: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let start_len = data.len();
    loop {
        if data.len() < 110 || &data[..6] != MAGIC {
            bail!(
                "read cpio at offset {}: no newc header",
                start_len - data.len()
            );
        }
        let field = |i: usize| -> Result<usize> {
            let s = std::str::from_utf8(&data[6 + i * 8..14 + i * 8])?;
            Ok(usize::from_str_radix(s, 16)?)
        };
        let (filesize, namesize) = (field(6)?, field(11)?);
        let name_end = 110 + namesize;
        let name = String::from_utf8_lossy(&data[110..name_end - 1]).into_owned();
        let data_start = name_end.div_ceil(4) * 4;
        let next = (data_start + filesize).div_ceil(4) * 4;
        if name == TRAILER {
            return Ok(names);
        }
        names.push(name);
        data = data
            .get(next..)
            .ok_or_else(|| anyhow::anyhow!("read cpio: truncated"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.insert(Entry {
            path: "/init".into(),
            perm: 0o755,
            kind: Kind::File(b"#!x\n".to_vec()),
        })
        .unwrap();
        a.insert(Entry {
            path: "/bin/sh".into(),
            perm: 0o777,
            kind: Kind::Symlink("busybox".into()),
        })
        .unwrap();
        a.insert(Entry {
            path: "/dev/console".into(),
            perm: 0o600,
            kind: Kind::Node {
                kind: 'c',
                major: 5,
                minor: 1,
            },
        })
        .unwrap();
        a.insert(Entry {
            path: "/etc/ferry/site.conf".into(),
            perm: 0o600,
            kind: Kind::File(b"a=b\n".to_vec()),
        })
        .unwrap();
        a
    }

    #[test]
    fn header_layout_is_newc() {
        let mut a = Archive::new();
        a.insert(Entry {
            path: "a".into(),
            perm: 0o644,
            kind: Kind::File(b"xyz".to_vec()),
        })
        .unwrap();
        let b = a.to_bytes(0x10);
        let h = std::str::from_utf8(&b[..110]).unwrap();
        let fields = [1, 0o100644, 0, 0, 1, 0x10, 3, 0, 0, 0, 0, 2, 0]
            .map(|f: u32| format!("{f:08X}"))
            .concat();
        assert_eq!(h, format!("070701{fields}"));
        assert_eq!(&h[6..22], "00000001000081A4");
        assert_eq!(&b[110..112], b"a\0");
        assert_eq!(&b[112..116], b"xyz\0");
        assert_eq!(b.len() % 4, 0);
    }

    #[test]
    fn sorted_with_parents_and_reproducible() {
        let a = sample();
        let names = list(&a.to_bytes(0)).unwrap();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "etc",
                "etc/ferry",
                "etc/ferry/site.conf",
                "init"
            ]
        );
        assert_eq!(sample().to_bytes(7), a.to_bytes(7));
        assert_ne!(a.to_bytes(7), a.to_bytes(8));
    }

    #[test]
    fn rejects_dot_dot() {
        let mut a = Archive::new();
        assert!(a
            .insert(Entry {
                path: "/a/../b".into(),
                perm: 0o644,
                kind: Kind::Dir
            })
            .is_err());
        assert!(a
            .insert(Entry {
                path: "/".into(),
                perm: 0o644,
                kind: Kind::Dir
            })
            .is_err());
    }

    /// Cross-checks the writer against GNU cpio's reader (skipped when `cpio` is not installed).
    #[test]
    fn gnu_cpio_lists_it() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let Ok(mut child) = Command::new("cpio")
            .args(["-itv", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        else {
            eprintln!("skip: cpio not installed");
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&sample().to_bytes(0))
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8, "{text}");
        assert!(
            lines[1].starts_with("lrwxrwxrwx") && lines[1].ends_with("bin/sh -> busybox"),
            "{}",
            lines[1]
        );
        assert!(
            lines[3].starts_with("crw-------")
                && lines[3].contains("5,")
                && lines[3].ends_with("dev/console")
        );
        assert!(lines[6].starts_with(
            "-rw-------   1 root     root            4 Jan  1  1970 etc/ferry/site.conf"
        ));
        assert!(lines[7].starts_with("-rwxr-xr-x") && lines[7].ends_with("init"));
    }
}
