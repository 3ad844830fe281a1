//! Raw images with holes: `known_zero` never claims a range that holds data, finds the holes
//! where the filesystem reports them (ext4, tmpfs), and falls back to reading where it cannot
//! (ramfs or vfat, block devices). Files are real: truncate, fallocate, punched holes, odd offsets.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Rng;
use ferry_image::{DiskSource, ImageFormat};
use nix::fcntl::FallocateFlags;

const MIB: u64 = 1 << 20;
/// Not a multiple of anything: the last chunk is short.
const SIZE: u64 = 64 * MIB + 4097;

fn fallocate(f: &std::fs::File, mode: FallocateFlags, offset: u64, len: u64) -> bool {
    nix::fcntl::fallocate(f, mode, offset as i64, len as i64).is_ok()
}

/// A sparse image in `dir` and the bytes it must read as.
fn sparse_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("sparse.raw");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(SIZE).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let mut rng = Rng::new(7);
    let mut put = |at: u64, len: usize, model: &mut Vec<u8>| {
        let mut b = vec![0u8; len];
        rng.fill(&mut b);
        b[0] |= 1; // never a zero byte at the edges, so a wrong answer shows
        b[len - 1] |= 1;
        f.write_all_at(&b, at).unwrap();
        model[at as usize..at as usize + len].copy_from_slice(&b);
    };
    put(5_000_003, 12_345, &mut model);
    put(33 * MIB + 7, 1, &mut model);
    put(SIZE - 100, 100, &mut model);
    put(48 * MIB, 3 * MIB as usize, &mut model);
    // Punch a hole into written data (reads as zeros afterwards) ...
    let (punch_at, punch_len) = (48 * MIB + 4096, MIB);
    if fallocate(
        &f,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        punch_at,
        punch_len,
    ) {
        model[punch_at as usize..(punch_at + punch_len) as usize].fill(0);
    }
    // ... and preallocate a range never written (unwritten extents read as zeros).
    let _ = fallocate(&f, FallocateFlags::empty(), 40 * MIB, 4 * MIB);
    f.sync_all().unwrap();
    (path, model)
}

/// Every range `known_zero` claims reads as zeros, and every byte reads as written.
fn check_sound(src: &dyn DiskSource, model: &[u8]) -> u64 {
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut at = 0u64;
    while at < SIZE {
        let n = (SIZE - at).min(buf.len() as u64) as usize;
        src.read_at(&mut buf[..n], at).unwrap();
        assert!(
            buf[..n] == model[at as usize..at as usize + n],
            "bytes at {at}"
        );
        at += n as u64;
    }
    let mut zero_bytes = 0;
    // Aligned chunks of several sizes, and ranges starting at odd offsets.
    for (step, len, skew) in [
        (64 << 10, 64 << 10, 0),
        (4 * MIB, 4 * MIB, 0),
        (MIB, MIB - 3, 333),
        (7777, 5000, 1),
    ] {
        let mut off = skew;
        while off < SIZE {
            let len = len.min(SIZE - off);
            if src.known_zero(off, len) {
                let r = &model[off as usize..(off + len) as usize];
                assert!(r.iter().all(|&b| b == 0), "{off}+{len} claimed zero");
                if step == 64 << 10 {
                    zero_bytes += len;
                }
            }
            off += step;
        }
    }
    // Out of range or empty: never claimed.
    assert!(!src.known_zero(SIZE - 10, 11));
    assert!(!src.known_zero(u64::MAX - 1, 2));
    zero_bytes
}

/// Whether files in `dir` report holes (a fresh sparse file is one hole).
fn reports_holes(dir: &Path) -> bool {
    let p = dir.join("probe.raw");
    std::fs::File::create(&p).unwrap().set_len(MIB).unwrap();
    let src = ferry_image::open(&p).unwrap();
    let yes = src.known_zero(0, MIB);
    std::fs::remove_file(&p).unwrap();
    yes
}

