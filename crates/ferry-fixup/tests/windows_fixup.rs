//! The Windows fix-up on the two real SYSTEM hives in a Windows-shaped tree, with a
//! virtio-win-shaped driver package, checked afterwards with hivex's own tools: every
//! expected key and value reads back with hivexget, the hives still open, and
//! `hivexregedit --export` before/after differs only by what the plan says it changed.

mod common;

use common::windows_tree::*;
use common::*;
use ferry_fixup::windows::{self, WindowsOptions};
use ferry_fixup::{Change, FixupError};
use std::collections::BTreeMap;
use std::path::Path;

const ALL_OS: &[&str] = &[
    "w7", "2k8R2", "w8", "w8.1", "2k12R2", "w10", "2k16", "2k19", "w11",
];
const SCSI: &str = "{4D36E97B-E325-11CE-BFC1-08002BE10318}";
const NET: &str = "{4D36E972-E325-11CE-BFC1-08002BE10318}";
const IDS: &[(&str, &str, &str)] = &[
    ("viostor", "VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", SCSI),
    ("viostor", "VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01", SCSI),
    ("vioscsi", "VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00", SCSI),
    ("vioscsi", "VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01", SCSI),
    ("netkvm", "VEN_1AF4&DEV_1000&SUBSYS_00011AF4&REV_00", NET),
    ("netkvm", "VEN_1AF4&DEV_1041&SUBSYS_11001AF4&REV_01", NET),
];

fn assert_has(lines: &[String], want: &str, ctx: &str) {
    assert!(
        lines.iter().any(|l| l == want),
        "{ctx}: hivexget shows no {want:?} (has {lines:?})"
    );
}

/// hivexget reads every service value back.
fn check_services(system: &Path) {
    for (svc, start, group) in [
        ("viostor", 0, "SCSI miniport"),
        ("vioscsi", 0, "SCSI miniport"),
        ("netkvm", 3, "NDIS"),
    ] {
        let key = format!("\\ControlSet001\\Services\\{svc}");
        let lines = hivexget_key(system, &key);
        assert_has(&lines, "\"Type\"=dword:00000001", &key);
        assert_has(&lines, &format!("\"Start\"=dword:{start:08x}"), &key);
        assert_has(&lines, "\"ErrorControl\"=dword:00000001", &key);
        assert_has(&lines, &format!("\"Group\"=\"{group}\""), &key);
        assert_has(
            &lines,
            &format!("\"ImagePath\"=str(2):\"system32\\\\drivers\\\\{svc}.sys\""),
            &key,
        );
        assert_eq!(hivexget(system, &key, "Start"), start.to_string());
    }
    for svc in ["viostor", "vioscsi"] {
        assert_eq!(
            hivexget(
                system,
                &format!("\\ControlSet001\\Services\\{svc}\\Parameters\\PnpInterface"),
                "5"
            ),
            "1"
        );
    }
}

fn check_cddb(system: &Path) {
    for (svc, id, guid) in IDS {
        let key = format!(
            "\\ControlSet001\\Control\\CriticalDeviceDatabase\\pci#{}",
            id.to_lowercase()
        );
        assert_eq!(hivexget(system, &key, "Service"), *svc, "{key}");
        assert_eq!(hivexget(system, &key, "ClassGUID"), *guid, "{key}");
    }
}

fn check_ddb(system: &Path) {
    for (svc, id, _) in IDS {
        let inf = format!("ferry_{svc}.inf");
        let pkg = format!("{inf}_ferry");
        let lines = hivexget_key(system, &format!("\\DriverDatabase\\DeviceIds\\PCI\\{id}"));
        assert_has(&lines, &format!("\"{inf}\"=hex(3):01,ff,00,00"), id);
        let files = format!("\\DriverDatabase\\DriverInfFiles\\{inf}");
        assert_eq!(hivexget(system, &files, "Active"), pkg);
        assert_eq!(
            hivexget(system, &files, "Configurations"),
            format!("ferry_{svc}_conf")
        );
        let conf =
            format!("\\DriverDatabase\\DriverPackages\\{pkg}\\Configurations\\ferry_{svc}_conf");
        assert_eq!(hivexget(system, &conf, "Service"), *svc);
        assert_eq!(hivexget(system, &conf, "ConfigFlags"), "0");
        let desc = format!("\\DriverDatabase\\DriverPackages\\{pkg}\\Descriptors\\PCI\\{id}");
        assert_eq!(
            hivexget(system, &desc, "Configuration"),
            format!("ferry_{svc}_conf")
        );
        let version = hivexget_key(system, &format!("\\DriverDatabase\\DriverPackages\\{pkg}"));
        assert!(
            version
                .iter()
                .any(|l| l.starts_with("\"Version\"=hex(3):00,ff,09,00,00,00,00,00,")),
            "{version:?}"
        );
    }
}

