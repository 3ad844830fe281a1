//! Chunk ids, chunk sizes and the canonical shape of a chunk's zstd frame ([`check_frame`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::FormatError;

/// Default chunk size: 4 MiB. Chunks are aligned to disk offset 0.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// Smallest chunk size a snapshot may use (64 KiB).
pub const MIN_CHUNK_SIZE: u32 = 64 << 10;
/// Largest chunk size a snapshot may use (64 MiB); also bounds every decompression.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;

/// Check a chunk size: a power of two between [`MIN_CHUNK_SIZE`] and [`MAX_CHUNK_SIZE`].
pub fn check_chunk_size(size: u32) -> Result<u32, FormatError> {
    if size.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(FormatError::ChunkSize(size))
    }
}

/// BLAKE3-256 of a chunk's plaintext. Frozen format: never change the hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The two-level fan-out used by the chunk store: `ab/cd/abcd…`.
    pub fn store_prefix(&self) -> String {
        hex::encode(&self.0[..2])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

impl FromStr for ChunkId {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(FormatError::ChunkIdText(s.chars().take(80).collect()));
        }
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| FormatError::ChunkIdText(s.chars().take(80).collect()))?;
        Ok(ChunkId(out))
    }
}

impl Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// True when every byte of `data` is zero (such chunks are never stored).
pub fn is_zero(data: &[u8]) -> bool {
    // OR-fold fixed blocks so the compiler vectorises it: this runs over every byte a backup reads.
    let mut blocks = data.chunks_exact(64);
    blocks
        .by_ref()
        .all(|b| b.iter().fold(0u8, |a, &x| a | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

/// zstd frame magic (RFC 8878), little-endian on the wire.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames carry any magic `0x184D2A50..=0x184D2A5F`.
const SKIPPABLE_MAGIC_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// Largest block a zstd frame may hold (ZSTD_BLOCKSIZE_MAX), before and after decompression.
const ZSTD_BLOCK_MAX: u64 = 128 << 10;

/// What a canonical chunk frame declares (see [`check_frame`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The plaintext length the frame header declares.
    pub content_size: u64,
}

impl FrameInfo {
    /// Check the length of the decompressed plaintext against the declared content size.
    pub fn check_decoded(&self, len: u64) -> Result<(), FrameError> {
        if len == self.content_size {
            Ok(())
        } else {
            Err(FrameError::DecodedSize {
                declared: self.content_size,
                actual: len,
            })
        }
    }
}

/// Why a zstd frame is not a canonical chunk frame. Rendered after "the frame ...".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("starts with a zstd skippable frame: send the chunk's zstd frame alone")]
    LeadingSkippable,
    #[error("does not start with the zstd magic number")]
    NotZstd,
    #[error("ends inside its {0}")]
    Truncated(&'static str),
    #[error("has the reserved bit of its header set")]
    ReservedBit,
    #[error("names a zstd dictionary: compress without one")]
    Dictionary,
    #[error(
        "does not declare its content size: compress with the content-size flag \
         (zstd's default when the input size is known)"
    )]
    NoContentSize,
    #[error("declares {0} bytes of content, more than a chunk may hold ({MAX_CHUNK_SIZE})")]
    ContentTooLarge(u64),
    #[error("asks for a {0}-byte window, more than a chunk may hold ({MAX_CHUNK_SIZE})")]
    WindowTooLarge(u64),
    #[error("has a block of the reserved type at byte {0}")]
    ReservedBlock(usize),
    #[error("has a {size}-byte block at byte {offset}, more than zstd's 128 KiB")]
    BlockTooLarge { offset: usize, size: u64 },
    #[error("declares {declared} bytes of content but its blocks hold between {min} and {max}")]
    BlocksDisagree { declared: u64, min: u64, max: u64 },
    #[error(
        "is followed by a zstd skippable frame at byte {0}: send the chunk's zstd frame alone"
    )]
    TrailingSkippable(usize),
    #[error("is followed by a second zstd frame at byte {0}: send the chunk as one frame")]
    SecondFrame(usize),
    #[error("is followed by {len} more bytes at byte {offset}: send the frame alone")]
    TrailingBytes { offset: usize, len: usize },
    #[error("is {len} bytes, more than zstd's bound of {bound} for {content} bytes of content")]
    TooLong {
        len: usize,
        bound: u64,
        content: u64,
    },
    #[error("declares {declared} bytes of content but decompresses to {actual}")]
    DecodedSize { declared: u64, actual: u64 },
}

