//! Sources whose guest bytes are file bytes: raw images, block devices and the flat extent of a
//! VMDK descriptor (a window of `size` bytes starting at `base`).
//!
//! Holes: a sparse file's holes read as zeros, so `known_zero` asks the filesystem where data
//! is (`lseek(SEEK_DATA)`) and a backup neither reads nor uploads them. Filesystems without hole
//! support report every byte as data (or fail the call): then nothing is known and every byte is
//! read. Block devices are never asked (no holes; discarded blocks need not read as zeros), and are
//! read with `O_DIRECT`: their page cache can be stale under a mounted filesystem.

use std::fs::File;
use std::path::Path;

use crate::file::{check_guest_range, ImageFile};
use crate::{DiskSource, ImageError, ImageFormat};

pub(crate) struct Raw {
    file: ImageFile,
    base: u64,
    size: u64,
    sector_size: u32,
    format: ImageFormat,
    /// A regular file, whose holes the filesystem can report.
    holes: bool,
}

impl Raw {
    pub(crate) fn file(file: ImageFile) -> Self {
        let size = file.len();
        Self {
            file,
            base: 0,
            size,
            sector_size: 512,
            format: ImageFormat::Raw,
            holes: true,
        }
    }

    /// `size` bytes of `file` from `base`; the caller checked they lie inside the file.
    pub(crate) fn window(file: ImageFile, base: u64, size: u64, format: ImageFormat) -> Self {
        Self {
            file,
            base,
            size,
            sector_size: 512,
            format,
            holes: true,
        }
    }

    pub(crate) fn block_device(
        file: File,
        path: &Path,
        opts: crate::OpenOptions,
    ) -> Result<Self, ImageError> {
        let query = |what: &str, e: std::io::Error| ImageError::Open {
            path: path.to_path_buf(),
            source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
        };
        let size = ferry_sys::blk::size(&file)
            .map_err(|e| query("query device size (BLKGETSIZE64)", e))?;
        let sector_size = logical_sector_size(&file)
            .map_err(|e| query("query logical sector size (BLKSSZGET)", e))?;
        let file = match open_direct(path) {
            Ok(direct) => ImageFile::direct(direct, path, size, u64::from(sector_size)),
            // A device that refuses O_DIRECT (EINVAL): read through its cache, as before.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                ImageFile::with_len(file, path, size).dropping_cache(opts.drop_cache)
            }
            Err(e) => return Err(query("open for direct reads (O_DIRECT)", e)),
        };
        Ok(Self {
            file,
            base: 0,
            size,
            sector_size,
            format: ImageFormat::BlockDevice,
            holes: false,
        })
    }
}

impl DiskSource for Raw {
    fn size(&self) -> u64 {
        self.size
    }

    fn logical_sector_size(&self) -> u32 {
        self.sector_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
        check_guest_range(self.file.path(), self.size, offset, buf.len())?;
        // base + size was checked against the file (or is the device size), so no overflow.
        self.file.read_exact_at(buf, self.base + offset)
    }

    fn known_zero(&self, offset: u64, len: u64) -> bool {
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.size);
        if !self.holes || len == 0 || !inside {
            return false;
        }
        // base + size was checked against the file, so no overflow.
        let (start, end) = (self.base + offset, self.base + offset + len);
        hole_covers(self.file.next_data(start), end, || self.file.current_len())
    }

    fn format(&self) -> ImageFormat {
        self.format
    }
}

/// Whether a `SEEK_DATA` answer for a range's start proves the range up to `end` is a hole.
/// "No data to the end of the file" counts only while the file still reaches `end`: a file that
/// shrank must fail its read, not turn into zeros. Any error means "unknown": read it.
fn hole_covers(
    next_data: std::io::Result<Option<u64>>,
    end: u64,
    current_len: impl FnOnce() -> Option<u64>,
) -> bool {
    match next_data {
        Ok(Some(data)) => data >= end,
        Ok(None) => current_len().is_some_and(|len| len >= end),
        Err(_) => false,
    }
}

/// The device again, for reads that bypass its page cache (see [`ImageFile::direct`]).
fn open_direct(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

fn logical_sector_size(file: &File) -> std::io::Result<u32> {
    let size = ferry_sys::blk::logical_sector_size(file)?;
    Some(size)
        .filter(|s| s.is_power_of_two() && *s >= 512)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("implausible sector size {size}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::hole_covers;
    use std::io::{Error, ErrorKind};

    #[test]
    fn only_a_reported_hole_counts_as_zeros() {
        let len = || Some(1 << 20);
        // Data after the range: a hole; data inside it: not.
        assert!(hole_covers(Ok(Some(8192)), 8192, len));
        assert!(!hole_covers(Ok(Some(8191)), 8192, len));
        // No data to the end of the file, which still covers the range.
        assert!(hole_covers(Ok(None), 8192, len));
        // ... but a file that shrank below the range must be read (and fail), not be zeros.
        assert!(!hole_covers(Ok(None), 8192, || Some(4096)));
        assert!(!hole_covers(Ok(None), 8192, || None));
    }

    #[test]
    fn filesystems_without_hole_support_fall_back_to_reading() {
        let len = || Some(1 << 20);
        // The VFS's generic llseek reports every byte as data: SEEK_DATA returns the offset.
        assert!(!hole_covers(Ok(Some(4096)), 8192, len));
        // Kernels or filesystems that reject SEEK_DATA.
        for e in [
            Error::from_raw_os_error(libc::EINVAL),
            Error::from_raw_os_error(libc::EOPNOTSUPP),
            Error::from(ErrorKind::Other),
        ] {
            assert!(!hole_covers(Err(e), 8192, len));
        }
    }
}
