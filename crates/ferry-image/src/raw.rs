//! Sources whose guest bytes are file bytes: raw images, block devices and the flat extent of a
//! VMDK descriptor (a window of `size` bytes starting at `base`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::file::{check_guest_range, ImageFile};
use crate::{DiskSource, ImageError, ImageFormat};

pub(crate) struct Raw {
    file: ImageFile,
    base: u64,
    size: u64,
    sector_size: u32,
    format: ImageFormat,
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
        }
    }

    pub(crate) fn block_device(file: File, path: &Path) -> Result<Self, ImageError> {
        let query = |what: &str, e: std::io::Error| ImageError::Open {
            path: path.to_path_buf(),
            source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
        };
        let size = device_size(&file).map_err(|e| query("query device size (BLKGETSIZE64)", e))?;
        let sector_size = logical_sector_size(&file)
            .map_err(|e| query("query logical sector size (BLKSSZGET)", e))?;
        let file = ImageFile::with_len(file, path, size);
        Ok(Self {
            file,
            base: 0,
            size,
            sector_size,
            format: ImageFormat::BlockDevice,
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

    fn format(&self) -> ImageFormat {
        self.format
    }
}

/// `_IOR(0x12, 114, size_t)`; the libc crate does not export it. The encoding below is the generic
/// one (x86, ARM, RISC-V, s390x, LoongArch); other architectures fall back to seeking to the end.
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "sparc64"
)))]
fn device_size(file: &File) -> std::io::Result<u64> {
    const BLKGETSIZE64: u32 = (2 << 30) | (8 << 16) | (0x12 << 8) | 114;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at a live u64.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

#[cfg(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "sparc64"
))]
fn device_size(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

fn logical_sector_size(file: &File) -> std::io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at a live c_int.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::BLKSSZGET as _,
            &mut size as *mut libc::c_int,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    u32::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two() && *s >= 512)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("implausible sector size {size}"),
            )
        })
}