/// The export diff is exactly what the plan's changes say for this hive.
fn check_export_diff(hive: &Path, before: &BTreeMap<String, Vec<String>>, changes: &[Change]) {
    let after = export(hive);
    let d = diff(before, &after);
    // (what, whether there was a value before) of this hive's edits.
    let mine: Vec<(&str, bool)> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Edit {
                file, what, before, ..
            } if file == hive => Some((what.as_str(), before.is_some())),
            _ => None,
        })
        .collect();
    let created: Vec<String> = mine
        .iter()
        .filter_map(|(what, _)| what.strip_prefix("create key "))
        .map(|k| format!("\\{k}").to_lowercase())
        .collect();
    let added: Vec<String> = d.added_keys.iter().map(|k| k.to_lowercase()).collect();
    let mut want = created.clone();
    want.sort();
    assert_eq!(added, want, "{}: added keys = created keys", hive.display());
    let set_keys: Vec<(String, String, bool)> = mine
        .iter()
        .filter_map(|(what, had_before)| {
            let path = what.strip_prefix("set ")?;
            let (key, name) = path.rsplit_once('\\')?;
            Some((
                format!("\\{key}").to_lowercase(),
                name.to_lowercase(),
                *had_before,
            ))
        })
        .collect();
    for (key, lines) in &d.added_lines {
        assert!(
            set_keys.iter().any(|(k, _, _)| k == &key.to_lowercase()),
            "{key}: lines added without a change: {lines:?}"
        );
    }
    for removed in &d.removed {
        let (key, line) = removed
            .split_once("] ")
            .unwrap_or_else(|| panic!("a key was removed: {removed}"));
        let key = key.trim_start_matches('[').to_lowercase();
        let name = line
            .split('=')
            .next()
            .unwrap()
            .trim_matches('"')
            .to_lowercase();
        assert!(
            set_keys
                .iter()
                .any(|(k, n, had)| *k == key && *n == name && *had),
            "{}: {removed} changed but no change says so",
            hive.display()
        );
    }
    let changed = set_keys.iter().filter(|s| s.2).count();
    assert_eq!(
        d.removed.len(),
        changed,
        "{}: every replaced value shows in the diff",
        hive.display()
    );
}

fn sys_contents(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn legacy_vmware_win7_gets_cddb_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_windows_tree(dir.path(), "SYSTEM-legacy");
    let software = root.join("Windows/System32/config/SOFTWARE");
    make_software(
        &software,
        (6, 1),
        "7601",
        "Client",
        "Windows 7 Professional",
    );
    std::fs::write(
        root.join("Windows/System32/drivers/viostor.sys"),
        "MZ an older viostor",
    )
    .unwrap();
    let pkg = make_driver_package(dir.path(), ALL_OS);
    let system = root.join("Windows/System32/config/SYSTEM");
    let (sys_before, soft_before) = (export(&system), export(&software));

    assert!(!ferry_fixup::report::windows(&root).unwrap().bootable());
    let plan = windows::plan(&root, &pkg, &WindowsOptions::default()).unwrap();
    assert_eq!(plan.control_set, "ControlSet001");
    assert_eq!(
        (plan.version.major, plan.version.minor, plan.version.server),
        (6, 1, false)
    );
    assert!(
        plan.drivers.iter().all(|d| d.os_folder == "w7"),
        "{:?}",
        plan.drivers
    );
    windows::apply(&plan).unwrap();

    check_services(&system);
    check_cddb(&system);
    let report = ferry_fixup::report::windows(&root).unwrap();
    assert!(report.bootable(), "{report}");
    assert!(report.checks.iter().all(|c| c.ok), "{report}");
    assert!(
        hivexsh_ls(&system, "\\").contains(&"ControlSet001".to_owned()),
        "SYSTEM still opens"
    );
    // The x86 (legacy hive is 32-bit Windows) w7 binaries are in place; the old one kept.
    let drivers = root.join("Windows/System32/drivers");
    for f in ["viostor", "vioscsi", "netkvm"] {
        assert!(
            sys_contents(&drivers.join(format!("{f}.sys"))).ends_with(" w7 x86 driver"),
            "{f}"
        );
        assert!(root
            .join(format!("Windows/Drivers/VirtIO/{f}.inf"))
            .exists());
        assert!(root
            .join(format!("Windows/Drivers/VirtIO/{f}.cat"))
            .exists());
    }
    assert_eq!(
        sys_contents(&drivers.join("viostor.sys.ferry-old")),
        "MZ an older viostor"
    );
    // VMware Tools services on auto start are disabled, the change is in the plan.
    assert_eq!(
        hivexget(&system, "\\ControlSet001\\services\\VMTools", "Start"),
        "4"
    );
    assert!(plan.changes.iter().any(|c| matches!(c,
        Change::Edit { what, before: Some(b), .. }
            if what.ends_with("VMTools\\Start") && b == "REG_DWORD 0x2")));
    assert_eq!(
        hivexget(
            &software,
            "\\Microsoft\\Windows\\CurrentVersion",
            "DevicePath"
        ),
        "%SystemRoot%\\inf;%SystemRoot%\\Drivers\\VirtIO"
    );
    check_export_diff(&system, &sys_before, &plan.changes);
    check_export_diff(&software, &soft_before, &plan.changes);
    assert!(root
        .join("Windows/System32/config/SYSTEM.ferry-orig")
        .exists());

    // A second run finds nothing left to do.
    let again = windows::plan(&root, &pkg, &WindowsOptions::default()).unwrap();
    let real: Vec<_> = again
        .changes
        .iter()
        .filter(|c| !matches!(c, Change::Note { .. }))
        .collect();
    assert!(real.is_empty(), "{real:?}");
}

