//! Builders the tests of several `agent` modules share.

use super::{Disk, Inventory, Mapping};

pub(super) const GB: u64 = 1_000_000_000;

pub(super) fn disk(name: &str, size: u64, blank: bool) -> Disk {
    Disk {
        name: name.into(),
        size,
        model: None,
        serial: None,
        wwn: None,
        logical_sector_size: 512,
        physical_sector_size: 512,
        blank,
        removable: false,
        holds: (!blank).then(|| "an ext2/3/4 filesystem at offset 1 MiB".into()),
        protected: None,
    }
}

pub(super) fn inv(disks: Vec<Disk>) -> Inventory {
    Inventory {
        disks,
        ..Default::default()
    }
}

pub(super) fn map(s: &str) -> Mapping {
    s.parse().unwrap()
}
