//! xfs: everything but the free extents recorded in each AG's by-block-number free-space
//! B+tree (bnobt), and only when the internal log ends in an unmount record (a dirty log may
//! hold allocations the btrees do not show yet).
//!
//! Superblock (big-endian) at 0: `4` block size, `8` data blocks, `48` log start (an fsblock
//! number: AG << agblklog | block in AG), `84` blocks per AG, `88` AG count, `96` log blocks,
//! `100` version (low nibble 4 or 5), `102` sector size, `124` agblklog, `216` incompat
//! features, `220` log incompat features. AGF at sector 1 of each AG: "XAGF", `8` seqno,
//! `12` length, `16` bnobt root, `28` bnobt levels, `52` free blocks. Short-form btree block:
//! magic ("ABTB", v5 "AB3B"), `4` level, `6` records, header 16 bytes (v5: 56); leaf records
//! and node keys are (start, count) pairs, node pointers follow `maxrecs` keys.
//! Log: 512-byte basic blocks whose first word is the cycle number, except record headers
//! (0xFEEDBABE, cycle at 4, `12` length, `40` op count, `8` version, `320` size).

use super::{read, why, Out, Skip};
use crate::view::{be16, be32, be64, View};

const AGF_MAGIC: &[u8; 4] = b"XAGF";
/// Incompatible v5 features understood: ftype, sparse inodes, meta uuid, bigtime, nrext64,
/// exchange-range, parent pointers. Anything else (needsrepair among them) is used in full.
const INCOMPAT_KNOWN: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x20 | 0x40 | 0x80;
/// The deepest AG btree xfs builds.
const MAX_LEVELS: u32 = 9;
const LOG_MAGIC: u32 = 0xfeed_babe;
const BB: u64 = 512;
/// An internal log larger than this (xfs's own maximum) is not scanned.
const MAX_LOG: u64 = 2 << 30;
/// Log bytes read at a time.
const LOG_PIECE: u64 = 1 << 20;
const XLOG_UNMOUNT_TRANS: u8 = 0x20;

struct Sb {
    bs: u64,
    ag_blocks: u64,
    ag_count: u64,
    blocks: u64,
    sect: u64,
    v5: bool,
}

pub(super) fn used(view: &View, out: &mut Out) -> Result<u64, Skip> {
    let raw = read(view, 0, 512, "superblock")?;
    let sb = superblock(&raw, view.len())?;
    log_is_clean(view, &raw, &sb)?;
    for ag in 0..sb.ag_count {
        one_ag(view, out, &sb, ag)?;
    }
    Ok(sb.blocks * sb.bs)
}

fn superblock(s: &[u8], view_len: u64) -> Result<Sb, Skip> {
    let bs = u64::from(be32(s, 4));
    let blocks = be64(s, 8);
    let ag_blocks = u64::from(be32(s, 84));
    let ag_count = u64::from(be32(s, 88));
    let version = be16(s, 100) & 0xf;
    let sect = u64::from(be16(s, 102));
    if &s[..4] != b"XFSB" || !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
        return why("not an xfs superblock");
    }
    if !sect.is_power_of_two() || !(512..=bs).contains(&sect) || !(4..=5).contains(&version) {
        return why(format!("sector size {sect}, version {version}"));
    }
    if ag_blocks < 64 || ag_count == 0 || blocks.div_ceil(ag_blocks) != ag_count {
        return why(format!(
            "{ag_count} AGs of {ag_blocks} blocks for {blocks} blocks"
        ));
    }
    if blocks.checked_mul(bs).is_none_or(|l| l > view_len) {
        return why(format!(
            "{blocks} blocks of {bs} bytes do not fit the {view_len} bytes it is in"
        ));
    }
    let v5 = version == 5;
    if v5 && be32(s, 216) & !INCOMPAT_KNOWN != 0 {
        return why(format!("unknown incompatible features {:#x}", be32(s, 216)));
    }
    Ok(Sb {
        bs,
        ag_blocks,
        ag_count,
        blocks,
        sect,
        v5,
    })
}

