//! qcow2 versions 2 and 3, read-only, without backing files. Layout summary in the crate doc;
//! the reference is qemu's docs/interop/qcow2.txt.

use crate::cache::{LastBlock, TableCache};
use crate::file::{be_u32, be_u64, ImageFile};
use crate::sparse::{self, BlockMap, Mapping};
use crate::{DiskSource, ImageError, ImageFormat};

// Frozen by the qcow2 specification.
pub(crate) const MAGIC: [u8; 4] = *b"QFI\xfb";
const V2_HEADER_LEN: usize = 72;
const V3_MIN_HEADER_LEN: usize = 104;
/// qemu's MIN_CLUSTER_BITS / MAX_CLUSTER_BITS: 512 bytes to 2 MiB.
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
/// qemu's QCOW_MAX_L1_SIZE: the L1 table is read whole, so this bounds that allocation.
const MAX_L1_BYTES: u64 = 32 << 20;
/// qemu refuses longer backing file names; we only read it to name it in the error.
const MAX_BACKING_NAME: u64 = 1023;

const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1E_RESERVED: u64 = 0x7f00_0000_0000_01ff;
const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2E_STD_RESERVED: u64 = 0x3f00_0000_0000_01fe;
const L2E_COMPRESSED: u64 = 1 << 62;
const L2E_ZERO: u64 = 1;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

const EXT_END: u32 = 0;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_DATA_FILE: u32 = 0x4441_5441;

const FORMAT: ImageFormat = ImageFormat::Qcow2;

pub(crate) struct Qcow2 {
    file: ImageFile,
    size: u64,
    cluster_bits: u32,
    /// log2 of the number of 8-byte entries in one L2 table (= one cluster).
    l2_bits: u32,
    l1: Vec<u64>,
    l2_cache: TableCache<u64>,
    last: LastBlock,
    /// Compressed L2 entries split at bit `62 - (cluster_bits - 8)`: host offset below,
    /// (sector count - 1) above.
    csize_shift: u32,
    csize_mask: u64,
    coffset_mask: u64,
}

/// The header fields we use, decoded from the first bytes of the file.
struct Header {
    backing_file_offset: u64,
    backing_file_size: u32,
    cluster_bits: u32,
    size: u64,
    crypt_method: u32,
    l1_size: u32,
    l1_table_offset: u64,
    incompatible: u64,
    header_length: usize,
    compression_type: u8,
}

