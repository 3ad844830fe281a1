//! After a restore the kernel still holds the target's old partition table (none, on a blank
//! disk): ask it to read the new one, so `/dev/vdb1`… exist for the grow and fix-up steps.
//!
//! BLKRRPART re-reads the whole table but fails with EBUSY while any partition of the disk is
//! in use; then the table is read here (ferry-probe) and the kernel's partitions are changed one
//! by one with BLKPG (like `partx -u`), which works for every partition not in use. Neither
//! ever fails a restore: what could not be done comes back as a warning.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_format::layout::{MbrPartitionKind, PartitionTable};
use ferry_sys::blk::{self, BlkpgOp};
use serde::Serialize;

use crate::{io_err, EngineError, Refusal};

/// How long to wait for devtmpfs to show the partition nodes.
const NODE_WAIT: Duration = Duration::from_secs(3);

/// A partition as the kernel has it (sysfs), with its device node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionNode {
    pub number: u32,
    /// `/dev/vdb1`, `/dev/nvme0n1p1`: the kernel's name under /dev.
    pub node: PathBuf,
    /// Bytes from the start of the disk.
    pub start: u64,
    pub size: u64,
}

/// What [`reread_partitions`] achieved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reread {
    /// The kernel's partitions of the disk afterwards, by number.
    pub partitions: Vec<PartitionNode>,
    /// `BLKRRPART`, or `BLKPG` when the disk was busy.
    pub method: String,
    /// Set when the kernel's view may not match the disk, or a node did not appear.
    pub warning: Option<String>,
}

/// Make the kernel read `disk`'s partition table again and wait for the partition nodes.
/// Errors only when `disk` is not a whole-disk block device or cannot be opened; a table the
/// kernel would not re-read is a warning in the result.
pub fn reread_partitions(disk: &Path) -> Result<Reread, EngineError> {
    let sys = sysfs_dir(disk)?;
    let file = File::open(disk).map_err(io_err(disk, "open", 0))?;
    let r = blk::reread_partitions(&file);
    let mut out = Reread {
        method: "BLKRRPART".into(),
        ..Reread::default()
    };
    if let Err(e) = r {
        match e.raw_os_error() {
            Some(libc::EBUSY) => {
                out.method = "BLKPG".into();
                let problems = blkpg_update(&file, disk, &sys);
                if !problems.is_empty() {
                    out.warning = Some(format!(
                        "{} is in use, so the kernel could not re-read its partition table; {}",
                        disk.display(),
                        problems.join("; ")
                    ));
                }
            }
            // A loop device without partition scanning, or a disk that cannot have partitions.
            Some(libc::EINVAL) => {
                out.warning = Some(format!(
                    "the kernel does not scan partitions of {} (BLKRRPART: {e}): its partitions have no device nodes",
                    disk.display()
                ))
            }
            _ => return Err(io_err(disk, "re-read the partition table (BLKRRPART)", 0)(e)),
        }
    }
    drop(file);
    out.partitions = wait_for_nodes(&sys, &mut out.warning)?;
    Ok(out)
}

/// The kernel's partitions of a whole-disk block device, from sysfs.
pub fn partitions(disk: &Path) -> Result<Vec<PartitionNode>, EngineError> {
    let sys = sysfs_dir(disk)?;
    list(&sys).map_err(io_err(&sys, "read sysfs", 0))
}

/// `/sys/dev/block/MAJ:MIN` of a whole disk (refused for partitions and non-block files).
fn sysfs_dir(disk: &Path) -> Result<PathBuf, EngineError> {
    let meta = std::fs::metadata(disk).map_err(io_err(disk, "stat", 0))?;
    if !meta.file_type().is_block_device() {
        return Err(Refusal::NotADevice { path: disk.into() }.into());
    }
    let rdev = meta.rdev();
    let sys = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(rdev),
        libc::minor(rdev)
    ));
    if sys.join("partition").exists() {
        return Err(Refusal::IsAPartition { path: disk.into() }.into());
    }
    Ok(sys)
}

fn read_u64(p: &Path) -> std::io::Result<u64> {
    let s = std::fs::read_to_string(p)?;
    s.trim().parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not a number: {s:?}", p.display()),
        )
    })
}

