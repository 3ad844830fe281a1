//! The machine's hardware as the kernel shows it in /sys and /proc, read under a `root` so
//! tests run on a directory tree: disks from `sys/block` (read from `dev/<name>` by the blank
//! check, ferry_engine::contents, which also finds the boot medium and in-progress markers), NICs from `sys/class/net`, UEFI from
//! `sys/firmware/efi`, memory from `proc/meminfo`, CPUs from `proc/cpuinfo`.
//!
//! Nothing here fails: what cannot be read is left out (a disk that cannot be read is not blank).

use std::fs;
use std::path::Path;

use ferry_engine::contents::Contents;
use ferry_format::agent::{Cpu, DeviceProblem, Disk, Firmware, Inventory, Nic};
use ferry_format::marker::RestoreMarker;

/// Block devices that are never restore targets: loop, RAM and optical devices, device-mapper,
/// md and floppies (the restore writes whole disks).
const SKIP_PREFIXES: [&str; 9] = [
    "loop", "ram", "zram", "sr", "dm-", "md", "fd", "nbd", "mtdblock",
];

pub fn collect(root: &Path) -> Inventory {
    Inventory {
        disks: disks(root),
        nics: nics(root),
        firmware: if root.join("sys/firmware/efi").is_dir() {
            Firmware::Uefi
        } else {
            Firmware::Bios
        },
        memory_bytes: memory(root),
        cpu: cpu(root),
        problems: problems(root),
    }
}

/// Network and storage controllers the rescue image cannot use: PCI devices of those classes
/// with no driver bound, then each firmware file the kernel log says a driver could not load.
pub fn problems(root: &Path) -> Vec<DeviceProblem> {
    let mut out = Vec::new();
    let pci = root.join("sys/bus/pci/devices");
    for addr in sorted_names(&pci) {
        let dir = pci.join(&addr);
        let Some(class) = read_text(&dir.join("class")) else {
            continue;
        };
        let class = match class.trim_start_matches("0x").get(..2) {
            Some("01") => "storage",
            Some("02") => "network",
            _ => continue,
        };
        if dir.join("driver").exists() {
            continue;
        }
        let id = |f: &str| read_text(&dir.join(f)).map(|v| v.trim_start_matches("0x").to_owned());
        out.push(DeviceProblem {
            ids: id("vendor")
                .zip(id("device"))
                .map(|(v, d)| format!("{v}:{d}")),
            class: Some(class.into()),
            device: addr,
            driver: None,
            firmware: None,
            package: None,
        });
    }
    let log = ferry_sys::kmsg::messages(&root.join("dev/kmsg"), ferry_sys::kmsg::MAX_RECORDS);
    for m in log {
        let Some((who, file)) = firmware_failure(&m) else {
            continue;
        };
        if out
            .iter()
            .any(|p| p.firmware.as_deref() == Some(file.as_str()))
        {
            continue;
        }
        let (driver, device) = match who.split_once(' ') {
            Some((drv, dev)) => (Some(drv.to_owned()), dev.to_owned()),
            None => (None, who.clone()),
        };
        let class = std::fs::read_to_string(pci.join(&device).join("class"))
            .ok()
            .and_then(|c| match c.trim().trim_start_matches("0x").get(..2) {
                Some("01") => Some("storage".to_owned()),
                Some("02") => Some("network".to_owned()),
                _ => None,
            });
        out.push(DeviceProblem {
            device,
            ids: None,
            class,
            driver,
            package: firmware_package(&file).map(str::to_owned),
            firmware: Some(file),
        });
    }
    out.truncate(ferry_format::agent::MAX_INVENTORY_PROBLEMS);
    out
}

