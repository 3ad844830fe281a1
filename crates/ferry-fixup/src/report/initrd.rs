//! Listing the files of an initramfs: one or more concatenated "newc" cpio archives, the
//! first ones often uncompressed (early microcode), the last compressed. Decompression
//! goes through a callback seam so the static agent can use external tools.

use std::io::Write;
use std::process::{Command, Stdio};

/// Compression of an initramfs segment, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    Lz4,
    Bzip2,
}

impl Compression {
    pub fn detect(data: &[u8]) -> Option<Compression> {
        let table: &[(&[u8], Compression)] = &[
            (b"070701", Compression::None),
            (b"070702", Compression::None),
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
            (b"BZh", Compression::Bzip2),
        ];
        table
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map(|(_, c)| *c)
    }

    /// The external tool that decompresses it to stdout.
    pub fn command(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::Xz => Some("xz"),
            Compression::Lz4 => Some("lz4"),
            Compression::Bzip2 => Some("bzip2"),
        }
    }
}

/// The decompression seam: compressed bytes in, decompressed bytes out.
pub type Decompressor<'a> = &'a dyn Fn(Compression, &[u8]) -> Result<Vec<u8>, String>;

/// Decompresses with `<tool> -dc` (gzip, zstd, xz, lz4, bzip2). Output is accepted even
/// when the tool complains about trailing padding after the stream, as long as there is
/// output.
pub fn external_decompress(c: Compression, data: &[u8]) -> Result<Vec<u8>, String> {
    let Some(tool) = c.command() else {
        return Ok(data.to_vec());
    };
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {tool} -dc: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("run {tool} -dc: {e}"))?;
    let _ = writer.join();
    if out.stdout.is_empty() {
        return Err(format!(
            "{tool} -dc: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

fn hex_field(data: &[u8], at: usize) -> Result<usize, String> {
    let s = data
        .get(at..at + 8)
        .ok_or_else(|| format!("cpio header truncated at {at:#x}"))?;
    let s = std::str::from_utf8(s).map_err(|_| format!("cpio header not hex at {at:#x}"))?;
    usize::from_str_radix(s, 16).map_err(|_| format!("cpio header not hex at {at:#x}"))
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Parses newc archives from `data[pos..]` until something that is not a cpio header;
/// returns the names and the position after the last archive (and its NUL padding).
fn parse_cpio(data: &[u8], mut pos: usize, names: &mut Vec<String>) -> Result<usize, String> {
    const HEADER: usize = 110;
    while data
        .get(pos..pos + 6)
        .is_some_and(|m| m == b"070701" || m == b"070702")
    {
        let filesize = hex_field(data, pos + 54)?;
        let namesize = hex_field(data, pos + 94)?;
        let name_end = pos + HEADER + namesize;
        let name = data
            .get(pos + HEADER..name_end)
            .ok_or_else(|| format!("cpio name runs past the end at {pos:#x}"))?;
        let name = String::from_utf8_lossy(name.strip_suffix(&[0]).unwrap_or(name)).into_owned();
        let next = align4(name_end)
            .checked_add(align4(filesize))
            .filter(|&n| n <= align4(data.len()))
            .ok_or_else(|| format!("cpio entry {name:?} runs past the end at {pos:#x}"))?;
        pos = next;
        if name == "TRAILER!!!" {
            while data.get(pos) == Some(&0) {
                pos += 1;
            }
        } else {
            names.push(name);
        }
    }
    Ok(pos)
}

/// Every file name in an initramfs image.
pub fn list(data: &[u8], decompress: Decompressor) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        match Compression::detect(&data[pos..]) {
            Some(Compression::None) => pos = parse_cpio(data, pos, &mut names)?,
            Some(c) => {
                let plain = decompress(c, &data[pos..])?;
                let end = parse_cpio(&plain, 0, &mut names)?;
                if end == 0 {
                    return Err(format!("{c:?} segment at {pos:#x} holds no cpio archive"));
                }
                break;
            }
            None if pos == 0 => {
                return Err("not an initramfs (no cpio or known compression magic)".into())
            }
            None => break,
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1,
            0o100644,
            0,
            0,
            1,
            0,
            data.len()
        );
        h.push_str(&format!(
            "{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        ));
        let mut out = h.into_bytes();
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(align4(out.len()), 0);
        out.extend_from_slice(data);
        out.resize(align4(out.len()), 0);
        out
    }

    pub(crate) fn archive(names: &[&str]) -> Vec<u8> {
        let mut out: Vec<u8> = names.iter().flat_map(|n| entry(n, b"x")).collect();
        out.extend(entry("TRAILER!!!", b""));
        out
    }

    #[test]
    fn lists_concatenated_archives_with_padding() {
        let mut img = archive(&["kernel/x86/microcode/GenuineIntel.bin"]);
        img.resize(512, 0);
        img.extend(archive(&[
            "init",
            "usr/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko.xz",
        ]));
        let names = list(&img, &|_, _| Err("no".into())).unwrap();
        assert_eq!(
            names,
            [
                "kernel/x86/microcode/GenuineIntel.bin",
                "init",
                "usr/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko.xz"
            ]
        );
    }

    #[test]
    fn compressed_segments_go_through_the_seam() {
        let mut img = archive(&["early"]);
        img.extend([0x1f, 0x8b, 1, 2, 3]);
        let names = list(&img, &|c, d| {
            assert_eq!((c, d), (Compression::Gzip, &[0x1f, 0x8b, 1, 2, 3][..]));
            Ok(archive(&["main"]))
        })
        .unwrap();
        assert_eq!(names, ["early", "main"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(list(b"hello", &|_, _| Ok(vec![])).is_err());
        let mut bad = archive(&["a"]);
        bad.truncate(100);
        assert!(list(&bad, &|_, _| Ok(vec![])).is_err());
        let mut huge = archive(&["a"]);
        huge[54..62].copy_from_slice(b"ffffffff");
        assert!(list(&huge, &|_, _| Ok(vec![])).is_err());
    }
}
