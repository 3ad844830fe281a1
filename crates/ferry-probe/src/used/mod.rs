//! Which bytes of a disk hold anything some reader needs: the used map a backup consults to
//! leave out chunks no filesystem uses (index entry "unused", restored as zeros).
//!
//! Rule: a byte is unused only when a structure we parsed says so; everything else is used.
//! - Partition tables: LBA 0, everything before GPT's first usable LBA and after its last
//!   usable LBA (headers, entry arrays), the non-zero part of the gap before the first partition
//!   ([`BootArea::gap`]: GRUB's core image), a gap larger than the probe scanned, every EBR.
//!   Space outside all partitions and those structures is unused.
//! - Contents, per partition, LV or whole disk ([`ContentKind`]): ext2/3/4 block bitmaps plus
//!   every group's metadata; xfs: all but the free extents of each AG's by-block free-space
//!   B+tree; vfat: the reserved area, FATs and root directory plus clusters whose FAT entry is
//!   not 0; ntfs: clusters set in $Bitmap; swap: the header page; LVM2 PV: everything before
//!   the first extent, the metadata areas, the extents allocated to LVs (an LV holding a parsed
//!   filesystem contributes only that filesystem's used bytes) and the tail after the last
//!   extent. Bytes of a partition past the end of its filesystem stay used (an md superblock
//!   lives there).
//! - Anything unrecognised, unparsable or inconsistent is used in full, with a line in
//!   [`UsedMap::notes`] saying what and why. Only read errors are errors.
//!
//! Everything read is hostile: offsets are checked against the filesystem and the disk, loops
//! are bounded, and the map stays small: ranges are widened to [`GRANULE`] (the smallest chunk
//! size, so chunk-sized questions are answered exactly) and coarsened further past
//! [`MAX_RANGES`] ranges.
//!
//! The map describes the disk when it was read: a filesystem that is mounted and changing, or
//! whose journal holds changes not yet written to its bitmaps, is used in full (ext3/4 with
//! `needs_recovery`, ext2 not cleanly unmounted, xfs whose log does not end in an unmount
//! record, ntfs marked dirty). Back up a frozen filesystem or a snapshot to leave space out.

use std::ops::Range;

use ferry_format::layout::{
    BootArea, Content, ContentKind, DiskLayout, MbrPartitionKind, PartitionTable,
};
use ferry_image::DiskSource;

use crate::view::View;
use crate::ProbeError;

mod ext;
mod fat;
mod lvm;
mod ntfs;
mod xfs;

/// Used ranges are widened to multiples of this (the smallest chunk size, 64 KiB).
pub const GRANULE: u64 = 64 << 10;
/// Past this many ranges the granule doubles (bounds the map to 16 MiB).
pub const MAX_RANGES: usize = 1 << 20;
/// Nesting followed at most: a PV's LVs hold filesystems; a PV inside an LV is used in full.
const MAX_DEPTH: u32 = 1;

/// The byte ranges of a disk that hold data something needs, sorted and merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedMap {
    size: u64,
    ranges: Vec<Range<u64>>,
    /// What was used in full and why (unknown content, a fallback on an inconsistency).
    pub notes: Vec<String>,
}