/// `r8169 0000:02:00.0: Direct firmware load for rtl_nic/rtl8168h-2.fw failed with error -2`
/// -> (`r8169 0000:02:00.0`, `rtl_nic/rtl8168h-2.fw`); also the older `firmware: failed to
/// load X`. Names are cut to the inventory's text bound.
fn firmware_failure(msg: &str) -> Option<(String, String)> {
    let cut = |s: &str| {
        s.chars()
            .take(ferry_format::agent::MAX_INVENTORY_TEXT)
            .collect::<String>()
    };
    if let Some((who, rest)) = msg.split_once(": Direct firmware load for ") {
        let file = rest.split_once(" failed")?.0;
        return Some((cut(who), cut(file)));
    }
    let (who, rest) = msg.split_once(": firmware: failed to load ")?;
    let file = rest.split_whitespace().next()?;
    Some((cut(who), cut(file)))
}

/// The Debian package (non-free-firmware) that ships a firmware file, by its directory or name.
fn firmware_package(file: &str) -> Option<&'static str> {
    const BY_PREFIX: &[(&str, &str)] = &[
        ("bnx2x/", "firmware-bnx2x"),
        ("bnx2/", "firmware-bnx2"),
        ("tigon/", "firmware-misc-nonfree"),
        ("rtl_nic/", "firmware-realtek"),
        ("rtlwifi/", "firmware-realtek"),
        ("qed/", "firmware-qlogic"),
        ("ql2", "firmware-qlogic"),
        ("qlogic/", "firmware-qlogic"),
        ("cxgb4/", "firmware-misc-nonfree"),
        ("mellanox/", "firmware-misc-nonfree"),
        ("intel/ice/", "firmware-intel-misc"),
        ("e100/", "firmware-intel-misc"),
        ("myri10ge", "firmware-misc-nonfree"),
        ("bnx2_", "firmware-bnx2"),
        ("liquidio/", "firmware-misc-nonfree"),
    ];
    BY_PREFIX
        .iter()
        .find(|(p, _)| file.starts_with(p))
        .map(|(_, pkg)| *pkg)
}

