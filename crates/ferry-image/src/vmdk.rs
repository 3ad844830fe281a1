//! VMDK hosted sparse extents ("KDMV"): monolithicSparse and streamOptimized, read-only. Layout
//! summary in the crate doc; the reference is VMware's "Virtual Disk Format 5.0" and qemu's
//! block/vmdk.c for what real writers produce.

use std::sync::Arc;

use crate::cache::{LastBlock, TableCache};
use crate::descriptor::Descriptor;
use crate::file::{le_u16, le_u32, le_u64, ImageFile};
use crate::sparse::{self, BlockMap, Mapping};
use crate::{DiskSource, ImageError, ImageFormat};

// Frozen by the VMDK specification.
pub(crate) const MAGIC: [u8; 4] = *b"KDMV";
const SECTOR: u64 = 512;
const HEADER_LEN: usize = 512;
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESSION_NONE: u16 = 0;
const COMPRESSION_DEFLATE: u16 = 1;
/// gdOffset in the header at offset 0 of a streamOptimized file whose GD follows the grains:
/// the real header is the footer near the end of the file.
const GD_AT_END: u64 = u64::MAX;
const MARKER_EOS: u32 = 0;
const MARKER_FOOTER: u32 = 3;
/// A grain table entry of 1 means "reads as zeros" when the zeroed-grain flag is set.
const GTE_ZEROED: u32 = 1;
/// Bounds on header values before anything is allocated from them: grains up to 64 MiB (qemu
/// refuses more), at most 512 entries per grain table (the only value writers use; qemu's limit),
/// a grain directory of at most 16 MiB (4 Mi grain tables: 128 TiB with the usual 64 KiB grains),
/// an embedded descriptor of at most 64 KiB.
const MAX_GRAIN_SECTORS: u64 = 1 << 17;
const MAX_GTES_PER_GT: u32 = 512;
const MAX_GD_BYTES: u64 = 16 << 20;
const MAX_DESCRIPTOR_BYTES: u64 = 64 << 10;
/// {u64 lba, u32 size} in front of each compressed grain.
const GRAIN_MARKER_LEN: u64 = 12;

pub(crate) struct VmdkSparse {
    file: ImageFile,
    format: ImageFormat,
    size: u64,
    grain_bytes: u64,
    gtes_per_gt: u64,
    gd: Vec<u32>,
    gt_cache: TableCache<u32>,
    last: LastBlock,
    compressed: bool,
    markers: bool,
    zero_grain: bool,
}

struct Header {
    flags: u32,
    capacity: u64,
    grain_size: u64,
    descriptor_offset: u64,
    descriptor_size: u64,
    gtes_per_gt: u32,
    gd_offset: u64,
    compress_algorithm: u16,
}

impl Header {
    fn parse(file: &ImageFile, b: &[u8]) -> Result<Self, ImageError> {
        if b.len() < HEADER_LEN || b[..4] != MAGIC {
            return Err(file.corrupt(
                ImageFormat::VmdkMonolithicSparse,
                "sparse extent header has no KDMV magic",
            ));
        }
        let version = le_u32(b, 4);
        if !(1..=3).contains(&version) {
            return Err(file.unsupported(format!(
                "VMDK sparse extent version {version} (1 to 3 are supported)"
            )));
        }
        Ok(Self {
            flags: le_u32(b, 8),
            capacity: le_u64(b, 12),
            grain_size: le_u64(b, 20),
            descriptor_offset: le_u64(b, 28),
            descriptor_size: le_u64(b, 36),
            gtes_per_gt: le_u32(b, 44),
            gd_offset: le_u64(b, 56),
            compress_algorithm: le_u16(b, 77),
        })
    }
}

impl VmdkSparse {
    pub(crate) fn open(file: ImageFile) -> Result<Self, ImageError> {
        let first = file.read_struct(ImageFormat::VmdkMonolithicSparse, "header", 0, HEADER_LEN)?;
        let mut h = Header::parse(&file, &first)?;
        let format = if h.flags & FLAG_COMPRESSED != 0 {
            ImageFormat::VmdkStreamOptimized
        } else {
            ImageFormat::VmdkMonolithicSparse
        };
        check_embedded_descriptor(&file, format, &h)?;
        if h.gd_offset == GD_AT_END {
            h = read_footer(&file, format)?;
        }
        let geometry = Geometry::check(&file, format, &h)?;
        let gd = read_gd(&file, format, &h, geometry.gd_entries)?;
        Ok(Self {
            format,
            size: geometry.size,
            grain_bytes: geometry.grain_bytes,
            gtes_per_gt: u64::from(h.gtes_per_gt),
            gd,
            gt_cache: TableCache::new(h.gtes_per_gt as usize * 4),
            last: LastBlock::new(),
            compressed: h.flags & FLAG_COMPRESSED != 0,
            markers: h.flags & FLAG_MARKERS != 0,
            zero_grain: h.flags & FLAG_ZERO_GRAIN != 0,
            file,
        })
    }

