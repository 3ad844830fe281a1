//! The used map over filesystems made and filled by the real tools (mkfs.ext4 -d, mkfs.xfs -p,
//! mkfs.vfat + mcopy, mkntfs + ntfscp, mkswap), checked two ways with tools we did not write:
//! - the used bytes agree with the tool's own free-space report (dumpe2fs free blocks and
//!   xfs_db freesp exactly, widened to the map's granule; fsck.fat and ntfsinfo by count);
//! - every byte the map calls unused is overwritten with random garbage, and the filesystem's
//!   checker still finds it clean and every file still reads back identical.

// A map that is one range is what several tests expect.
#![allow(clippy::single_range_in_vec_init)]

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::{build_pv, have, image, run, vg_text, write_into, FileDisk, MemDisk};
use ferry_probe::{probe, used_map, UsedMap, GRANULE};
use ferry_test_support::tools::{dumpe2fs_free_extents, number_after};

const MIB: u64 = 1 << 20;

/// xorshift64*: deterministic file contents and garbage.
struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A directory of files (flat when `flat`) of assorted sizes: (relative path, size).
fn tree(dir: &Path, flat: bool) -> Vec<(String, usize)> {
    let files: Vec<(String, usize)> = [
        ("a.bin", 3 << 20),
        ("empty", 0),
        ("small.txt", 100),
        ("sub/b.bin", 1_234_567),
        ("sub/deeper/c.bin", 70_000),
        ("sub/d.bin", 5 << 20),
        ("e.bin", 4096),
    ]
    .iter()
    .map(|&(p, n)| {
        (
            if flat {
                p.replace('/', "_")
            } else {
                p.to_string()
            },
            n,
        )
    })
    .collect();
    let mut rng = Rng(42);
    for (p, n) in &files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut data = vec![0u8; *n];
        rng.fill(&mut data);
        std::fs::write(path, data).unwrap();
    }
    files
}

fn map_of(img: &Path) -> UsedMap {
    let disk = FileDisk::open(img);
    let layout = probe(&disk).unwrap();
    let map = used_map(&disk, &layout).unwrap();
    check_invariants(&map);
    map
}

fn check_invariants(map: &UsedMap) {
    for w in map.ranges().windows(2) {
        assert!(
            w[0].end < w[1].start,
            "{:?} not sorted and merged",
            map.ranges()
        );
    }
    for r in map.ranges() {
        assert!(
            r.start < r.end && r.end <= map.size(),
            "{r:?} outside the disk"
        );
    }
}

/// Overwrite every byte the map calls unused with random garbage.
fn scramble_unused(img: &Path, map: &UsedMap) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let mut rng = Rng(7);
    let mut at = 0;
    let mut gaps: Vec<(u64, u64)> = map.ranges().iter().map(|r| (at, r.start)).collect();
    for (g, r) in gaps.iter_mut().zip(map.ranges()) {
        g.0 = at;
        at = r.end;
    }
    gaps.push((at, map.size()));
    for (start, end) in gaps.into_iter().filter(|g| g.0 < g.1) {
        let mut buf = vec![0u8; (end - start) as usize];
        rng.fill(&mut buf);
        f.write_all_at(&buf, start).unwrap();
    }
}