fn read_text(p: &Path) -> Option<String> {
    let t = fs::read_to_string(p).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn read_u64(p: &Path) -> Option<u64> {
    read_text(p)?.parse().ok()
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn disks(root: &Path) -> Vec<Disk> {
    let block = root.join("sys/block");
    sorted_names(&block)
        .into_iter()
        .filter(|n| !SKIP_PREFIXES.iter().any(|p| n.starts_with(p)))
        .filter_map(|name| disk(root, &block.join(&name), name))
        .collect()
}

fn disk(root: &Path, sys: &Path, name: String) -> Option<Disk> {
    let size = read_u64(&sys.join("size"))? * 512;
    if size == 0 {
        // Empty card readers, ejected media.
        return None;
    }
    let logical = read_u64(&sys.join("queue/logical_block_size")).unwrap_or(512) as u32;
    let physical = read_u64(&sys.join("queue/physical_block_size")).map_or(logical, |v| v as u32);
    let first = |paths: &[&str]| paths.iter().find_map(|p| read_text(&sys.join(p)));
    let contents = examine(&root.join("dev").join(&name), size);
    Some(Disk {
        model: first(&["device/model"]),
        serial: first(&["device/serial", "serial"])
            .or_else(|| vpd_serial(&sys.join("device/vpd_pg80"))),
        wwn: first(&["wwid", "device/wwid", "device/wwn"]),
        logical_sector_size: logical,
        physical_sector_size: physical,
        blank: contents == Some(Contents::Blank),
        holds: match &contents {
            Some(c) => c.describe(),
            None => Some("contents that could not be read".into()),
        },
        protected: contents.as_ref().and_then(Contents::protected),
        removable: read_u64(&sys.join("removable")) == Some(1),
        name,
        size,
    })
}

/// The unit serial number of a SCSI or SATA disk (libata translates ATA IDENTIFY), from its
/// VPD page 0x80: a 4-byte header (page code 0x80, big-endian length), then the serial in
/// ASCII, padded with spaces. `None` when absent, malformed or blank.
fn vpd_serial(path: &Path) -> Option<String> {
    let page = fs::read(path).ok()?;
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([page[2], page[3]]));
    let body = page.get(4..4 + len.min(page.len() - 4))?;
    let text: String = body
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|b| char::from(*b))
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The blank check of a disk ([`ferry_engine::contents`]); `None` when it cannot be read.
pub fn examine(dev: &Path, size: u64) -> Option<Contents> {
    let f = fs::File::open(dev).ok()?;
    ferry_engine::contents::examine(&f, size).ok()
}

/// Every in-progress marker on this machine's disks, with the disk that carries it.
pub fn markers(root: &Path, inv: &Inventory) -> Vec<(String, RestoreMarker)> {
    inv.disks
        .iter()
        .filter_map(
            |d| match examine(&root.join("dev").join(&d.name), d.size)? {
                Contents::Marker(m) => Some((d.name.clone(), m)),
                _ => None,
            },
        )
        .collect()
}

fn nics(root: &Path) -> Vec<Nic> {
    let net = root.join("sys/class/net");
    sorted_names(&net)
        .into_iter()
        .filter(|n| n != "lo")
        .filter_map(|name| {
            let dir = net.join(&name);
            let mac = ferry_format::agent::normalize_mac(&read_text(&dir.join("address"))?).ok()?;
            if mac == "00:00:00:00:00:00" {
                return None;
            }
            // Reading `carrier` of a down interface fails (EINVAL): unknown.
            let carrier = read_text(&dir.join("carrier")).map(|c| c == "1");
            let device = dir.join("device");
            let predictable = ferry_sys::netname::predictable_name(&root.join("sys"), &name);
            Some(Nic {
                predictable,
                driver: ferry_sys::net::device_driver(&device),
                pci_path: ferry_sys::net::device_pci_path(&device),
                name,
                mac,
                carrier,
            })
        })
        .collect()
}

fn memory(root: &Path) -> u64 {
    let text = fs::read_to_string(root.join("proc/meminfo")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn cpu(root: &Path) -> Cpu {
    let text = fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default();
    let field = |l: &str, key: &str| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    };
    Cpu {
        count: text
            .lines()
            .filter(|l| field(l, "processor").is_some())
            .count() as u32,
        model: text
            .lines()
            .find_map(|l| field(l, "model name"))
            .filter(|m| !m.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn image(root: &Path, name: &str, size: u64, data_at: Option<u64>) {
        let p = root.join("dev").join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let f = fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        if let Some(off) = data_at {
            f.write_all_at(b"\x55\xaa", off).unwrap();
        }
        put(
            root,
            &format!("sys/block/{name}/size"),
            &format!("{}\n", size / 512),
        );
    }

    #[test]
    fn controllers_without_a_driver_or_their_firmware_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let dev = |addr: &str, class: &str, vendor: &str, device: &str| {
            put(r, &format!("sys/bus/pci/devices/{addr}/class"), class);
            put(r, &format!("sys/bus/pci/devices/{addr}/vendor"), vendor);
            put(r, &format!("sys/bus/pci/devices/{addr}/device"), device);
        };
        // A NIC without driver, a bound NIC, a bound RAID HBA whose firmware failed, a GPU.
        dev("0000:00:05.0", "0x020000\n", "0x10ec\n", "0x8029\n");
        dev("0000:00:03.0", "0x020000\n", "0x1af4\n", "0x1000\n");
        fs::create_dir_all(r.join("sys/bus/pci/devices/0000:00:03.0/driver")).unwrap();
        dev("0000:02:00.0", "0x020000\n", "0x10ec\n", "0x8168\n");
        fs::create_dir_all(r.join("sys/bus/pci/devices/0000:02:00.0/driver")).unwrap();
        dev("0000:00:02.0", "0x030000\n", "0x1234\n", "0x1111\n");
        put(
            r,
            "dev/kmsg",
            "6,100,5000,-;r8169 0000:02:00.0: Direct firmware load for rtl_nic/rtl8168h-2.fw failed with error -2\n\
             6,101,5001,-;r8169 0000:02:00.0: Direct firmware load for rtl_nic/rtl8168h-2.fw failed with error -2\n\
             4,102,6000,-;foo 0000:09:00.0: firmware: failed to load acme/x.bin (-2)\n\
             6,103,7000,-;nothing to see\n",
        );
        let p = problems(r);
        let lines: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "network controller 0000:00:05.0 (10ec:8029) has no driver in this image: it cannot be used here (a missing module: say which hardware this is when you report it)",
                "network controller 0000:02:00.0: r8169 could not load its firmware rtl_nic/rtl8168h-2.fw: the image lacks it; it is in Debian's firmware-realtek package: rebuild the image with `image-builder build --firmware common` (or `all`)",
                "device 0000:09:00.0: foo could not load its firmware acme/x.bin: the image lacks it",
            ]
        );
        let mut inv = Inventory {
            problems: p,
            ..Inventory::default()
        };
        inv.check_bounds().unwrap();
        inv.problems =
            vec![inv.problems[0].clone(); ferry_format::agent::MAX_INVENTORY_PROBLEMS + 1];
        assert!(inv.check_bounds().is_err());
    }

    #[test]
    fn inventory_from_a_fake_sysfs_tree() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        const MIB: u64 = 1 << 20;
        image(r, "vda", 64 * MIB, None);
        put(r, "sys/block/vda/queue/logical_block_size", "512\n");
        put(r, "sys/block/vda/queue/physical_block_size", "4096\n");
        put(r, "sys/block/vda/serial", "SER-VDA\n");
        image(r, "sda", 16 * MIB, Some(510));
        put(r, "sys/block/sda/device/model", "QEMU HARDDISK   \n");
        put(r, "sys/block/sda/device/serial", "QM0001\n");
        put(r, "sys/block/sda/device/wwid", "naa.5000c500a1b2c3d4\n");
        put(r, "sys/block/sda/removable", "0\n");
        // Data in the last MiB only: not blank either. A SATA disk: its serial in VPD page 0x80.
        image(r, "sdb", 8 * MIB, Some(8 * MIB - 100));
        let vpd = r.join("sys/block/sdb/device/vpd_pg80");
        fs::create_dir_all(vpd.parent().unwrap()).unwrap();
        fs::write(&vpd, b"\x00\x80\x00\x0c  WIN-CLEAN ").unwrap();
        // Skipped: loop devices, empty drives; a disk without a /dev node is kept, not blank.
        image(r, "loop0", 8 * MIB, None);
        put(r, "sys/block/sr0/size", "0\n");
        put(r, "sys/block/nvme0n1/size", "2048\n");
        put(r, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
        put(r, "sys/class/net/eth0/address", "52:54:00:AB:CD:EF\n");
        put(r, "sys/class/net/eth0/carrier", "1\n");
        put(r, "sys/class/net/eth1/address", "52:54:00:00:00:02\n");
        // eth0 is a virtio NIC: device -> .../0000:00:03.0/virtio0, bound to virtio_net.
        let dev = r.join("sys/devices/pci0000:00/0000:00:03.0/virtio0");
        fs::create_dir_all(&dev).unwrap();
        std::os::unix::fs::symlink(
            "../../../../bus/virtio/drivers/virtio_net",
            dev.join("driver"),
        )
        .unwrap();
        std::os::unix::fs::symlink(&dev, r.join("sys/class/net/eth0/device")).unwrap();
        fs::create_dir_all(r.join("sys/firmware/efi")).unwrap();
        put(
            r,
            "proc/meminfo",
            "MemTotal:        2048000 kB\nMemFree:  100 kB\n",
        );
        put(r, "proc/cpuinfo", "processor\t: 0\nmodel name\t: QEMU Virtual CPU\n\nprocessor\t: 1\nmodel name\t: QEMU Virtual CPU\n");

        let inv = collect(r);
        let names: Vec<&str> = inv.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "sda", "sdb", "vda"]);
        let vda = inv.disk("vda").unwrap();
        assert_eq!(
            (
                vda.size,
                vda.logical_sector_size,
                vda.physical_sector_size,
                vda.blank
            ),
            (64 * MIB, 512, 4096, true)
        );
        assert_eq!(vda.serial.as_deref(), Some("SER-VDA"));
        let sda = inv.disk("sda").unwrap();
        assert_eq!(sda.model.as_deref(), Some("QEMU HARDDISK"));
        assert_eq!(sda.serial.as_deref(), Some("QM0001"));
        assert_eq!(
            inv.disk("sdb").unwrap().serial.as_deref(),
            Some("WIN-CLEAN")
        );
        assert_eq!(sda.wwn.as_deref(), Some("naa.5000c500a1b2c3d4"));
        assert_eq!(
            (sda.logical_sector_size, sda.physical_sector_size),
            (512, 512)
        );
        assert!(
            !sda.blank && !inv.disk("sdb").unwrap().blank && !inv.disk("nvme0n1").unwrap().blank
        );
        assert!(
            inv.disk("nvme0n1").unwrap().holds.as_deref()
                == Some("contents that could not be read")
        );
        assert_eq!(inv.macs(), ["52:54:00:ab:cd:ef", "52:54:00:00:00:02"]);
        assert_eq!(inv.nics[0].carrier, Some(true));
        assert_eq!(inv.nics[1].carrier, None);
        assert_eq!(inv.nics[0].driver.as_deref(), Some("virtio_net"));
        assert_eq!(inv.nics[0].pci_path.as_deref(), Some("pci-0000:00:03.0"));
        assert_eq!((&inv.nics[1].driver, &inv.nics[1].pci_path), (&None, &None));
        assert_eq!(inv.firmware, Firmware::Uefi);
        assert_eq!(inv.memory_bytes, 2048000 * 1024);
        assert_eq!(
            (inv.cpu.count, inv.cpu.model.as_deref()),
            (2, Some("QEMU Virtual CPU"))
        );

        let empty = tempfile::tempdir().unwrap();
        let inv = collect(empty.path());
        assert!(inv.disks.is_empty() && inv.nics.is_empty() && inv.firmware == Firmware::Bios);
    }

    #[test]
    fn the_boot_medium_wiped_tables_and_markers_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        const MIB: u64 = 1 << 20;
        // A hybrid ISO written to a USB disk: protected.
        image(r, "sdb", 64 * MIB, None);
        let f = fs::OpenOptions::new()
            .write(true)
            .open(r.join("dev/sdb"))
            .unwrap();
        f.write_all_at(b"CD001", 32769).unwrap();
        // A disk whose table was zapped but whose ext4 at 1 MiB is intact: not blank.
        image(r, "vda", 256 * MIB, None);
        let f = fs::OpenOptions::new()
            .write(true)
            .open(r.join("dev/vda"))
            .unwrap();
        f.write_all_at(&[0x53, 0xef], MIB + 1080).unwrap();
        // A partial restore of ours.
        image(r, "vdb", 64 * MIB, None);
        let m = RestoreMarker::new("job-0badcafe", "web01-x", "sda", &"5a".repeat(32));
        let f = fs::OpenOptions::new()
            .write(true)
            .open(r.join("dev/vdb"))
            .unwrap();
        f.write_all_at(&m.encode(), 0).unwrap();
        let inv = collect(r);
        let sdb = inv.disk("sdb").unwrap();
        assert!(!sdb.blank && sdb.protected.as_deref().unwrap().contains("ISO 9660"));
        let vda = inv.disk("vda").unwrap();
        assert!(!vda.blank && vda.protected.is_none());
        assert_eq!(
            vda.holds.as_deref(),
            Some("an ext2/3/4 filesystem at offset 1 MiB")
        );
        assert!(!inv.disk("vdb").unwrap().blank);
        assert_eq!(markers(r, &inv), vec![("vdb".to_string(), m)]);
    }
}
