//! ext2/3/4: the block bitmaps, plus every group's own metadata (superblock and descriptor
//! copies, reserved GDT blocks, bitmaps, inode table) whatever the bitmaps say.
//!
//! Superblock at byte 1024 (little-endian): `0x04` blocks (lo), `0x14` first data block,
//! `0x18` log2(block size) − 10, `0x1C` log2(cluster size) − 10, `0x20` blocks per group,
//! `0x24` clusters per group, `0x28` inodes per group, `0x38` magic 0xEF53, `0x3A` state,
//! `0x4C` revision, `0x58` inode size, `0x5C`/`0x60`/`0x64` compat/incompat/ro_compat
//! features, `0xCE` reserved GDT blocks, `0xFE` descriptor size, `0x104` first meta_bg,
//! `0x150` blocks (hi), `0x24C` the two sparse_super2 backup groups.
//! Group descriptor (32 or `desc_size` bytes): `0x00` block bitmap, `0x04` inode bitmap,
//! `0x08` inode table (lo halves; hi halves at `0x20`, `0x24`, `0x28` with 64bit), `0x12`
//! flags (BLOCK_UNINIT = 2: no bitmap on disk, only the group's metadata is in use).
//! Descriptor blocks follow the superblock, or with meta_bg from group `first_meta_bg × per
//! block` on, one at the start of each meta group (after its superblock copy).

use super::{read, why, Out, Skip};
use crate::view::{le16, le32, View};

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
/// Incompatible features that do not change where allocation is recorded: filetype, recover
/// and journal_dev (refused separately), meta_bg, extents, 64bit, mmp, flex_bg, ea_inode,
/// dirdata, csum_seed, largedir, inline_data, encrypt, casefold.
const INCOMPAT_KNOWN: u32 = 0x2
    | 0x4
    | 0x8
    | 0x10
    | 0x40
    | 0x80
    | 0x100
    | 0x200
    | 0x400
    | 0x1000
    | 0x2000
    | 0x4000
    | 0x8000
    | 0x1_0000
    | 0x2_0000;
const RO_SPARSE_SUPER: u32 = 0x1;
const RO_GDT_CSUM: u32 = 0x10;
const RO_BIGALLOC: u32 = 0x200;
const RO_METADATA_CSUM: u32 = 0x400;
/// Read-only features understood: all of e2fsprogs' except has_snapshot (0x80).
const RO_KNOWN: u32 = 0x1
    | 0x2
    | 0x4
    | 0x8
    | 0x10
    | 0x20
    | 0x40
    | 0x100
    | 0x200
    | 0x400
    | 0x800
    | 0x1000
    | 0x2000
    | 0x4000
    | 0x8000
    | 0x1_0000;
const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;
const BG_BLOCK_UNINIT: u16 = 0x2;
/// Groups handled at most (512 TiB at 4 KiB blocks): bounds the work a superblock can ask for.
const MAX_GROUPS: u64 = 1 << 22;

/// The geometry the bitmaps are read with, checked against the view.
struct Geometry {
    bs: u64,
    /// Bytes per bitmap bit (the cluster size).
    cluster: u64,
    blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    clusters_per_group: u64,
    clusters: u64,
    groups: u64,
    inode_table_blocks: u64,
    desc_size: u64,
    per_block: u64,
    gdt_blocks: u64,
    reserved_gdt: u64,
    meta_bg: Option<u64>,
    sparse_super: bool,
    backup_groups: Option<[u64; 2]>,
    uninit_allowed: bool,
    is64: bool,
}

/// Mark what the filesystem on `view` uses; returns its size in bytes.
pub(super) fn used(view: &View, out: &mut Out) -> Result<u64, Skip> {
    let sb = read(view, 1024, 1024, "superblock")?;
    let g = geometry(&sb, view.len())?;
    out.used(0, 2048); // boot block and superblock (1 KiB blocks put them in no group)
    let mut desc_block = Vec::new();
    let mut loaded = u64::MAX;
    for group in 0..g.groups {
        let n = group / g.per_block;
        if n != loaded {
            let at = g.desc_location(n)?;
            desc_block = read(view, at * g.bs, g.bs as usize, "group descriptor block")?;
            loaded = n;
        }
        let d = &desc_block[((group % g.per_block) * g.desc_size) as usize..];
        one_group(view, out, &g, group, d)?;
    }
    Ok(g.blocks * g.bs)
}

