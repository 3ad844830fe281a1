//! A loop device over a byte range of a file or block device, set up by ioctl (LOOP_CONFIGURE,
//! or LOOP_SET_FD + LOOP_SET_STATUS64 on kernels before 5.8): the rescue image's busybox
//! `losetup` has no `--sizelimit`, and a host may have no `losetup` at all.
//!
//! The device is set to auto-clear: the kernel detaches it when the last user closes it, so a
//! crash leaves nothing behind. [`LoopDevice`] keeps one descriptor open until it is dropped.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;

const CONTROL: &str = "/dev/loop-control";
const LO_FLAGS_AUTOCLEAR: u32 = 4;

mod ioctl {
    use super::{LoopConfig, LoopInfo64};

    // linux/loop.h: all are _IO(0x4C, n), some pass data anyway ("bad" ioctls for nix).
    nix::ioctl_write_int_bad!(loop_set_fd, nix::request_code_none!(0x4C, 0x00));
    nix::ioctl_none!(loop_clr_fd, 0x4C, 0x01);
    nix::ioctl_write_ptr_bad!(
        loop_set_status64,
        nix::request_code_none!(0x4C, 0x04),
        LoopInfo64
    );
    nix::ioctl_write_ptr_bad!(
        loop_configure,
        nix::request_code_none!(0x4C, 0x0A),
        LoopConfig
    );
    nix::ioctl_none!(loop_ctl_get_free, 0x4C, 0x82);
}

/// Why no loop device could be attached.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("no loop devices here ({path}: {source}): the kernel needs the loop driver", path = CONTROL)]
    NoDriver { source: std::io::Error },
    #[error("{path}: {op} at offset {offset}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        source: std::io::Error,
    },
}

fn io_err(path: &Path, op: &'static str, offset: u64) -> impl FnOnce(std::io::Error) -> LoopError {
    let path = path.to_path_buf();
    move |source| LoopError::Io {
        path,
        op,
        offset,
        source,
    }
}

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device; detached when dropped (and by the kernel once nothing holds it).
pub struct LoopDevice {
    path: PathBuf,
    file: File,
}

impl LoopDevice {
    /// Attach a read-write loop device over `len` bytes of `backing` from `offset`.
    pub fn attach(backing: &Path, offset: u64, len: u64) -> Result<LoopDevice, LoopError> {
        let control = open_control()?;
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .open(backing)
            .map_err(io_err(backing, "open for a loop device", offset))?;
        // Another process may take the free device between GET_FREE and CONFIGURE: try again.
        let mut last = None;
        for _ in 0..8 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let n = unsafe { ioctl::loop_ctl_get_free(control.as_raw_fd()) }
                .map_err(|e| io_err(Path::new(CONTROL), "LOOP_CTL_GET_FREE", 0)(e.into()))?;
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let file = open_node(&path)?;
            match configure(&file, &data, offset, len) {
                Ok(()) => return Ok(LoopDevice { path, file }),
                Err(Errno::EBUSY) => last = Some(Errno::EBUSY),
                Err(e) => return Err(io_err(&path, "attach (LOOP_CONFIGURE)", offset)(e.into())),
            }
        }
        let e = last.unwrap_or(Errno::EBUSY);
        Err(io_err(backing, "find a free loop device", offset)(e.into()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // SAFETY: LOOP_CLR_FD takes no argument. EBUSY (still held) leaves it to auto-clear.
        let _ = unsafe { ioctl::loop_clr_fd(self.file.as_raw_fd()) };
    }
}

/// `/dev/loop-control`, loading the loop module first when the node is missing.
fn open_control() -> Result<File, LoopError> {
    let control = Path::new(CONTROL);
    if !control.exists() {
        crate::tool::modprobe("loop");
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(control)
        .map_err(|source| LoopError::NoDriver { source })
}

/// The node of a just-created loop device may take a moment to appear in devtmpfs.
fn open_node(path: &Path) -> Result<File, LoopError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err(path, "open", 0)(e)),
        }
    }
}

fn info(offset: u64, len: u64) -> LoopInfo64 {
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: offset,
        lo_sizelimit: len,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_AUTOCLEAR,
        lo_file_name: [0; 64],
        lo_crypt_name: [0; 64],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

fn configure(dev: &File, data: &File, offset: u64, len: u64) -> Result<(), Errno> {
    let cfg = LoopConfig {
        fd: data.as_raw_fd() as u32,
        block_size: 0,
        info: info(offset, len),
        reserved: [0; 8],
    };
    // SAFETY: the kernel reads one loop_config from `cfg`, which outlives the call.
    match unsafe { ioctl::loop_configure(dev.as_raw_fd(), &cfg) } {
        Ok(_) => return Ok(()),
        // Before Linux 5.8: bind the file, then set the range.
        Err(Errno::EINVAL | Errno::ENOTTY) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor by value; `data` stays open.
    unsafe { ioctl::loop_set_fd(dev.as_raw_fd(), data.as_raw_fd()) }?;
    let i = info(offset, len);
    // SAFETY: the kernel reads one loop_info64 from `i`, which outlives the call.
    if let Err(e) = unsafe { ioctl::loop_set_status64(dev.as_raw_fd(), &i) } {
        // SAFETY: LOOP_CLR_FD takes no argument.
        let _ = unsafe { ioctl::loop_clr_fd(dev.as_raw_fd()) };
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_struct_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        assert_eq!(nix::request_code_none!(0x4C, 0x00), 0x4C00);
        assert_eq!(nix::request_code_none!(0x4C, 0x01), 0x4C01);
        assert_eq!(nix::request_code_none!(0x4C, 0x04), 0x4C04);
        assert_eq!(nix::request_code_none!(0x4C, 0x0A), 0x4C0A);
        assert_eq!(nix::request_code_none!(0x4C, 0x82), 0x4C82);
    }
}
