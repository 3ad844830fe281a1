//! Indexes read from their files a block at a time, never decoded whole: an index may hold
//! 16 M entries (512 MiB on disk, about 1 GiB decoded). Index uploads, commits and GC's mark all
//! go through [`scan_index`], so their memory does not grow with the index.

use std::io::{BufReader, Read};
use std::path::Path;

use ferry_format::index::{Entry, IndexHeader};
use ferry_format::{ChunkId, FormatError};

use crate::error::{io_err, Result, StoreError};

/// Bytes of entries read at a time (32 Ki entries).
pub const INDEX_READ_BLOCK: usize = 1 << 20;

/// What a whole index holds, learnt in one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexScan {
    pub header: IndexHeader,
    /// BLAKE3 of the encoded index, as `DiskIndex::digest`.
    pub digest: ChunkId,
    /// Entries that are data, zero, unused (`DiskIndex::counts`).
    pub data: u64,
    pub zero: u64,
    pub unused: u64,
}

/// Read the encoded index from `file` (`len` bytes; `path` names it in I/O errors, `what` — e.g.
/// "the index of disk sda" — in the others): check its header and that its length is the
/// header's, hash and count it, and give `each` the data chunk ids of each block (a run of one
/// id given once).
pub fn scan_index(
    file: impl Read,
    len: u64,
    path: &Path,
    what: &str,
    mut each: impl FnMut(&[ChunkId]) -> Result<()>,
) -> Result<IndexScan> {
    if len < IndexHeader::LEN as u64 {
        return Err(StoreError::Format(FormatError::Index(format!(
            "{what} is {len} bytes, shorter than its header"
        ))));
    }
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let mut head = [0u8; IndexHeader::LEN];
    reader.read_exact(&mut head).map_err(io_err("read", path))?;
    let header = IndexHeader::decode(&head)?;
    if header.encoded_len() != len {
        return Err(StoreError::Invalid(format!(
            "{what} is {len} bytes but its header says {} entries ({} bytes)",
            header.count,
            header.encoded_len()
        )));
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(&head);
    let mut scan = IndexScan {
        header,
        digest: ChunkId([0; 32]),
        data: 0,
        zero: 0,
        unused: 0,
    };
    let mut block = vec![0u8; INDEX_READ_BLOCK];
    let mut ids = Vec::with_capacity(INDEX_READ_BLOCK / 32);
    let mut previous = None;
    let mut left = header.count;
    while left > 0 {
        let n = left.min((INDEX_READ_BLOCK / 32) as u64) as usize;
        let buf = &mut block[..n * 32];
        reader.read_exact(buf).map_err(io_err("read", path))?;
        hasher.update(buf);
        ids.clear();
        for raw in buf.chunks_exact(32) {
            match Entry::from_raw(raw.try_into().unwrap_or([0; 32])) {
                Entry::Zero => scan.zero += 1,
                Entry::Unused => scan.unused += 1,
                Entry::Data(id) => {
                    scan.data += 1;
                    if previous != Some(id) {
                        ids.push(id);
                        previous = Some(id);
                    }
                }
            }
        }
        each(&ids)?;
        left -= n as u64;
    }
    scan.digest = ChunkId(*hasher.finalize().as_bytes());
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::{Seek, SeekFrom, Write};

    use ferry_format::DiskIndex;

    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f
    }

    #[test]
    fn scan_agrees_with_the_decoder_across_blocks() {
        // More entries than one block, with runs, zeros and unused ranges.
        let n = INDEX_READ_BLOCK / 32 * 2 + 77;
        let mut index = DiskIndex::new_zero(n as u64 * 65536, 65536).unwrap();
        for (i, e) in index.entries.iter_mut().enumerate() {
            *e = match i % 7 {
                0 => Entry::Zero,
                1 => Entry::Unused,
                2 | 3 => Entry::Data(ChunkId::of(&(i / 2).to_le_bytes())),
                _ => Entry::Data(ChunkId::of(&i.to_le_bytes())),
            };
        }
        let bytes = index.encode();
        let mut seen = Vec::new();
        let scan = scan_index(
            file_with(&bytes),
            bytes.len() as u64,
            Path::new("x"),
            "x",
            |ids| {
                seen.extend_from_slice(ids);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(scan.digest, index.digest());
        assert_eq!((scan.data, scan.zero, scan.unused), index.counts());
        assert_eq!(scan.header.count, n as u64);
        let mut want: Vec<ChunkId> = Vec::new();
        for e in &index.entries {
            if let Entry::Data(id) = e {
                if want.last() != Some(id) {
                    want.push(*id);
                }
            }
        }
        assert_eq!(seen, want);
    }

    #[test]
    fn scan_refuses_a_length_that_is_not_the_headers() {
        let bytes = DiskIndex::new_zero(10 * 65536, 65536).unwrap().encode();
        for cut in [bytes.len() - 1, 31, 0] {
            let err = scan_index(
                file_with(&bytes[..cut]),
                cut as u64,
                Path::new("x"),
                "x",
                |_| Ok(()),
            );
            assert!(err.is_err(), "{cut} bytes accepted");
        }
    }
}
