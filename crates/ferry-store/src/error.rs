//! Errors of the store, typed by what the caller should do about them.

use std::io;
use std::path::{Path, PathBuf};

use ferry_format::{ChunkId, FormatError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed: carries the operation and the path.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The caller sent something that does not follow the format or the protocol.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Format(#[from] FormatError),
    /// An uploaded chunk does not decompress to data whose BLAKE3 is its id.
    #[error("{0}")]
    BadChunk(String),
    /// The named thing does not exist (or no longer does).
    #[error("{0}")]
    NotFound(String),
    /// Chunks an index or a commit refers to are not in the store.
    #[error("{} chunks are missing from the store: upload them, then retry", .0.len())]
    MissingChunks(Vec<ChunkId>),
    /// The store is not in the state the operation needs (already initialised, GC running, ...).
    #[error("{0}")]
    Conflict(String),
    /// Key material could not be used.
    #[error("{0}")]
    Key(String),
    /// An upload is larger than the store accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The caller proved nothing it claimed (a standby proof that does not hold).
    #[error("{0}")]
    Refused(String),
    /// The records database (PostgreSQL) failed `op`; `database` names it (database, host,
    /// schema), `detail` says why and, for a connection that failed, what to check.
    #[error("{op}: PostgreSQL {database}: {detail}")]
    Database {
        op: String,
        database: String,
        detail: String,
    },
    /// A file holding a secret (the PostgreSQL URL) may be read by group or others.
    #[error(
        "{what} {path} is readable by group or others (mode {mode:o}): chmod 600 it",
        path = .path.display()
    )]
    SecretReadable {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    /// The S3 data backend failed or is misconfigured (names the bucket, key and endpoint).
    #[error(transparent)]
    S3(Box<crate::data::s3::S3Error>),
    /// A job's network rules do not fit the snapshot or the target (`--nic`, `--reip`, `--ip`).
    #[error(transparent)]
    Network(#[from] ferry_fixup::network::RulesError),
}

impl From<crate::data::s3::S3Error> for StoreError {
    fn from(e: crate::data::s3::S3Error) -> StoreError {
        StoreError::S3(Box::new(e))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// `map_err` helper: `.map_err(io_err("read", &path))`.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl StoreError {
    /// True for an I/O error whose cause is a missing file.
    pub fn is_not_found(&self) -> bool {
        match self {
            StoreError::NotFound(_) => true,
            StoreError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }
}
