//! The registry edits of the Windows fix-up, each recorded as a [`Change`]. What is
//! written follows virt-v2v (convert_windows / inject_virtio_win), re-expressed here.

use super::inf::InfDriver;
use crate::hive::{Hive, HiveError, KeyId, RegValue};
use crate::{Change, FixupError};
use std::path::PathBuf;

/// Device class of SCSI/storage adapters ([Version] ClassGuid of viostor/vioscsi).
pub const SCSI_CLASS_GUID: &str = "{4D36E97B-E325-11CE-BFC1-08002BE10318}";
/// Device class of network adapters ([Version] ClassGuid of netkvm).
pub const NET_CLASS_GUID: &str = "{4D36E972-E325-11CE-BFC1-08002BE10318}";

/// Legacy (transitional) and modern virtio PCI ids per service, so that both device
/// flavours are matched even when an INF lists only one.
pub const VIRTIO_IDS: &[(&str, &[&str])] = &[
    (
        "viostor",
        &[
            "VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
            "VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01",
        ],
    ),
    (
        "vioscsi",
        &[
            "VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00",
            "VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01",
        ],
    ),
    (
        "netkvm",
        &[
            "VEN_1AF4&DEV_1000&SUBSYS_00011AF4&REV_00",
            "VEN_1AF4&DEV_1041&SUBSYS_11001AF4&REV_01",
        ],
    ),
];

/// What a driver is for, from its class GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DriverKind {
    /// Boot-critical: Start=0, Group "SCSI miniport", CDDB/DriverDatabase entries.
    Storage,
    /// Start=3, Group "NDIS"; PnP finishes the binding on first boot.
    Net,
    /// Only copied to the driver store folder.
    Other,
}

impl DriverKind {
    pub fn of(d: &InfDriver) -> DriverKind {
        match d.class_guid.as_deref() {
            Some(g) if g.eq_ignore_ascii_case(SCSI_CLASS_GUID) => DriverKind::Storage,
            Some(g) if g.eq_ignore_ascii_case(NET_CLASS_GUID) => DriverKind::Net,
            _ => DriverKind::Other,
        }
    }
}

/// Full PCI ids (with SUBSYS and REV, without the `PCI\` prefix) for a driver: those its
/// INF lists plus the known legacy and modern virtio ids of its service.
pub fn pci_ids(d: &InfDriver) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut add = |id: &str| {
        let id = id.to_uppercase();
        if !ids.contains(&id) {
            ids.push(id);
        }
    };
    for id in &d.hardware_ids {
        let up = id.to_uppercase();
        if let Some(rest) = up.strip_prefix("PCI\\") {
            if rest.contains("&SUBSYS_") && rest.contains("&REV_") {
                add(rest);
            }
        }
    }
    for (svc, known) in VIRTIO_IDS {
        if svc.eq_ignore_ascii_case(&d.service) {
            known.iter().for_each(|k| add(k));
        }
    }
    ids
}

/// A hive being edited, with the changes made so far.
pub struct HiveEdit {
    pub hive: Hive,
    pub file: PathBuf,
    pub changes: Vec<Change>,
}

impl HiveEdit {
    pub fn new(hive: Hive, file: PathBuf) -> HiveEdit {
        HiveEdit {
            hive,
            file,
            changes: Vec::new(),
        }
    }

