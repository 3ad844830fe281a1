//! The facts a backup job records of a Windows volume, read from Windows-shaped trees with the
//! real SYSTEM hives (the modern one has Fast Startup on: `HiberbootEnabled` 1, as hivexget
//! reads it too) and a SOFTWARE hive made with hivexregedit.

mod common;

use common::windows_tree::*;
use common::*;
use ferry_fixup::windows::facts;

#[test]
fn version_fast_startup_and_hibernation_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_windows_tree(dir.path(), "SYSTEM-modern");
    let system = root.join("Windows/System32/config/SYSTEM");
    assert_eq!(
        hivexget(
            &system,
            "\\ControlSet001\\Control\\Session Manager\\Power",
            "HiberbootEnabled"
        ),
        "1"
    );
    make_software(
        &root.join("Windows/System32/config/SOFTWARE"),
        (10, 0),
        "17763",
        "Server",
        "Windows Server 2019 Standard",
    );
    let f = facts::facts(&root, "vda2").unwrap();
    assert_eq!(f.family, "windows");
    assert_eq!(
        f.version.as_deref(),
        Some("Windows NT 10.0 build 17763 server (Windows Server 2019 Standard)")
    );
    assert_eq!(f.volume.as_deref(), Some("vda2"));
    assert_eq!(f.fast_startup, Some(true));
    assert_eq!(f.hibernated, Some(false));

    // A hibernation image (a Fast Startup shutdown leaves one) makes the volume inconsistent.
    std::fs::write(root.join("hiberfil.sys"), b"HIBR\0\0\0\0").unwrap();
    assert_eq!(facts::facts(&root, "vda2").unwrap().hibernated, Some(true));
    assert_eq!(
        facts::hibernation_signature(&root).unwrap().as_deref(),
        Some("HIBR")
    );
    // Windows clears the header when it resumes: not hibernated.
    std::fs::write(root.join("hiberfil.sys"), b"wake\0\0\0\0").unwrap();
    assert_eq!(facts::facts(&root, "vda2").unwrap().hibernated, Some(false));
}

#[test]
fn the_legacy_hive_without_software_is_guessed_and_has_no_fast_startup() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_windows_tree(dir.path(), "SYSTEM-legacy");
    let f = facts::facts(&root, "sda1").unwrap();
    assert_eq!(f.fast_startup, Some(false));
    assert_eq!(f.hibernated, Some(false));
    let v = f.version.unwrap();
    assert!(v.contains("guessed from SYSTEM"), "{v}");
    // Not a Windows volume: a clear error, nothing claimed.
    let empty = tempfile::tempdir().unwrap();
    let e = facts::facts(empty.path(), "sdb1").unwrap_err().to_string();
    assert!(e.contains("the SYSTEM hive"), "{e}");
}