/// The internal log ends in an unmount record, as xfs's own log recovery decides
/// (xlog_find_head, xlog_check_unmount_rec): the head is where the cycle number drops, the
/// record before it has one operation, carries the unmount flag and ends at the head.
fn log_is_clean(view: &View, s: &[u8], sb: &Sb) -> Result<(), Skip> {
    if sb.v5 && be32(s, 220) != 0 {
        return why("the log holds incompatible items (mounted, or not cleanly unmounted)");
    }
    let start = be64(s, 48);
    let agblklog = u32::from(s[124]);
    if start == 0 || agblklog > 32 {
        return why("an external log (its state cannot be checked)");
    }
    let (ag, block) = (start >> agblklog, start & ((1u64 << agblklog) - 1));
    let log_len = u64::from(be32(s, 96)) * sb.bs;
    let offset = (ag * sb.ag_blocks + block).checked_mul(sb.bs);
    let Some(offset) = offset.filter(|&o| {
        ag < sb.ag_count && log_len > 0 && log_len <= MAX_LOG && o + log_len <= sb.blocks * sb.bs
    }) else {
        return why("the internal log lies outside the filesystem");
    };
    let n = log_len / BB;
    let mut cycles = Vec::with_capacity(n as usize);
    let mut at = 0;
    while at < log_len {
        let len = LOG_PIECE.min(log_len - at);
        let piece = read(view, offset + at, len as usize, "log")?;
        cycles.extend(piece.chunks_exact(BB as usize).map(|b| match be32(b, 0) {
            LOG_MAGIC => (be32(b, 4), true),
            c => (c, false),
        }));
        at += len;
    }
    let dirty =
        || why("the log does not end in an unmount record (mounted, or not cleanly unmounted)");
    // Blocks 0..head carry cycle c, head..n cycle c − 1.
    let c = cycles[0].0;
    let head = cycles
        .iter()
        .position(|&(x, _)| x != c)
        .unwrap_or(cycles.len());
    if c == 0 || cycles[head..].iter().any(|&(x, _)| x != c - 1) {
        return dirty();
    }
    let n = n as usize;
    let Some(rec) = (1..=n)
        .map(|back| (head + n - back) % n)
        .find(|&i| cycles[i].1)
    else {
        return dirty();
    };
    let h = read(
        view,
        offset + rec as u64 * BB,
        BB as usize,
        "log record header",
    )?;
    let hblks = if be32(&h, 8) & 2 != 0 {
        u64::from(be32(&h, 320)).div_ceil(32768).max(1)
    } else {
        1
    };
    let data_bbs = u64::from(be32(&h, 12)).div_ceil(BB);
    let ends_at_head = (rec as u64 + hblks + data_bbs) % n as u64 == head as u64 % n as u64;
    if !ends_at_head || be32(&h, 40) != 1 {
        return dirty();
    }
    let op = read(
        view,
        offset + (rec as u64 + hblks) % n as u64 * BB,
        BB as usize,
        "log operation",
    )?;
    if op[9] & XLOG_UNMOUNT_TRANS == 0 {
        return dirty();
    }
    Ok(())
}

/// Everything in AG `ag` but the free extents of its bnobt.
fn one_ag(view: &View, out: &mut Out, sb: &Sb, ag: u64) -> Result<(), Skip> {
    let ag_start = ag * sb.ag_blocks * sb.bs;
    let agf = read(view, ag_start + sb.sect, 512, "AGF")?;
    let length = u64::from(be32(&agf, 12));
    let expected = sb.ag_blocks.min(sb.blocks - ag * sb.ag_blocks);
    if &agf[..4] != AGF_MAGIC || u64::from(be32(&agf, 8)) != ag || length != expected {
        return why(format!(
            "AG {ag}: bad AGF (magic, seqno or length {length})"
        ));
    }
    let (root, levels, free_blocks) = (be32(&agf, 16), be32(&agf, 28), u64::from(be32(&agf, 52)));
    if !(1..=MAX_LEVELS).contains(&levels) {
        return why(format!("AG {ag}: free-space btree of {levels} levels"));
    }
    // Blocks between free extents are used; the caller uses the whole view if anything fails.
    let mut at = 0;
    let mut total = 0;
    free_extents(view, sb, ag_start, length, root, levels, &mut |start, n| {
        out.used(ag_start + at * sb.bs, (start - at) * sb.bs);
        at = start + n;
        total += n;
    })
    .map_err(|e| match e {
        Skip::Why(w) => Skip::Why(format!("AG {ag}: {w}")),
        read_error => read_error,
    })?;
    out.used(ag_start + at * sb.bs, (length - at) * sb.bs);
    if total != free_blocks {
        return why(format!(
            "AG {ag}: the free-space btree holds {total} blocks, the AGF says {free_blocks}"
        ));
    }
    Ok(())
}

/// Call `on_free(start, count)` for the bnobt's records in key order, checked sorted, disjoint
/// and inside the AG.
fn free_extents(
    view: &View,
    sb: &Sb,
    ag_start: u64,
    length: u64,
    root: u32,
    levels: u32,
    on_free: &mut dyn FnMut(u64, u64),
) -> Result<(), Skip> {
    let (magic, hdr): (&[u8; 4], usize) = if sb.v5 { (b"AB3B", 56) } else { (b"ABTB", 16) };
    let bs = sb.bs as usize;
    let leaf_max = (bs - hdr) / 8;
    let node_max = (bs - hdr) / 12;
    let mut prev_end = 0;
    let mut visited = 0u64;
    // Depth-first, children pushed in reverse so leaves come out in key order.
    let mut stack = vec![(root, levels - 1)];
    while let Some((block, level)) = stack.pop() {
        visited += 1;
        if u64::from(block) >= length || visited > length {
            return why(format!(
                "btree block {block} is outside the AG or visited twice"
            ));
        }
        let b = read(
            view,
            ag_start + u64::from(block) * sb.bs,
            bs,
            "free-space btree block",
        )?;
        let records = usize::from(be16(&b, 6));
        if &b[..4] != magic
            || u32::from(be16(&b, 4)) != level
            || records > if level == 0 { leaf_max } else { node_max }
        {
            return why(format!(
                "btree block {block}: bad magic, level or record count"
            ));
        }
        if level > 0 {
            for i in (0..records).rev() {
                stack.push((be32(&b, hdr + node_max * 8 + i * 4), level - 1));
            }
            continue;
        }
        for i in 0..records {
            let (start, n) = (
                u64::from(be32(&b, hdr + i * 8)),
                u64::from(be32(&b, hdr + i * 8 + 4)),
            );
            if n == 0 || start < prev_end || start + n > length {
                return why(format!(
                    "free extent {start}+{n} is out of order or outside the AG"
                ));
            }
            on_free(start, n);
            prev_end = start + n;
        }
    }
    Ok(())
}