    pub fn err(&self) -> impl FnOnce(HiveError) -> FixupError + '_ {
        |source| FixupError::Hive {
            path: self.file.clone(),
            source,
        }
    }

    /// Opens or creates a key, recording each key created.
    pub fn key(&mut self, path: &str) -> Result<KeyId, FixupError> {
        let mut key = self.hive.root();
        let mut so_far = String::new();
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            so_far = if so_far.is_empty() {
                part.to_owned()
            } else {
                format!("{so_far}\\{part}")
            };
            let found = self.hive.subkey(key, part).map_err(|e| FixupError::Hive {
                path: self.file.clone(),
                source: e,
            })?;
            key = match found {
                Some(k) => k,
                None => {
                    self.changes.push(Change::edit(
                        &self.file,
                        format!("create key {so_far}"),
                        None,
                        None,
                    ));
                    self.hive
                        .create_key(key, part)
                        .map_err(|e| FixupError::Hive {
                            path: self.file.clone(),
                            source: e,
                        })?
                }
            };
        }
        Ok(key)
    }

    /// Sets a value unless it already holds exactly that, recording before and after.
    pub fn set(&mut self, path: &str, name: &str, value: RegValue) -> Result<(), FixupError> {
        let key = self.key(path)?;
        let before = self.hive.value(key, name).map_err(|e| FixupError::Hive {
            path: self.file.clone(),
            source: e,
        })?;
        let before = before.map(|v| v.decoded());
        if before.as_ref() == Some(&value) {
            return Ok(());
        }
        self.hive
            .set_value(key, name, &value)
            .map_err(|e| FixupError::Hive {
                path: self.file.clone(),
                source: e,
            })?;
        let label = if name.is_empty() { "(default)" } else { name };
        self.changes.push(Change::edit(
            &self.file,
            format!("set {path}\\{label}"),
            before.map(|b| b.to_string()),
            Some(value.to_string()),
        ));
        Ok(())
    }

    pub fn get(&self, path: &str, name: &str) -> Result<Option<RegValue>, FixupError> {
        self.hive.get(path, name).map_err(|e| FixupError::Hive {
            path: self.file.clone(),
            source: e,
        })
    }

    pub fn exists(&self, path: &str) -> Result<bool, FixupError> {
        Ok(self
            .hive
            .open(path)
            .map_err(|e| FixupError::Hive {
                path: self.file.clone(),
                source: e,
            })?
            .is_some())
    }
}

/// Services\<svc>: a kernel driver, boot-start for storage.
pub fn add_service(
    ed: &mut HiveEdit,
    ccs: &str,
    d: &InfDriver,
    kind: DriverKind,
) -> Result<(), FixupError> {
    let key = format!("{ccs}\\Services\\{}", d.service);
    let (start, group) = match kind {
        DriverKind::Storage => (0, "SCSI miniport"),
        DriverKind::Net => (3, "NDIS"),
        DriverKind::Other => return Ok(()),
    };
    ed.set(&key, "Type", RegValue::Dword(1))?;
    ed.set(&key, "Start", RegValue::Dword(start))?;
    ed.set(&key, "ErrorControl", RegValue::Dword(1))?;
    ed.set(&key, "Group", RegValue::Sz(group.into()))?;
    ed.set(
        &key,
        "ImagePath",
        RegValue::ExpandSz(format!("system32\\drivers\\{}", d.binary.to_lowercase())),
    )?;
    if kind == DriverKind::Storage {
        // As the virtio-win INF's AddReg does: the miniport speaks the PCI PnP interface.
        ed.set(
            &format!("{key}\\Parameters\\PnpInterface"),
            "5",
            RegValue::Dword(1),
        )?;
    }
    Ok(())
}

/// Control\CriticalDeviceDatabase entries (Windows before 8): the boot loader binds these
/// PCI ids to the service before PnP runs.
pub fn add_cddb(
    ed: &mut HiveEdit,
    ccs: &str,
    d: &InfDriver,
    class_guid: &str,
) -> Result<(), FixupError> {
    for id in pci_ids(d) {
        let key = format!(
            "{ccs}\\Control\\CriticalDeviceDatabase\\pci#{}",
            id.to_lowercase()
        );
        ed.set(&key, "Service", RegValue::Sz(d.service.clone()))?;
        ed.set(&key, "ClassGUID", RegValue::Sz(class_guid.to_owned()))?;
    }
    Ok(())
}

