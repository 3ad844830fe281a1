//! `/proc/self/mountinfo` as typed entries (proc(5)):
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2) (3)   (4)   (5)      (6)      (7)   (8) (9)    (10)         (11)
//! ```
//! mount id, parent id, `major:minor` of the filesystem, root of the mount within it, mount
//! point, per-mount options, zero or more optional fields ended by `-`, filesystem type, mount
//! source, super-block options. Paths escape space, tab, newline and backslash as `\ooo`.
//!
//! The text is treated as hostile (a mount point is any name a user could create): the input,
//! each line and the number of entries are bounded, and every error names the line.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest mountinfo accepted (a container host with thousands of mounts stays well under).
pub const MAX_INPUT: usize = 8 << 20;
/// Longest line accepted: two PATH_MAX paths plus options.
pub const MAX_LINE: usize = 3 * 4096 + 1024;
/// Most entries accepted.
pub const MAX_ENTRIES: usize = 100_000;

/// A block device number, `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DevId {
    pub major: u32,
    pub minor: u32,
}

impl DevId {
    pub const fn new(major: u32, minor: u32) -> DevId {
        DevId { major, minor }
    }

    /// From a `st_dev`/`st_rdev` value.
    pub fn from_raw(dev: u64) -> DevId {
        DevId {
            major: libc::major(dev),
            minor: libc::minor(dev),
        }
    }
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DevId {
    type Err = String;

    /// `"8:1"`, surrounding whitespace allowed (sysfs `dev` files end in a newline).
    fn from_str(s: &str) -> Result<DevId, String> {
        let s = s.trim();
        let (ma, mi) = s
            .split_once(':')
            .ok_or_else(|| format!("expected major:minor, found {s:?}"))?;
        let num = |t: &str| {
            t.parse::<u32>()
                .map_err(|_| format!("expected major:minor, found {s:?}"))
        };
        Ok(DevId::new(num(ma)?, num(mi)?))
    }
}

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub parent_id: u32,
    /// The filesystem's device number (an anonymous `0:N` for btrfs, NFS, tmpfs…).
    pub dev: DevId,
    /// The directory of the filesystem mounted here (`/` unless a bind mount or subvolume).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,noatime`).
    pub mount_options: String,
    pub fstype: String,
    /// The mount source (`/dev/sda1`, `/dev/mapper/vg-root`, `tmpfs`), unescaped.
    pub source: String,
    /// Super-block options.
    pub super_options: String,
}

impl MountEntry {
    /// This mount point is read-only (another mount of the same filesystem may still write).
    pub fn read_only(&self) -> bool {
        has_option(&self.mount_options, "ro") || self.super_read_only()
    }

    /// The filesystem itself is read-only: nothing can change it through any mount.
    pub fn super_read_only(&self) -> bool {
        has_option(&self.super_options, "ro")
    }
}

fn has_option(options: &str, name: &str) -> bool {
    options.split(',').any(|o| o == name)
}

/// Why mountinfo text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountinfoError {
    #[error(
        "mountinfo is {len} bytes, more than the {MAX_INPUT} accepted; check /proc/self/mountinfo"
    )]
    TooLarge { len: usize },
    #[error("mountinfo has more than {MAX_ENTRIES} mounts; check /proc/self/mountinfo")]
    TooManyEntries,
    #[error("mountinfo line {line}: {len} bytes, more than the {MAX_LINE} accepted")]
    LineTooLong { line: usize, len: usize },
    #[error("mountinfo line {line}: {what}")]
    Malformed { line: usize, what: String },
}

