//! The chunk store: `chunks/abcd/<64 hex>`, each file the zstd frame an agent uploaded, kept only
//! after it decompressed (bounded) to data whose BLAKE3 is the id.

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use ferry_format::chunk::MAX_CHUNK_SIZE;
use ferry_format::ChunkId;

use crate::error::{io_err, Result, StoreError};
use crate::fsx::{self, FileLock, LockMode};
use crate::Store;

/// Whether a PUT stored a new chunk or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    AlreadyPresent,
}

/// Decompress `frame` (at most `bound` bytes of plaintext) and check that its BLAKE3 is `id`.
pub fn verify_chunk(id: &ChunkId, frame: &[u8], bound: u32) -> Result<()> {
    let bad = |why: String| StoreError::BadChunk(format!("chunk {id}: {why}; nothing was stored"));
    let decoder = zstd::stream::read::Decoder::new(frame).map_err(|e| bad(format!("zstd: {e}")))?;
    let mut plain = Vec::new();
    decoder
        .take(bound as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| bad(format!("not a valid zstd frame ({e})")))?;
    if plain.len() as u64 > bound as u64 {
        return Err(bad(format!("decompresses to more than {bound} bytes")));
    }
    let actual = ChunkId::of(&plain);
    if actual != *id {
        return Err(bad(format!("its content has BLAKE3 {actual}")));
    }
    Ok(())
}

impl Store {
    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        self.chunks_dir().join(id.store_prefix()).join(id.to_hex())
    }

    /// Hold the chunk lock shared: GC cannot unlink while it is held.
    pub fn lock_chunks_shared(&self) -> Result<FileLock> {
        FileLock::acquire(&self.chunk_lock_path(), LockMode::Shared)
    }

    /// Verify and store a chunk upload. A chunk already present is touched instead.
    pub fn put_chunk(&self, id: &ChunkId, frame: &[u8]) -> Result<PutOutcome> {
        let path = self.chunk_path(id);
        {
            let _lock = self.lock_chunks_shared()?;
            if fsx::touch(&path)? {
                return Ok(PutOutcome::AlreadyPresent);
            }
        }
        verify_chunk(id, frame, MAX_CHUNK_SIZE)?;
        let _lock = self.lock_chunks_shared()?;
        let dir = path
            .parent()
            .unwrap_or(self.chunks_dir().as_path())
            .to_path_buf();
        fsx::create_dir_all(&dir)?;
        fsx::write_atomic(&path, frame, 0o644)?;
        Ok(PutOutcome::Stored)
    }

    /// Touch every chunk of `ids` that is present (marks it in use now, see [`crate::gc`]) and
    /// return those that are missing, in the order given.
    pub fn touch_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let _lock = self.lock_chunks_shared()?;
        let mut missing = Vec::new();
        for id in ids {
            if !fsx::touch(&self.chunk_path(id))? {
                missing.push(*id);
            }
        }
        Ok(missing)
    }

    /// The stored zstd frame of a chunk.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let path = self.chunk_path(id);
        fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(format!(
                    "chunk {id} is not in the store (was its snapshot pruned? list snapshots again)"
                ))
            } else {
                io_err("read", &path)(e)
            }
        })
    }

    pub fn has_chunk(&self, id: &ChunkId) -> bool {
        self.chunk_path(id).is_file()
    }
}
