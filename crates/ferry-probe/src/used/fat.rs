//! vfat: the reserved sectors, the FATs and (FAT12/16) the root directory, plus each cluster
//! whose entry is not 0 in any FAT copy (allocated, end of chain, bad or reserved all count).
//! Cluster `c` (2..clusters+2) lies at `data_start + (c − 2) × cluster size`.

use super::{read, why, Out, Skip};
use crate::content::fat_geometry;
use crate::view::{le16, le32, View};

/// FAT bytes read at a time (a multiple of 3 and 4, so FAT12 pairs and FAT32 entries do not
/// straddle pieces).
const PIECE: u64 = 3 << 18;

pub(super) fn used(view: &View, out: &mut Out) -> Result<u64, Skip> {
    let boot = read(view, 0, 512, "boot sector")?;
    let Some(f) = fat_geometry(&boot) else {
        return why("the boot sector no longer parses");
    };
    let bps = f.bytes_per_sector;
    let fs_len = f.total_sectors * bps;
    let fat_start = f.reserved * bps;
    let fat_len = f.fat_sectors * bps;
    let root = (f.root_entries * 32).div_ceil(bps) * bps;
    let data_start = fat_start + f.fat_count * fat_len + root;
    let cluster = f.sectors_per_cluster * bps;
    if fs_len > view.len() {
        return why(format!(
            "{fs_len} bytes do not fit the {} bytes it is in",
            view.len()
        ));
    }
    let entries = f.clusters + 2;
    if entries * u64::from(f.bits) > fat_len * 8 {
        return why(format!(
            "{} clusters do not fit a FAT of {fat_len} bytes",
            f.clusters
        ));
    }
    out.used(0, data_start);
    let needed = (entries * u64::from(f.bits)).div_ceil(8);
    let mut at = 0;
    while at < needed {
        let len = PIECE.min(needed - at);
        let mut merged = vec![0u8; len as usize];
        for copy in 0..f.fat_count {
            let piece = read(view, fat_start + copy * fat_len + at, len as usize, "FAT")?;
            merged.iter_mut().zip(&piece).for_each(|(m, p)| *m |= p);
        }
        let first = at * 8 / u64::from(f.bits);
        let mark = |c: u64, out: &mut Out| {
            if c >= 2 && c < entries {
                out.used(data_start + (c - 2) * cluster, cluster);
            }
        };
        match f.bits {
            12 => {
                for (i, pair) in merged.chunks(3).enumerate() {
                    let v = u32::from(pair[0])
                        | u32::from(*pair.get(1).unwrap_or(&0)) << 8
                        | u32::from(*pair.get(2).unwrap_or(&0)) << 16;
                    let c = first + 2 * i as u64;
                    if v & 0xfff != 0 {
                        mark(c, out);
                    }
                    if v >> 12 != 0 {
                        mark(c + 1, out);
                    }
                }
            }
            16 => merged.chunks_exact(2).enumerate().for_each(|(i, e)| {
                if le16(e, 0) != 0 {
                    mark(first + i as u64, out);
                }
            }),
            _ => merged.chunks_exact(4).enumerate().for_each(|(i, e)| {
                if le32(e, 0) & 0x0fff_ffff != 0 {
                    mark(first + i as u64, out);
                }
            }),
        }
        at += len;
    }
    // The end of the data area that is no whole cluster stays used.
    out.used(
        data_start + f.clusters * cluster,
        fs_len.saturating_sub(data_start + f.clusters * cluster),
    );
    Ok(fs_len)
}
