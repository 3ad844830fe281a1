//! Just enough ISO 9660 to find a file's extent: the byte offset and length of a file's data, so
//! the embed area can be rewritten in place.
//!
//! Layout (ECMA-119): 2048-byte logical blocks; the Primary Volume Descriptor at block 16 (type 1,
//! `CD001`); its root directory record at byte 156. A directory record: length (byte 0), extent
//! block (bytes 2..6, little-endian), data length (10..14, LE), flags (25, bit 1 = directory), name
//! length (32), name (33..). Records never cross a block boundary; a zero length byte means "go to
//! the next block". ISO 9660 names are upper case with a `;1` version suffix; Rock Ridge and Joliet
//! names are extensions we do not need, since our embed area's name fits 8.3.

use std::io::{Read, Seek, SeekFrom};

use anyhow::{bail, Context, Result};

const BLOCK: u64 = 2048;

/// One parsed directory record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    name: String,
    extent: u64,
    len: u64,
    dir: bool,
}

fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; len];
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(&mut buf)
        .with_context(|| format!("read {len} bytes at offset {offset}"))?;
    Ok(buf)
}

fn parse_record(b: &[u8]) -> Option<Record> {
    let len = *b.first()? as usize;
    if len < 34 || b.len() < len {
        return None;
    }
    // len >= 34 was checked above, so the fields at 2..6 and 10..14 are in bounds.
    let u32le = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as u64;
    let name_len = b[32] as usize;
    let raw = b.get(33..33 + name_len)?;
    let name = match raw {
        [0] => ".".to_string(),
        [1] => "..".to_string(),
        _ => {
            let s = String::from_utf8_lossy(raw);
            let s = s.split(';').next().unwrap_or("");
            s.strip_suffix('.').unwrap_or(s).to_ascii_uppercase()
        }
    };
    Some(Record {
        name,
        extent: u32le(2),
        len: u32le(10),
        dir: b[25] & 2 != 0,
    })
}

fn read_dir<R: Read + Seek>(r: &mut R, dir: &Record) -> Result<Vec<Record>> {
    let data = read_at(r, dir.extent * BLOCK, dir.len as usize)?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let len = data[pos] as usize;
        if len == 0 {
            pos = (pos as u64 / BLOCK + 1) as usize * BLOCK as usize;
            continue;
        }
        let rec = parse_record(&data[pos..])
            .with_context(|| format!("parse directory record at {pos}"))?;
        out.push(rec);
        pos += len;
    }
    Ok(out)
}

/// Returns (byte offset, length) of the file at `path` (e.g. `/boot/site.img`; case-insensitive).
pub fn find_file<R: Read + Seek>(r: &mut R, path: &str) -> Result<(u64, u64)> {
    let pvd = read_at(r, 16 * BLOCK, BLOCK as usize)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        bail!("read primary volume descriptor: not an ISO 9660 image");
    }
    let mut cur = parse_record(&pvd[156..190]).context("parse root directory record")?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let want = part.to_ascii_uppercase();
        let next = read_dir(r, &cur)?.into_iter().find(|rec| rec.name == want);
        let Some(next) = next else {
            bail!("find {path}: no {part}")
        };
        if (i + 1 < parts.len()) != next.dir {
            bail!("find {path}: {part} has the wrong type");
        }
        cur = next;
    }
    Ok((cur.extent * BLOCK, cur.len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn record(name: &[u8], extent: u32, len: u32, dir: bool) -> Vec<u8> {
        let mut r = vec![0u8; 33];
        r[2..6].copy_from_slice(&extent.to_le_bytes());
        r[10..14].copy_from_slice(&len.to_le_bytes());
        r[25] = if dir { 2 } else { 0 };
        r[32] = name.len() as u8;
        r.extend_from_slice(name);
        if r.len() % 2 == 1 {
            r.push(0);
        }
        r[0] = r.len() as u8;
        r
    }

    /// A hand-made image: root at block 18, /BOOT at block 19, /BOOT/SITE.IMG;1 at block 20.
    #[test]
    fn finds_a_nested_file() {
        let mut img = vec![0u8; 21 * BLOCK as usize + 100];
        let b = BLOCK as usize;
        img[16 * b] = 1;
        img[16 * b + 1..16 * b + 6].copy_from_slice(b"CD001");
        let root = record(&[0], 18, BLOCK as u32, true);
        img[16 * b + 156..16 * b + 156 + root.len()].copy_from_slice(&root);
        let mut dir = record(&[0], 18, 2048, true);
        dir.extend(record(&[1], 18, 2048, true));
        dir.extend(record(b"BOOT", 19, 2048, true));
        img[18 * b..18 * b + dir.len()].copy_from_slice(&dir);
        let mut boot = record(&[0], 19, 2048, true);
        boot.extend(record(b"GRUB", 30, 2048, true));
        boot.extend(record(b"SITE.IMG;1", 20, 100, false));
        img[19 * b..19 * b + boot.len()].copy_from_slice(&boot);
        let mut c = Cursor::new(img);
        assert_eq!(
            find_file(&mut c, "/boot/site.img").unwrap(),
            (20 * BLOCK, 100)
        );
        assert!(find_file(&mut c, "/boot/none.img").is_err());
        assert!(find_file(&mut c, "/boot").is_err());
    }
}