    fn load_gt(&self, sector: u32) -> Result<Arc<[u32]>, ImageError> {
        self.gt_cache.get_or_load(u64::from(sector), || {
            let offset = u64::from(sector) * SECTOR;
            let len = self.gtes_per_gt as usize * 4;
            let bytes = self
                .file
                .read_struct(self.format, "grain table", offset, len)?;
            Ok(bytes.chunks_exact(4).map(|c| le_u32(c, 0)).collect())
        })
    }

    fn corrupt_at(&self, grain: u64, what: String) -> ImageError {
        let guest = grain.saturating_mul(self.grain_bytes);
        self.file
            .corrupt(self.format, format!("{what} (guest offset {guest})"))
    }

    /// A compressed grain: with markers, {u64 lba, u32 size} then `size` bytes of zlib data;
    /// without, the zlib stream starts at the grain offset and ends by itself.
    fn compressed_input(&self, grain: u64, host: u64) -> Result<Vec<u8>, ImageError> {
        // zlib expands incompressible data by a few bytes per 16 KiB; twice the grain is ample.
        let max_stream = self.grain_bytes * 2 + SECTOR;
        if !self.markers {
            let len = max_stream.min(self.file.len() - host);
            return self
                .file
                .read_struct(self.format, "compressed grain", host, len as usize);
        }
        let marker =
            self.file
                .read_struct(self.format, "grain marker", host, GRAIN_MARKER_LEN as usize)?;
        let (lba, size) = (le_u64(&marker, 0), u64::from(le_u32(&marker, 8)));
        let expected_lba = grain * (self.grain_bytes / SECTOR);
        if lba != expected_lba {
            return Err(self.corrupt_at(
                grain,
                format!("grain marker says sector {lba}, expected {expected_lba}"),
            ));
        }
        if size == 0 || size > max_stream {
            return Err(self.corrupt_at(
                grain,
                format!("compressed grain size {size} is out of range"),
            ));
        }
        self.file.read_struct(
            self.format,
            "compressed grain",
            host + GRAIN_MARKER_LEN,
            size as usize,
        )
    }
}

impl BlockMap for VmdkSparse {
    fn file(&self) -> &ImageFile {
        &self.file
    }

    fn format(&self) -> ImageFormat {
        self.format
    }

    fn guest_size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u64 {
        self.grain_bytes
    }

    fn map(&self, grain: u64) -> Result<Mapping, ImageError> {
        let gd_index = grain / self.gtes_per_gt;
        let gt_index = grain % self.gtes_per_gt;
        let Some(&gde) = usize::try_from(gd_index).ok().and_then(|i| self.gd.get(i)) else {
            return Err(
                self.corrupt_at(grain, "grain is not covered by the grain directory".into())
            );
        };
        if gde == 0 {
            return Ok(Mapping::Zero {
                run: self.gtes_per_gt - gt_index,
            });
        }
        let gt = self.load_gt(gde)?;
        let gte = gt.get(gt_index as usize).copied().unwrap_or(0);
        if gte == 0 || (gte == GTE_ZEROED && self.zero_grain) {
            return Ok(Mapping::Zero { run: 1 });
        }
        let host = u64::from(gte) * SECTOR;
        if host >= self.file.len() {
            return Err(self.corrupt_at(
                grain,
                format!("grain at sector {gte} is past the end of the file"),
            ));
        }
        if self.compressed {
            Ok(Mapping::Compressed { host, len: 0 })
        } else {
            Ok(Mapping::Data(host))
        }
    }

    fn inflate(&self, grain: u64, host: u64, _len: u64) -> Result<Vec<u8>, ImageError> {
        let input = self.compressed_input(grain, host)?;
        let mut out = vec![0u8; self.grain_bytes as usize];
        let produced =
            sparse::inflate(&input, true, &mut out).map_err(|e| self.corrupt_at(grain, e))?;
        sparse::finish_block(self, grain, out, produced)
    }

    fn last_block(&self) -> &LastBlock {
        &self.last
    }
}

impl DiskSource for VmdkSparse {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
        sparse::read_at(self, buf, offset)
    }

    fn known_zero(&self, offset: u64, len: u64) -> bool {
        sparse::known_zero(self, offset, len)
    }

    fn format(&self) -> ImageFormat {
        self.format
    }
}

/// Sizes derived from the header, each checked before use.
struct Geometry {
    size: u64,
    grain_bytes: u64,
    gd_entries: u64,
}

