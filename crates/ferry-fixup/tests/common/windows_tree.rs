//! A Windows-shaped temp tree and a virtio-win-shaped driver package for the tests.
#![allow(dead_code)]

use super::testdata_to;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const VIOSTOR_INF: &str = r#";
; viostor.inf - Red Hat VirtIO block driver (as in virtio-win)
;
[Version]
Signature="$WINDOWS NT$"
Class=SCSIAdapter
ClassGUID={4D36E97B-E325-11CE-BFC1-08002BE10318}
Provider=%RHEL%
DriverVer=09/12/2023,100.94.104.24000
CatalogFile=viostor.cat
PnpLockdown=1

[DestinationDirs]
DefaultDestDir = 12 ; DIRID_DRIVERS

[SourceDisksNames]
1 = %DiskId1%,,,""

[SourceDisksFiles]
viostor.sys = 1,,

[Manufacturer]
%RHEL%=RHEL,NT$ARCH$

[RHEL.NT$ARCH$]
%RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, PCI\VEN_1AF4&DEV_1001
%RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01, PCI\VEN_1AF4&DEV_1042

[rhelscsi_inst]
CopyFiles=@viostor.sys

[rhelscsi_inst.HW]
AddReg = pnpsafe_pci_addreg

[rhelscsi_inst.Services]
AddService = viostor, %SPSVCINST_ASSOCSERVICE%, rhelscsi_Service_Inst, Miniport_EventLog_Inst

[rhelscsi_Service_Inst]
ServiceType    = %SERVICE_KERNEL_DRIVER%
StartType      = %SERVICE_BOOT_START%
ErrorControl   = %SERVICE_ERROR_NORMAL%
ServiceBinary  = %12%\viostor.sys
LoadOrderGroup = SCSI miniport
AddReg         = pnpsafe_pci_addreg

[pnpsafe_pci_addreg]
HKR, "Parameters\PnpInterface", "5", %REG_DWORD%, 0x00000001
HKR, "Parameters", "BusType", %REG_DWORD%, 0x00000001

[Miniport_EventLog_Inst]
AddReg = Miniport_EventLog_AddReg

[Miniport_EventLog_AddReg]
HKR,,EventMessageFile,%REG_EXPAND_SZ%,"%%SystemRoot%%\System32\IoLogMsg.dll"
HKR,,TypesSupported,%REG_DWORD%,7

[Strings]
SPSVCINST_ASSOCSERVICE = 0x00000002
SERVICE_KERNEL_DRIVER  = 1
SERVICE_BOOT_START     = 0
SERVICE_ERROR_NORMAL   = 1
REG_EXPAND_SZ          = 0x00020000
REG_DWORD              = 0x00010001
RHEL = "Red Hat, Inc."
DiskId1 = "Red Hat VirtIO SCSI controller Installation Disk #1"
RHELScsi.DeviceDesc = "Red Hat VirtIO SCSI controller"
"#;

pub const VIOSCSI_INF: &str = r#"; vioscsi.inf - Red Hat VirtIO SCSI pass-through driver
[Version]
Signature="$WINDOWS NT$"
Class=SCSIAdapter
ClassGUID={4D36E97B-E325-11CE-BFC1-08002BE10318}
Provider=%VENDOR%
CatalogFile=vioscsi.cat

[Manufacturer]
%VENDOR%=VENDOR,NT$ARCH$

[VENDOR.NT$ARCH$]
%rhelscsi.DeviceDesc% = scsi_inst, PCI\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00, PCI\VEN_1AF4&DEV_1004
%rhelscsi.DeviceDesc% = scsi_inst, PCI\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01, PCI\VEN_1AF4&DEV_1048

[scsi_inst]
CopyFiles=@vioscsi.sys

[scsi_inst.Services]
AddService = vioscsi, %SPSVCINST_ASSOCSERVICE%, scsi_Service_Inst, Miniport_EventLog_Inst

[scsi_Service_Inst]
ServiceType    = %SERVICE_KERNEL_DRIVER%
StartType      = %SERVICE_DEMAND_START%
ErrorControl   = %SERVICE_ERROR_NORMAL%
ServiceBinary  = %12%\vioscsi.sys
LoadOrderGroup = SCSI Miniport

[Strings]
SPSVCINST_ASSOCSERVICE = 0x00000002
SERVICE_KERNEL_DRIVER  = 1
SERVICE_DEMAND_START   = 3
SERVICE_ERROR_NORMAL   = 1
VENDOR = "Red Hat, Inc."
rhelscsi.DeviceDesc = "Red Hat VirtIO SCSI pass-through controller"
"#;

pub const NETKVM_INF: &str = r#";-------------------------------------------------------------------------------
; NETKVM.INF -- VirtIO Ethernet Adapter
;-------------------------------------------------------------------------------
[version]
Signature   = "$Windows NT$"
Class       = Net
CatalogFile = netkvm.cat
ClassGUID   = {4d36e972-e325-11ce-bfc1-08002be10318}
Provider    = %RedHat%
DriverVer   = 09/12/2023,100.94.104.24000

[Manufacturer]
%RedHat% = RedHat,NT$ARCH$