#[test]
fn modern_server_2019_gets_driver_database_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_windows_tree(dir.path(), "SYSTEM-modern");
    let software = root.join("Windows/System32/config/SOFTWARE");
    make_software(
        &software,
        (10, 0),
        "17763",
        "Server",
        "Windows Server 2019 Standard",
    );
    let pkg = make_driver_package(dir.path(), ALL_OS);
    let system = root.join("Windows/System32/config/SYSTEM");
    let (sys_before, soft_before) = (export(&system), export(&software));

    let plan = windows::plan(&root, &pkg, &WindowsOptions::default()).unwrap();
    assert_eq!(
        (plan.version.major, plan.version.build, plan.version.server),
        (10, 17763, true)
    );
    assert!(plan.drivers.iter().all(|d| d.os_folder == "2k19"));
    assert!(
        plan.notes.iter().any(|n| n.contains("not cleanly closed")),
        "{:?}",
        plan.notes
    );
    windows::apply(&plan).unwrap();

    check_services(&system);
    check_ddb(&system);
    let report = ferry_fixup::report::windows(&root).unwrap();
    assert!(
        report.bootable() && report.checks.iter().all(|c| c.ok),
        "{report}"
    );
    assert!(
        hivexsh_ls(&system, "\\ControlSet001\\Control")
            .iter()
            .all(|k| k != "CriticalDeviceDatabase"),
        "no CDDB is created on Windows 8+"
    );
    for f in ["viostor", "vioscsi", "netkvm"] {
        let p = root.join(format!("Windows/System32/drivers/{f}.sys"));
        assert!(sys_contents(&p).ends_with(" 2k19 amd64 driver"), "{f}");
    }
    check_export_diff(&system, &sys_before, &plan.changes);
    check_export_diff(&software, &soft_before, &plan.changes);
}

#[test]
fn without_software_the_version_is_guessed_and_older_folders_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_windows_tree(dir.path(), "SYSTEM-legacy");
    // No w7 folder: the nearest older client folder does not exist either, so the
    // server folder of the same NT version is used.
    let pkg = make_driver_package(dir.path(), &["2k8R2", "w10"]);
    let plan = windows::plan(&root, &pkg, &WindowsOptions::default()).unwrap();
    assert!(plan.version.guessed);
    assert_eq!((plan.version.major, plan.version.minor), (6, 1));
    assert!(
        plan.notes.iter().any(|n| n.contains("guessed")),
        "{:?}",
        plan.notes
    );
    assert!(
        plan.notes.iter().any(|n| n.contains("DevicePath")),
        "{:?}",
        plan.notes
    );
    // Each note is a typed change about the SYSTEM hive, its text as it is.
    let system_hive = root.join("Windows/System32/config/SYSTEM");
    let notes: Vec<&str> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Note {
                file: Some(f),
                text,
            } if f == &system_hive => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(notes, plan.notes, "{:?}", plan.changes);
    assert!(plan.drivers.iter().all(|d| d.os_folder == "2k8R2"));
    windows::apply(&plan).unwrap();
    let system = root.join("Windows/System32/config/SYSTEM");
    check_services(&system);
    check_cddb(&system);
}