impl UsedMap {
    /// A map in which every byte of a disk of `size` bytes is used.
    pub fn fully_used(size: u64) -> UsedMap {
        UsedMap {
            size,
            ranges: std::iter::once(0..size).collect(),
            notes: Vec::new(),
        }
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The used ranges: sorted, non-overlapping, non-adjacent, inside the disk.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Total bytes used.
    pub fn used_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// True when some byte of `off..off+len` is used.
    pub fn is_used(&self, off: u64, len: u64) -> bool {
        let end = off.saturating_add(len);
        let i = self.ranges.partition_point(|r| r.end <= off);
        self.ranges.get(i).is_some_and(|r| r.start < end)
    }

    /// True only when no byte of `off..off+len` is used: the chunk need not be read or stored.
    pub fn chunk_unused(&self, off: u64, len: u64) -> bool {
        !self.is_used(off, len)
    }
}

/// Collects used disk ranges; merges as it goes and coarsens past [`MAX_RANGES`].
pub(crate) struct Builder {
    size: u64,
    granule: u64,
    ranges: Vec<Range<u64>>,
    notes: Vec<String>,
}

impl Builder {
    fn new(size: u64) -> Builder {
        Builder {
            size,
            granule: GRANULE,
            ranges: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Mark disk bytes `start..end` used (clipped to the disk).
    pub(crate) fn used(&mut self, start: u64, end: u64) {
        let end = end.min(self.size);
        if start >= end {
            return;
        }
        let r = self.widen(start..end);
        match self.ranges.last_mut() {
            Some(last) if last.start <= r.start && r.start <= last.end => {
                last.end = last.end.max(r.end)
            }
            _ => self.ranges.push(r),
        }
        if self.ranges.len() >= MAX_RANGES {
            self.coarsen();
        }
    }

    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn widen(&self, r: Range<u64>) -> Range<u64> {
        let g = self.granule;
        (r.start / g * g)..r.end.div_ceil(g).saturating_mul(g).min(self.size)
    }

    fn merge(&mut self) {
        self.ranges.sort_by_key(|r| r.start);
        let mut out: Vec<Range<u64>> = Vec::with_capacity(self.ranges.len());
        for r in self.ranges.drain(..) {
            match out.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        self.ranges = out;
    }

    fn coarsen(&mut self) {
        self.merge();
        while self.ranges.len() >= MAX_RANGES / 2 {
            self.granule = self.granule.saturating_mul(2);
            let ranges = std::mem::take(&mut self.ranges);
            self.ranges = ranges.into_iter().map(|r| self.widen(r)).collect();
            self.merge();
        }
        let note = format!(
            "the map has many small ranges: coarsened to {} KiB",
            self.granule >> 10
        );
        if self.notes.last() != Some(&note) {
            self.notes.push(note);
        }
    }

    fn finish(mut self) -> UsedMap {
        self.merge();
        UsedMap {
            size: self.size,
            ranges: self.ranges,
            notes: self.notes,
        }
    }
}

/// Why a filesystem's used ranges could not be read: a read error (an error of the whole map)
/// or something inconsistent (that filesystem is used in full).
pub(crate) enum Skip {
    Read(ProbeError),
    Why(String),
}

impl From<ProbeError> for Skip {
    fn from(e: ProbeError) -> Skip {
        Skip::Read(e)
    }
}

/// A reason to use a filesystem in full.
pub(crate) fn why<T>(reason: impl Into<String>) -> Result<T, Skip> {
    Err(Skip::Why(reason.into()))
}

/// `len` bytes at filesystem offset `offset`, or [`Skip`] when they lie outside it.
pub(crate) fn read(view: &View, offset: u64, len: usize, what: &str) -> Result<Vec<u8>, Skip> {
    match view.read(offset, len)? {
        Some(b) => Ok(b),
        None => why(format!(
            "the {what} ({len} bytes at {offset}) lies outside the filesystem"
        )),
    }
}

/// Where a filesystem parser reports used bytes, in offsets of the view it reads.
pub(crate) struct Out<'x, 'a> {
    b: &'x mut Builder,
    view: &'x View<'a>,
}

impl Out<'_, '_> {
    /// Mark `len` bytes at view offset `offset` used.
    pub(crate) fn used(&mut self, offset: u64, len: u64) {
        for (disk_offset, n) in self.view.disk_ranges(offset, len) {
            self.b.used(disk_offset, disk_offset + n);
        }
    }
}

/// The used map of `disk`, whose layout `probe` read as `layout`.
pub fn used_map(disk: &dyn DiskSource, layout: &DiskLayout) -> Result<UsedMap, ProbeError> {
    let size = disk.size();
    let mut b = Builder::new(size);
    if layout.size != size {
        b.used(0, size);
        b.note(format!(
            "the layout describes {} bytes, the disk has {size}: used in full",
            layout.size
        ));
        return Ok(b.finish());
    }
    let ss = u64::from(layout.logical_sector_size);
    match &layout.table {
        PartitionTable::None => {
            let view = View::whole(disk);
            match &layout.content {
                Some(c) => content(&mut b, &view, c, "the whole disk", 0)?,
                None => b.used(0, size),
            }
        }
        PartitionTable::Gpt(g) => {
            let first_usable = g.first_usable_lba.saturating_mul(ss);
            let after_usable = g.last_usable_lba.saturating_add(1).saturating_mul(ss);
            b.used(0, first_usable.max(ss));
            b.used(after_usable, size);
            boot_gap(&mut b, &layout.boot, ss);
            for p in &g.partitions {
                let what = format!("GPT partition {}", p.slot);
                let len = p
                    .last_lba
                    .saturating_sub(p.first_lba)
                    .saturating_add(1)
                    .saturating_mul(ss);
                partition(
                    &mut b,
                    disk,
                    p.first_lba.saturating_mul(ss),
                    len,
                    Some(&p.content),
                    &what,
                )?;
            }
        }
        PartitionTable::Mbr(m) => {
            b.used(0, ss);
            boot_gap(&mut b, &layout.boot, ss);
            for p in &m.partitions {
                let what = format!("MBR partition {}", p.slot);
                let start = p.start_lba.saturating_mul(ss);
                if let Some(ebr) = p.ebr_lba {
                    b.used(
                        ebr.saturating_mul(ss),
                        ebr.saturating_add(1).saturating_mul(ss),
                    );
                }
                if p.kind == MbrPartitionKind::Extended {
                    b.used(start, start.saturating_add(ss)); // the first EBR
                    continue;
                }
                let len = p.sector_count.saturating_mul(ss);
                partition(&mut b, disk, start, len, p.content.as_ref(), &what)?;
            }
        }
    }
    Ok(b.finish())
}

/// The boot gap's non-zero sectors and whatever the probe did not scan.
fn boot_gap(b: &mut Builder, boot: &BootArea, ss: u64) {
    let Some(gap) = &boot.gap else { return };
    if let Some(u) = gap.used {
        b.used(
            u.first.saturating_mul(ss),
            u.last.saturating_add(1).saturating_mul(ss),
        );
    }
    b.used(
        gap.scanned_end_lba.saturating_mul(ss),
        gap.end_lba.saturating_mul(ss),
    );
}

fn partition(
    b: &mut Builder,
    disk: &dyn DiskSource,
    start: u64,
    len: u64,
    c: Option<&Content>,
    what: &str,
) -> Result<(), ProbeError> {
    match (View::slice(disk, start, len), c) {
        (Some(view), Some(c)) => content(b, &view, c, what, 0),
        _ => {
            b.used(start, start.saturating_add(len));
            b.note(format!(
                "{what}: no content recorded or outside the disk: used in full"
            ));
            Ok(())
        }
    }
}

/// Mark what `c` on `view` uses; on anything but a read error, all of `view`.
pub(crate) fn content(
    b: &mut Builder,
    view: &View,
    c: &Content,
    what: &str,
    depth: u32,
) -> Result<(), ProbeError> {
    let r = match c.kind {
        ContentKind::Lvm2Member if depth < MAX_DEPTH => lvm::used(b, view, c, what, depth),
        _ => filesystem(&mut Out { b: &mut *b, view }, view, c.kind),
    };
    match r {
        Ok(()) => Ok(()),
        Err(Skip::Read(e)) => Err(e),
        Err(Skip::Why(reason)) => {
            Out { b: &mut *b, view }.used(0, view.len());
            b.note(format!(
                "{what} ({}, disk offset {}): {reason}: used in full",
                c.kind,
                view.disk_offset(0)
            ));
            Ok(())
        }
    }
}

/// A filesystem's used bytes, and everything in `view` past the filesystem's end.
fn filesystem(out: &mut Out, view: &View, kind: ContentKind) -> Result<(), Skip> {
    let fs_len = match kind {
        ContentKind::Ext2 | ContentKind::Ext3 | ContentKind::Ext4 => ext::used(view, out)?,
        ContentKind::Vfat => fat::used(view, out)?,
        ContentKind::Xfs => xfs::used(view, out)?,
        ContentKind::Ntfs => ntfs::used(view, out)?,
        ContentKind::Swap => swap(view, out)?,
        ContentKind::Lvm2Member => return why("a PV inside an LV is not followed"),
        ContentKind::Btrfs => return why("btrfs allocation is not read"),
        ContentKind::Unknown => return why("nothing recognised"),
    };
    out.used(fs_len, view.len().saturating_sub(fs_len));
    Ok(())
}

/// Swap: only the header page (its size is where the signature is) matters; the whole area is
/// the filesystem.
fn swap(view: &View, out: &mut Out) -> Result<u64, Skip> {
    for page in [4096u64, 8192, 16384, 32768, 65536] {
        let magic = read(view, page - 10, 10, "swap signature")?;
        if magic == b"SWAPSPACE2" || magic == b"SWAP-SPACE" {
            out.used(0, page);
            return Ok(view.len());
        }
    }
    why("no swap signature")
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn map(size: u64, ranges: &[(u64, u64)]) -> UsedMap {
        let mut b = Builder::new(size);
        for &(s, e) in ranges {
            b.used(s, e);
        }
        b.finish()
    }

    #[test]
    fn ranges_are_widened_merged_and_clipped() {
        let m = map(
            1 << 30,
            &[
                (5 << 20, (5 << 20) + 1),
                (100, 200),
                (70_000, 70_001),
                (2 << 30, 3 << 30),
            ],
        );
        assert_eq!(
            m.ranges(),
            &[0..2 * GRANULE, (5 << 20)..(5 << 20) + GRANULE]
        );
        assert!(m.chunk_unused(2 * GRANULE, (5 << 20) - 2 * GRANULE));
        assert!(!m.chunk_unused(2 * GRANULE, (5 << 20) - 2 * GRANULE + 1));
        assert!(!m.chunk_unused(0, 1));
        assert!(m.chunk_unused(6 << 20, 1 << 20));
        assert!(m.chunk_unused(1 << 40, 1));
        assert_eq!(m.used_bytes(), 3 * GRANULE);
        assert_eq!(UsedMap::fully_used(10).ranges(), &[0..10]);
    }

    #[test]
    fn many_ranges_coarsen_instead_of_growing() {
        let size = (MAX_RANGES as u64 + 10) * 2 * GRANULE;
        let mut b = Builder::new(size);
        for i in 0..MAX_RANGES as u64 + 10 {
            b.used(i * 2 * GRANULE, i * 2 * GRANULE + 1);
        }
        let m = b.finish();
        assert!(m.ranges().len() < MAX_RANGES / 2);
        assert!(m.notes[0].contains("coarsened"), "{:?}", m.notes);
        for i in [0, 7, MAX_RANGES as u64] {
            assert!(!m.chunk_unused(i * 2 * GRANULE, 1));
        }
    }
}
