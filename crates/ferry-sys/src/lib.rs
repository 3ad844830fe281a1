//! The system edge shared by the engine, the image readers and the fix-up.
//!
//! - [`blk`]: block-device ioctls (size, sector sizes, partition re-read, BLKPG, BLKZEROOUT),
//!   each number defined once with nix's ioctl macros and wrapped in a safe function.
//! - [`log`]: logging of the host binaries (`RUST_LOG`, `FERRY_LOG_FORMAT=json`, colour only on
//!   a terminal).
//! - [`loopdev`]: loop devices over a byte range of a file or device, by ioctl.
//! - [`net`]: the physical NICs sysfs shows, with their address, driver and PCI `ID_PATH`.
//! - [`sched`]: the calling thread's I/O class (`ioprio_set`) and nice value, which a backup
//!   lowers so that it yields the source's disk and CPU to its production work.
//! - [`tool`]: one runner for external programs (`e2fsck`, `lvm`, `blkid`, `dpkg-deb`, …)
//!   whose error names the tool, its arguments, the exit status, the tail of its stderr, and
//!   the package to install when it is missing.
//!
//! Invariant: every `unsafe` block in this crate is an ioctl whose argument is a live value
//! owned by the calling function for the whole call, or (in [`sched`]) a system call that takes
//! integers only; the comment above each says which.

pub mod blk;
pub mod kmsg;
pub mod log;
pub mod loopdev;
pub mod net;
pub mod netname;
pub mod sched;
pub mod tool;
