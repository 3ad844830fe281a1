//! ntfs: the clusters set in $Bitmap (the unnamed $DATA of MFT record 6, read through its
//! runlist), when the volume is not marked dirty ($VOLUME_INFORMATION of record 3) and its
//! $LogFile (record 2) is empty or its newest restart area says clean.
//!
//! Boot sector: `0x0B` bytes per sector, `0x0D` sectors per cluster (values above 0x80 mean
//! 2^(256 − n)), `0x28` sectors, `0x30` MFT cluster, `0x40` clusters per MFT record (negative:
//! 2^−n bytes). MFT record: "FILE", update sequence array, `0x14` first attribute. Attribute:
//! `0` type, `4` length, `8` non-resident, `9` name length; resident value length at `0x10`,
//! offset at `0x14`; non-resident start VCN `0x10`, runlist offset `0x20`, data size `0x30`.
//! Runlist: a header byte (low nibble: length bytes, high nibble: offset bytes), the run length,
//! the LCN offset from the previous run (signed, absent = sparse); a 0 header ends it.

use super::ext::runs;
use super::{read, why, Out, Skip};
use crate::content::{is_ntfs_boot, ntfs_fixup};
use crate::view::{le16, le32, le64, View};

const DATA: u32 = 0x80;
const VOLUME_INFORMATION: u32 = 0x70;
const END: u32 = 0xffff_ffff;
const VOLUME_IS_DIRTY: u16 = 0x1;
const RESTART_VOLUME_IS_CLEAN: u16 = 0x2;
const LOGFILE_NO_CLIENT: u16 = 0xffff;
/// Runs followed at most in one runlist.
const MAX_RUNS: usize = 1 << 16;
/// Bitmap bytes read at a time.
const PIECE: u64 = 1 << 20;

struct Volume {
    cluster: u64,
    clusters: u64,
    mft: u64,
    record: u64,
}

pub(super) fn used(view: &View, out: &mut Out) -> Result<u64, Skip> {
    let boot = read(view, 0, 512, "boot sector")?;
    let v = volume(&boot, view.len())?;
    let volume_rec = record(view, &v, 3)?;
    let info = attribute(&volume_rec, VOLUME_INFORMATION)
        .ok_or_else(|| Skip::Why("$Volume has no $VOLUME_INFORMATION".into()))?;
    let value = resident_value(&volume_rec, info).filter(|v| v.len() >= 12);
    match value {
        Some(value) if le16(value, 10) & VOLUME_IS_DIRTY == 0 => {}
        Some(_) => return why("the volume is marked dirty"),
        None => return why("$VOLUME_INFORMATION is unreadable"),
    }
    logfile_is_clean(view, &v)?;
    let bitmap_rec = record(view, &v, 6)?;
    let data = attribute(&bitmap_rec, DATA)
        .ok_or_else(|| Skip::Why("$Bitmap has no $DATA in its record".into()))?;
    let needed = v.clusters.div_ceil(8);
    if bitmap_rec[data + 8] == 0 {
        let value = resident_value(&bitmap_rec, data).filter(|b| b.len() as u64 >= needed);
        let Some(value) = value else {
            return why("the resident $Bitmap is too short");
        };
        mark(out, &v, value, 0);
        return Ok(v.clusters * v.cluster);
    }
    let mut bit = 0u64;
    for (lcn, len) in runlist(&bitmap_rec, data, &v)? {
        let mut at = 0;
        let bytes = (len * v.cluster).min(needed - bit / 8);
        while at < bytes {
            let n = PIECE.min(bytes - at);
            let piece = read(view, lcn * v.cluster + at, n as usize, "$Bitmap")?;
            mark(out, &v, &piece, bit);
            bit += n * 8;
            at += n;
        }
        if bit / 8 >= needed {
            return Ok(v.clusters * v.cluster);
        }
    }
    why("$Bitmap's runs are shorter than the volume needs")
}

fn volume(b: &[u8], view_len: u64) -> Result<Volume, Skip> {
    if !is_ntfs_boot(b) {
        return why("the boot sector no longer parses");
    }
    let bps = u64::from(le16(b, 0x0b));
    let spc = match b[0x0d] {
        n @ 0..=0x80 => u64::from(n),
        n => 1u64.checked_shl(256 - u32::from(n)).unwrap_or(0),
    };
    // Saturating: 2^(256-n) sectors per cluster reach 2^63; refused just below.
    let cluster = bps.saturating_mul(spc);
    if !cluster.is_power_of_two() || cluster > 2 << 20 {
        return why(format!("cluster size {cluster}"));
    }
    let clusters = le64(b, 0x28) / spc;
    if clusters.checked_mul(cluster).is_none_or(|l| l > view_len) {
        return why(format!(
            "{clusters} clusters of {cluster} bytes do not fit the {view_len} bytes it is in"
        ));
    }
    let record = match b[0x40] as i8 {
        n @ 1.. => cluster * n as u64,
        n => 1u64.checked_shl(u32::from(n.unsigned_abs())).unwrap_or(0),
    };
    if !(512..=65536).contains(&record) || !record.is_power_of_two() {
        return why(format!("MFT record size {record}"));
    }
    let mft = le64(b, 0x30);
    if mft >= clusters {
        return why("the MFT lies outside the volume");
    }
    Ok(Volume {
        cluster,
        clusters,
        mft,
        record,
    })
}