fn list(sys: &Path) -> std::io::Result<Vec<PartitionNode>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(sys)? {
        let entry = entry?;
        let dir = entry.path();
        // Only partitions have a `partition` file; sysfs counts in 512-byte units.
        let Ok(number) = read_u64(&dir.join("partition")) else {
            continue;
        };
        out.push(PartitionNode {
            number: number as u32,
            node: Path::new("/dev").join(entry.file_name()),
            start: read_u64(&dir.join("start"))? * 512,
            size: read_u64(&dir.join("size"))? * 512,
        });
    }
    out.sort_by_key(|p| p.number);
    Ok(out)
}

/// Polls until every partition sysfs lists has its /dev node (devtmpfs adds them, udev may
/// recreate them) or the wait is over; missing nodes become a warning.
fn wait_for_nodes(
    sys: &Path,
    warning: &mut Option<String>,
) -> Result<Vec<PartitionNode>, EngineError> {
    let deadline = Instant::now() + NODE_WAIT;
    loop {
        let parts = list(sys).map_err(io_err(sys, "read sysfs", 0))?;
        let missing: Vec<String> = parts
            .iter()
            .filter(|p| !p.node.exists())
            .map(|p| p.node.display().to_string())
            .collect();
        if missing.is_empty() {
            return Ok(parts);
        }
        if Instant::now() >= deadline {
            let w = format!(
                "no device node appeared for {} within {} s",
                missing.join(", "),
                NODE_WAIT.as_secs()
            );
            *warning = Some(match warning.take() {
                Some(old) => format!("{old}; {w}"),
                None => w,
            });
            return Ok(parts);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A partition the table on disk defines: (number, start byte, length in bytes).
type Wanted = (u32, u64, u64);

/// The partitions of the table on the disk, as the kernel numbers them. The MBR extended
/// container is left out: the kernel gives it a stub of its own, which nothing reads through.
fn wanted(disk: &Path) -> Result<(Vec<Wanted>, Option<u32>), String> {
    let source = ferry_image::open(disk).map_err(|e| e.to_string())?;
    let layout = ferry_probe::probe(source.as_ref()).map_err(|e| e.to_string())?;
    let ss = u64::from(layout.logical_sector_size);
    Ok(match &layout.table {
        PartitionTable::None => (Vec::new(), None),
        PartitionTable::Gpt(g) => (
            g.partitions
                .iter()
                .map(|p| {
                    (
                        p.slot,
                        p.first_lba * ss,
                        (p.last_lba + 1 - p.first_lba) * ss,
                    )
                })
                .collect(),
            None,
        ),
        PartitionTable::Mbr(m) => {
            let extended = m
                .partitions
                .iter()
                .find(|p| p.kind == MbrPartitionKind::Extended)
                .map(|p| p.slot);
            let parts = m
                .partitions
                .iter()
                .filter(|p| p.kind != MbrPartitionKind::Extended)
                .map(|p| (p.slot, p.start_lba * ss, p.sector_count * ss))
                .collect();
            (parts, extended)
        }
    })
}

/// Bring the kernel's partitions in line with the table on disk, one BLKPG call each; returns
/// what could not be done.
fn blkpg_update(file: &File, disk: &Path, sys: &Path) -> Vec<String> {
    let (want, extended) = match wanted(disk) {
        Ok(w) => w,
        Err(e) => return vec![format!("reading the new table failed: {e}")],
    };
    let have = match list(sys) {
        Ok(h) => h,
        Err(e) => return vec![format!("reading the kernel's partitions failed: {e}")],
    };
    let mut problems = Vec::new();
    let mut call = |op, number: u32, start: u64, len: u64, what: &str| {
        if let Err(e) = blk::blkpg(file, op, number, start, len) {
            problems.push(format!("{what} partition {number}: {e}"));
        }
    };
    for h in &have {
        if Some(h.number) == extended {
            continue;
        }
        match want.iter().find(|w| w.0 == h.number) {
            Some(&(_, start, len)) if start == h.start && len == h.size => {}
            Some(&(n, start, len)) if start == h.start => {
                call(BlkpgOp::Resize, n, start, len, "resize")
            }
            _ => call(BlkpgOp::Delete, h.number, 0, 0, "remove"),
        }
    }
    let have = list(sys).unwrap_or_default();
    for &(n, start, len) in &want {
        if !have.iter().any(|h| h.number == n) {
            call(BlkpgOp::Add, n, start, len, "add");
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_missing_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("img");
        std::fs::write(&f, b"x").unwrap();
        let e = reread_partitions(&f).unwrap_err().to_string();
        assert!(e.contains("not a block device"), "{e}");
        assert!(reread_partitions(&dir.path().join("none")).is_err());
    }
}
