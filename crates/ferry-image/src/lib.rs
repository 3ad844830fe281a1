//! Read-only access to the disks a backup reads: block devices and image files (raw, qcow2, VMDK).
//!
//! Every source is presented as one flat, random-access array of `size()` bytes: the guest-visible
//! disk. Reads are positional (`pread`) and take `&self`, so several threads may read one source
//! at once; the only shared state is a bounded cache of mapping tables behind a mutex.
//!
//! # Invariants
//! - Nothing read from a file is trusted: every offset is checked against the file length, every
//!   size against the format's limits, before it is used or allocated, with checked arithmetic.
//!   Bad input yields [`ImageError::Corrupt`] (or `Unsupported`), never a panic.
//! - [`DiskSource::known_zero`] answers `true` only when the metadata proves the range is zero:
//!   unallocated qcow2 clusters and VMDK grains, holes of raw files (`SEEK_DATA`; block devices
//!   and filesystems without hole reporting answer `false`, and are read).
//! - Images that depend on other files we do not read (qcow2 backing files and external data
//!   files, VMDK parents and multi-extent disks) are refused, never read partially.
//!
//! # Detection (`open`)
//! Block devices (S_ISBLK) are raw, sized by `BLKGETSIZE64`, sector size from `BLKSSZGET`.
//! Otherwise by the first bytes: `QFI\xfb` is qcow2, `KDMV` a VMDK sparse extent, a small text
//! file with `# Disk DescriptorFile` / `createType=` a VMDK descriptor; anything else is raw.
//!
//! # qcow2 (big-endian; qemu docs/interop/qcow2.txt)
//! ```text
//! header   0 magic "QFI\xfb" | 4 version (2, 3) | 8 backing_file_offset u64 | 16 backing_file_size
//!         20 cluster_bits (9..=21) | 24 size u64 | 32 crypt_method | 36 l1_size | 40 l1_table_offset u64
//!         48 refcount table (unused here) | 60 snapshots (unused: we read the active L1)
//!   v3:   72 incompatible_features u64 | 80 compatible | 88 autoclear | 96 refcount_order
//!        100 header_length | 104 compression_type u8; header extensions follow up to cluster end
//! guest offset = (l1_index, l2_index, offset in cluster); L2 table = one cluster of u64 entries
//! L1 entry: bits 9..55 L2 table offset (0 = unallocated)
//! L2 entry: bit 62 compressed; bit 0 reads-as-zero (v3); bits 9..55 data cluster offset (0 = unallocated)
//! compressed L2 entry: x = 62 - (cluster_bits - 8); bits 0..x host byte offset,
//!   bits x..62 = number of 512-byte sectors - 1; data is raw deflate (RFC 1951) of one cluster
//! ```
//! Incompatible feature bits: 0 dirty (only refcounts are stale: readable), 1 corrupt (refused),
//! 2 external data file, 3 compression type (zlib is read, zstd refused), 4 extended L2 (refused);
//! any other bit is refused because its meaning is unknown to us.
//!
//! # VMDK sparse extent (little-endian; VMware "Virtual Disk Format 5.0")
//! ```text
//! header   0 "KDMV" | 4 version | 8 flags (bit 2 zeroed-grain GTEs, bit 16 compressed grains,
//!          bit 17 markers) | 12 capacity (sectors) | 20 grainSize (sectors) | 28 descriptorOffset
//!         36 descriptorSize | 44 numGTEsPerGT | 48 rgdOffset | 56 gdOffset | 64 overHead
//!         77 compressAlgorithm u16 (1 = deflate)
//! grain directory (GD): u32 sector offsets of grain tables (0 = none)
//! grain table (GT): numGTEsPerGT u32 sector offsets of grains (0 = unallocated, 1 = zeroed if flag)
//! compressed grain: u64 lba | u32 size | size bytes of zlib (RFC 1950) data
//! ```
//! streamOptimized (OVA exports) may set gdOffset = 0xffffffffffffffff in the leading header: the
//! valid header is then a footer copy in the second-to-last sector, between a footer marker
//! {u64 1, u32 0, u32 type 3} and the end-of-stream marker (an all-zero sector).
//!
//! A VMDK text descriptor with one FLAT/VMFS extent (monolithicFlat) reads that file as raw from
//! the extent's offset; one SPARSE extent opens it as a sparse extent. Others are refused.

// System calls go through nix and ferry-sys.
#![forbid(unsafe_code)]

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

mod cache;
mod descriptor;
mod file;
mod qcow2;
mod raw;
mod sparse;
mod vmdk;

use descriptor::{Descriptor, Extent};
use file::ImageFile;

/// The container format a source was opened as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    BlockDevice,
    Qcow2,
    VmdkMonolithicSparse,
    VmdkStreamOptimized,
    /// A VMDK text descriptor whose single extent is a flat (raw) file.
    VmdkFlat,
}

/// A guest-visible disk, read by offset.
pub trait DiskSource: Send + Sync {
    /// Guest-visible size in bytes.
    fn size(&self) -> u64;
    /// Logical sector size of the disk (512 unless a block device says otherwise).
    fn logical_sector_size(&self) -> u32 {
        512
    }
    /// Fill `buf` with the guest bytes at `offset`. Reading past `size()` is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError>;
    /// True when the format proves `offset..offset+len` reads as zeros without reading it
    /// (unallocated clusters or grains). `false` means "unknown", never "non-zero".
    fn known_zero(&self, _offset: u64, _len: u64) -> bool {
        false
    }
    fn format(&self) -> ImageFormat;
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path} at offset {offset}: {source}")]
    Read {
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
    #[error("{path} is a corrupt {format:?} image: {reason}")]
    Corrupt {
        path: PathBuf,
        format: ImageFormat,
        reason: String,
    },
    #[error("{path}: unsupported image: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("read of {len} bytes at offset {offset} is past the end of {path} ({size} bytes)")]
    OutOfRange {
        path: PathBuf,
        offset: u64,
        len: usize,
        size: u64,
    },
}