/// The Version blob of a DriverPackages entry (as virt-v2v writes it): a header, the
/// class GUID in its binary form, zero padding. Windows-Kernel-Pnp needs it on 10/2016.
fn package_version_blob(class_guid: &str) -> Vec<u8> {
    let hexs: String = class_guid.chars().filter(char::is_ascii_hexdigit).collect();
    let mut guid: Vec<u8> = (0..16)
        .map(|i| {
            hexs.get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0)
        })
        .collect();
    guid[0..4].reverse();
    guid[4..6].reverse();
    guid[6..8].reverse();
    let mut blob = vec![0x00, 0xff, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00];
    blob.extend(guid);
    blob.extend([0u8; 24]);
    blob
}

/// Names used in the DriverDatabase for a service.
pub fn ddb_names(service: &str) -> (String, String, String) {
    let svc = service.to_lowercase();
    (
        format!("ferry_{svc}.inf"),
        format!("ferry_{svc}.inf_ferry"),
        format!("ferry_{svc}_conf"),
    )
}

/// DriverDatabase entries (Windows 8 and later, which have no CriticalDeviceDatabase):
/// an INF, a driver package with one configuration naming the service, and the PCI ids
/// pointing at the INF.
pub fn add_ddb(ed: &mut HiveEdit, d: &InfDriver, class_guid: &str) -> Result<(), FixupError> {
    let (inf, pkg, conf) = ddb_names(&d.service);
    let inf_key = format!("DriverDatabase\\DriverInfFiles\\{inf}");
    ed.set(&inf_key, "", RegValue::MultiSz(vec![pkg.clone()]))?;
    ed.set(&inf_key, "Active", RegValue::Sz(pkg.clone()))?;
    ed.set(
        &inf_key,
        "Configurations",
        RegValue::MultiSz(vec![conf.clone()]),
    )?;
    let pkg_key = format!("DriverDatabase\\DriverPackages\\{pkg}");
    ed.set(
        &pkg_key,
        "Version",
        RegValue::Binary(package_version_blob(class_guid)),
    )?;
    let conf_key = format!("{pkg_key}\\Configurations\\{conf}");
    ed.set(&conf_key, "ConfigFlags", RegValue::Dword(0))?;
    ed.set(&conf_key, "Service", RegValue::Sz(d.service.clone()))?;
    for id in pci_ids(d) {
        ed.set(
            &format!("DriverDatabase\\DeviceIds\\PCI\\{id}"),
            &inf,
            RegValue::Binary(vec![0x01, 0xff, 0x00, 0x00]),
        )?;
        ed.set(
            &format!("{pkg_key}\\Descriptors\\PCI\\{id}"),
            "Configuration",
            RegValue::Sz(conf.clone()),
        )?;
    }
    Ok(())
}

/// The folder drivers are copied to, as Windows expands it.
pub const DEVICE_PATH_ENTRY: &str = "%SystemRoot%\\Drivers\\VirtIO";
const DEVICE_PATH_KEY: &str = "Microsoft\\Windows\\CurrentVersion";

/// SOFTWARE: appends the VirtIO folder to DevicePath, where PnP looks for drivers.
pub fn add_device_path(ed: &mut HiveEdit) -> Result<(), FixupError> {
    let current = ed.get(DEVICE_PATH_KEY, "DevicePath")?;
    let current = current
        .as_ref()
        .and_then(|v| v.as_str())
        .unwrap_or("%SystemRoot%\\inf")
        .to_owned();
    if current
        .split(';')
        .any(|p| p.eq_ignore_ascii_case(DEVICE_PATH_ENTRY))
    {
        return Ok(());
    }
    ed.set(
        DEVICE_PATH_KEY,
        "DevicePath",
        RegValue::ExpandSz(format!("{current};{DEVICE_PATH_ENTRY}")),
    )
}

