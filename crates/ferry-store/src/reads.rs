//! Files the server streams to clients instead of reading them whole: a chunk's frame (up to
//! 65 MiB) and a snapshot's index (up to 512 MiB). Each is opened here and its length taken from
//! the open file, so a rename over it or a prune meanwhile does not change what is sent.

use std::fs::File;
use std::io;
use std::path::Path;

use ferry_format::names::{check_name, NameKind};
use ferry_format::ChunkId;

use crate::error::{io_err, Result, StoreError};
use crate::Store;

impl Store {
    /// The stored frame of a chunk, open, and its length.
    pub fn open_chunk(&self, id: &ChunkId) -> Result<(File, u64)> {
        open_with_len(&self.chunk_path(id), || {
            StoreError::NotFound(format!(
                "chunk {id} is not in the store (was its snapshot pruned? list snapshots again)"
            ))
        })
    }

    /// The encoded index of one disk of a snapshot, open, and its length.
    pub fn open_snapshot_index(&self, id: &str, disk: &str) -> Result<(File, u64)> {
        check_name(NameKind::Snapshot, id)?;
        check_name(NameKind::Disk, disk)?;
        let dir = self.snapshots_dir().join(id);
        open_with_len(&dir.join(format!("{disk}.index")), || {
            if dir.is_dir() {
                StoreError::NotFound(format!("snapshot {id} has no disk {disk}"))
            } else {
                StoreError::NotFound(format!(
                    "snapshot {id} does not exist: list snapshots to see which do"
                ))
            }
        })
    }
}

fn open_with_len(path: &Path, missing: impl FnOnce() -> StoreError) -> Result<(File, u64)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let meta = file.metadata().map_err(io_err("stat", path))?;
    if !meta.is_file() {
        // A directory opens fine and fails only at the first read, mid-body: say so up front.
        return Err(io_err("read", path)(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file: the store is damaged here; run `appliance verify`",
        )));
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_where_a_file_belongs_is_an_error_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_with_len(dir.path(), || StoreError::NotFound("x".into())).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(
            open_with_len(&f, || StoreError::NotFound("x".into()))
                .unwrap()
                .1,
            3
        );
    }
}