/// Parse mountinfo text; blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<MountEntry>, MountinfoError> {
    if text.len() > MAX_INPUT {
        return Err(MountinfoError::TooLarge { len: text.len() });
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.len() > MAX_LINE {
            return Err(MountinfoError::LineTooLong {
                line: line_no,
                len: line.len(),
            });
        }
        if line.trim().is_empty() {
            continue;
        }
        if out.len() == MAX_ENTRIES {
            return Err(MountinfoError::TooManyEntries);
        }
        out.push(parse_line(line).map_err(|what| MountinfoError::Malformed {
            line: line_no,
            what,
        })?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<MountEntry, String> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields
        .iter()
        .position(|f| *f == "-")
        .ok_or("no ' - ' separator before the filesystem type")?;
    if sep < 6 {
        return Err(format!(
            "{sep} fields before ' - ', expected at least 6 (id, parent, major:minor, root, mount point, options)"
        ));
    }
    if fields.len() < sep + 4 {
        return Err("expected filesystem type, source and options after ' - '".into());
    }
    let id = |i: usize, what: &str| {
        fields[i]
            .parse::<u32>()
            .map_err(|_| format!("{what} {:?} is not a number", fields[i]))
    };
    Ok(MountEntry {
        mount_id: id(0, "mount id")?,
        parent_id: id(1, "parent id")?,
        dev: fields[2].parse()?,
        root: PathBuf::from(unescape(fields[3])?),
        mount_point: PathBuf::from(unescape(fields[4])?),
        mount_options: fields[5].to_string(),
        fstype: unescape(fields[sep + 1])?,
        source: unescape(fields[sep + 2])?,
        super_options: fields[sep + 3..].join(" "),
    })
}

/// Undo the kernel's `\ooo` escapes (octal, three digits).
pub fn unescape(s: &str) -> Result<String, String> {
    if !s.contains('\\') {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let digits = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .ok_or_else(|| format!("bad escape in {s:?}: expected \\ and three octal digits"))?;
        let v = digits
            .iter()
            .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
        out.push(u8::try_from(v).map_err(|_| format!("bad escape in {s:?}: \\{v:o} > 0xff"))?);
        i += 4;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once unescaped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 22 8:1 / /boot/efi rw,relatime shared:2 - vfat /dev/sda1 rw,fmask=0077,dmask=0077
31 22 254:0 / /var/lib/data\\040dir rw,relatime shared:3 - xfs /dev/mapper/vg0-data rw,attr2
32 22 0:35 /@home /home rw,relatime shared:4 - btrfs /dev/sdb1 rw,space_cache=v2,subvolid=257
33 22 8:3 / /mnt/ro ro,relatime - ext4 /dev/sda3 ro
";

    #[test]
    fn a_real_table_parses() {
        let m = parse(REAL).unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].dev, DevId::new(8, 2));
        assert_eq!(m[0].mount_point, PathBuf::from("/"));
        assert_eq!(m[0].source, "/dev/sda2");
        assert_eq!(m[0].super_options, "rw,errors=remount-ro");
        assert_eq!(m[2].fstype, "vfat");
        assert_eq!(m[3].mount_point, PathBuf::from("/var/lib/data dir"));
        assert_eq!(m[4].root, PathBuf::from("/@home"));
        assert_eq!(m[4].dev, DevId::new(0, 35));
        assert!(!m[0].read_only());
        assert!(m[5].read_only());
    }

    #[test]
    fn optional_fields_may_be_absent_or_many() {
        let none = "1 0 8:1 / / rw - ext4 /dev/sda1 rw";
        let many = "1 0 8:1 / / rw shared:1 master:2 propagate_from:3 - ext4 /dev/sda1 rw";
        assert_eq!(parse(none).unwrap()[0].source, "/dev/sda1");
        assert_eq!(parse(many).unwrap()[0].source, "/dev/sda1");
    }

    #[test]
    fn hostile_lines_are_refused_with_their_line() {
        let cases: &[(&str, &str)] = &[
            ("1 0 8:1 / / rw ext4 /dev/sda1 rw", "no ' - ' separator"),
            ("1 0 8:1 / - ext4 /dev/sda1 rw", "expected at least 6"),
            ("1 0 8:1 / / rw - ext4", "after ' - '"),
            ("x 0 8:1 / / rw - ext4 /dev/sda1 rw", "mount id \"x\""),
            ("1 0 81 / / rw - ext4 /dev/sda1 rw", "major:minor"),
            ("1 0 8:1 / /a\\09 rw - ext4 /dev/sda1 rw", "bad escape"),
            ("1 0 8:1 / /a\\ rw - ext4 /dev/sda1 rw", "bad escape"),
            ("1 0 8:1 / /a\\777 rw - ext4 /dev/sda1 rw", "> 0xff"),
            ("1 0 8:1 / /a\\377 rw - ext4 /dev/sda1 rw", "not UTF-8"),
        ];
        for (text, want) in cases {
            let input = format!("{}\n{text}\n", REAL.lines().next().unwrap_or(""));
            let e = parse(&input).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("mountinfo line 2: "), "{text}: {msg}");
            assert!(msg.contains(want), "{text}: {msg}");
        }
    }

    #[test]
    fn sizes_are_bounded() {
        let long = format!("1 0 8:1 / /{} rw - ext4 /dev/sda1 rw", "a".repeat(MAX_LINE));
        assert!(matches!(
            parse(&long),
            Err(MountinfoError::LineTooLong { line: 1, .. })
        ));
        let many = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n".repeat(MAX_ENTRIES + 1);
        assert_eq!(parse(&many), Err(MountinfoError::TooManyEntries));
        let huge = " ".repeat(MAX_INPUT + 1);
        assert!(matches!(parse(&huge), Err(MountinfoError::TooLarge { .. })));
    }

    #[test]
    fn dev_ids_parse_and_print() {
        assert_eq!("253:10\n".parse::<DevId>(), Ok(DevId::new(253, 10)));
        assert_eq!(DevId::new(8, 0).to_string(), "8:0");
        assert!("8".parse::<DevId>().is_err());
        assert!("8:x".parse::<DevId>().is_err());
        assert!("-1:0".parse::<DevId>().is_err());
    }

    #[test]
    fn unescape_handles_the_kernels_escapes() {
        assert_eq!(
            unescape("a\\040b\\011c\\012d\\134e").unwrap(),
            "a b\tc\nd\\e"
        );
        assert_eq!(unescape("plain").unwrap(), "plain");
    }
}