/// How many leading bytes format detection looks at.
const PROBE_LEN: usize = 512;
/// Text descriptors are a few hundred bytes; anything larger is not one (and is not read whole).
const MAX_DESCRIPTOR_FILE: u64 = 1 << 20;

/// How a source is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// After every read of an image file, advise the kernel to drop the range from the page
    /// cache (`POSIX_FADV_DONTNEED`), so that reading a whole disk does not evict the server's
    /// working set. Dirty or mapped pages are never dropped. Block devices are read with
    /// `O_DIRECT` whatever this says (their cache is bypassed, and could be stale); only a
    /// device that refuses `O_DIRECT` is read through its cache, and then this applies.
    pub drop_cache: bool,
}

/// Open `path`, detecting its format from its first bytes (block devices are always raw).
pub fn open(path: &Path) -> Result<Box<dyn DiskSource>, ImageError> {
    open_with(path, OpenOptions::default())
}

/// [`open`] with options.
pub fn open_with(path: &Path, opts: OpenOptions) -> Result<Box<dyn DiskSource>, ImageError> {
    let open_err = |source| ImageError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if meta.file_type().is_block_device() {
        return Ok(Box::new(raw::Raw::block_device(file, path, opts)?));
    }
    let file = ImageFile::with_len(file, path, meta.len()).dropping_cache(opts.drop_cache);
    let mut probe = vec![0u8; PROBE_LEN.min(meta.len() as usize)];
    file.read_exact_at(&mut probe, 0)?;
    if probe.starts_with(&qcow2::MAGIC) {
        Ok(Box::new(qcow2::Qcow2::open(file)?))
    } else if probe.starts_with(&vmdk::MAGIC) {
        Ok(Box::new(vmdk::VmdkSparse::open(file)?))
    } else if looks_like_descriptor(&probe, file.len()) {
        open_descriptor(&file, opts)
    } else {
        Ok(Box::new(raw::Raw::file(file)))
    }
}

fn looks_like_descriptor(probe: &[u8], len: u64) -> bool {
    if len > MAX_DESCRIPTOR_FILE || probe.is_empty() {
        return false;
    }
    // qemu pads descriptor files with NULs to a sector.
    let text = probe
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace() || b == 0);
    let text_start = String::from_utf8_lossy(probe);
    text && (text_start.contains("# Disk DescriptorFile") || text_start.contains("createType"))
}

fn open_descriptor(file: &ImageFile, opts: OpenOptions) -> Result<Box<dyn DiskSource>, ImageError> {
    const FORMAT: ImageFormat = ImageFormat::VmdkFlat;
    let bytes = file.read_struct(FORMAT, "descriptor", 0, file.len() as usize)?;
    let text = String::from_utf8_lossy(&bytes);
    let desc = Descriptor::parse(text.split('\0').next().unwrap_or(""));
    if let Some(parent) = desc.parent() {
        return Err(file.unsupported(format!(
            "VMDK is a delta disk of parent \"{parent}\"; consolidate it first"
        )));
    }
    if let Some(line) = desc.bad_lines.first() {
        return Err(file.corrupt(
            FORMAT,
            format!("cannot parse descriptor extent line {line:?}"),
        ));
    }
    let create_type = desc.create_type.as_deref().unwrap_or("unknown");
    let [extent] = desc.extents.as_slice() else {
        return Err(file.unsupported(format!(
            "VMDK descriptor (createType {create_type}) lists {} extents; only single-extent disks are \
             supported: convert it with qemu-img convert -O vmdk -o subformat=monolithicSparse",
            desc.extents.len()
        )));
    };
    open_extent(file, extent, opts)
}

fn open_extent(
    descriptor: &ImageFile,
    extent: &Extent,
    opts: OpenOptions,
) -> Result<Box<dyn DiskSource>, ImageError> {
    let Some(name) = extent.file.as_deref() else {
        return Err(descriptor.unsupported(format!("VMDK {} extent without a file", extent.kind)));
    };
    let dir = descriptor.path().parent().unwrap_or(Path::new("."));
    let path = dir.join(name);
    let size_err = || {
        descriptor.corrupt(
            ImageFormat::VmdkFlat,
            format!("extent {name:?} size or offset overflows"),
        )
    };
    let size = extent.sectors.checked_mul(512).ok_or_else(size_err)?;
    match extent.kind.as_str() {
        "FLAT" | "VMFS" => {
            let base = extent.offset.checked_mul(512).ok_or_else(size_err)?;
            let file = ImageFile::open(&path)?.dropping_cache(opts.drop_cache);
            file.check_inside(ImageFormat::VmdkFlat, "flat extent data", base, size)?;
            Ok(Box::new(raw::Raw::window(
                file,
                base,
                size,
                ImageFormat::VmdkFlat,
            )))
        }
        "SPARSE" => {
            let file = ImageFile::open(&path)?.dropping_cache(opts.drop_cache);
            let sparse = vmdk::VmdkSparse::open(file)?;
            if sparse.size() != size {
                return Err(descriptor.corrupt(
                    ImageFormat::VmdkFlat,
                    format!(
                        "extent {name:?} holds {} bytes, the descriptor says {size}",
                        sparse.size()
                    ),
                ));
            }
            Ok(Box::new(sparse))
        }
        kind => Err(descriptor.unsupported(format!("VMDK extent type {kind} ({name:?})"))),
    }
}