/// VMware Tools user-mode services: on KVM they start, find no VMware backdoor and fail,
/// logging errors at every boot. Disabled (Start=4) only when set to auto-start.
pub const DISABLE_IF_AUTO: &[&str] = &[
    "VMTools",
    "VGAuthService",
    "vmvss",
    "VMUpgradeHelper",
    "VMUSBArbService",
];
/// Drivers of the old hardware that are left alone: without their device they do not
/// load, and some are class filters whose removal would break the device stack.
pub const LEAVE_ENABLED: &[&str] = &[
    "LSI_SAS",
    "LSI_SAS2",
    "LSI_SCSI",
    "pvscsi",
    "storahci",
    "msahci",
    "iaStorV",
    "atapi",
    "intelide",
    "vmci",
    "vm3dmp",
    "vmmouse",
    "vmusbmouse",
    "vmxnet3ndis6",
    "vmhgfs",
    "vmrawdsk",
    "vsock",
    "vmmemctl",
];

/// Services named as an UpperFilters/LowerFilters anywhere under Control\Class.
fn class_filters(ed: &HiveEdit, ccs: &str) -> Result<Vec<String>, FixupError> {
    let h = &ed.hive;
    let mut out = Vec::new();
    let Some(class) = h
        .open(&format!("{ccs}\\Control\\Class"))
        .map_err(ed.err())?
    else {
        return Ok(out);
    };
    for k in h.subkeys(class).map_err(ed.err())? {
        for name in ["UpperFilters", "LowerFilters"] {
            if let Some(RegValue::MultiSz(list)) =
                h.value(k, name).map_err(ed.err())?.map(|v| v.decoded())
            {
                out.extend(list);
            }
        }
    }
    Ok(out)
}

/// Disables the old hypervisor's user-mode tools when that is safe; returns notes saying
/// what was done and what was left alone.
pub fn disable_old_tools(ed: &mut HiveEdit, ccs: &str) -> Result<Vec<String>, FixupError> {
    let filters = class_filters(ed, ccs)?;
    let mut notes = Vec::new();
    for svc in DISABLE_IF_AUTO {
        let key = format!("{ccs}\\Services\\{svc}");
        let Some(start) = ed.get(&key, "Start")? else {
            continue;
        };
        if filters.iter().any(|f| f.eq_ignore_ascii_case(svc)) {
            notes.push(format!("left {svc} enabled: it is a device class filter"));
        } else if start == RegValue::Dword(2) {
            ed.set(&key, "Start", RegValue::Dword(4))?;
            notes.push(format!(
                "disabled {svc} (VMware Tools service, fails without VMware)"
            ));
        }
    }
    let left: Vec<&str> = LEAVE_ENABLED
        .iter()
        .copied()
        .filter(|s| ed.exists(&format!("{ccs}\\Services\\{s}")).unwrap_or(false))
        .collect();
    if !left.is_empty() {
        notes.push(format!(
            "left old-hardware drivers enabled (harmless without their device): {}",
            left.join(", ")
        ));
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_blob_embeds_the_class_guid_like_virt_v2v() {
        let blob = package_version_blob(SCSI_CLASS_GUID);
        assert_eq!(blob.len(), 48);
        assert_eq!(&blob[..8], [0x00, 0xff, 0x09, 0x00, 0, 0, 0, 0]);
        assert_eq!(
            &blob[8..24],
            [
                0x7b, 0xe9, 0x36, 0x4d, 0x25, 0xe3, 0xce, 0x11, 0xbf, 0xc1, 0x08, 0x00, 0x2b, 0xe1,
                0x03, 0x18
            ]
        );
    }

    #[test]
    fn pci_ids_union_inf_and_known_ids() {
        let d = InfDriver {
            service: "viostor".into(),
            binary: "viostor.sys".into(),
            class: None,
            class_guid: None,
            hardware_ids: vec![
                "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00".into(),
                "PCI\\VEN_1AF4&DEV_1001".into(),
            ],
            start_type: None,
            load_order_group: None,
        };
        assert_eq!(
            pci_ids(&d),
            [
                "VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
                "VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01"
            ]
        );
    }
}
