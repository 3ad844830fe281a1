//! The data path shared by backup-agent and restore-agent (host mode and PID 1).
//!
//! - [`backup`]: read a disk source chunk by chunk, hash, skip zeros, ask the appliance which
//!   chunks it lacks, compress and upload only those, then commit a snapshot.
//! - [`restore`]: a seeded sync. Compare what the target already holds with the snapshot's index,
//!   fetch only chunks that differ, verify each against its id *before* it reaches the target,
//!   write with large aligned writes, and write the boot-critical first chunk last.
//! - [`target`]: opening restore targets safely (size, in-use and holds-data checks), and making
//!   the kernel see a restored disk's partitions ([`target::reread_partitions`]).
//! - [`grow`]: growing a restored filesystem (in a partition, a whole disk or an LV) with its own
//!   tool; [`loopdev`]: loop devices over byte ranges for it.
//!
//! Memory is bounded by a pool of chunk buffers: at most `parallel + 4` chunks live at once.

pub mod backup;
mod blockdev;
pub mod grow;
pub mod loopdev;
mod pool;
pub mod progress;
pub mod restore;
pub mod target;

use std::path::PathBuf;

/// Everything that can stop a backup or a restore, with the thing it concerns.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Client(#[from] ferry_client::ClientError),
    #[error(transparent)]
    Image(#[from] ferry_image::ImageError),
    #[error("{path}: {op} at offset {offset}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("chunk {id} (disk {disk}, offset {offset}) from the appliance does not match its id: the appliance's copy is corrupt ({detail}). Nothing of it was written. Back up the source again to re-upload it, or restore another snapshot; a rerun resumes where this one stopped")]
    CorruptChunk {
        id: ferry_format::ChunkId,
        disk: String,
        offset: u64,
        detail: String,
    },
    #[error("a worker thread failed: {0}")]
    Worker(String),
}

pub(crate) fn io_err<'a>(
    path: &'a std::path::Path,
    op: &'static str,
    offset: u64,
) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        op,
        offset,
        source,
    }
}
