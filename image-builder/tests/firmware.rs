//! `--firmware-deb`: packages built here with the real `dpkg-deb --build`, unpacked and selected
//! from as the build does; a package that is not a firmware package is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use image_builder::cpio::{Archive, Kind};
use image_builder::firmware::{self, Level, Requests};

fn deb(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let root = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 20250410-2~bpo12+1\nArchitecture: all\n\
             Maintainer: Ferry tests <tests@ferry.invalid>\nDescription: test firmware\n"
        ),
    )
    .unwrap();
    for (rel, data) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let out = dir.join(format!("{name}.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

const COPYRIGHT: &[u8] =
    b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
Files: *\nLicense: GPL-2\n\n\
Files: acme/*\nCopyright: Acme\nLicense: binary-redist-Acme\n Redistributable.\n";

#[test]
fn a_built_package_gives_the_requested_files_and_its_copyright() {
    let d = tempfile::tempdir().unwrap();
    let deb = deb(
        d.path(),
        "firmware-acme",
        &[
            ("lib/firmware/acme/nic-1.fw", b"NIC-1"),
            ("lib/firmware/acme/nic-2.fw.xz", b"\xfd7zXZ..."),
            ("lib/firmware/acme/unused.fw", b"unused"),
            ("usr/share/doc/firmware-acme/copyright", COPYRIGHT),
        ],
    );
    let pkg = firmware::unpack(&deb, &d.path().join("unpacked")).unwrap();
    assert_eq!(pkg.name, "firmware-acme");
    assert_eq!(pkg.version, "20250410-2~bpo12+1");
    let mut req = Requests::new();
    for f in ["acme/nic-1.fw", "acme/nic-2.fw", "acme/absent.fw"] {
        req.entry(f.into()).or_default().insert("acme_nic".into());
    }
    let sel = firmware::select(Level::Common, &req, &[pkg]).unwrap();
    let mut archive = Archive::new();
    let report = sel.add_to(&mut archive).unwrap();
    let stored: Vec<&str> = report.files.iter().map(|f| f.stored.as_str()).collect();
    assert_eq!(stored, ["acme/nic-1.fw", "acme/nic-2.fw.xz"]);
    assert!(report
        .files
        .iter()
        .all(|f| f.license.as_deref() == Some("binary-redist-Acme")));
    assert_eq!(report.missing.len(), 1);
    assert_eq!(report.missing[0].file, "acme/absent.fw");
    assert_eq!(report.packages[0].licenses, ["binary-redist-Acme"]);
    let files: Vec<(String, usize)> = archive
        .entries()
        .filter_map(|e| match &e.kind {
            Kind::File(b) => Some((e.path.clone(), b.len())),
            _ => None,
        })
        .collect();
    assert_eq!(
        files,
        [
            ("lib/firmware/acme/nic-1.fw".to_string(), 5),
            ("lib/firmware/acme/nic-2.fw.xz".to_string(), 8),
            (
                "usr/share/doc/firmware-acme/copyright".to_string(),
                COPYRIGHT.len()
            ),
        ]
    );
}

#[test]
fn a_package_that_is_not_firmware_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let deb = deb(d.path(), "libacme1", &[("usr/lib/libacme.so.1", b"ELF")]);
    let err = firmware::unpack(&deb, &d.path().join("unpacked"))
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("libacme1") && msg.contains("not a firmware-* package"),
        "{msg}"
    );
}