/// zstd's worst-case compressed size for `n` bytes (ZSTD_COMPRESSBOUND): what any conforming
/// encoder stays within, frame header and checksum included.
pub const fn compress_bound(n: u64) -> u64 {
    let small = if n < ZSTD_BLOCK_MAX {
        (ZSTD_BLOCK_MAX - n) >> 11
    } else {
        0
    };
    n + (n >> 8) + small
}

/// Check that `frame` is a canonical chunk frame, without decompressing it: exactly one zstd
/// frame (no skippable frame before or after, no trailing bytes), no dictionary, a header that
/// declares the content size, content of at most [`MAX_CHUNK_SIZE`], well-formed blocks whose
/// sizes can add up to the declared content, and a length within zstd's compress bound of that
/// content. The caller still decompresses (to exactly `content_size` bytes, see
/// [`FrameInfo::check_decoded`]) and checks the id.
///
/// Why: a frame padded with skippable or trailing data hashes right and decompresses, yet is
/// larger than any reader's bound; stored first, every later backup would dedup against it.
pub fn check_frame(frame: &[u8]) -> Result<FrameInfo, FrameError> {
    let mut r = Reader { buf: frame, pos: 0 };
    let magic = r.u32("magic number")?;
    if magic & SKIPPABLE_MAGIC_MASK == SKIPPABLE_MAGIC {
        return Err(FrameError::LeadingSkippable);
    }
    if magic != ZSTD_MAGIC {
        return Err(FrameError::NotZstd);
    }
    let (content_size, checksum) = frame_header(&mut r)?;
    blocks(&mut r, content_size)?;
    if checksum {
        r.take(4, "content checksum")?;
    }
    trailer(frame, r.pos)?;
    let bound = compress_bound(content_size);
    if frame.len() as u64 > bound {
        return Err(FrameError::TooLong {
            len: frame.len(),
            bound,
            content: content_size,
        });
    }
    Ok(FrameInfo { content_size })
}

/// The frame header after the magic: returns the content size and the checksum flag.
fn frame_header(r: &mut Reader<'_>) -> Result<(u64, bool), FrameError> {
    let fhd = r.u8("frame header")?;
    let fcs_flag = fhd >> 6;
    let single_segment = fhd & 0x20 != 0;
    if fhd & 0x08 != 0 {
        return Err(FrameError::ReservedBit);
    }
    let checksum = fhd & 0x04 != 0;
    if fhd & 0x03 != 0 {
        return Err(FrameError::Dictionary);
    }
    let window = if single_segment {
        None
    } else {
        let wd = r.u8("window descriptor")?;
        let base = 1u64 << (10 + (wd >> 3));
        Some(base + (base / 8) * u64::from(wd & 7))
    };
    let content_size = match (fcs_flag, single_segment) {
        (0, false) => return Err(FrameError::NoContentSize),
        (0, true) => u64::from(r.u8("content size")?),
        (1, _) => u64::from(r.u16("content size")?) + 256,
        (2, _) => u64::from(r.u32("content size")?),
        _ => r.u64("content size")?,
    };
    if content_size > u64::from(MAX_CHUNK_SIZE) {
        return Err(FrameError::ContentTooLarge(content_size));
    }
    if let Some(w) = window.filter(|&w| w > u64::from(MAX_CHUNK_SIZE)) {
        return Err(FrameError::WindowTooLarge(w));
    }
    Ok((content_size, checksum))
}