fn geometry(sb: &[u8], view_len: u64) -> Result<Geometry, Skip> {
    let (compat, incompat, ro) = (le32(sb, 0x5c), le32(sb, 0x60), le32(sb, 0x64));
    let state = le16(sb, 0x3a);
    if incompat & INCOMPAT_RECOVER != 0 {
        return why("the journal needs recovery (mounted, or not cleanly unmounted): its bitmaps may lag the journal");
    }
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return why("an external journal device");
    }
    if compat & COMPAT_HAS_JOURNAL == 0 && state & STATE_VALID == 0 {
        return why("not cleanly unmounted and without a journal");
    }
    if state & STATE_ERROR != 0 {
        return why("the filesystem records errors");
    }
    if incompat & !INCOMPAT_KNOWN != 0 || ro & !RO_KNOWN != 0 {
        return why(format!(
            "unknown features (incompat {incompat:#x}, ro_compat {ro:#x})"
        ));
    }
    let log_block = le32(sb, 0x18);
    let log_cluster = if ro & RO_BIGALLOC != 0 {
        le32(sb, 0x1c)
    } else {
        log_block
    };
    if log_block > 6 || log_cluster < log_block || log_cluster > log_block + 16 {
        return why(format!(
            "block size 2^{log_block} KiB, cluster size 2^{log_cluster} KiB"
        ));
    }
    let bs = 1024u64 << log_block;
    let cluster = 1024u64 << log_cluster;
    let ratio = cluster / bs;
    let is64 = incompat & INCOMPAT_64BIT != 0;
    let hi = if is64 { u64::from(le32(sb, 0x150)) } else { 0 };
    let blocks = hi << 32 | u64::from(le32(sb, 0x04));
    let first_data_block = u64::from(le32(sb, 0x14));
    let clusters_per_group = u64::from(le32(sb, 0x24));
    let blocks_per_group = u64::from(le32(sb, 0x20));
    let expected_first = u64::from(bs == 1024 && ratio == 1);
    if first_data_block != expected_first
        || clusters_per_group < 8
        || clusters_per_group > 8 * bs
        || blocks_per_group != clusters_per_group * ratio
    {
        return why(format!(
            "first data block {first_data_block}, {blocks_per_group} blocks and {clusters_per_group} clusters per group"
        ));
    }
    let fs_len = blocks.checked_mul(bs).filter(|&l| l <= view_len);
    if fs_len.is_none() || blocks <= first_data_block {
        return why(format!(
            "{blocks} blocks of {bs} bytes do not fit the {view_len} bytes it is in"
        ));
    }
    let data_blocks = blocks - first_data_block;
    let groups = data_blocks.div_ceil(blocks_per_group);
    if groups > MAX_GROUPS {
        return why(format!("{groups} block groups"));
    }
    let inode_size = if le32(sb, 0x4c) == 0 {
        128
    } else {
        u64::from(le16(sb, 0x58))
    };
    if !inode_size.is_power_of_two() || !(128..=bs).contains(&inode_size) {
        return why(format!("inode size {inode_size}"));
    }
    let inode_table_blocks = (u64::from(le32(sb, 0x28)) * inode_size).div_ceil(bs);
    let desc_size = if is64 { u64::from(le16(sb, 0xfe)) } else { 32 };
    if !desc_size.is_power_of_two() || !(32..=1024).contains(&desc_size) || (is64 && desc_size < 64)
    {
        return why(format!("group descriptor size {desc_size}"));
    }
    let per_block = bs / desc_size;
    let gdt_blocks = groups.div_ceil(per_block);
    let reserved_gdt = u64::from(le16(sb, 0xce));
    if reserved_gdt > bs / 4 {
        return why(format!("{reserved_gdt} reserved GDT blocks"));
    }
    let meta_bg = (incompat & INCOMPAT_META_BG != 0).then(|| u64::from(le32(sb, 0x104)));
    if meta_bg.is_some_and(|m| m > gdt_blocks) {
        return why("first_meta_bg is past the last descriptor block");
    }
    Ok(Geometry {
        bs,
        cluster,
        blocks,
        first_data_block,
        blocks_per_group,
        clusters_per_group,
        clusters: data_blocks.div_ceil(ratio),
        groups,
        inode_table_blocks,
        desc_size,
        per_block,
        gdt_blocks,
        reserved_gdt,
        meta_bg,
        sparse_super: ro & RO_SPARSE_SUPER != 0,
        backup_groups: (compat & COMPAT_SPARSE_SUPER2 != 0)
            .then(|| [u64::from(le32(sb, 0x24c)), u64::from(le32(sb, 0x250))]),
        uninit_allowed: ro & (RO_GDT_CSUM | RO_METADATA_CSUM) != 0,
        is64,
    })
}

impl Geometry {
    fn first_block(&self, group: u64) -> u64 {
        group * self.blocks_per_group + self.first_data_block
    }

