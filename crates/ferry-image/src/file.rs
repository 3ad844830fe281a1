//! The one open file behind a source: positional reads that name the file in their errors, and the
//! bounds checks every parser runs before it trusts an offset read from the image.

use std::cell::RefCell;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use nix::unistd::{lseek, Whence};

use crate::{ImageError, ImageFormat};

pub(crate) struct ImageFile {
    file: File,
    path: PathBuf,
    /// File length at open time. Images are read while nobody writes them, so offsets taken from
    /// metadata are checked against this once instead of trusting the kernel's short reads.
    len: u64,
    /// Tell the kernel to drop each range from the page cache once it is read
    /// (`POSIX_FADV_DONTNEED`), so a backup does not push the server's own data out of memory.
    drop_cache: bool,
    /// Opened with `O_DIRECT`: every read goes to the device in whole logical sectors of this
    /// size, through an aligned bounce buffer ([`ImageFile::direct`]).
    direct_sector: Option<u64>,
}

/// Largest single `O_DIRECT` read: the bounce buffer each reading thread keeps.
const DIRECT_PIECE: u64 = 1 << 20;
/// Memory alignment of the bounce buffer: a page satisfies every logical sector size up to it.
const DIRECT_MEM_ALIGN: usize = 4096;

thread_local! {
    /// Per reading thread: `DIRECT_PIECE` plus room to align, allocated on first direct read.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl ImageFile {
    pub(crate) fn open(path: &Path) -> Result<Self, ImageError> {
        let open_err = |source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len,
            drop_cache: false,
            direct_sector: None,
        })
    }

    /// Wrap an already opened file whose length the caller determined (block devices report 0).
    pub(crate) fn with_len(file: File, path: &Path, len: u64) -> Self {
        Self {
            file,
            path: path.to_path_buf(),
            len,
            drop_cache: false,
            direct_sector: None,
        }
    }

    /// A block device opened with `O_DIRECT`, read in whole sectors of `sector` bytes (a power
    /// of two, at least 512; `len` is a multiple of it).
    ///
    /// Why not the page cache: a mounted filesystem writes file data to the device through the
    /// file's own cache, not the device's, so pages of the device cache (brought in by an
    /// earlier read, its readahead, or the filesystem's metadata reads of a block since freed
    /// and reused for data) go stale without being invalidated. A buffered read of the device
    /// can then return old bytes for a block the filesystem has written and synced, even under
    /// FIFREEZE. Direct reads see what the device holds, which after a freeze is the
    /// filesystem at that instant; and they leave the source's page cache alone.
    pub(crate) fn direct(file: File, path: &Path, len: u64, sector: u64) -> Self {
        Self {
            file,
            path: path.to_path_buf(),
            len,
            drop_cache: false,
            direct_sector: Some(sector),
        }
    }

    /// Drop what each read brought into the page cache once it is read (see [`crate::OpenOptions`]).
    pub(crate) fn dropping_cache(mut self, on: bool) -> Self {
        self.drop_cache = on;
        self
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Where the next data at or after `offset` starts (`lseek(SEEK_DATA)`): `Ok(None)` when
    /// the file holds no data from `offset` to its end (ENXIO). Filesystems without hole
    /// support answer `offset` itself (all data) or fail; both mean "read it".
    pub(crate) fn next_data(&self, offset: u64) -> std::io::Result<Option<u64>> {
        let at = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
        // Moves the file position, which nothing here uses: every read is positional (pread).
        match lseek(&self.file, at, Whence::SeekData) {
            Ok(pos) => Ok(u64::try_from(pos).ok()),
            Err(Errno::ENXIO) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The file's length now (`fstat`), which may differ from the length at open.
    pub(crate) fn current_len(&self) -> Option<u64> {
        self.file.metadata().ok().map(|m| m.len())
    }

    /// Read exactly `buf.len()` bytes at `offset`; the caller has checked the range.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
        if let Some(sector) = self.direct_sector {
            return self.read_direct(buf, offset, sector);
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| self.read_err(offset, source))?;
        if self.drop_cache {
            self.advise_dontneed(offset, buf.len());
        }
        Ok(())
    }

    /// Read `buf.len()` bytes at `offset` from an `O_DIRECT` descriptor: whole sectors around
    /// the range, a piece at a time, through this thread's aligned bounce buffer.
    fn read_direct(&self, buf: &mut [u8], offset: u64, sector: u64) -> Result<(), ImageError> {
        let too_far = || self.read_err(offset, std::io::Error::from(ErrorKind::UnexpectedEof));
        let end = offset.checked_add(buf.len() as u64).ok_or_else(too_far)?;
        let first = offset - offset % sector;
        // `len` is a whole number of sectors, so rounding up stays inside the device.
        let last = end
            .div_ceil(sector)
            .checked_mul(sector)
            .ok_or_else(too_far)?;
        BOUNCE.with(|cell| {
            let mut bounce = cell.borrow_mut();
            let need = DIRECT_PIECE as usize + DIRECT_MEM_ALIGN;
            if bounce.len() < need {
                bounce.resize(need, 0);
            }
            let pad = bounce.as_ptr().align_offset(DIRECT_MEM_ALIGN);
            let mut at = first;
            while at < last {
                let n = (last - at).min(DIRECT_PIECE);
                let piece = &mut bounce[pad..pad + n as usize];
                self.file
                    .read_exact_at(piece, at)
                    .map_err(|source| self.read_err(at, source))?;
                // The part of this piece that lies inside the caller's range.
                let from = offset.max(at);
                let to = end.min(at + n);
                if from < to {
                    let dst = (from - offset) as usize..(to - offset) as usize;
                    let src = (from - at) as usize..(to - at) as usize;
                    buf[dst].copy_from_slice(&piece[src]);
                }
                at += n;
            }
            Ok(())
        })
    }

    /// `POSIX_FADV_DONTNEED` on a range just read. Only advice: the kernel drops the clean,
    /// unmapped pages of the range (whole pages only) and a failure changes nothing we read, so
    /// it is ignored.
    fn advise_dontneed(&self, offset: u64, len: usize) {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return;
        };
        if len > 0 {
            let _ = posix_fadvise(
                &self.file,
                off,
                len,
                PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
    }

    /// Read up to `buf.len()` bytes at `offset`, zero-filling whatever lies past the end of the file.
    /// qemu reads past EOF as zeros, and it leaves the last cluster of an image short when the tail
    /// was never written, so the formats that allow this use it for data clusters.
    pub(crate) fn read_zero_padded(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
        let avail = self.len.saturating_sub(offset);
        let n = usize::try_from(avail).map_or(buf.len(), |a| a.min(buf.len()));
        let (head, tail) = buf.split_at_mut(n);
        self.read_exact_at(head, offset)?;
        tail.fill(0);
        Ok(())
    }

    /// Read a metadata structure of `len` bytes at `offset`, or report `what` as corrupt when it
    /// does not lie inside the file. `len` must already be bounded by the caller.
    pub(crate) fn read_struct(
        &self,
        format: ImageFormat,
        what: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, ImageError> {
        self.check_inside(format, what, offset, len as u64)?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Fail with `Corrupt` unless `offset..offset+len` lies inside the file.
    pub(crate) fn check_inside(
        &self,
        format: ImageFormat,
        what: &str,
        offset: u64,
        len: u64,
    ) -> Result<(), ImageError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(self.corrupt(
                format,
                format!(
                    "{what} at offset {offset} ({len} bytes) extends past the end of the file ({} bytes)",
                    self.len
                ),
            )),
        }
    }

    pub(crate) fn corrupt(&self, format: ImageFormat, reason: impl Into<String>) -> ImageError {
        ImageError::Corrupt {
            path: self.path.clone(),
            format,
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Unsupported {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn read_err(&self, offset: u64, source: std::io::Error) -> ImageError {
        // A short read of a range we checked means the file shrank under us: still an I/O error.
        let source = if source.kind() == ErrorKind::UnexpectedEof {
            std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "file ended early (truncated while open?)",
            )
        } else {
            source
        };
        ImageError::Read {
            path: self.path.clone(),
            offset,
            source,
        }
    }
}

/// Fail with `OutOfRange` unless a guest read of `len` bytes at `offset` fits in `size`.
pub(crate) fn check_guest_range(
    path: &Path,
    size: u64,
    offset: u64,
    len: usize,
) -> Result<(), ImageError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(ImageError::OutOfRange {
            path: path.to_path_buf(),
            offset,
            len,
            size,
        }),
    }
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

pub(crate) fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