/// MFT record `n` (one of the first records, which lie in the MFT's first run), fixed up.
fn record(view: &View, v: &Volume, n: u64) -> Result<Vec<u8>, Skip> {
    let mut rec = read(
        view,
        v.mft * v.cluster + n * v.record,
        v.record as usize,
        "MFT record",
    )?;
    if &rec[..4] != b"FILE" || !ntfs_fixup(&mut rec) || le16(&rec, 0x16) & 1 == 0 {
        return why(format!("MFT record {n} is not a valid record in use"));
    }
    Ok(rec)
}

/// Offset of the first unnamed attribute of `kind` in `rec`.
fn attribute(rec: &[u8], kind: u32) -> Option<usize> {
    let mut at = usize::from(le16(rec, 0x14));
    while at + 24 <= rec.len() {
        let (k, len) = (le32(rec, at), le32(rec, at + 4) as usize);
        if k == END || len < 24 || at + len > rec.len() {
            return None;
        }
        if k == kind && rec[at + 9] == 0 {
            return Some(at);
        }
        at += len;
    }
    None
}

fn resident_value(rec: &[u8], at: usize) -> Option<&[u8]> {
    let len = le32(rec, at + 4) as usize;
    let (vlen, voff) = (
        le32(rec, at + 0x10) as usize,
        usize::from(le16(rec, at + 0x14)),
    );
    (rec[at + 8] == 0 && voff.checked_add(vlen)? <= len).then(|| &rec[at + voff..at + voff + vlen])
}

/// The runs (LCN, clusters) of the non-resident attribute at `at`, starting at VCN 0, without
/// sparse runs, inside the volume.
fn runlist(rec: &[u8], at: usize, v: &Volume) -> Result<Vec<(u64, u64)>, Skip> {
    let len = le32(rec, at + 4) as usize;
    if len < 0x40 || le64(rec, at + 0x10) != 0 {
        return why("a non-resident attribute that does not start at VCN 0");
    }
    let mut p = at + usize::from(le16(rec, at + 0x20));
    let end = at + len;
    let mut lcn: i64 = 0;
    let mut out = Vec::new();
    while p < end && rec[p] != 0 {
        let (len_bytes, off_bytes) = (usize::from(rec[p] & 0xf), usize::from(rec[p] >> 4));
        if len_bytes == 0
            || len_bytes > 8
            || off_bytes > 8
            || p + 1 + len_bytes + off_bytes > end
            || out.len() == MAX_RUNS
        {
            return why("a malformed runlist");
        }
        let field = |from: usize, n: usize, signed: bool| {
            let mut x = [0u8; 8];
            x[..n].copy_from_slice(&rec[from..from + n]);
            if signed && n > 0 && n < 8 && rec[from + n - 1] & 0x80 != 0 {
                x[n..].fill(0xff);
            }
            i64::from_le_bytes(x)
        };
        let run = field(p + 1, len_bytes, false) as u64;
        if off_bytes == 0 {
            return why("a sparse run in $Bitmap");
        }
        lcn = lcn
            .checked_add(field(p + 1 + len_bytes, off_bytes, true))
            .unwrap_or(-1);
        if lcn < 0 || (lcn as u64).checked_add(run).is_none_or(|e| e > v.clusters) {
            return why("a run outside the volume");
        }
        out.push((lcn as u64, run));
        p += 1 + len_bytes + off_bytes;
    }
    Ok(out)
}

/// Mark the clusters set in `bitmap`, whose first bit is cluster `first`.
fn mark(out: &mut Out, v: &Volume, bitmap: &[u8], first: u64) {
    let bits = (bitmap.len() as u64 * 8).min(v.clusters.saturating_sub(first));
    for (start, n) in runs(bitmap, bits) {
        out.used((first + start) * v.cluster, n * v.cluster);
    }
}

/// $LogFile is empty (all 0xff, as mkntfs leaves it) or the restart page with the newest LSN
/// has no client in use or the clean flag (ntfs-3g's ntfs_is_logfile_clean).
fn logfile_is_clean(view: &View, v: &Volume) -> Result<(), Skip> {
    let rec = record(view, v, 2)?;
    let data = attribute(&rec, DATA).filter(|&a| rec[a + 8] == 1);
    let Some(data) = data else {
        return why("$LogFile has no non-resident $DATA");
    };
    let Some(&(lcn, n)) = runlist(&rec, data, v)?.first() else {
        return why("$LogFile is empty");
    };
    let page = 4096u64;
    if n * v.cluster < 2 * page {
        return why("$LogFile is too short");
    }
    let mut newest: Option<(u64, bool)> = None;
    for i in 0..2 {
        let mut p = read(view, lcn * v.cluster + i * page, page as usize, "$LogFile")?;
        if p.iter().all(|&b| b == 0xff) {
            continue;
        }
        if &p[..4] != b"RSTR" || !ntfs_fixup(&mut p) {
            return why("$LogFile's restart page is not clean (or not understood)");
        }
        let ra = usize::from(le16(&p, 0x18));
        if ra + 16 > p.len() {
            return why("$LogFile's restart area lies outside its page");
        }
        let lsn = le64(&p, ra);
        let clean = le16(&p, ra + 12) == LOGFILE_NO_CLIENT
            || le16(&p, ra + 14) & RESTART_VOLUME_IS_CLEAN != 0;
        if newest.is_none_or(|(l, _)| lsn > l) {
            newest = Some((lsn, clean));
        }
    }
    match newest {
        Some((_, false)) => {
            why("$LogFile is not clean (Windows was hibernated or not shut down cleanly)")
        }
        _ => Ok(()),
    }
}