#[test]
fn hibernated_volume_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_windows_tree(dir.path(), "SYSTEM-modern");
    let pkg = make_driver_package(dir.path(), &["w10"]);
    let mut hiber = b"HIBR".to_vec();
    hiber.resize(4096, 0);
    std::fs::write(root.join("hiberfil.sys"), &hiber).unwrap();
    let e = windows::plan(&root, &pkg, &WindowsOptions::default()).unwrap_err();
    assert!(matches!(e, FixupError::Hibernated { .. }), "{e}");
    assert!(e.to_string().contains("powercfg /h off"), "{e}");
    let forced = windows::plan(
        &root,
        &pkg,
        &WindowsOptions {
            force: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(forced.notes.iter().any(|n| n.contains("hibernation")));
    // A zeroed hiberfil.sys (Windows clears the header on resume) is fine.
    std::fs::write(root.join("hiberfil.sys"), vec![0u8; 4096]).unwrap();
    windows::plan(&root, &pkg, &WindowsOptions::default()).unwrap();
}

#[test]
fn dry_run_through_the_cli_entry_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_windows_tree(dir.path(), "SYSTEM-modern");
    let pkg = make_driver_package(dir.path(), &["w10"]);
    let system = root.join("Windows/System32/config/SYSTEM");
    let before = std::fs::read(&system).unwrap();
    let changes = ferry_fixup::run(&root, ferry_fixup::OsChoice::Auto, Some(&pkg), true).unwrap();
    assert!(
        changes.iter().any(
            |c| matches!(c, Change::Edit { what, .. } if what.contains("Services\\viostor\\Start"))
        ),
        "{changes:?}"
    );
    assert_eq!(std::fs::read(&system).unwrap(), before);
    assert!(!root.join("Windows/System32/drivers/viostor.sys").exists());
    for c in &changes {
        assert!(!c.to_string().is_empty());
    }
}

#[test]
fn a_package_without_storage_drivers_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_windows_tree(dir.path(), "SYSTEM-modern");
    let pkg = make_driver_package(dir.path(), &["w10"]);
    std::fs::remove_dir_all(pkg.join("viostor")).unwrap();
    std::fs::remove_dir_all(pkg.join("vioscsi")).unwrap();
    let e = windows::plan(&root, &pkg, &WindowsOptions::default()).unwrap_err();
    assert!(e.to_string().contains("virtio storage driver"), "{e}");
}

/// Balloon (class System) is copied with the package, into System32\drivers and the store,
/// and gets no service key: PnP binds it on the first boot.
#[test]
fn balloon_is_copied_but_not_made_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_windows_tree(dir.path(), "SYSTEM-modern");
    let pkg = make_driver_package(dir.path(), &["w10"]);
    let leaf = pkg.join("Balloon/w10/amd64");
    std::fs::create_dir_all(&leaf).unwrap();
    let inf = "[Version]\r\nSignature=\"$WINDOWS NT$\"\r\nClass=System\r\n\
               ClassGuid={4d36e97d-e325-11ce-bfc1-08002be10318}\r\n[Manufacturer]\r\n\
               %VENDOR%=Standard,NTamd64\r\n[Standard.NTamd64]\r\n\
               %BALLOON.DeviceDesc%=BALLOON_Device, PCI\\VEN_1AF4&DEV_1002&SUBSYS_00051AF4&REV_00\r\n\
               [BALLOON_Device.NT.Services]\r\n\
               AddService = BALLOON,0x00000002,BALLOON_Service_Inst\r\n\
               [BALLOON_Service_Inst]\r\nServiceType=1\r\nStartType=3\r\n\
               ServiceBinary=%12%\\balloon.sys\r\n[Strings]\r\nVENDOR=\"Red Hat, Inc.\"\r\n";
    std::fs::write(leaf.join("balloon.inf"), inf).unwrap();
    std::fs::write(leaf.join("balloon.sys"), "MZ balloon").unwrap();
    std::fs::write(leaf.join("balloon.cat"), "catalog balloon").unwrap();
    let plan = windows::plan(&root, &pkg, &WindowsOptions::default()).unwrap();
    assert!(plan.drivers.iter().any(|d| d.inf.service == "BALLOON"));
    windows::apply(&plan).unwrap();
    let drivers = root.join("Windows/System32/drivers");
    assert_eq!(sys_contents(&drivers.join("balloon.sys")), "MZ balloon");
    assert!(root.join("Windows/Drivers/VirtIO/balloon.inf").is_file());
    let system = root.join("Windows/System32/config/SYSTEM");
    assert!(hivexsh_ls(&system, "\\ControlSet001\\Services")
        .iter()
        .all(|s| !s.eq_ignore_ascii_case("balloon")));
}
