//! Restore targets: a block device or a regular file, opened only after the checks that keep us
//! from writing the wrong disk pass (it exists or can be created, it is large enough, it is not
//! in use, and it holds no data unless the operator said to overwrite).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{io_err, EngineError, Refusal};

pub use crate::blockdev::{partitions, reread_partitions, PartitionNode, Reread};

use crate::contents::{self, Contents};
use ferry_format::marker::RestoreMarker;
use ferry_sys::blk;

/// What a restore may write over.
#[derive(Debug, Clone, Default)]
pub struct Permit {
    /// Any target that holds data (`--overwrite`), except a protected one (the boot medium).
    pub overwrite: bool,
    /// The marker this restore writes: a target that carries exactly it holds this restore's
    /// own partial work and may be written without `overwrite`.
    pub marker: Option<RestoreMarker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    BlockDevice,
    /// A regular file; `created` when this run made it (then it is known to read as zeros).
    File {
        created: bool,
    },
}

pub struct Target {
    pub path: PathBuf,
    pub file: File,
    pub kind: TargetKind,
    pub size: u64,
    /// The in-progress marker's bytes, written at offset 0 whenever the first chunk is wiped.
    pub marker: Option<Vec<u8>>,
}

/// What a target looked like before anything was written (for plans and messages).
#[derive(Debug, Clone)]
pub struct TargetCheck {
    pub path: PathBuf,
    pub exists: bool,
    pub kind: TargetKind,
    /// Bytes the target offers: a device's size; a file's length, or the disk's size if it is
    /// shorter (files grow).
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// Why it counts as holding data, if it does.
    pub holds: Option<String>,
    /// It carries this restore's own in-progress marker.
    pub resumes: bool,
    /// The marker this restore writes before it changes anything else.
    pub marker: Option<RestoreMarker>,
}

/// Inspect `path` without writing anything, and refuse it when it is not a safe target for a
/// disk of `needed` bytes.
pub fn check(path: &Path, needed: u64, permit: &Permit) -> Result<TargetCheck, EngineError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(Refusal::NoParentDir {
                    path: path.into(),
                    parent: parent.into(),
                }
                .into());
            }
            return Ok(TargetCheck {
                path: path.into(),
                exists: false,
                kind: TargetKind::File { created: true },
                size: needed,
                logical_sector_size: 0,
                physical_sector_size: 0,
                holds: None,
                resumes: false,
                marker: permit.marker.clone(),
            });
        }
        Err(e) => return Err(io_err(path, "stat", 0)(e)),
    };
    let ft = meta.file_type();
    let kind = if ft.is_block_device() {
        TargetKind::BlockDevice
    } else if ft.is_file() {
        TargetKind::File { created: false }
    } else {
        return Err(Refusal::NotADiskOrFile { path: path.into() }.into());
    };
    // O_EXCL on a block device fails while it is mounted or held (LVM, md, another program).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(if kind == TargetKind::BlockDevice {
            libc::O_EXCL
        } else {
            0
        })
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                Refusal::InUse { path: path.into() }.into()
            } else {
                io_err(path, "open", 0)(e)
            }
        })?;
    let (size, logical_sector_size, physical_sector_size) = match kind {
        TargetKind::BlockDevice => (
            blk::size(&file).map_err(io_err(path, "BLKGETSIZE64", 0))?,
            blk::logical_sector_size(&file).map_err(io_err(path, "BLKSSZGET", 0))?,
            blk::physical_sector_size(&file).map_err(io_err(path, "BLKPBSZGET", 0))?,
        ),
        // 0: an image file takes the source disk's sector size.
        TargetKind::File { .. } => (meta.len(), 0, 0),
    };
    let contents = contents::examine(&file, size).map_err(io_err(path, "read", 0))?;
    if let Some(why) = contents.protected() {
        return Err(Refusal::Protected {
            path: path.into(),
            why: why.to_string(),
        }
        .into());
    }
    let resumes = matches!((&contents, &permit.marker), (Contents::Marker(m), Some(mine)) if m.same_restore(mine));
    let holds = contents.describe();
    // A device too small is refused by the layout planner, naming the size it needs: a better
    // message than "holds data", and it writes nothing either.
    let too_small = kind == TargetKind::BlockDevice && size < needed;
    if let (Some(what), false, false, false) = (&holds, permit.overwrite, resumes, too_small) {
        return Err(Refusal::HoldsData {
            path: path.into(),
            what: what.clone(),
        }
        .into());
    }
    let size = if kind == TargetKind::BlockDevice {
        size
    } else {
        size.max(needed)
    };
    Ok(TargetCheck {
        path: path.into(),
        exists: true,
        kind,
        size,
        logical_sector_size,
        physical_sector_size,
        holds,
        resumes,
        marker: permit.marker.clone(),
    })
}