/// Walk the blocks to the last one; their sizes must be able to add up to `content_size`.
fn blocks(r: &mut Reader<'_>, content_size: u64) -> Result<(), FrameError> {
    // Raw and RLE blocks regenerate exactly their size; a compressed one up to 128 KiB.
    let (mut exact, mut compressed) = (0u64, 0u64);
    loop {
        let offset = r.pos;
        let h = r.u24("block header")?;
        let size = u64::from(h >> 3);
        if size > ZSTD_BLOCK_MAX {
            return Err(FrameError::BlockTooLarge { offset, size });
        }
        match (h >> 1) & 3 {
            0 => {
                r.take(size as usize, "raw block")?;
                exact += size;
            }
            1 => {
                r.take(1, "RLE block")?;
                exact += size;
            }
            2 => {
                r.take(size as usize, "compressed block")?;
                compressed += 1;
            }
            _ => return Err(FrameError::ReservedBlock(offset)),
        }
        if h & 1 != 0 {
            break;
        }
    }
    let max = exact + compressed * ZSTD_BLOCK_MAX;
    if exact > content_size || max < content_size {
        return Err(FrameError::BlocksDisagree {
            declared: content_size,
            min: exact,
            max,
        });
    }
    Ok(())
}

/// Nothing may follow the frame: name what does.
fn trailer(frame: &[u8], end: usize) -> Result<(), FrameError> {
    let rest = &frame[end..];
    if rest.is_empty() {
        return Ok(());
    }
    let next = rest
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    Err(match next {
        Some(m) if m & SKIPPABLE_MAGIC_MASK == SKIPPABLE_MAGIC => {
            FrameError::TrailingSkippable(end)
        }
        Some(ZSTD_MAGIC) => FrameError::SecondFrame(end),
        _ => FrameError::TrailingBytes {
            offset: end,
            len: rest.len(),
        },
    })
}