impl Geometry {
    fn check(file: &ImageFile, format: ImageFormat, h: &Header) -> Result<Self, ImageError> {
        let corrupt = |reason: String| file.corrupt(format, reason);
        if !h.grain_size.is_power_of_two() || h.grain_size > MAX_GRAIN_SECTORS {
            return Err(corrupt(format!(
                "grain size of {} sectors is not a power of two up to {MAX_GRAIN_SECTORS}",
                h.grain_size
            )));
        }
        if h.gtes_per_gt == 0 || h.gtes_per_gt > MAX_GTES_PER_GT {
            return Err(corrupt(format!(
                "{} grain table entries per table (1 to {MAX_GTES_PER_GT} allowed)",
                h.gtes_per_gt
            )));
        }
        if h.flags & FLAG_COMPRESSED != 0 && h.compress_algorithm != COMPRESSION_DEFLATE {
            return Err(file.unsupported(format!(
                "VMDK compression algorithm {}",
                h.compress_algorithm
            )));
        }
        if h.flags & FLAG_COMPRESSED == 0 && h.compress_algorithm != COMPRESSION_NONE {
            return Err(corrupt(format!(
                "compression algorithm {} without the compressed-grains flag",
                h.compress_algorithm
            )));
        }
        let size = h
            .capacity
            .checked_mul(SECTOR)
            .ok_or_else(|| corrupt(format!("capacity of {} sectors overflows", h.capacity)))?;
        // grain_size <= 2^17 and gtes <= 2^9, so this product cannot overflow.
        let sectors_per_gt = h.grain_size * u64::from(h.gtes_per_gt);
        let gd_entries = h.capacity.div_ceil(sectors_per_gt);
        if gd_entries * 4 > MAX_GD_BYTES {
            return Err(corrupt(format!(
                "grain directory of {gd_entries} entries exceeds the {MAX_GD_BYTES}-byte limit"
            )));
        }
        Ok(Self {
            size,
            grain_bytes: h.grain_size * SECTOR,
            gd_entries,
        })
    }
}

fn read_gd(
    file: &ImageFile,
    format: ImageFormat,
    h: &Header,
    entries: u64,
) -> Result<Vec<u32>, ImageError> {
    if entries == 0 {
        return Ok(Vec::new());
    }
    let offset = h.gd_offset.checked_mul(SECTOR).ok_or_else(|| {
        file.corrupt(
            format,
            format!("grain directory sector {} overflows", h.gd_offset),
        )
    })?;
    if offset == 0 {
        return Err(file.corrupt(format, "grain directory offset is 0"));
    }
    let bytes = file.read_struct(format, "grain directory", offset, entries as usize * 4)?;
    Ok(bytes.chunks_exact(4).map(|c| le_u32(c, 0)).collect())
}

/// A streamOptimized file ends with: footer marker sector {u64 val, u32 size = 0, u32 type = 3},
/// a copy of the header with the real gdOffset, and an end-of-stream marker sector (all zero).
fn read_footer(file: &ImageFile, format: ImageFormat) -> Result<Header, ImageError> {
    let tail_len = 3 * SECTOR;
    let start = file
        .len()
        .checked_sub(tail_len)
        .filter(|&s| s >= SECTOR)
        .ok_or_else(|| {
            file.corrupt(
                format,
                "header says the GD is at the end but the file has no room for a footer",
            )
        })?;
    let tail = file.read_struct(format, "footer", start, tail_len as usize)?;
    let (marker, rest) = tail.split_at(SECTOR as usize);
    let (footer, eos) = rest.split_at(SECTOR as usize);
    let marker_ok = le_u32(marker, 8) == 0 && le_u32(marker, 12) == MARKER_FOOTER;
    let eos_ok = le_u64(eos, 0) == 0 && le_u32(eos, 8) == 0 && le_u32(eos, 12) == MARKER_EOS;
    if !marker_ok || !eos_ok || footer[..4] != MAGIC {
        return Err(file.corrupt(format, "header says the GD is at the end but no valid footer precedes the end-of-stream marker"));
    }
    let h = Header::parse(file, footer)?;
    if h.gd_offset == GD_AT_END {
        return Err(file.corrupt(
            format,
            "footer header does not give the grain directory offset either",
        ));
    }
    Ok(h)
}

/// A monolithic file embeds its descriptor; refuse one that describes more than this extent
/// (reading one extent of a split disk would silently return a partial disk) or a delta disk.
fn check_embedded_descriptor(
    file: &ImageFile,
    format: ImageFormat,
    h: &Header,
) -> Result<(), ImageError> {
    if h.descriptor_offset == 0 || h.descriptor_size == 0 {
        return Ok(());
    }
    let (Some(offset), Some(len)) = (
        h.descriptor_offset.checked_mul(SECTOR),
        h.descriptor_size.checked_mul(SECTOR),
    ) else {
        return Err(file.corrupt(format, "embedded descriptor offset or size overflows"));
    };
    let len = len.min(MAX_DESCRIPTOR_BYTES);
    let bytes = file.read_struct(format, "embedded descriptor", offset, len as usize)?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.split('\0').next().unwrap_or("");
    let desc = Descriptor::parse(text);
    if let Some(parent) = desc.parent() {
        return Err(file.unsupported(format!(
            "VMDK is a delta disk of parent \"{parent}\"; consolidate it first"
        )));
    }
    if desc.extents.len() > 1 {
        return Err(file.unsupported(format!(
            "VMDK descriptor lists {} extents; only single-extent disks are supported",
            desc.extents.len()
        )));
    }
    Ok(())
}
