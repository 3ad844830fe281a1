//! A loop device over a byte range of a file or block device, set up by ioctl (LOOP_CONFIGURE,
//! or LOOP_SET_FD + LOOP_SET_STATUS64 on kernels before 5.8): the rescue image's busybox
//! `losetup` has no `--sizelimit`, and a host may have no `losetup` at all.
//!
//! The device is set to auto-clear: the kernel detaches it when the last user closes it, so a
//! crash leaves nothing behind. [`LoopDevice`] keeps one descriptor open until it is dropped.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{io_err, EngineError};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

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
    pub fn attach(backing: &Path, offset: u64, len: u64) -> Result<LoopDevice, EngineError> {
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
            let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return Err(io_err(
                    Path::new("/dev/loop-control"),
                    "LOOP_CTL_GET_FREE",
                    0,
                )(e));
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let file = open_node(&path)?;
            match configure(&file, &data, offset, len) {
                Ok(()) => return Ok(LoopDevice { path, file }),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
                Err(e) => return Err(io_err(&path, "attach (LOOP_CONFIGURE)", offset)(e)),
            }
        }
        let e = last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EBUSY));
        Err(io_err(backing, "find a free loop device", offset)(e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // SAFETY: LOOP_CLR_FD takes no argument; EBUSY (still held) leaves it to auto-clear.
        unsafe { libc::ioctl(self.file.as_raw_fd(), LOOP_CLR_FD as _) };
    }
}

/// `/dev/loop-control`, loading the loop module first when the node is missing.
fn open_control() -> Result<File, EngineError> {
    let control = Path::new("/dev/loop-control");
    if !control.exists() {
        crate::grow::modprobe("loop");
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(control)
        .map_err(|e| {
            EngineError::Refused(format!(
                "no loop devices here ({}: {e}): the kernel needs the loop driver",
                control.display()
            ))
        })
}

/// The node of a just-created loop device may take a moment to appear in devtmpfs.
fn open_node(path: &Path) -> Result<File, EngineError> {
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

fn configure(dev: &File, data: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let cfg = LoopConfig {
        fd: data.as_raw_fd() as u32,
        block_size: 0,
        info: info(offset, len),
        reserved: [0; 8],
    };
    // SAFETY: the kernel reads one loop_config from `cfg`, which outlives the call.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE as _,
            &cfg as *const LoopConfig,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) {
        return Err(e);
    }
    // Before Linux 5.8: bind the file, then set the range.
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor by value.
    if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, data.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let i = info(offset, len);
    // SAFETY: the kernel reads one loop_info64 from `i`, which outlives the call.
    if unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_STATUS64 as _,
            &i as *const LoopInfo64,
        )
    } != 0
    {
        let e = std::io::Error::last_os_error();
        // SAFETY: as in Drop.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _) };
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
}
