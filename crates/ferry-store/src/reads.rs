//! What the server streams to clients instead of reading whole: a chunk's frame (up to 65 MiB)
//! and a snapshot's index (up to 512 MiB). On the local store each is a file opened here, its
//! length taken from the open file, so a rename over it or a prune meanwhile does not change
//! what is sent; on S3 the object's bytes.

use ferry_format::names::{check_name, NameKind};
use ferry_format::ChunkId;

use crate::chunks::chunk_not_found;
use crate::data::Blob;
use crate::error::{Result, StoreError};
use crate::Store;

impl Store {
    /// The stored frame of a chunk, to stream.
    pub fn open_chunk(&self, id: &ChunkId) -> Result<Blob> {
        self.data()
            .open_chunk(id)?
            .ok_or_else(|| chunk_not_found(id))
    }

    /// The encoded index of one disk of a snapshot, to stream.
    pub fn open_snapshot_index(&self, id: &str, disk: &str) -> Result<Blob> {
        check_name(NameKind::Snapshot, id)?;
        check_name(NameKind::Disk, disk)?;
        match self
            .data()
            .open_snapshot_object(id, &format!("{disk}.index"))?
        {
            Some(blob) => Ok(blob),
            None if self.data().snapshot_exists(id)? => Err(StoreError::NotFound(format!(
                "snapshot {id} has no disk {disk}"
            ))),
            None => Err(StoreError::NotFound(format!(
                "snapshot {id} does not exist: list snapshots to see which do"
            ))),
        }
    }
}
