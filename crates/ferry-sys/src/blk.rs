//! Block-device ioctls (linux/fs.h, linux/blkpg.h). Each request number is defined once, here,
//! by nix's macros, which also encode `_IOR` sizes and directions per architecture.
//!
//! Several of these are "bad" ioctls in nix's terms: the kernel defines them with `_IO` (no
//! size, no direction) yet passes data through the pointer, so they take `*_bad!` macros with
//! `request_code_none!`.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use libc::{c_int, c_uint, c_void};

mod ioctl {
    use super::{c_int, c_uint, BlkpgIoctlArg};

    // BLKGETSIZE64 = _IOR(0x12, 114, size_t): the device's size in bytes.
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    // BLKSSZGET = _IO(0x12, 104), writes an int: the logical sector size.
    nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), c_int);
    // BLKPBSZGET = _IO(0x12, 123), writes an unsigned int: the physical sector size.
    nix::ioctl_read_bad!(blkpbszget, nix::request_code_none!(0x12, 123), c_uint);
    // BLKRRPART = _IO(0x12, 95): re-read the partition table.
    nix::ioctl_none!(blkrrpart, 0x12, 95);
    // BLKPG = _IO(0x12, 105), reads a struct blkpg_ioctl_arg.
    nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
    // BLKZEROOUT = _IO(0x12, 127), reads two u64: start and length in bytes.
    nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
}

/// The size of a block device in bytes (`BLKGETSIZE64`).
pub fn size(fd: impl AsFd) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: the kernel writes one u64 into `size`, which outlives the call.
    unsafe { ioctl::blkgetsize64(fd.as_fd().as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// The logical sector size (`BLKSSZGET`).
pub fn logical_sector_size(fd: impl AsFd) -> io::Result<u32> {
    let mut v: c_int = 0;
    // SAFETY: the kernel writes one int into `v`, which outlives the call.
    unsafe { ioctl::blksszget(fd.as_fd().as_raw_fd(), &mut v) }?;
    u32::try_from(v).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("negative sector size {v}"),
        )
    })
}

/// The physical sector size (`BLKPBSZGET`).
pub fn physical_sector_size(fd: impl AsFd) -> io::Result<u32> {
    let mut v: c_uint = 0;
    // SAFETY: the kernel writes one unsigned int into `v`, which outlives the call.
    unsafe { ioctl::blkpbszget(fd.as_fd().as_raw_fd(), &mut v) }?;
    Ok(v)
}

/// Ask the kernel to re-read the whole partition table (`BLKRRPART`); EBUSY while any
/// partition is in use, EINVAL where the device has no partition scanning.
pub fn reread_partitions(fd: impl AsFd) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    unsafe { ioctl::blkrrpart(fd.as_fd().as_raw_fd()) }?;
    Ok(())
}

/// Zero `len` bytes from `offset` on the device itself (`BLKZEROOUT`): unlike a discard, the
/// range then reads as zeros.
pub fn zero_out(fd: impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: the kernel reads two u64 from `range`, which outlives the call.
    unsafe { ioctl::blkzeroout(fd.as_fd().as_raw_fd(), &range) }?;
    Ok(())
}

/// One change to the kernel's view of a disk's partitions (`BLKPG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkpgOp {
    Add,
    Delete,
    Resize,
}

impl BlkpgOp {
    fn code(self) -> c_int {
        match self {
            BlkpgOp::Add => 1,
            BlkpgOp::Delete => 2,
            BlkpgOp::Resize => 3,
        }
    }
}

/// `struct blkpg_partition` (linux/blkpg.h); start and length in bytes.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: c_int,
    flags: c_int,
    datalen: c_int,
    data: *mut c_void,
}

/// Add, remove or resize partition `number` of the disk `fd` in the kernel's table only (the
/// disk is not written). `start` and `len` are bytes; a delete ignores them.
pub fn blkpg(fd: impl AsFd, op: BlkpgOp, number: u32, start: u64, len: u64) -> io::Result<()> {
    let out_of_range = || io::Error::from(io::ErrorKind::InvalidInput);
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(|_| out_of_range())?,
        length: i64::try_from(len).map_err(|_| out_of_range())?,
        pno: c_int::try_from(number).map_err(|_| out_of_range())?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: op.code(),
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: the kernel reads `arg` and the partition it points to; both outlive the call.
    unsafe { ioctl::blkpg(fd.as_fd().as_raw_fd(), &arg) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_struct_sizes() {
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
    }

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        assert_eq!(nix::request_code_read!(0x12, 114, 8), 0x8008_1272);
        assert_eq!(nix::request_code_none!(0x12, 104), 0x1268);
        assert_eq!(nix::request_code_none!(0x12, 123), 0x127b);
        assert_eq!(nix::request_code_none!(0x12, 95), 0x125f);
        assert_eq!(nix::request_code_none!(0x12, 105), 0x1269);
        assert_eq!(nix::request_code_none!(0x12, 127), 0x127f);
    }

    #[test]
    fn a_regular_file_is_not_a_block_device() {
        let f = tempfile::tempfile().unwrap();
        assert!(size(&f).is_err());
        assert!(logical_sector_size(&f).is_err());
        assert!(reread_partitions(&f).is_err());
    }
}