/// `used` byte ranges widened to the granule and merged, as the map stores them.
fn widened(used: &[(u64, u64)], size: u64) -> Vec<std::ops::Range<u64>> {
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    for &(s, e) in used {
        let r = s / GRANULE * GRANULE..e.div_ceil(GRANULE).saturating_mul(GRANULE).min(size);
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The complement of sorted `free` extents (start, len in blocks) in 0..blocks, in bytes.
fn complement(free: &[(u64, u64)], blocks: u64, bs: u64) -> Vec<(u64, u64)> {
    let mut used = Vec::new();
    let mut at = 0;
    for &(s, n) in free {
        if s > at {
            used.push((at * bs, s * bs));
        }
        at = s + n;
    }
    if at < blocks {
        used.push((at * bs, blocks * bs));
    }
    used
}

fn diff(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} and {} differ:\n{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn dumpe2fs_free(img: &Path) -> (Vec<(u64, u64)>, u64, u64) {
    let out = run("dumpe2fs", &[img.to_str().unwrap()]);
    let field = |name: &str| number_after(&out, name);
    let (blocks, bs) = (field("Block count:"), field("Block size:"));
    (dumpe2fs_free_extents(&out), blocks, bs)
}

#[test]
fn ext_used_blocks_match_dumpe2fs_and_files_survive() {
    if !(have("mkfs.ext4") && have("dumpe2fs") && have("debugfs") && have("e2fsck")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src, false);
    for (name, tool, args) in [
        ("ext4-4k", "mkfs.ext4", &["-b", "4096"][..]),
        (
            "ext4-1k-no-flex",
            "mkfs.ext4",
            &["-b", "1024", "-O", "^flex_bg"][..],
        ),
        (
            "ext4-meta-bg",
            "mkfs.ext4",
            &["-b", "1024", "-O", "meta_bg,^resize_inode"][..],
        ),
        ("ext4-32bit", "mkfs.ext4", &["-O", "^64bit"][..]),
        (
            "ext4-bigalloc",
            "mkfs.ext4",
            &["-O", "bigalloc", "-C", "65536"][..],
        ),
        (
            "ext4-sparse-super2",
            "mkfs.ext4",
            &["-O", "sparse_super2"][..],
        ),
        ("ext3", "mkfs.ext3", &[][..]),
        ("ext2", "mkfs.ext2", &[][..]),
    ] {
        let img = image(dir.path(), &format!("{name}.img"), 160 * MIB);
        let p = img.to_str().unwrap();
        run(
            tool,
            &[&["-q", "-F", "-d", src.to_str().unwrap()][..], args, &[p]].concat(),
        );
        let map = map_of(&img);
        assert!(map.notes.is_empty(), "{name}: {:?}", map.notes);
        let (free, blocks, bs) = dumpe2fs_free(&img);
        let expected = widened(&complement(&free, blocks, bs), map.size());
        assert_eq!(
            map.ranges(),
            expected,
            "{name}: used ranges differ from dumpe2fs's"
        );
        assert!(
            map.used_bytes() < 40 * MIB,
            "{name}: {} bytes used",
            map.used_bytes()
        );

        scramble_unused(&img, &map);
        run("e2fsck", &["-fn", p]);
        let out = dir.path().join(format!("{name}.out"));
        std::fs::create_dir(&out).unwrap();
        run("debugfs", &["-R", &format!("rdump / {}", out.display()), p]);
        std::fs::remove_dir(out.join("lost+found")).unwrap();
        diff(&src, &out);
    }
}

#[test]
fn ext_needing_recovery_is_used_in_full() {
    if !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "e.img", 64 * MIB);
    run("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]);
    // needs_recovery: incompat bit 0x4 at 1024 + 0x60.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, 1024 + 0x60).unwrap();
    b[0] |= 0x4;
    f.write_all_at(&b, 1024 + 0x60).unwrap();
    let map = map_of(&img);
    assert_eq!(map.ranges(), &[0..64 * MIB]);
    assert!(map.notes[0].contains("needs recovery"), "{:?}", map.notes);
}

fn protofile(src: &Path, files: &[(String, usize)]) -> String {
    let mut s = String::from("/dev/null\n0 0\nd--755 0 0\n");
    let mut dirs: Vec<&str> = Vec::new();
    let mut sorted: Vec<&String> = files.iter().map(|f| &f.0).collect();
    sorted.sort();
    for p in sorted {
        let parts: Vec<&str> = p.split('/').collect();
        let (parents, name) = parts.split_at(parts.len() - 1);
        while !parents.starts_with(&dirs) {
            dirs.pop();
            s.push_str("$\n");
        }
        for d in &parents[dirs.len()..] {
            s.push_str(&format!("{d} d--755 0 0\n"));
            dirs.push(d);
        }
        s.push_str(&format!(
            "{} ---644 0 0 {}\n",
            name[0],
            src.join(p).display()
        ));
    }
    for _ in 0..=dirs.len() {
        s.push_str("$\n");
    }
    s
}

/// Mount `img` read-only on a loop device and diff it with `src`; false when mounting is not
/// possible here.
fn diff_mounted(img: &Path, src: &Path, fstype: &str) -> bool {
    let mnt = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-o", "loop,ro", "-t", fstype])
        .arg(img)
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot mount {fstype} here; checked with the fs checker only");
        return false;
    }
    let out = Command::new("diff")
        .arg("-r")
        .arg(src)
        .arg(mnt.path())
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(mnt.path()).status();
    assert!(
        out.status.success(),
        "files differ:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    true
}

fn xfs_free(img: &Path) -> Vec<(u64, u64)> {
    let p = img.to_str().unwrap();
    let sb = run(
        "xfs_db",
        &["-r", "-c", "sb 0", "-c", "p agblocks blocksize", p],
    );
    let field = |n: &str| number_after(&sb, n);
    let (agblocks, _) = (field("agblocks = "), field("blocksize = "));
    let out = run("xfs_db", &["-r", "-c", "freesp -d", p]);
    let mut free: Vec<(u64, u64)> = out
        .lines()
        .filter_map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            (v.len() == 3).then(|| (v[0] * agblocks + v[1], v[2]))
        })
        .collect();
    free.sort();
    free
}

#[test]
fn xfs_used_blocks_match_xfs_db_and_files_survive() {
    if !(have("mkfs.xfs") && have("xfs_db") && have("xfs_repair")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = tree(&src, false);
    let proto = dir.path().join("proto");
    std::fs::write(&proto, protofile(&src, &files)).unwrap();
    for (name, args) in [
        ("xfs-v5", &[][..]),
        ("xfs-v4", &["-m", "crc=0"][..]),
        ("xfs-1k", &["-b", "size=1024"][..]),
    ] {
        let img = image(dir.path(), &format!("{name}.img"), 320 * MIB);
        let p = img.to_str().unwrap();
        run(
            "mkfs.xfs",
            &[&["-q", "-f", "-p", proto.to_str().unwrap()][..], args, &[p]].concat(),
        );
        let map = map_of(&img);
        assert!(map.notes.is_empty(), "{name}: {:?}", map.notes);
        let sb = run(
            "xfs_db",
            &["-r", "-c", "sb 0", "-c", "p dblocks blocksize", p],
        );
        let field = |n: &str| number_after(&sb, n);
        let (blocks, bs) = (field("dblocks = "), field("blocksize = "));
        let expected = widened(&complement(&xfs_free(&img), blocks, bs), map.size());
        assert_eq!(
            map.ranges(),
            expected,
            "{name}: used ranges differ from xfs_db freesp's"
        );
        // Files, metadata and the 64 MiB log.
        assert!(
            map.used_bytes() < 100 * MIB,
            "{name}: {} bytes used",
            map.used_bytes()
        );

        scramble_unused(&img, &map);
        run("xfs_repair", &["-n", "-f", p]);
        diff_mounted(&img, &src, "xfs");
    }
}

#[test]
fn xfs_with_a_dirty_log_is_used_in_full() {
    if !(have("mkfs.xfs") && have("xfs_io")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "x.img", 320 * MIB);
    run("mkfs.xfs", &["-q", "-f", img.to_str().unwrap()]);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    if !Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(&img)
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED: cannot mount xfs here");
        return;
    }
    // Write, force the log to disk, and copy the image while still mounted.
    std::fs::write(mnt.join("f"), vec![1u8; 1 << 20]).unwrap();
    let _ = Command::new("xfs_io")
        .args(["-x", "-c", "fsync", "-c", "shutdown -f"])
        .arg(mnt.join("f"))
        .status();
    let copy = dir.path().join("copy.img");
    std::fs::copy(&img, &copy).unwrap();
    let _ = Command::new("umount").arg(&mnt).status();
    let map = map_of(&copy);
    assert_eq!(map.ranges(), &[0..320 * MIB], "{:?}", map.notes);
    assert!(map.notes[0].contains("log"), "{:?}", map.notes);
}

#[test]
fn vfat_used_clusters_match_fsck_and_files_survive() {
    if !(have("mkfs.vfat") && have("mcopy") && have("fsck.fat")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src, false);
    for (name, bits, size) in [
        ("fat12", "12", 16 * MIB),
        ("fat16", "16", 64 * MIB),
        ("fat32", "32", 96 * MIB),
    ] {
        let img = image(dir.path(), &format!("{name}.img"), size);
        let p = img.to_str().unwrap();
        run("mkfs.vfat", &["-F", bits, p]);
        let entries: Vec<String> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .collect();
        let mut args = vec!["-s", "-i", p];
        args.extend(entries.iter().map(String::as_str));
        args.push("::/");
        run("mcopy", &args);
        let map = map_of(&img);
        assert!(map.notes.is_empty(), "{name}: {:?}", map.notes);
        // "img: N files, USED/TOTAL clusters"
        let out = run("fsck.fat", &["-n", p]);
        let counts = out
            .lines()
            .last()
            .unwrap()
            .split(", ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        let (used, _) = counts.split_once('/').unwrap();
        let used: u64 = used.parse().unwrap();
        let minfo = run("minfo", &["-i", p]);
        let num = |k: &str| -> u64 {
            let l = minfo.lines().find_map(|l| l.strip_prefix(k)).unwrap();
            l.split_whitespace().next().unwrap().parse().unwrap()
        };
        let cluster = num("cluster size: ") * num("sector size: ");
        assert!(
            map.used_bytes() >= used * cluster,
            "{name}: {} < {used} clusters",
            map.used_bytes()
        );
        let slack = map.ranges().len() as u64 * 2 * GRANULE + 2 * MIB;
        assert!(
            map.used_bytes() <= used * cluster + slack,
            "{name}: {} bytes for {used} clusters",
            map.used_bytes()
        );

        scramble_unused(&img, &map);
        run("fsck.fat", &["-n", p]);
        let out = dir.path().join(format!("{name}.out"));
        run("mcopy", &["-s", "-i", p, "::/", out.to_str().unwrap()]);
        diff(&src, &out);
    }
}

#[test]
fn ntfs_used_clusters_match_ntfsinfo_and_files_survive() {
    if !(have("mkntfs") && have("ntfscp") && have("ntfscat") && have("ntfsinfo")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = tree(&src, true);
    let img = image(dir.path(), "n.img", 128 * MIB);
    let p = img.to_str().unwrap();
    run("mkntfs", &["-q", "-F", "-f", p]);
    for (f, _) in &files {
        run(
            "ntfscp",
            &["-f", p, src.join(f).to_str().unwrap(), &format!("/{f}")],
        );
    }
    let map = map_of(&img);
    assert!(map.notes.is_empty(), "{:?}", map.notes);
    let info = run("ntfsinfo", &["-m", p]);
    let num = |k: &str| -> u64 {
        let l = info.lines().find_map(|l| l.trim().strip_prefix(k)).unwrap();
        l.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (cluster, total, free) = (
        num("Cluster Size:"),
        num("Volume Size in Clusters:"),
        num("Free Clusters:"),
    );
    let used = (total - free) * cluster;
    assert!(map.used_bytes() >= used, "{} < {used}", map.used_bytes());
    let slack = map.ranges().len() as u64 * 2 * GRANULE + MIB;
    assert!(
        map.used_bytes() <= used + slack,
        "{} bytes for {used}",
        map.used_bytes()
    );

    scramble_unused(&img, &map);
    for (f, _) in &files {
        let out = Command::new("ntfscat")
            .args([p, &format!("/{f}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ntfscat {f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == std::fs::read(src.join(f)).unwrap(),
            "{f} differs after scrambling unused space"
        );
    }
    if have("ntfsfix") {
        run("ntfsfix", &["-n", p]);
    }
}

#[test]
fn swap_uses_only_its_header_page() {
    if !have("mkswap") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "s.img", 64 * MIB);
    run("mkswap", &[img.to_str().unwrap()]);
    let map = map_of(&img);
    assert_eq!(map.ranges(), &[0..GRANULE]);
    assert!(map.chunk_unused(GRANULE, 64 * MIB - GRANULE));
}

#[test]
fn gpt_tables_and_gaps() {
    if !(have("sgdisk") && have("mkfs.ext4") && have("mkswap")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "d.img", 256 * MIB);
    let p = img.to_str().unwrap();
    // ext4 at 1 MiB (64 MiB), 32 MiB of nothing, swap (16 MiB), an unknown partition (8 MiB)
    // holding garbage, the rest unpartitioned.
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+64M",
            "-n",
            "2:198656:+16M",
            "-n",
            "3:0:+8M",
            p,
        ],
    );
    let part = image(dir.path(), "p.img", 64 * MIB);
    run("mkfs.ext4", &["-q", "-F", part.to_str().unwrap()]);
    write_into(&img, MIB, &part);
    let sw = image(dir.path(), "s.img", 16 * MIB);
    run("mkswap", &[sw.to_str().unwrap()]);
    write_into(&img, 198656 * 512, &sw);
    let mut junk = vec![0u8; 8 << 20];
    Rng(3).fill(&mut junk);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .write_all_at(&junk, 113 * MIB)
        .unwrap();
    let map = map_of(&img);
    let (free, blocks, bs) = dumpe2fs_free(&part);
    let ext: Vec<(u64, u64)> = complement(&free, blocks, bs)
        .iter()
        .map(|&(s, e)| (s + MIB, e + MIB))
        .collect();
    let mut expected = vec![(0, 34 * 512)];
    expected.extend(ext);
    expected.extend([
        (97 * MIB, 97 * MIB + 4096),
        (113 * MIB, 121 * MIB),
        (256 * MIB - 33 * 512, 256 * MIB),
    ]);
    assert_eq!(map.ranges(), widened(&expected, 256 * MIB));
    assert!(map.chunk_unused(130 * MIB, 120 * MIB));
    assert_eq!(map.notes.len(), 1, "{:?}", map.notes);
    assert!(
        map.notes[0].starts_with("GPT partition 3 (unknown, disk offset"),
        "{:?}",
        map.notes
    );
}

/// MBR with a primary ext2, and an extended partition whose logical partitions hold swap and
/// nothing recognisable: the MBR, both EBRs, the filesystems' used parts and the unknown
/// partition are used; the rest of the extended partition and the disk are not.
#[test]
fn mbr_ebrs_and_logical_partitions() {
    if !(have("sfdisk") && have("mkfs.ext2") && have("mkswap") && have("dumpe2fs")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "d.img", 64 * MIB);
    let script = "label: dos\nstart=2048, size=16MiB, type=83\nstart=40960, size=40MiB, type=5\nstart=43008, size=8MiB, type=82\nstart=63488, size=4MiB, type=83\n";
    common::run_stdin("sfdisk", &["-q", img.to_str().unwrap()], Some(script));
    let part = image(dir.path(), "p.img", 16 * MIB);
    run("mkfs.ext2", &["-q", "-F", part.to_str().unwrap()]);
    write_into(&img, MIB, &part);
    let sw = image(dir.path(), "s.img", 8 * MIB);
    run("mkswap", &[sw.to_str().unwrap()]);
    write_into(&img, 43008 * 512, &sw);
    let mut junk = vec![0u8; 4 << 20];
    Rng(4).fill(&mut junk);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .write_all_at(&junk, 63488 * 512)
        .unwrap();
    let map = map_of(&img);
    let (free, blocks, bs) = dumpe2fs_free(&part);
    let mut expected = vec![(0, 512)];
    expected.extend(
        complement(&free, blocks, bs)
            .iter()
            .map(|&(s, e)| (s + MIB, e + MIB)),
    );
    let ebr2 = 61440 * 512; // sfdisk puts an EBR 1 MiB before its logical partition
    expected.extend([
        (40960 * 512, 40960 * 512 + 512),
        (43008 * 512, 43008 * 512 + 4096),
    ]);
    expected.extend([(ebr2, ebr2 + 512), (63488 * 512, 63488 * 512 + 4 * MIB)]);
    expected.sort();
    assert_eq!(
        map.ranges(),
        widened(&expected, 64 * MIB),
        "{:?}",
        map.notes
    );
    assert!(
        map.notes
            .iter()
            .any(|n| n.starts_with("MBR partition 6 (unknown")),
        "{:?}",
        map.notes
    );
}

/// A PV (label, 1 MiB metadata area, 1 MiB extents) whose LV `data` (extents 1-2) holds an
/// ext2 filesystem: only that filesystem's used blocks of the LV are used.
#[test]
fn lvm_pv_extents_and_lv_filesystem() {
    if !(have("mkfs.ext2") && have("dumpe2fs")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uuid = "HaNdBu-iLtP-V000-1111-2222-3333-444444";
    let pe_count = 6;
    let mut d = build_pv(8 << 20, uuid, 4096 * 4, &vg_text(uuid, pe_count), 512);
    let fs = image(dir.path(), "lv.img", 2 * MIB);
    run(
        "mkfs.ext2",
        &["-q", "-F", "-b", "1024", fs.to_str().unwrap()],
    );
    let fs_bytes = std::fs::read(&fs).unwrap();
    d[2 << 20..4 << 20].copy_from_slice(&fs_bytes);
    let disk = MemDisk {
        data: d,
        sector_size: 512,
    };
    let layout = probe(&disk).unwrap();
    let map = used_map(&disk, &layout).unwrap();
    check_invariants(&map);
    let (free, blocks, bs) = dumpe2fs_free(&fs);
    let mut expected = vec![(0, MIB)];
    expected.extend(
        complement(&free, blocks, bs)
            .iter()
            .map(|&(s, e)| (s + 2 * MIB, e + 2 * MIB)),
    );
    expected.push((7 * MIB, 8 * MIB));
    assert_eq!(map.ranges(), widened(&expected, 8 * MIB), "{:?}", map.notes);
    assert!(map.chunk_unused(MIB, MIB));
    assert!(map.chunk_unused(4 * MIB, 3 * MIB));
}

#[test]
fn unknown_whole_disk_is_used_in_full() {
    let mut data = vec![0u8; 4 << 20];
    Rng(9).fill(&mut data);
    data[510] = 0;
    let disk = MemDisk {
        data,
        sector_size: 512,
    };
    let layout = probe(&disk).unwrap();
    let map = used_map(&disk, &layout).unwrap();
    assert_eq!(map.ranges(), &[0..4 << 20]);
    assert!(!map.chunk_unused(1 << 20, 1 << 20));
}