/// Little-endian reads that name the field they ran out in.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(FrameError::Truncated(what))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn uint(&mut self, n: usize, what: &'static str) -> Result<u64, FrameError> {
        let b = self.take(n, what)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        Ok(self.uint(1, what)? as u8)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        Ok(self.uint(2, what)? as u16)
    }
    fn u24(&mut self, what: &'static str) -> Result<u32, FrameError> {
        Ok(self.uint(3, what)? as u32)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        Ok(self.uint(4, what)? as u32)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        self.uint(8, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_id_round_trips_through_text() {
        let id = ChunkId::of(b"hello");
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
        assert!("xyz".parse::<ChunkId>().is_err());
        assert!("g".repeat(64).parse::<ChunkId>().is_err());
    }

    #[test]
    fn chunk_sizes_are_checked() {
        assert!(check_chunk_size(DEFAULT_CHUNK_SIZE).is_ok());
        assert!(check_chunk_size(3 << 20).is_err());
        assert!(check_chunk_size(4096).is_err());
        assert!(check_chunk_size(128 << 20).is_err());
    }

    #[test]
    fn zero_detection_handles_unaligned_tails() {
        let mut v = vec![0u8; 4099];
        assert!(is_zero(&v[1..]));
        v[4098] = 1;
        assert!(!is_zero(&v[1..]));
        v[4098] = 0;
        v[1] = 1;
        assert!(!is_zero(&v[1..]));
    }

    fn frame(data: &[u8], level: i32) -> Vec<u8> {
        zstd::bulk::compress(data, level).unwrap()
    }

    fn text(n: usize) -> Vec<u8> {
        b"restore kernel initramfs virtio chunk ext4 grub "
            .iter()
            .cycle()
            .take(n)
            .copied()
            .collect()
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn skippable(len: u32) -> Vec<u8> {
        let mut v = 0x184D_2A53u32.to_le_bytes().to_vec();
        v.extend_from_slice(&len.to_le_bytes());
        v.resize(8 + len as usize, 0xAA);
        v
    }

    /// A single-segment frame with an 8-byte content size and the given raw blocks.
    fn raw_frame(content_size: u64, blocks: &[&[u8]]) -> Vec<u8> {
        let mut v = 0xFD2F_B528u32.to_le_bytes().to_vec();
        v.push(0xE0);
        v.extend_from_slice(&content_size.to_le_bytes());
        for (i, b) in blocks.iter().enumerate() {
            let last = u32::from(i + 1 == blocks.len());
            v.extend_from_slice(&((b.len() as u32) << 3 | last).to_le_bytes()[..3]);
            v.extend_from_slice(b);
        }
        v
    }

    #[test]
    fn frames_from_zstd_are_canonical() {
        for data in [
            text(10),
            text(300),
            noise(65 << 10, 1),
            text(4 << 20),
            noise(4 << 20, 2),
        ] {
            for level in [1, 3, 19] {
                let f = frame(&data, level);
                let info = check_frame(&f).unwrap_or_else(|e| panic!("level {level}: {e}"));
                assert_eq!(info.content_size, data.len() as u64);
                assert!(info.check_decoded(data.len() as u64).is_ok());
            }
        }
    }

    /// Exactly how backup-agent compresses (ferry-engine's upload workers).
    #[test]
    fn frames_of_the_backup_agent_are_canonical() {
        let mut cctx = zstd::bulk::Compressor::new(3).unwrap();
        let mut out = Vec::new();
        for data in [noise(4 << 20, 3), text(4 << 20), text(123_457)] {
            out.clear();
            out.reserve(zstd::zstd_safe::compress_bound(data.len()));
            cctx.compress_to_buffer(&data, &mut out).unwrap();
            assert_eq!(check_frame(&out).unwrap().content_size, data.len() as u64);
        }
    }

    #[test]
    fn padding_and_extra_frames_are_refused() {
        let f = frame(&text(100_000), 3);
        let cat = |parts: &[&[u8]]| parts.concat();
        let n = f.len();
        let cases: Vec<(&str, Vec<u8>, FrameError)> = vec![
            (
                "skippable before",
                cat(&[&skippable(16), &f]),
                FrameError::LeadingSkippable,
            ),
            (
                "skippable after",
                cat(&[&f, &skippable(1 << 20)]),
                FrameError::TrailingSkippable(n),
            ),
            (
                "empty skippable after",
                cat(&[&f, &skippable(0)]),
                FrameError::TrailingSkippable(n),
            ),
            ("two frames", cat(&[&f, &f]), FrameError::SecondFrame(n)),
            (
                "trailing garbage",
                cat(&[&f, b"xyz"]),
                FrameError::TrailingBytes { offset: n, len: 3 },
            ),
            (
                "one trailing zero",
                cat(&[&f, &[0]]),
                FrameError::TrailingBytes { offset: n, len: 1 },
            ),
            (
                "truncated",
                f[..n - 1].to_vec(),
                FrameError::Truncated("compressed block"),
            ),
            ("empty", Vec::new(), FrameError::Truncated("magic number")),
            (
                "not zstd",
                b"not a zstd frame".to_vec(),
                FrameError::NotZstd,
            ),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(check_frame(&bytes), Err(want), "{name}");
        }
    }

    #[test]
    fn a_frame_without_content_size_is_refused() {
        // The streaming encoder does not know the input size, so it omits it.
        let f = zstd::stream::encode_all(&text(100_000)[..], 3).unwrap();
        assert!(zstd::bulk::decompress(&f, 1 << 20).is_ok());
        assert_eq!(check_frame(&f), Err(FrameError::NoContentSize));
    }

    #[test]
    fn a_lying_content_size_is_refused() {
        // Raw blocks regenerate exactly their size: a lie is seen without decompressing.
        let data = noise(300_000, 4);
        let f = frame(&data, 3);
        let info = check_frame(&f).unwrap();
        assert_eq!(info.content_size, 300_000);
        let honest = raw_frame(1000, &[&data[..1000]]);
        assert_eq!(check_frame(&honest).unwrap().content_size, 1000);
        let lie = raw_frame(999, &[&data[..1000]]);
        assert!(matches!(
            check_frame(&lie),
            Err(FrameError::BlocksDisagree {
                declared: 999,
                min: 1000,
                ..
            })
        ));
        let lie = raw_frame(5000, &[&data[..1000]]);
        assert!(matches!(
            check_frame(&lie),
            Err(FrameError::BlocksDisagree { .. })
        ));
        // A compressed block's output is only known after decompression: the reader checks
        // the decoded length against the declared one.
        let info = FrameInfo {
            content_size: 100_001,
        };
        assert_eq!(
            info.check_decoded(100_000),
            Err(FrameError::DecodedSize {
                declared: 100_001,
                actual: 100_000
            })
        );
    }

    #[test]
    fn oversize_content_window_and_padding_blocks_are_refused() {
        let big = frame(&vec![7u8; MAX_CHUNK_SIZE as usize + 1], 1);
        assert_eq!(
            check_frame(&big),
            Err(FrameError::ContentTooLarge(u64::from(MAX_CHUNK_SIZE) + 1))
        );
        // Not single-segment, window 2^27, content size in 4 bytes.
        let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
        f.extend_from_slice(&[0x80, 17 << 3]);
        f.extend_from_slice(&10u32.to_le_bytes());
        f.extend_from_slice(&[0x51, 0, 0, 9]); // last RLE block of 10
        assert_eq!(check_frame(&f), Err(FrameError::WindowTooLarge(1 << 27)));
        // Empty raw blocks as padding inside the frame: beyond zstd's bound.
        let data = text(1000);
        let mut blocks: Vec<&[u8]> = vec![&[]; 40];
        blocks.push(&data);
        let padded = raw_frame(1000, &blocks);
        assert!(matches!(
            check_frame(&padded),
            Err(FrameError::TooLong { bound: 1066, .. })
        ));
        blocks.drain(..30);
        assert!(check_frame(&raw_frame(1000, &blocks)).is_ok());
        // A block larger than zstd allows.
        let mut f = raw_frame(200_000, &[]);
        f.extend_from_slice(&((200_000u32 << 3) | 1).to_le_bytes()[..3]);
        f.extend_from_slice(&noise(200_000, 5));
        let offset = f.len() - 200_003;
        assert_eq!(
            check_frame(&f),
            Err(FrameError::BlockTooLarge {
                offset,
                size: 200_000
            })
        );
    }

    #[test]
    fn header_flags_are_checked() {
        let f = frame(&text(5000), 3);
        let mut reserved = f.clone();
        reserved[4] |= 0x08;
        assert_eq!(check_frame(&reserved), Err(FrameError::ReservedBit));
        let mut dict = f.clone();
        dict[4] |= 0x01;
        assert_eq!(check_frame(&dict), Err(FrameError::Dictionary));
        let mut reserved_block = raw_frame(1, &[b"x"]);
        let at = reserved_block.len() - 4;
        reserved_block[at] |= 0x06;
        assert_eq!(
            check_frame(&reserved_block),
            Err(FrameError::ReservedBlock(at))
        );
        // A checksum is allowed (zstd's command line writes one).
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.include_checksum(true).unwrap();
        assert!(check_frame(&c.compress(&text(5000)).unwrap()).is_ok());
    }

    #[test]
    fn compress_bound_matches_zstd() {
        for n in [0usize, 1, 100, 131_071, 131_072, 4 << 20, 64 << 20] {
            assert_eq!(
                compress_bound(n as u64),
                zstd::zstd_safe::compress_bound(n) as u64,
                "{n}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn check_frame_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = check_frame(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(pos in 0usize..2000, byte in proptest::num::u8::ANY) {
            let mut f = frame(&text(3000), 3);
            let at = pos % f.len();
            f[at] = byte;
            let _ = check_frame(&f);
        }
    }
}