    /// The kernel's ext4_bg_has_super.
    fn has_super(&self, group: u64) -> bool {
        if group == 0 {
            return true;
        }
        if let Some([a, b]) = self.backup_groups {
            return group == a || group == b;
        }
        if group <= 1 || !self.sparse_super {
            return true;
        }
        [3u64, 5, 7].iter().any(|&p| {
            let mut n = p;
            while n < group {
                n *= p;
            }
            n == group
        })
    }

    /// Block of descriptor block `n` (the kernel's descriptor_loc).
    fn desc_location(&self, n: u64) -> Result<u64, Skip> {
        let sb_block = 1024 / self.bs; // 1 with 1 KiB blocks, else 0
        let at = match self.meta_bg {
            Some(first) if n >= first => {
                let group = n * self.per_block;
                self.first_block(group) + u64::from(self.has_super(group))
            }
            _ => sb_block + n + 1,
        };
        if at >= self.blocks {
            return why(format!(
                "descriptor block {n} at block {at} is past the end"
            ));
        }
        Ok(at)
    }

    /// Blocks at the start of `group` holding superblock and descriptor copies and reserved GDT
    /// blocks (the kernel's ext4_num_base_meta_clusters, in blocks).
    fn base_meta_blocks(&self, group: u64) -> u64 {
        let sup = u64::from(self.has_super(group));
        match self.meta_bg {
            Some(first) if group >= first * self.per_block => {
                let i = group % self.per_block;
                sup + u64::from(i == 0 || i == 1 || i == self.per_block - 1)
            }
            meta => sup * (1 + meta.unwrap_or(self.gdt_blocks) + self.reserved_gdt),
        }
    }
}

fn one_group(view: &View, out: &mut Out, g: &Geometry, group: u64, d: &[u8]) -> Result<(), Skip> {
    let wide = |at: usize| {
        let hi = if g.is64 {
            u64::from(le32(d, at + 0x20))
        } else {
            0
        };
        hi << 32 | u64::from(le32(d, at))
    };
    let (block_bitmap, inode_bitmap, inode_table) = (wide(0), wide(4), wide(8));
    let flags = le16(d, 0x12);
    for (what, at, n) in [
        ("block bitmap", block_bitmap, 1),
        ("inode bitmap", inode_bitmap, 1),
        ("inode table", inode_table, g.inode_table_blocks),
    ] {
        if at < g.first_data_block || at.checked_add(n).is_none_or(|e| e > g.blocks) {
            return why(format!(
                "group {group}'s {what} at block {at} lies outside the filesystem"
            ));
        }
        out.used(at * g.bs, n * g.bs);
    }
    let first = g.first_block(group);
    let meta = g.base_meta_blocks(group).min(g.blocks - first);
    out.used(first * g.bs, meta * g.bs);
    if g.uninit_allowed && flags & BG_BLOCK_UNINIT != 0 {
        return Ok(());
    }
    let bits = g
        .clusters_per_group
        .min(g.clusters - group * g.clusters_per_group);
    let bitmap = read(
        view,
        block_bitmap * g.bs,
        bits.div_ceil(8) as usize,
        "block bitmap",
    )?;
    let base = g.first_data_block * g.bs + group * g.clusters_per_group * g.cluster;
    for (start, len) in runs(&bitmap, bits) {
        out.used(base + start * g.cluster, len * g.cluster);
    }
    Ok(())
}

/// Runs `(first bit, count)` of set bits among the first `bits` of `bitmap` (LSB first).
pub(super) fn runs(bitmap: &[u8], bits: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut i = 0u64;
    std::iter::from_fn(move || {
        let bit = |i: u64| bitmap[(i / 8) as usize] >> (i % 8) & 1 == 1;
        while i < bits && !bit(i) {
            if i & 7 == 0 && bitmap[(i / 8) as usize] == 0 {
                i += 8;
            } else {
                i += 1;
            }
        }
        if i >= bits {
            return None;
        }
        let start = i;
        while i < bits && bit(i) {
            if i & 7 == 0 && bitmap[(i / 8) as usize] == 0xff && i + 8 <= bits {
                i += 8;
            } else {
                i += 1;
            }
        }
        Some((start, i - start))
    })
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_of_set_bits() {
        let r: Vec<_> = runs(&[0b0000_0110, 0xff, 0x01, 0x00, 0x80], 40).collect();
        assert_eq!(r, [(1, 2), (8, 9), (39, 1)]);
        let r: Vec<_> = runs(&[0xff, 0xff], 12).collect();
        assert_eq!(r, [(0, 12)]);
        assert_eq!(runs(&[0; 4], 32).count(), 0);
        assert_eq!(runs(&[0xff], 0).count(), 0);
    }
}