impl Qcow2 {
    pub(crate) fn open(file: ImageFile) -> Result<Self, ImageError> {
        let h = read_header(&file)?;
        let cluster_size = 1u64 << h.cluster_bits;
        let first_cluster = read_first_cluster(&file, cluster_size)?;
        refuse_unsupported(&file, &h, &first_cluster)?;
        let l2_bits = h.cluster_bits - 3;
        let l1 = read_l1(&file, &h, l2_bits)?;
        let csize_shift = 62 - (h.cluster_bits - 8);
        Ok(Self {
            size: h.size,
            cluster_bits: h.cluster_bits,
            l2_bits,
            l1,
            l2_cache: TableCache::new(cluster_size as usize),
            last: LastBlock::new(),
            csize_shift,
            csize_mask: (1u64 << (h.cluster_bits - 8)) - 1,
            coffset_mask: (1u64 << csize_shift) - 1,
            file,
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn load_l2(&self, offset: u64) -> Result<std::sync::Arc<[u64]>, ImageError> {
        self.l2_cache.get_or_load(offset, || {
            let bytes =
                self.file
                    .read_struct(FORMAT, "L2 table", offset, self.cluster_size() as usize)?;
            Ok(bytes.chunks_exact(8).map(|c| be_u64(c, 0)).collect())
        })
    }

    fn decode_l2(&self, block: u64, e: u64) -> Result<Mapping, ImageError> {
        if e & L2E_COMPRESSED != 0 {
            let host = e & self.coffset_mask;
            let sectors = ((e >> self.csize_shift) & self.csize_mask) + 1;
            // The count covers whole 512-byte sectors starting at the one holding `host`.
            let len = (sectors * 512).saturating_sub(host & 511);
            if host >= self.file.len() {
                return Err(self.corrupt_at(
                    block,
                    format!("compressed cluster offset {host} is past the end of the file"),
                ));
            }
            return Ok(Mapping::Compressed { host, len });
        }
        if e & L2E_STD_RESERVED != 0 {
            return Err(self.corrupt_at(block, format!("L2 entry {e:#018x} has reserved bits set")));
        }
        let host = e & L2E_OFFSET_MASK;
        if e & L2E_ZERO != 0 || host == 0 {
            return Ok(Mapping::Zero { run: 1 });
        }
        if host & (self.cluster_size() - 1) != 0 {
            return Err(self.corrupt_at(
                block,
                format!("data cluster offset {host} is not cluster-aligned"),
            ));
        }
        if host >= self.file.len() {
            return Err(self.corrupt_at(
                block,
                format!("data cluster offset {host} is past the end of the file"),
            ));
        }
        Ok(Mapping::Data(host))
    }

    fn corrupt_at(&self, block: u64, what: String) -> ImageError {
        let guest = block.saturating_mul(self.cluster_size());
        self.file
            .corrupt(FORMAT, format!("{what} (guest offset {guest})"))
    }
}

impl BlockMap for Qcow2 {
    fn file(&self) -> &ImageFile {
        &self.file
    }

    fn format(&self) -> ImageFormat {
        FORMAT
    }

    fn guest_size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u64 {
        self.cluster_size()
    }

    fn map(&self, block: u64) -> Result<Mapping, ImageError> {
        let entries_per_l2 = 1u64 << self.l2_bits;
        let l1_index = block >> self.l2_bits;
        let l2_index = (block & (entries_per_l2 - 1)) as usize;
        // open() checked that the L1 table covers the whole guest size.
        let Some(&l1e) = usize::try_from(l1_index).ok().and_then(|i| self.l1.get(i)) else {
            return Err(self.corrupt_at(block, "cluster is not covered by the L1 table".into()));
        };
        if l1e & L1E_RESERVED != 0 {
            return Err(
                self.corrupt_at(block, format!("L1 entry {l1e:#018x} has reserved bits set"))
            );
        }
        let l2_offset = l1e & L1E_OFFSET_MASK;
        if l2_offset == 0 {
            return Ok(Mapping::Zero {
                run: entries_per_l2 - l2_index as u64,
            });
        }
        if l2_offset & (self.cluster_size() - 1) != 0 {
            return Err(self.corrupt_at(
                block,
                format!("L2 table offset {l2_offset} is not cluster-aligned"),
            ));
        }
        let table = self.load_l2(l2_offset)?;
        let e = table.get(l2_index).copied().unwrap_or(0);
        self.decode_l2(block, e)
    }

    fn inflate(&self, block: u64, host: u64, len: u64) -> Result<Vec<u8>, ImageError> {
        // The last compressed cluster may end before its last counted sector: qemu reads past EOF
        // as zeros, so clamp to the file instead of calling it corrupt.
        let len = len.min(self.file.len() - host);
        // A compressed cluster never needs more than one cluster plus a sector of input (the
        // sector count field cannot express more), so `len` is bounded by the format already.
        let mut input = vec![0u8; len as usize];
        self.file.read_exact_at(&mut input, host)?;
        let mut out = vec![0u8; self.cluster_size() as usize];
        let produced =
            sparse::inflate(&input, false, &mut out).map_err(|e| self.corrupt_at(block, e))?;
        sparse::finish_block(self, block, out, produced)
    }

    fn last_block(&self) -> &LastBlock {
        &self.last
    }
}

impl DiskSource for Qcow2 {
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
        FORMAT
    }
}

fn read_header(file: &ImageFile) -> Result<Header, ImageError> {
    if file.len() < V2_HEADER_LEN as u64 {
        return Err(file.corrupt(
            FORMAT,
            format!("file is {} bytes, shorter than a qcow2 header", file.len()),
        ));
    }
    // v3 fields plus the compression type byte when the file is long enough to hold them.
    let want = if file.len() > V3_MIN_HEADER_LEN as u64 {
        V3_MIN_HEADER_LEN + 1
    } else {
        V2_HEADER_LEN
    };
    let b = file.read_struct(FORMAT, "header", 0, want)?;
    let version = be_u32(&b, 4);
    let mut h = Header {
        backing_file_offset: be_u64(&b, 8),
        backing_file_size: be_u32(&b, 16),
        cluster_bits: be_u32(&b, 20),
        size: be_u64(&b, 24),
        crypt_method: be_u32(&b, 32),
        l1_size: be_u32(&b, 36),
        l1_table_offset: be_u64(&b, 40),
        incompatible: 0,
        header_length: V2_HEADER_LEN,
        compression_type: 0,
    };
    match version {
        2 => {}
        3 => {
            if b.len() < V3_MIN_HEADER_LEN {
                return Err(file.corrupt(FORMAT, "file is shorter than a qcow2 version 3 header"));
            }
            h.incompatible = be_u64(&b, 72);
            let header_length = be_u32(&b, 100);
            h.header_length = header_length as usize;
            if (header_length as usize) < V3_MIN_HEADER_LEN {
                return Err(file.corrupt(
                    FORMAT,
                    format!("header length {header_length} is below the minimum 104"),
                ));
            }
            if header_length as usize > V3_MIN_HEADER_LEN {
                h.compression_type = b.get(V3_MIN_HEADER_LEN).copied().unwrap_or(0);
            }
        }
        v => {
            return Err(file.unsupported(format!("qcow2 version {v} (only 2 and 3 are supported)")))
        }
    }
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&h.cluster_bits) {
        return Err(file.corrupt(
            FORMAT,
            format!(
                "cluster_bits {} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}",
                h.cluster_bits
            ),
        ));
    }
    if h.header_length as u64 > 1u64 << h.cluster_bits {
        return Err(file.corrupt(
            FORMAT,
            format!(
                "header length {} exceeds the first cluster",
                h.header_length
            ),
        ));
    }
    Ok(h)
}

/// The header and its extensions live in the first cluster; read it (or the file, if shorter).
fn read_first_cluster(file: &ImageFile, cluster_size: u64) -> Result<Vec<u8>, ImageError> {
    let len = cluster_size.min(file.len()) as usize;
    file.read_struct(FORMAT, "first cluster", 0, len)
}

fn refuse_unsupported(file: &ImageFile, h: &Header, first: &[u8]) -> Result<(), ImageError> {
    if h.backing_file_offset != 0 {
        let name = backing_name(file, h)?;
        return Err(file.unsupported(format!(
            "qcow2 image has a backing file \"{name}\"; flatten it first (qemu-img convert -O qcow2)"
        )));
    }
    if h.crypt_method != 0 {
        let method = match h.crypt_method {
            1 => "AES",
            2 => "LUKS",
            _ => "unknown",
        };
        return Err(file.unsupported(format!(
            "qcow2 image is encrypted ({method}, method {})",
            h.crypt_method
        )));
    }
    let exts = Extensions::parse(first, h.header_length);
    let unknown = h.incompatible & !INCOMPAT_KNOWN;
    if unknown != 0 {
        return Err(file.unsupported(format!(
            "qcow2 image uses unknown incompatible features {unknown:#x} ({})",
            exts.feature_names(unknown)
        )));
    }
    if h.incompatible & INCOMPAT_CORRUPT != 0 {
        return Err(file.corrupt(
            FORMAT,
            "qemu marked the image corrupt (incompatible feature bit 1); repair it with qemu-img check -r all",
        ));
    }
    if h.incompatible & INCOMPAT_DATA_FILE != 0 {
        let name = exts.data_file.as_deref().unwrap_or("(unnamed)");
        return Err(file.unsupported(format!(
            "qcow2 image keeps its data in an external data file \"{name}\""
        )));
    }
    if h.incompatible & INCOMPAT_EXTL2 != 0 {
        return Err(file.unsupported("qcow2 image uses extended L2 entries (subclusters)"));
    }
    match h.compression_type {
        0 => Ok(()),
        1 => {
            Err(file
                .unsupported("qcow2 image uses zstd cluster compression (only zlib is supported)"))
        }
        t => Err(file.unsupported(format!("qcow2 image uses unknown compression type {t}"))),
    }
}

fn backing_name(file: &ImageFile, h: &Header) -> Result<String, ImageError> {
    let len = u64::from(h.backing_file_size).min(MAX_BACKING_NAME);
    let bytes = file.read_struct(
        FORMAT,
        "backing file name",
        h.backing_file_offset,
        len as usize,
    )?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn read_l1(file: &ImageFile, h: &Header, l2_bits: u32) -> Result<Vec<u64>, ImageError> {
    // Bytes mapped by one L1 entry: cluster_size * entries per L2 = 2^(cluster_bits + l2_bits).
    let per_l1 = 1u64 << (h.cluster_bits + l2_bits);
    let needed = h.size.div_ceil(per_l1);
    let l1_size = u64::from(h.l1_size);
    if l1_size < needed {
        return Err(file.corrupt(
            FORMAT,
            format!(
                "L1 table has {l1_size} entries, the virtual size {} needs {needed}",
                h.size
            ),
        ));
    }
    let bytes = l1_size * 8;
    if bytes > MAX_L1_BYTES {
        return Err(file.corrupt(
            FORMAT,
            format!("L1 table of {bytes} bytes exceeds the {MAX_L1_BYTES}-byte limit"),
        ));
    }
    if l1_size == 0 {
        return Ok(Vec::new());
    }
    if h.l1_table_offset & ((1u64 << h.cluster_bits) - 1) != 0 {
        return Err(file.corrupt(
            FORMAT,
            format!(
                "L1 table offset {} is not cluster-aligned",
                h.l1_table_offset
            ),
        ));
    }
    // Entries past what the virtual size needs are never used; read only the needed ones.
    let used = needed as usize * 8;
    file.check_inside(FORMAT, "L1 table", h.l1_table_offset, bytes)?;
    let raw = file.read_struct(FORMAT, "L1 table", h.l1_table_offset, used)?;
    Ok(raw.chunks_exact(8).map(|c| be_u64(c, 0)).collect())
}

/// The header extensions we look at, parsed leniently: they only improve error messages.
#[derive(Default)]
struct Extensions {
    data_file: Option<String>,
    /// (bit, name) of incompatible features, from the feature name table.
    incompat_names: Vec<(u8, String)>,
}

impl Extensions {
    fn parse(first: &[u8], start: usize) -> Self {
        let mut exts = Self::default();
        let mut pos = start;
        // Each extension is {u32 type, u32 len, data padded to 8 bytes}, ending with type 0.
        while let Some(head) = first.get(pos..pos + 8) {
            let (kind, len) = (be_u32(head, 0), be_u32(head, 4) as usize);
            let Some(data) = first.get(pos + 8..).and_then(|d| d.get(..len)) else {
                break;
            };
            match kind {
                EXT_END => break,
                EXT_DATA_FILE => exts.data_file = Some(String::from_utf8_lossy(data).into_owned()),
                EXT_FEATURE_TABLE => exts.incompat_names = feature_table(data),
                _ => {}
            }
            pos += 8 + len.div_ceil(8) * 8;
        }
        exts
    }

    fn feature_names(&self, bits: u64) -> String {
        let names: Vec<String> = (0..64u8)
            .filter(|b| bits & (1u64 << b) != 0)
            .map(
                |b| match self.incompat_names.iter().find(|(bit, _)| *bit == b) {
                    Some((_, name)) => format!("bit {b} \"{name}\""),
                    None => format!("bit {b}"),
                },
            )
            .collect();
        names.join(", ")
    }
}

/// Feature name table entries: {u8 type (0 = incompatible), u8 bit, 46-byte NUL-padded name}.
fn feature_table(data: &[u8]) -> Vec<(u8, String)> {
    data.chunks_exact(48)
        .filter(|e| e[0] == 0)
        .map(|e| {
            let name = &e[2..];
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            (e[1], String::from_utf8_lossy(&name[..end]).into_owned())
        })
        .collect()
}
