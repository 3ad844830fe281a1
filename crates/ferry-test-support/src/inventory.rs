//! What a rescue agent reports about its machine, as the API tests enroll it.

use ferry_format::agent::{Disk, Inventory, Nic};

/// One blank disk `vda` of `size` bytes (serial `SER-vda`, 512-byte sectors) and one NIC
/// `eth0` with `mac`, link up.
pub fn one_blank_disk(mac: &str, size: u64) -> Inventory {
    Inventory {
        disks: vec![Disk {
            name: "vda".into(),
            size,
            model: None,
            serial: Some("SER-vda".into()),
            wwn: None,
            logical_sector_size: 512,
            physical_sector_size: 512,
            blank: true,
            removable: false,
            holds: None,
            protected: None,
        }],
        nics: vec![Nic {
            name: "eth0".into(),
            mac: mac.into(),
            carrier: Some(true),
            driver: None,
            pci_path: None,
            predictable: None,
        }],
        ..Default::default()
    }
}
