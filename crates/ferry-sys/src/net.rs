//! Network interfaces as the kernel shows them in sysfs (`<sysfs>/class/net/<name>`): the
//! physical NICs with their address, bound driver and udev's PCI `ID_PATH`. Read under a
//! `sysfs` directory (`/sys` on a live system) so that tests run on a directory tree.
//!
//! Nothing here fails: what cannot be read is left out.

use std::fs;
use std::path::Path;

/// One NIC of `<sysfs>/class/net` that sits on a device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SysNic {
    /// The kernel's name (`ens192`).
    pub name: String,
    /// `address` as the kernel prints it (lowercase hex pairs for Ethernet), trimmed.
    pub address: Option<String>,
    /// The bound driver ([`device_driver`]).
    pub driver: Option<String>,
    /// udev's PCI `ID_PATH` ([`device_pci_path`]).
    pub pci_path: Option<String>,
}

/// The NICs of `<sysfs>/class/net` that have a `device` link (physical or paravirtual NICs;
/// bridges, bonds, VLANs, tunnels and `lo` have none), sorted by name.
pub fn physical_nics(sysfs: &Path) -> Vec<SysNic> {
    let net = sysfs.join("class/net");
    let Ok(rd) = fs::read_dir(&net) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let dir = net.join(&name);
            let device = dir.join("device");
            device.symlink_metadata().ok()?;
            Some(SysNic {
                address: read_text(&dir.join("address")),
                driver: device_driver(&device),
                pci_path: device_pci_path(&device),
                name,
            })
        })
        .collect()
}

/// The driver bound to a NIC's `device` (`<sysfs>/class/net/<nic>/device`): the name its
/// `driver` link points at (`virtio_net`, `vmxnet3`, `e1000e`).
pub fn device_driver(device: &Path) -> Option<String> {
    fs::read_link(device.join("driver"))
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// udev's `ID_PATH` of a NIC's `device`: `pci-` and the nearest PCI function (`dddd:bb:dd.f`)
/// in its resolved sysfs path (a virtio NIC's `virtio0` sits under one).
pub fn device_pci_path(device: &Path) -> Option<String> {
    fs::canonicalize(device).ok().and_then(|p| pci_id_path(&p))
}

/// `pci-dddd:bb:dd.f` of the nearest PCI function among `path`'s components, from the end.
pub fn pci_id_path(path: &Path) -> Option<String> {
    path.ancestors()
        .filter_map(|p| p.file_name()?.to_str())
        .find(|c| is_pci_function(c))
        .map(|c| format!("pci-{c}"))
}

/// `dddd:bb:dd.f` in hex.
fn is_pci_function(s: &str) -> bool {
    pci_function(s).is_some()
}

/// A PCI function's address `dddd:bb:dd.f` (hex) as its domain, bus, device (slot) and
/// function numbers.
pub fn pci_function(s: &str) -> Option<(u32, u32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 12 || b[4] != b':' || b[7] != b':' || b[10] != b'.' {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_hexdigit())
            .then(|| u32::from_str_radix(t, 16).ok())?
    };
    Some((hex(0..4)?, hex(5..7)?, hex(8..10)?, hex(11..12)?))
}

fn read_text(p: &Path) -> Option<String> {
    let t = fs::read_to_string(p).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn physical_nics_from_a_fake_sysfs_tree() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        put(s, "class/net/lo/address", "00:00:00:00:00:00\n");
        // A virtio NIC: device -> .../0000:00:03.0/virtio0, bound to virtio_net.
        let virtio = s.join("devices/pci0000:00/0000:00:03.0/virtio0");
        fs::create_dir_all(&virtio).unwrap();
        symlink(
            "../../../../bus/virtio/drivers/virtio_net",
            virtio.join("driver"),
        )
        .unwrap();
        put(s, "class/net/enp0s3/address", "52:54:00:ab:cd:ef\n");
        symlink(&virtio, s.join("class/net/enp0s3/device")).unwrap();
        // A PCI NIC with no driver bound.
        let pci = s.join("devices/pci0000:00/0000:00:1f.6");
        fs::create_dir_all(&pci).unwrap();
        put(s, "class/net/eno1/address", "3c:ec:ef:00:00:01\n");
        symlink(&pci, s.join("class/net/eno1/device")).unwrap();
        // Virtual: no device link.
        put(s, "class/net/br0/address", "52:54:00:ab:cd:ef\n");
        put(s, "class/net/bond0/address", "52:54:00:ab:cd:ef\n");

        let nics = physical_nics(s);
        assert_eq!(
            nics,
            [
                SysNic {
                    name: "eno1".into(),
                    address: Some("3c:ec:ef:00:00:01".into()),
                    driver: None,
                    pci_path: Some("pci-0000:00:1f.6".into()),
                },
                SysNic {
                    name: "enp0s3".into(),
                    address: Some("52:54:00:ab:cd:ef".into()),
                    driver: Some("virtio_net".into()),
                    pci_path: Some("pci-0000:00:03.0".into()),
                },
            ]
        );
        assert!(physical_nics(&s.join("nowhere")).is_empty());
    }

    #[test]
    fn pci_functions_are_found_from_the_end() {
        let table = [
            (
                "/sys/devices/pci0000:00/0000:00:03.0/virtio0",
                Some("pci-0000:00:03.0"),
            ),
            (
                "/sys/devices/pci0000:00/0000:00:1c.0/0000:0b:00.0",
                Some("pci-0000:0b:00.0"),
            ),
            ("/sys/devices/platform/soc/fe300000.ethernet", None),
            ("/sys/devices/pci0000:00/0000:00:0g.0", None),
        ];
        for (path, want) in table {
            assert_eq!(pci_id_path(Path::new(path)).as_deref(), want, "{path}");
        }
    }
}
