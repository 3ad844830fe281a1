//! What the agent found on its machine ([`Inventory`]) and the bounds the appliance holds it to.

use serde::{Deserialize, Serialize};

/// What the agent found on its machine, sent at enrollment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub firmware: Firmware,
    /// MemTotal from /proc/meminfo, in bytes.
    pub memory_bytes: u64,
    pub cpu: Cpu,
    /// Network and storage controllers that do not work in the rescue image: no driver bound,
    /// or firmware their driver could not load. Absent in older agents' inventories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<DeviceProblem>,
}

/// A controller the rescue image cannot use, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProblem {
    /// PCI address (`0000:02:00.0`), or what the kernel named when it is not a PCI device.
    pub device: String,
    /// PCI `vendor:device` (`10ec:8168`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<String>,
    /// `network` or `storage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The driver that asked for missing firmware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The firmware file that failed to load (`rtl_nic/rtl8168h-2.fw`); absent: no driver is
    /// bound to the device at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// The Debian package that ships that firmware, when the agent knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
}

impl std::fmt::Display for DeviceProblem {
    /// One console line: what does not work and what would fix it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match (&self.class, &self.ids) {
            (Some(c), Some(i)) => format!("{c} controller {} ({i})", self.device),
            (Some(c), None) => format!("{c} controller {}", self.device),
            (None, Some(i)) => format!("device {} ({i})", self.device),
            (None, None) => format!("device {}", self.device),
        };
        match (&self.firmware, &self.package) {
            (Some(fw), Some(p)) => write!(
                f,
                "{what}: {} could not load its firmware {fw}: the image lacks it; it is in Debian's {p} package: rebuild the image with `image-builder build --firmware common` (or `all`)",
                self.driver.as_deref().unwrap_or("its driver")
            ),
            (Some(fw), None) => write!(
                f,
                "{what}: {} could not load its firmware {fw}: the image lacks it",
                self.driver.as_deref().unwrap_or("its driver")
            ),
            (None, _) => write!(
                f,
                "{what} has no driver in this image: it cannot be used here (a missing module: say which hardware this is when you report it)"
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Kernel name (`vda`, `sda`, `nvme0n1`): the device is `/dev/<name>`.
    pub name: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// Nothing found anywhere the blank check looks: both ends, every usual partition start,
    /// and samples across the whole disk (false when it could not be read).
    pub blank: bool,
    #[serde(default)]
    pub removable: bool,
    /// What the blank check found, when the disk is not blank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<String>,
    /// Why this disk is never a restore target whatever a job says (it holds the medium the
    /// rescue image booted from, or an installation medium).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub name: String,
    /// Lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Link detected; `None` when the interface is down and the kernel cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<bool>,
    /// Kernel driver bound to the device (`virtio_net`, `vmxnet3`, `bnx2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// udev's `ID_PATH` for a PCI NIC (`pci-0000:01:00.0`): what predictable names and
    /// systemd-networkd's `Path=` follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_path: Option<String>,
    /// The name systemd's predictable naming gives this NIC in a restored OS (`ens3`,
    /// `enp1s0`, `eno1`; `ferry_sys::netname`): the rescue kernel calls it `eth0`, the
    /// restored network configuration is written for this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictable: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    #[default]
    Bios,
    Uefi,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// Logical processors.
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Inventory {
    /// Every NIC's MAC, lowercase.
    pub fn macs(&self) -> Vec<String> {
        self.nics.iter().map(|n| n.mac.clone()).collect()
    }

    pub fn disk(&self, name: &str) -> Option<&Disk> {
        self.disks.iter().find(|d| d.name == name)
    }
}

/// `aa:bb:cc:dd:ee:ff` in lowercase, from any case and `-` or `:` separators.
pub fn normalize_mac(text: &str) -> Result<String, String> {
    let t = text.trim().to_ascii_lowercase().replace('-', ":");
    let parts: Vec<&str> = t.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(t)
    } else {
        Err(format!(
            "{text:?} is not a MAC address: use six hex pairs, e.g. 52:54:00:12:34:56"
        ))
    }
}

/// Most disks and NICs an inventory may list, and the longest text field: bounds what an
/// enrollment (a token stamped into every image) can make the appliance store.
pub const MAX_INVENTORY_DISKS: usize = 128;
pub const MAX_INVENTORY_NICS: usize = 64;
pub const MAX_INVENTORY_TEXT: usize = 256;
pub const MAX_INVENTORY_PROBLEMS: usize = 64;

impl Inventory {
    /// Refuse an inventory larger than any machine's: what to fix, as a sentence.
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.problems.len() > MAX_INVENTORY_PROBLEMS {
            return Err(format!(
                "an inventory lists at most {MAX_INVENTORY_PROBLEMS} device problems, this one {}",
                self.problems.len()
            ));
        }
        if self.disks.len() > MAX_INVENTORY_DISKS || self.nics.len() > MAX_INVENTORY_NICS {
            return Err(format!(
                "an inventory lists at most {MAX_INVENTORY_DISKS} disks and {MAX_INVENTORY_NICS} NICs, this one {} and {}",
                self.disks.len(),
                self.nics.len()
            ));
        }
        let texts = self
            .disks
            .iter()
            .flat_map(|d| [d.model.as_deref(), d.serial.as_deref(), d.wwn.as_deref()])
            .chain([self.cpu.model.as_deref()])
            .flatten()
            .chain(self.nics.iter().flat_map(|n| {
                [
                    Some(n.name.as_str()),
                    n.driver.as_deref(),
                    n.pci_path.as_deref(),
                ]
                .into_iter()
                .flatten()
            }))
            .chain(self.problems.iter().flat_map(|p| {
                [
                    Some(p.device.as_str()),
                    p.ids.as_deref(),
                    p.class.as_deref(),
                    p.driver.as_deref(),
                    p.firmware.as_deref(),
                    p.package.as_deref(),
                ]
                .into_iter()
                .flatten()
            }));
        for t in texts {
            if t.len() > MAX_INVENTORY_TEXT {
                return Err(format!(
                    "an inventory field is {} bytes long; at most {MAX_INVENTORY_TEXT}",
                    t.len()
                ));
            }
        }
        for n in &self.nics {
            normalize_mac(&n.mac)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{disk, inv, GB};
    use super::*;

    #[test]
    fn inventories_are_bounded() {
        let mut i = inv(vec![disk("vda", GB, true); MAX_INVENTORY_DISKS]);
        assert!(i.check_bounds().is_ok());
        i.disks.push(disk("vdb", GB, true));
        assert!(i.check_bounds().unwrap_err().contains("at most"));
        let mut i = inv(vec![disk("vda", GB, true)]);
        i.disks[0].serial = Some("x".repeat(MAX_INVENTORY_TEXT + 1));
        assert!(i.check_bounds().is_err());
        let mut i = inv(vec![]);
        i.nics.push(Nic {
            name: "eth0".into(),
            mac: "not-a-mac".into(),
            carrier: None,
            driver: None,
            pci_path: None,
            predictable: None,
        });
        assert!(i.check_bounds().is_err());
        i.nics[0].mac = "52:54:00:00:00:01".into();
        assert!(i.check_bounds().is_ok());
        i.nics[0].driver = Some("d".repeat(MAX_INVENTORY_TEXT + 1));
        assert!(i.check_bounds().is_err());
    }

    #[test]
    fn macs_normalize() {
        assert_eq!(
            normalize_mac("52-54-00-AB-cd-EF").unwrap(),
            "52:54:00:ab:cd:ef"
        );
        assert!(normalize_mac("52:54:00:ab:cd").is_err());
    }
}