fn holes_found_in(dir: &Path, what: &str) {
    let (path, model) = sparse_image(dir);
    let src = ferry_image::open(&path).unwrap();
    assert_eq!(src.format(), ImageFormat::Raw);
    let zero = check_sound(&*src, &model);
    eprintln!("{what}: {zero} of {SIZE} bytes known zero in 64 KiB chunks");
    if !reports_holes(dir) {
        eprintln!("SKIPPED ({what}): this filesystem reports no holes; checked soundness only");
        return;
    }
    // Pure holes are found, however they are cut (filesystems track them in 4 KiB blocks).
    for (off, len) in [
        (0, 4 * MIB),
        (0, 4_990_001),
        (5_100_000, MIB),
        (16 * MIB, 16 * MIB),
        (33 * MIB + 4096, 6 * MIB),
        (52 * MIB, 10 * MIB),
        (63 * MIB + 1, MIB - 1),
    ] {
        assert!(src.known_zero(off, len), "{what}: {off}+{len} is a hole");
    }
    // A single data byte anywhere in the range makes it unknown.
    for (off, len) in [
        (0, 5_000_004),
        (5_000_003 + 12_344, 2),
        (33 * MIB, MIB),
        (33 * MIB + 7, 1),
        (SIZE - 100, 1),
        (SIZE - 4096, 4096),
        (48 * MIB, 4096),
    ] {
        assert!(!src.known_zero(off, len), "{what}: {off}+{len} holds data");
    }
    // Most of the image is holes; only the data (and what the filesystem rounds it to) is not.
    assert!(
        zero > SIZE - 16 * MIB,
        "{what}: only {zero} bytes found zero"
    );
}

#[test]
fn holes_of_a_sparse_file_are_known_zero() {
    let dir = tempfile::tempdir().unwrap();
    holes_found_in(dir.path(), "temp dir");
}

#[test]
fn holes_on_tmpfs_are_known_zero() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("SKIPPED: no /dev/shm");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    holes_found_in(dir.path(), "tmpfs");
}

#[test]
fn a_flat_vmdk_window_asks_about_its_own_bytes() {
    // The flat extent starts 1 MiB into its file: holes are looked up at base + offset.
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("w-flat.raw");
    let f = std::fs::File::create(&flat).unwrap();
    f.set_len(9 * MIB).unwrap();
    f.write_all_at(b"x", MIB - 1).unwrap(); // before the window: must not matter
    f.write_all_at(b"y", MIB + 2 * MIB).unwrap(); // window offset 2 MiB
    std::fs::write(
        dir.path().join("w.vmdk"),
        "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 16384 FLAT \"w-flat.raw\" 2048\n",
    )
    .unwrap();
    let src = ferry_image::open(&dir.path().join("w.vmdk")).unwrap();
    assert_eq!(src.format(), ImageFormat::VmdkFlat);
    assert!(!src.known_zero(2 * MIB, 1));
    assert!(!src.known_zero(0, 3 * MIB));
    if reports_holes(dir.path()) {
        assert!(src.known_zero(0, 2 * MIB));
        assert!(src.known_zero(2 * MIB + 4096, 6 * MIB - 4096));
    }
}

/// Unmounts a mount point when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mount a filesystem without hole reporting in `dir`: ramfs (the kernel's generic llseek
/// reports every byte as data), else a loop-mounted vfat. `None` when neither mounts here.
fn mount_holeless(dir: &Path) -> Option<Mounted> {
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).ok()?;
    let run = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    if run(Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&mnt))
    {
        return Some(Mounted(mnt));
    }
    let img = dir.join("fat.img");
    std::fs::File::create(&img).ok()?.set_len(64 * MIB).ok()?;
    let fat = run(Command::new("mkfs.vfat").arg(&img))
        && run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
    fat.then_some(Mounted(mnt))
}

#[test]
fn a_filesystem_without_hole_support_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mnt) = mount_holeless(dir.path()) else {
        eprintln!("SKIPPED: cannot mount ramfs or vfat here (not root?)");
        return;
    };
    let path = mnt.0.join("disk.raw");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(8 * MIB).unwrap();
    f.write_all_at(b"data", 3 * MIB + 1).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let src = ferry_image::open(&path).unwrap();
    for off in (0..8 * MIB).step_by(MIB as usize) {
        assert!(
            !src.known_zero(off, MIB),
            "claimed {off} zero without hole support"
        );
    }
    let mut buf = vec![0u8; 8 * MIB as usize];
    src.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[3 * MIB as usize + 1..3 * MIB as usize + 5], b"data");
    assert_eq!(buf.iter().filter(|&&b| b != 0).count(), 4);
    drop(src);
    drop(mnt);
}

/// Detaches a loop device when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn block_devices_are_always_read() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.raw");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(16 * MIB).unwrap();
    f.write_all_at(b"z", 9 * MIB).unwrap();
    f.sync_all().unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output();
    let Some(dev) = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    else {
        eprintln!("SKIPPED: cannot attach a loop device here (not root?)");
        return;
    };
    let _guard = Loop(dev.clone());
    let src = ferry_image::open(Path::new(&dev)).unwrap();
    assert_eq!(src.format(), ImageFormat::BlockDevice);
    assert_eq!(src.size(), 16 * MIB);
    assert!(!src.known_zero(0, MIB), "a block device has no holes");
    let mut b = [0u8; 1];
    src.read_at(&mut b, 9 * MIB).unwrap();
    assert_eq!(&b, b"z");
}