/// Open a checked target for writing; a new or short file grows to `check.size` bytes.
pub fn open(check: &TargetCheck) -> Result<Target, EngineError> {
    let path = &check.path;
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    match check.kind {
        TargetKind::BlockDevice => {
            opts.custom_flags(libc::O_EXCL);
        }
        TargetKind::File { created: true } => {
            opts.create_new(true);
        }
        TargetKind::File { created: false } => {}
    }
    let file = opts
        .open(path)
        .map_err(io_err(path, "open for writing", 0))?;
    let size = match check.kind {
        TargetKind::BlockDevice => blk::size(&file).map_err(io_err(path, "BLKGETSIZE64", 0))?,
        TargetKind::File { .. } => {
            let len = file.metadata().map_err(io_err(path, "stat", 0))?.len();
            if len < check.size {
                file.set_len(check.size)
                    .map_err(io_err(path, "resize", check.size))?;
            }
            check.size
        }
    };
    Ok(Target {
        path: path.clone(),
        file,
        kind: check.kind,
        size,
        marker: check.marker.as_ref().map(RestoreMarker::encode),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_created_blank_and_data_is_refused_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        let blank_only = Permit::default();
        let overwrite = Permit {
            overwrite: true,
            marker: None,
        };
        let c = check(&p, 1 << 20, &blank_only).unwrap();
        assert!(!c.exists);
        let t = open(&c).unwrap();
        assert_eq!(t.file.metadata().unwrap().len(), 1 << 20);
        drop(t);
        assert!(check(&p, 1 << 20, &blank_only).unwrap().holds.is_none());
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        std::fs::write(&p, &mbr).unwrap();
        let e = check(&p, 1 << 20, &blank_only).unwrap_err().to_string();
        assert!(e.contains("MBR") && e.contains("--overwrite"), "{e}");
        assert!(check(&p, 1 << 20, &overwrite).is_ok());
        assert!(check(&dir.path().join("no/such/dir/x"), 1, &blank_only).is_err());
    }

    #[test]
    fn only_this_restores_marker_lets_a_job_resume_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        let mine = RestoreMarker::new("job-00000001", "m-1", "sda", &"aa".repeat(32));
        let mut b = mine.encode();
        b.resize(4 << 20, 7);
        std::fs::write(&p, &b).unwrap();
        let permit = |m: &RestoreMarker| Permit {
            overwrite: false,
            marker: Some(m.clone()),
        };
        let c = check(&p, 4 << 20, &permit(&mine)).unwrap();
        assert!(c.resumes);
        let mut other = mine.clone();
        other.proof = "bb".repeat(32);
        let e = check(&p, 4 << 20, &permit(&other)).unwrap_err().to_string();
        assert!(
            e.contains("partial restore") && e.contains("job-00000001"),
            "{e}"
        );
        let e = check(&p, 4 << 20, &Permit::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--overwrite"), "{e}");
    }

    #[test]
    fn an_iso_is_refused_even_with_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rescue.iso");
        let mut b = vec![0u8; 1 << 20];
        b[32769..32774].copy_from_slice(b"CD001");
        std::fs::write(&p, &b).unwrap();
        let e = check(
            &p,
            1 << 20,
            &Permit {
                overwrite: true,
                marker: None,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("never written") && e.contains("ISO 9660"), "{e}");
    }
}
