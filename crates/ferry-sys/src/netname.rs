//! The name systemd's predictable interface naming gives a PCI NIC (udev's `net_id` builtin,
//! `NamePolicy=onboard slot path` of `99-default.link`): `eno<index>` from the firmware's
//! onboard index, else `ens<slot>` from the PCI hotplug slot, else `enp<bus>s<slot>`; with
//! `f<function>` on a multi-function device and `d<dev_port>` for a second port. The rescue
//! kernel names NICs `eth0`, `eth1`; a restored OS with systemd names them so, and its
//! network files are rewritten for that name (the fix-up also pins it by MAC).
//!
//! Read under a `sysfs` directory (`/sys` on a live system) so that tests run on a tree.

use std::fs;
use std::path::{Path, PathBuf};

use crate::net::pci_function;

/// The predictable name of the NIC `nic` (`<sysfs>/class/net/<nic>`), `None` when it does not
/// sit on a PCI function (USB, a platform device) or sysfs cannot be read.
pub fn predictable_name(sysfs: &Path, nic: &str) -> Option<String> {
    let dev = fs::canonicalize(sysfs.join("class/net").join(nic).join("device")).ok()?;
    let pci = pci_function_dir(&dev)?;
    let (domain, bus, slot, func) = pci_function(pci.file_name()?.to_str()?)?;
    let mut tail = String::new();
    if func > 0 || multifunction(&pci, slot, func) {
        tail.push_str(&format!("f{func}"));
    }
    let dev_port = read_u32(&sysfs.join("class/net").join(nic).join("dev_port")).unwrap_or(0);
    if dev_port > 0 {
        tail.push_str(&format!("d{dev_port}"));
    }
    let onboard = read_u32(&pci.join("acpi_index"))
        .filter(|n| *n > 0)
        .or_else(|| read_u32(&pci.join("index")).filter(|n| *n > 0))
        .filter(|n| *n <= 16383);
    if let Some(n) = onboard {
        let port = if dev_port > 0 {
            format!("d{dev_port}")
        } else {
            String::new()
        };
        return Some(format!("eno{n}{port}"));
    }
    let domain_prefix = if domain > 0 {
        format!("P{domain}")
    } else {
        String::new()
    };
    if let Some(n) = hotplug_slot(sysfs, domain, bus, slot) {
        return Some(format!("en{domain_prefix}s{n}{tail}"));
    }
    Some(format!("en{domain_prefix}p{bus}s{slot}{tail}"))
}

/// The nearest ancestor of `dev` (itself included) named like a PCI function.
fn pci_function_dir(dev: &Path) -> Option<PathBuf> {
    dev.ancestors()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(pci_function)
                .is_some()
        })
        .map(Path::to_path_buf)
}

/// Another function of the same slot exists beside `pci`.
fn multifunction(pci: &Path, slot: u32, func: u32) -> bool {
    let Some(parent) = pci.parent() else {
        return false;
    };
    let Ok(rd) = fs::read_dir(parent) else {
        return false;
    };
    let me = pci.file_name();
    rd.filter_map(Result::ok).any(|e| {
        let n = e.file_name();
        Some(n.as_os_str()) != me
            && n.to_str()
                .and_then(pci_function)
                .is_some_and(|(_, _, s, f)| s == slot && f != func)
    })
}

/// The number of the hotplug slot (`<sysfs>/bus/pci/slots/<n>/address` = `dddd:bb:ss`)
/// holding this device.
fn hotplug_slot(sysfs: &Path, domain: u32, bus: u32, slot: u32) -> Option<String> {
    let want = format!("{domain:04x}:{bus:02x}:{slot:02x}");
    let mut found: Vec<String> = fs::read_dir(sysfs.join("bus/pci/slots"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| fs::read_to_string(e.path().join("address")).is_ok_and(|a| a.trim() == want))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    found.sort();
    found.into_iter().next()
}

fn read_u32(p: &Path) -> Option<u32> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
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

    /// `class/net/<nic>/device` -> `devices/<under>`.
    fn nic(root: &Path, name: &str, under: &str) {
        fs::create_dir_all(root.join("devices").join(under)).unwrap();
        fs::create_dir_all(root.join("class/net").join(name)).unwrap();
        symlink(
            format!("../../../devices/{under}"),
            root.join("class/net").join(name).join("device"),
        )
        .unwrap();
    }

    #[test]
    fn names_follow_onboard_then_slot_then_path() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        // QEMU i440fx: virtio-net at 00:03.0 under virtio0, in ACPI hotplug slot 3.
        nic(r, "eth0", "pci0000:00/0000:00:03.0/virtio0");
        put(r, "bus/pci/slots/3/address", "0000:00:03\n");
        // q35: behind a root port, no slot: the path.
        nic(r, "eth1", "pci0000:00/0000:00:1c.0/0000:01:00.0/virtio1");
        // Onboard, with the firmware's index.
        nic(r, "eth2", "pci0000:00/0000:00:19.0");
        put(r, "devices/pci0000:00/0000:00:19.0/acpi_index", "1\n");
        // A dual-port card: function 1 of a multi-function device, in domain 1.
        nic(r, "eth3", "pci0001:00/0001:05:00.1");
        fs::create_dir_all(r.join("devices/pci0001:00/0001:05:00.0")).unwrap();
        // A USB NIC: no PCI function on its path.
        nic(r, "eth4", "platform/usb1/1-1/1-1:1.0");
        let got: Vec<Option<String>> = ["eth0", "eth1", "eth2", "eth3", "eth4", "nope"]
            .iter()
            .map(|n| predictable_name(r, n))
            .collect();
        let want = [
            Some("ens3"),
            Some("enp1s0"),
            Some("eno1"),
            Some("enP1p5s0f1"),
            None,
            None,
        ];
        assert_eq!(got, want.map(|w| w.map(String::from)));
    }
}
