//! image-builder: builds Ferry's rescue image — a Debian kernel, a driver-catalog module closure and
//! the static restore-agent as `/init` in a reproducible initramfs — as one hybrid BIOS/UEFI ISO
//! (CD and USB disk) and PXE files, and stamps per-site settings into a built image without a
//! rebuild.
//!
//! Invariants:
//! - the initramfs is a function of its inputs and SOURCE_DATE_EPOCH: sorted newc entries, 0:0
//!   owners, one mtime, sequential inodes, zstd at a fixed level ([`cpio`]);
//! - the rootfs and the driver set are data: `initramfs/rootfs.txt` ([`rootfs`]) and
//!   `drivers/catalog.txt` ([`catalog`]);
//! - site settings are a separate cpio layer: written into the ISO's fixed-size embed area
//!   `/boot/site.img` in place, or appended to the PXE initrd ([`site`]); frozen sizes and paths are
//!   marked as such there. docs/image.md describes the kernel command line keys;
//! - `--virtio-win` carries exactly the driver files ferry-fixup's Windows step reads, checked
//!   with its INF parser, at the path the agent looks in ([`virtio_win`]).
//!
//! - `--firmware` carries the firmware files the shipped modules ask for, from Debian's firmware
//!   packages, each package's copyright file with them ([`firmware`]).
//!
//! Host tools: dpkg-deb, apt-get (default kernel, firmware), depmod and modinfo (kmod), xz/zstd, grub-mkrescue (+ mtools,
//! xorriso). Each missing tool is reported with the Debian package to install.

#![forbid(unsafe_code)]

pub mod apt;
pub mod boot;
pub mod build;
pub mod catalog;
pub mod cli;
pub mod cpio;
pub mod customize;
pub mod firmware;
pub mod iso;
pub mod iso9660;
pub mod kernel;
pub mod manifest;
pub mod modules;
pub mod paths;
pub mod rootfs;
pub mod site;
pub mod tools;
pub mod virtio_win;
