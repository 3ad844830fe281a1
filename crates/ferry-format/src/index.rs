//! The per-disk chunk index: the ordered list of what each chunk of a disk holds.
//!
//! Byte layout (frozen, version 1; all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `FERRYIDX` |
//! | 8 | 4 | version (1) |
//! | 12 | 4 | chunk size in bytes |
//! | 16 | 8 | disk size in bytes |
//! | 24 | 8 | entry count = ceil(disk size / chunk size) |
//! | 32 | 32 × count | entries |
//!
//! Entry `i` covers disk bytes `i*chunk_size .. min((i+1)*chunk_size, disk_size)`. An entry is the
//! BLAKE3-256 id of those bytes, or one of two reserved values: 32 zero bytes = the range is all
//! zeros (never stored); 32 `0xff` bytes = the range holds no data any filesystem uses (not backed
//! up; a restore writes zeros there).

use crate::chunk::{check_chunk_size, ChunkId};
use crate::FormatError;

pub const INDEX_MAGIC: &[u8; 8] = b"FERRYIDX";
pub const INDEX_VERSION: u32 = 1;
const HEADER_LEN: usize = 32;
const ZERO_MARKER: [u8; 32] = [0; 32];
const UNUSED_MARKER: [u8; 32] = [0xff; 32];
/// Bound on entries so a hostile header cannot make us allocate without limit (64 PiB at 4 MiB).
pub const MAX_ENTRIES: u64 = 1 << 34;

/// What one chunk-sized range of a disk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// All zeros.
    Zero,
    /// Not in use by any filesystem; contents unspecified, restored as zeros.
    Unused,
    /// Data with this id.
    Data(ChunkId),
}

impl Entry {
    /// The entry an encoded 32-byte slot holds (every value is valid).
    pub fn from_raw(raw: [u8; 32]) -> Entry {
        match raw {
            ZERO_MARKER => Entry::Zero,
            UNUSED_MARKER => Entry::Unused,
            id => Entry::Data(ChunkId(id)),
        }
    }
}

/// The fixed header of an encoded index: what a reader streaming the entries needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexHeader {
    pub chunk_size: u32,
    pub disk_size: u64,
    pub count: u64,
}

impl IndexHeader {
    /// Bytes of the header; the entries follow, 32 bytes each.
    pub const LEN: usize = HEADER_LEN;

    /// Decode and check the header (magic, version, chunk size, a count that covers the disk).
    pub fn decode(bytes: &[u8]) -> Result<IndexHeader, FormatError> {
        let bad = |why: &str| FormatError::Index(why.to_string());
        if bytes.len() < HEADER_LEN {
            return Err(bad("shorter than its 32-byte header"));
        }
        if &bytes[..8] != INDEX_MAGIC {
            return Err(bad("bad magic (not a ferry disk index)"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
        let version = u32_at(8);
        if version != INDEX_VERSION {
            return Err(FormatError::Index(format!(
                "unsupported index version {version}"
            )));
        }
        let chunk_size = check_chunk_size(u32_at(12))?;
        let disk_size = u64_at(16);
        let count = u64_at(24);
        if count != chunk_count(disk_size, chunk_size) {
            return Err(FormatError::Index(format!(
                "entry count {count} does not cover a disk of {disk_size} bytes in chunks of {chunk_size}"
            )));
        }
        if count > MAX_ENTRIES {
            return Err(FormatError::Index(format!(
                "{count} entries: more than the {MAX_ENTRIES} an index may have"
            )));
        }
        Ok(IndexHeader {
            chunk_size,
            disk_size,
            count,
        })
    }

    /// Length of the whole encoded index.
    pub fn encoded_len(&self) -> u64 {
        HEADER_LEN as u64 + 32 * self.count
    }
}

/// A disk's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskIndex {
    pub chunk_size: u32,
    pub disk_size: u64,
    pub entries: Vec<Entry>,
}

/// Number of chunks of `chunk_size` that cover `disk_size` bytes.
pub fn chunk_count(disk_size: u64, chunk_size: u32) -> u64 {
    disk_size.div_ceil(chunk_size as u64)
}

impl DiskIndex {
    /// An index of the right length with every entry `Zero`.
    pub fn new_zero(disk_size: u64, chunk_size: u32) -> Result<Self, FormatError> {
        check_chunk_size(chunk_size)?;
        let n = chunk_count(disk_size, chunk_size);
        if n > MAX_ENTRIES {
            return Err(FormatError::Index(format!(
                "disk of {disk_size} bytes has too many chunks"
            )));
        }
        Ok(DiskIndex {
            chunk_size,
            disk_size,
            entries: vec![Entry::Zero; n as usize],
        })
    }

    /// Byte range of entry `i` on the disk.
    pub fn range(&self, i: usize) -> (u64, usize) {
        let start = i as u64 * self.chunk_size as u64;
        let len = (self.disk_size - start).min(self.chunk_size as u64);
        (start, len as usize)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 32 * self.entries.len());
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.disk_size.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            match e {
                Entry::Zero => out.extend_from_slice(&ZERO_MARKER),
                Entry::Unused => out.extend_from_slice(&UNUSED_MARKER),
                Entry::Data(id) => out.extend_from_slice(&id.0),
            }
        }
        out
    }

    /// Decode and check an index; every inconsistency is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let h = IndexHeader::decode(bytes)?;
        if bytes.len() as u64 != h.encoded_len() {
            return Err(FormatError::Index(format!(
                "{} bytes of entries where {} entries need {}",
                bytes.len() - HEADER_LEN,
                h.count,
                h.count * 32
            )));
        }
        let entries = bytes[HEADER_LEN..]
            .chunks_exact(32)
            .map(|e| Entry::from_raw(e.try_into().unwrap_or(ZERO_MARKER)))
            .collect();
        Ok(DiskIndex {
            chunk_size: h.chunk_size,
            disk_size: h.disk_size,
            entries,
        })
    }

    /// BLAKE3 of the encoded index: what the manifest records and signs.
    pub fn digest(&self) -> ChunkId {
        ChunkId::of(&self.encode())
    }

    /// Counts of each entry kind: (data, zero, unused).
    pub fn counts(&self) -> (u64, u64, u64) {
        let mut c = (0, 0, 0);
        for e in &self.entries {
            match e {
                Entry::Data(_) => c.0 += 1,
                Entry::Zero => c.1 += 1,
                Entry::Unused => c.2 += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DiskIndex {
        let mut ix = DiskIndex::new_zero(10 * 65536 + 5, 65536).unwrap();
        ix.entries[1] = Entry::Data(ChunkId::of(b"a"));
        ix.entries[3] = Entry::Unused;
        ix
    }

    #[test]
    fn round_trip_and_ranges() {
        let ix = sample();
        assert_eq!(ix.entries.len(), 11);
        assert_eq!(ix.range(10), (655360, 5));
        assert_eq!(DiskIndex::decode(&ix.encode()).unwrap(), ix);
        assert_eq!(ix.counts(), (1, 9, 1));
    }

    #[test]
    fn rejects_inconsistent_headers() {
        let mut b = sample().encode();
        b.truncate(b.len() - 1);
        assert!(DiskIndex::decode(&b).is_err());
        let mut b = sample().encode();
        b[24] = 99;
        assert!(DiskIndex::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("does not cover"));
        let mut b = sample().encode();
        b[0] = b'X';
        assert!(DiskIndex::decode(&b).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = DiskIndex::decode(&bytes);
        }
    }
}