[RedHat.NT$ARCH$]
%kvmnet6.DeviceDesc%    = kvmnet6.ndi, PCI\VEN_1AF4&DEV_1000&SUBSYS_00011AF4&REV_00, PCI\VEN_1AF4&DEV_1000
%kvmnet6.DeviceDesc%    = kvmnet6.ndi, PCI\VEN_1AF4&DEV_1041&SUBSYS_11001AF4&REV_01, PCI\VEN_1AF4&DEV_1041

[kvmnet6.ndi]
Characteristics = 0x84 ; NCF_PHYSICAL | NCF_HAS_UI
BusType         = 5 ; PCI
CopyFiles       = kvmnet6.CopyFiles

[kvmnet6.ndi.Services]
AddService      = netkvm, 2, kvmnet6.Service, kvmnet6.EventLog

[kvmnet6.Service]
DisplayName     = %kvmnet6.Service.DispName%
ServiceType     = 1 ;%SERVICE_KERNEL_DRIVER%
StartType       = 3 ;%SERVICE_DEMAND_START%
ErrorControl    = 1 ;%SERVICE_ERROR_NORMAL%
ServiceBinary   = %12%\netkvm.sys
LoadOrderGroup  = NDIS

[Strings]
RedHat = "Red Hat, Inc."
kvmnet6.DeviceDesc        = "Red Hat VirtIO Ethernet Adapter"
kvmnet6.Service.DispName  = "Red Hat VirtIO Ethernet Adapter Service"
"#;

fn utf16_bom(s: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    out.extend(
        s.replace('\n', "\r\n")
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    out
}

/// virtio-win layout: `<Driver>/<os>/<arch>/{name.inf,name.sys,name.cat}`; viostor's INF
/// is UTF-16LE with a BOM, as in the real packages. The .sys/.cat contents name their
/// folder so tests can tell which one was copied.
pub fn make_driver_package(dir: &Path, os_folders: &[&str]) -> PathBuf {
    let root = dir.join("virtio-win");
    for (drv, file, inf) in [
        ("viostor", "viostor", VIOSTOR_INF),
        ("vioscsi", "vioscsi", VIOSCSI_INF),
        ("NetKVM", "netkvm", NETKVM_INF),
    ] {
        for os in os_folders {
            for arch in ["amd64", "x86"] {
                let d = root.join(drv).join(os).join(arch);
                std::fs::create_dir_all(&d).unwrap();
                let arch_deco = if arch == "amd64" { "amd64" } else { "x86" };
                let text = inf.replace("$ARCH$", arch_deco);
                let bytes = if file == "viostor" {
                    utf16_bom(&text)
                } else {
                    text.into_bytes()
                };
                std::fs::write(d.join(format!("{file}.inf")), bytes).unwrap();
                std::fs::write(
                    d.join(format!("{file}.sys")),
                    format!("MZ {drv} {os} {arch} driver"),
                )
                .unwrap();
                std::fs::write(
                    d.join(format!("{file}.cat")),
                    format!("catalog {drv} {os} {arch}"),
                )
                .unwrap();
            }
        }
    }
    root
}

/// A SOFTWARE hive made as the testdata README says: a copy of BCD with the keys merged
/// in by `hivexregedit --merge`, parents first.
pub fn make_software(
    path: &Path,
    major_minor: (u32, u32),
    build: &str,
    installation: &str,
    product: &str,
) {
    let dir = path.parent().unwrap();
    testdata_to(dir, "BCD", path.file_name().unwrap().to_str().unwrap());
    let version_values = if major_minor.0 >= 10 {
        format!(
            "\"CurrentMajorVersionNumber\"=dword:{:08x}\n\"CurrentMinorVersionNumber\"=dword:{:08x}\n\"CurrentVersion\"=\"6.3\"\n",
            major_minor.0, major_minor.1
        )
    } else {
        format!(
            "\"CurrentVersion\"=\"{}.{}\"\n",
            major_minor.0, major_minor.1
        )
    };
    let reg = format!(
        "Windows Registry Editor Version 5.00\n\n[\\Microsoft]\n\n[\\Microsoft\\Windows NT]\n\n\
         [\\Microsoft\\Windows NT\\CurrentVersion]\n{version_values}\"CurrentBuildNumber\"=\"{build}\"\n\
         \"InstallationType\"=\"{installation}\"\n\"ProductName\"=\"{product}\"\n\n\
         [\\Microsoft\\Windows]\n\n[\\Microsoft\\Windows\\CurrentVersion]\n\
         \"DevicePath\"=str(2):\"%SystemRoot%\\\\inf\"\n\"ProgramFilesDir\"=\"C:\\\\Program Files\"\n\n"
    );
    let regfile = dir.join("software.reg");
    std::fs::write(&regfile, reg).unwrap();
    let out = Command::new("hivexregedit")
        .arg("--merge")
        .arg(path)
        .arg(&regfile)
        .output()
        .expect("run hivexregedit");
    assert!(
        out.status.success(),
        "hivexregedit --merge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Windows-shaped tree: Windows/System32/config/SYSTEM from the named test hive,
/// Windows/System32/drivers with a few files.
pub fn make_windows_tree(dir: &Path, system: &str) -> PathBuf {
    let root = dir.join("C");
    testdata_to(&root, system, "Windows/System32/config/SYSTEM");
    let drivers = root.join("Windows/System32/drivers");
    std::fs::create_dir_all(&drivers).unwrap();
    std::fs::write(drivers.join("disk.sys"), "MZ disk").unwrap();
    root
}
