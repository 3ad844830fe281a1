//! The chunk store: `chunks/abcd/<64 hex>`, each file the zstd frame an agent uploaded, kept only
//! when it is one canonical zstd frame ([`ferry_format::chunk::check_frame`]) that decompresses
//! to exactly its declared size of data whose BLAKE3 is the id.
//!
//! Uploads are refused, not recompressed: a stored chunk is byte for byte what its first good
//! upload sent. A PUT of an id that is present checks the stored copy too (bytes equal to the
//! verified upload, else a full check) and replaces a bad one, so a backup heals damage it
//! uploads over; `appliance verify` ([`crate::verify`]) moves damaged chunks out of the way so
//! that known-chunks reports them missing and the next backup uploads them.

use std::path::PathBuf;

use ferry_format::chunk::{check_frame, FrameError};
use ferry_format::ChunkId;

use crate::data::{DataLock, LockMode};
use crate::error::{Result, StoreError};
use crate::Store;

/// What a PUT did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The chunk was new.
    Stored,
    /// A good copy was already stored; it was touched (marked in use now).
    AlreadyPresent,
    /// The stored copy was damaged (or not canonical) and the upload replaced it.
    Replaced,
}

/// Why bytes are not a good chunk of the id they are filed or uploaded under.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkFault {
    /// Not one canonical zstd frame, or its content is not the size it declares.
    #[error("the zstd frame {0}")]
    Frame(#[from] FrameError),
    #[error("the zstd frame does not decompress ({0})")]
    Undecodable(String),
    #[error("its content has BLAKE3 {0}")]
    WrongContent(ChunkId),
}

/// Check that `frame` is a canonical zstd frame of data whose BLAKE3 is `id`; returns the
/// plaintext length. Decompression is bounded by the declared content size (at most 64 MiB).
pub fn check_chunk(id: &ChunkId, frame: &[u8]) -> Result<u64, ChunkFault> {
    decode_chunk(id, frame).map(|plain| plain.len() as u64)
}

/// The plaintext of `frame`, checked as [`check_chunk`] does.
pub fn decode_chunk(id: &ChunkId, frame: &[u8]) -> Result<Vec<u8>, ChunkFault> {
    let info = check_frame(frame)?;
    let mut plain = Vec::with_capacity(info.content_size as usize);
    zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress_to_buffer(frame, &mut plain))
        .map_err(|e| ChunkFault::Undecodable(e.to_string()))?;
    info.check_decoded(plain.len() as u64)?;
    let actual = ChunkId::of(&plain);
    if actual != *id {
        return Err(ChunkFault::WrongContent(actual));
    }
    Ok(plain)
}

/// Check an upload: a frame that is not canonical or does not decompress is malformed
/// ([`StoreError::Invalid`], 400); one whose content is not the id is [`StoreError::BadChunk`]
/// (422).
pub fn verify_chunk(id: &ChunkId, frame: &[u8]) -> Result<()> {
    match check_chunk(id, frame) {
        Ok(_) => Ok(()),
        Err(f @ (ChunkFault::Frame(_) | ChunkFault::Undecodable(_))) => {
            Err(StoreError::Invalid(format!(
                "chunk {id}: {f}; nothing was stored (a chunk is uploaded as exactly one zstd \
                 frame that declares its content size: docs/format.md)"
            )))
        }
        Err(f @ ChunkFault::WrongContent(_)) => Err(StoreError::BadChunk(format!(
            "chunk {id}: {f}; nothing was stored"
        ))),
    }
}

impl Store {
    /// Where a chunk's file is in the local layout (tests of the local backend use it).
    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        self.chunks_dir().join(id.store_prefix()).join(id.to_hex())
    }

    /// Hold the chunk lock shared: GC cannot delete, nor verify quarantine, while it is held.
    pub fn lock_chunks_shared(&self) -> Result<DataLock> {
        self.data().lock_chunks(LockMode::Shared)
    }

    /// Verify and store a chunk upload. When the id is present, a good stored copy is touched;
    /// a bad one is replaced by the (verified) upload.
    pub fn put_chunk(&self, id: &ChunkId, frame: &[u8]) -> Result<PutOutcome> {
        verify_chunk(id, frame)?;
        let data = self.data();
        let _lock = self.lock_chunks_shared()?;
        let outcome = match data.read_chunk(id)? {
            // Equal bytes are as good as the upload just verified: no second decompression.
            Some(stored) if stored == frame => PutOutcome::AlreadyPresent,
            Some(stored) => match check_chunk(id, &stored) {
                Ok(_) => PutOutcome::AlreadyPresent,
                Err(fault) => {
                    tracing::warn!("replacing damaged stored chunk {id} ({fault}) with an upload");
                    PutOutcome::Replaced
                }
            },
            None => PutOutcome::Stored,
        };
        match outcome {
            PutOutcome::AlreadyPresent => {
                if !data.touch_chunk(id)? {
                    // The bytes are stored but not catalogued (S3: a node died between the
                    // object's PUT and its catalogue entry), so known-chunks calls the chunk
                    // missing and the agent sends it again: this verified upload catalogues it.
                    tracing::warn!("chunk {id} was stored but not catalogued: catalogued now");
                    data.write_chunk(id, frame)?;
                }
            }
            PutOutcome::Stored | PutOutcome::Replaced => data.write_chunk(id, frame)?,
        }
        Ok(outcome)
    }

    /// Touch every chunk of `ids` that is present (marks it in use now, see [`crate::gc`]) and
    /// return those that are missing, in the order given.
    pub fn touch_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let data = self.data();
        let _lock = self.lock_chunks_shared()?;
        data.touch_chunks(ids)
    }

    /// The stored zstd frame of a chunk.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.data()
            .read_chunk(id)?
            .ok_or_else(|| chunk_not_found(id))
    }

    /// Chunks and their stored bytes (no lock: a figure for monitoring, not for GC).
    pub fn chunk_usage(&self) -> Result<ChunkUsage> {
        self.data().chunk_usage()
    }

    pub fn has_chunk(&self, id: &ChunkId) -> bool {
        self.data().has_chunk(id).unwrap_or(false)
    }
}

pub(crate) fn chunk_not_found(id: &ChunkId) -> StoreError {
    StoreError::NotFound(format!(
        "chunk {id} is not in the store (was its snapshot pruned? list snapshots again)"
    ))
}

/// [`Store::chunk_usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkUsage {
    pub chunks: u64,
    pub bytes: u64,
}
