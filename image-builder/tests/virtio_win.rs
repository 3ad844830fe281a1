//! `--virtio-win`: a virtio-win-shaped tree written here from INF files (viostor's in UTF-16LE
//! with a BOM, as the real package ships it), and an ISO made from it with xorriso, are read,
//! checked and carried; bad packages are refused before anything is written; `customize` adds
//! the drivers to a PXE initrd and to a Ferry ISO.

use std::path::{Path, PathBuf};
use std::process::Command;

use image_builder::cpio::{self, Kind};
use image_builder::virtio_win::{self, SourceKind};

/// A minimal INF in the shape of virtio-win's: class, models, an AddService with its binary.
fn inf(service: &str, class: &str, guid: &str, dev: &str) -> String {
    format!(
        "; {service}.inf (test)\r\n[Version]\r\nSignature=\"$WINDOWS NT$\"\r\nClass={class}\r\n\
         ClassGUID={guid}\r\nCatalogFile={service}.cat\r\n\r\n[Manufacturer]\r\n\
         %RHEL%=RHEL,NTamd64\r\n\r\n[RHEL.NTamd64]\r\n\
         %Desc% = inst, PCI\\VEN_1AF4&DEV_{dev}&SUBSYS_00021AF4&REV_00\r\n\r\n\
         [inst.Services]\r\nAddService = {service}, 0x00000002, svc\r\n\r\n[svc]\r\n\
         ServiceType = 1\r\nStartType = 0\r\nServiceBinary = %12%\\{service}.sys\r\n\r\n\
         [Strings]\r\nRHEL = \"Red Hat, Inc.\"\r\nDesc = \"VirtIO {service}\"\r\n"
    )
}

fn utf16_bom(s: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    out.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
    out
}

const SCSI: &str = "{4D36E97B-E325-11CE-BFC1-08002BE10318}";
const NET: &str = "{4D36E972-E325-11CE-BFC1-08002BE10318}";
const SYSTEM: &str = "{4D36E97D-E325-11CE-BFC1-08002BE10318}";

/// A test driver: folder, file stem, INF bytes, (os, arch) folders.
type Driver<'a> = (&'a str, &'a str, Vec<u8>, &'a [(&'a str, &'a str)]);

/// The tree: (driver folder, file stem, INF, [(os, arch)]). Besides the driver files every
/// folder gets a .pdb, and the root the installer and licence, which are not carried.
fn make_tree(dir: &Path) -> PathBuf {
    let root = dir.join("virtio-win-0.1.262");
    let drivers: [Driver; 4] = [
        (
            "viostor",
            "viostor",
            utf16_bom(&inf("viostor", "SCSIAdapter", SCSI, "1001")),
            &[("2k19", "amd64"), ("w10", "amd64"), ("w10", "x86")],
        ),
        (
            "vioscsi",
            "vioscsi",
            inf("vioscsi", "SCSIAdapter", SCSI, "1004").into_bytes(),
            &[("2k19", "amd64"), ("w11", "ARM64")],
        ),
        (
            "NetKVM",
            "netkvm",
            inf("netkvm", "Net", NET, "1000").into_bytes(),
            &[("w10", "amd64"), ("w11", "ARM64")],
        ),
        (
            "Balloon",
            "balloon",
            inf("balloon", "System", SYSTEM, "1002").into_bytes(),
            &[("w10", "amd64")],
        ),
    ];
    for (folder, stem, inf, places) in drivers {
        for (os, arch) in places {
            let d = root.join(folder).join(os).join(arch);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("{stem}.inf")), &inf).unwrap();
            std::fs::write(
                d.join(format!("{stem}.sys")),
                format!("MZ {folder} {os} {arch}"),
            )
            .unwrap();
            std::fs::write(
                d.join(format!("{stem}.cat")),
                format!("cat {folder} {os} {arch}"),
            )
            .unwrap();
            std::fs::write(d.join(format!("{stem}.pdb")), vec![0u8; 4096]).unwrap();
        }
    }
    std::fs::create_dir_all(root.join("guest-agent")).unwrap();
    std::fs::write(root.join("guest-agent/qemu-ga-x86_64.msi"), vec![1u8; 1000]).unwrap();
    std::fs::write(root.join("virtio-win-gt-x64.msi"), vec![2u8; 1000]).unwrap();
    std::fs::write(root.join("virtio-win_license.txt"), "licence").unwrap();
    root
}

fn has_xorriso() -> bool {
    Command::new("xorriso").arg("-version").output().is_ok()
}

fn make_iso(tree: &Path, iso: &Path) {
    let out = Command::new("xorriso")
        .args(["-outdev"])
        .arg(iso)
        .args(["-volid", "virtio-win-0.1.262", "-joliet", "on", "-map"])
        .arg(tree)
        .arg("/")
        // Read-only modes, as `genisoimage -r` gives the real ISO.
        .args(["-find", "/", "-type", "d", "-exec", "chmod", "0555", "--"])
        .args(["-find", "/", "-type", "f", "-exec", "chmod", "0444", "--"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Image paths and sizes of what a package carries.
fn carried(p: &virtio_win::Package) -> Vec<(String, usize)> {
    p.entries()
        .map(|e| match e.kind {
            Kind::File(d) => (e.path, d.len()),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_tree_is_read_as_the_fixup_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path());
    let p = virtio_win::load(&tree).unwrap();
    let r = &p.report;
    assert_eq!(r.source, SourceKind::Tree);
    assert_eq!(r.label, "virtio-win-0.1.262");
    assert_eq!(r.version.as_deref(), Some("0.1.262"));
    assert_eq!(r.image_dir, "/usr/share/ferry/virtio-win");
    let drivers: Vec<_> = r
        .drivers
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.service.as_str(),
                d.windows.join(","),
                d.architectures.join(","),
                d.files,
            )
        })
        .collect();
    assert_eq!(
        drivers,
        [
            (
                "viostor",
                "viostor",
                "2k19,w10".into(),
                "amd64,x86".into(),
                9
            ),
            (
                "vioscsi",
                "vioscsi",
                "2k19,w11".into(),
                "ARM64,amd64".into(),
                6
            ),
            (
                "NetKVM",
                "netkvm",
                "w10,w11".into(),
                "ARM64,amd64".into(),
                6
            ),
            ("Balloon", "balloon", "w10".into(), "amd64".into(), 3),
        ]
    );
    assert_eq!(r.files, 24);
    assert_eq!(r.bytes, r.drivers.iter().map(|d| d.bytes).sum::<u64>());
    // Only .inf/.cat/.sys, under the path the agent passes to the fix-up.
    let files = carried(&p);
    assert_eq!(files.len(), 24);
    assert_eq!(files.iter().map(|(_, n)| *n as u64).sum::<u64>(), r.bytes);
    for (path, _) in &files {
        assert!(path.starts_with("/usr/share/ferry/virtio-win/"), "{path}");
        assert!(
            [".inf", ".cat", ".sys"].iter().any(|x| path.ends_with(x)),
            "{path}"
        );
    }
    assert!(files
        .iter()
        .any(|(f, _)| f == "/usr/share/ferry/virtio-win/viostor/w10/amd64/viostor.inf"));
    assert!(files
        .iter()
        .any(|(f, _)| f == "/usr/share/ferry/virtio-win/NetKVM/w11/ARM64/netkvm.sys"));
    eprintln!("{}", p.summary());
}

#[test]
fn an_iso_gives_the_same_files_and_its_volume_id() {
    if !has_xorriso() {
        eprintln!("skipped: xorriso is not installed (apt-get install xorriso)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path());
    let iso = dir.path().join("virtio-win.iso");
    make_iso(&tree, &iso);
    let from_iso = virtio_win::load(&iso).unwrap();
    let from_tree = virtio_win::load(&tree).unwrap();
    assert_eq!(from_iso.report.source, SourceKind::Iso);
    assert_eq!(from_iso.report.label, "virtio-win-0.1.262");
    assert_eq!(from_iso.report.version.as_deref(), Some("0.1.262"));
    assert_eq!(from_iso.report.drivers, from_tree.report.drivers);
    assert_eq!(carried(&from_iso), carried(&from_tree));
    let bytes: Vec<_> = from_iso.entries().collect();
    let ok: Vec<_> = from_tree.entries().collect();
    assert_eq!(bytes, ok, "the ISO's files differ from the tree's");

    // A damaged ISO is named, with the folder inside it (not the temporary extraction).
    let damaged = make_tree(&dir.path().join("d"));
    std::fs::remove_file(damaged.join("NetKVM/w11/ARM64/netkvm.inf")).unwrap();
    let bad_iso = dir.path().join("damaged.iso");
    make_iso(&damaged, &bad_iso);
    let e = format!("{:#}", virtio_win::load(&bad_iso).unwrap_err());
    assert!(
        e.starts_with(&format!(
            "use virtio-win {}: driver NetKVM: ",
            bad_iso.display()
        )) && e.contains("NetKVM/w11/ARM64 has driver files but no .inf file")
            && e.contains("download it again")
            && !e.contains("ferry-virtio-win-"),
        "{e}"
    );
}

fn refused(path: &Path) -> String {
    format!("{:#}", virtio_win::load(path).unwrap_err())
}

#[test]
fn bad_packages_are_refused_with_the_path_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.iso");
    let e = refused(&missing);
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("virtio-win ISO"),
        "{e}"
    );

    let junk = dir.path().join("junk.iso");
    std::fs::write(&junk, vec![7u8; 40_000]).unwrap();
    let e = refused(&junk);
    assert!(
        e.contains(&junk.display().to_string()) && e.contains("nor an ISO 9660 image"),
        "{e}"
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("guest-agent")).unwrap();
    let e = refused(&empty);
    assert!(
        e.contains(&empty.display().to_string())
            && e.contains("no virtio storage driver")
            && e.contains("viostor/w10/amd64/viostor.inf"),
        "{e}"
    );

    // Only a network driver: the fix-up could not make Windows boot.
    let net_only = make_tree(&dir.path().join("n"));
    std::fs::remove_dir_all(net_only.join("viostor")).unwrap();
    std::fs::remove_dir_all(net_only.join("vioscsi")).unwrap();
    let e = refused(&net_only);
    assert!(e.contains("found only NetKVM, Balloon"), "{e}");

    // A folder with the driver files but no INF.
    let no_inf = make_tree(&dir.path().join("i"));
    std::fs::remove_file(no_inf.join("vioscsi/w11/ARM64/vioscsi.inf")).unwrap();
    let e = refused(&no_inf);
    assert!(
        e.contains(&no_inf.display().to_string())
            && e.contains("vioscsi/w11/ARM64 has driver files but no .inf file"),
        "{e}"
    );

    // A driver folder whose os/arch folders hold nothing the fix-up reads.
    let hollow = make_tree(&dir.path().join("h"));
    std::fs::remove_dir_all(hollow.join("Balloon/w10/amd64")).unwrap();
    std::fs::create_dir_all(hollow.join("Balloon/w10/amd64")).unwrap();
    let e = refused(&hollow);
    assert!(
        e.contains("driver Balloon") && e.contains("holds an .inf file"),
        "{e}"
    );

    // An INF naming a binary that is not there.
    let no_sys = make_tree(&dir.path().join("s"));
    std::fs::remove_file(no_sys.join("viostor/w10/x86/viostor.sys")).unwrap();
    let e = refused(&no_sys);
    assert!(
        e.contains("viostor/w10/x86") && e.contains("viostor.sys"),
        "{e}"
    );

    // An INF the fix-up cannot parse.
    let bad_inf = make_tree(&dir.path().join("b"));
    std::fs::write(bad_inf.join("NetKVM/w10/amd64/netkvm.inf"), "[Version\r\n").unwrap();
    let e = refused(&bad_inf);
    assert!(e.contains("netkvm.inf") && e.contains("parse INF"), "{e}");
}

fn image_builder(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The newc archives after `base` in an initrd: each appended layer decompressed and listed.
fn appended_files(initrd: &[u8], base: usize) -> Vec<String> {
    let rest = &initrd[base.div_ceil(4) * 4..];
    let raw = zstd::stream::decode_all(rest).unwrap();
    cpio::list(&raw).unwrap()
}

#[test]
fn customize_adds_the_drivers_to_a_pxe_initrd() {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path());
    let base = b"not really an initramfs".to_vec();
    let input = dir.path().join("initrd.img");
    std::fs::write(&input, &base).unwrap();
    let out = dir.path().join("initrd-virtio.img");
    let (ok, msg) = image_builder(&[
        "customize".as_ref(),
        "--initrd".as_ref(),
        input.as_os_str(),
        "--virtio-win".as_ref(),
        tree.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(ok, "{msg}");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..base.len()], &base[..]);
    let files = appended_files(&bytes, base.len());
    assert!(
        files.contains(&"usr/share/ferry/virtio-win/viostor/w10/amd64/viostor.inf".to_string()),
        "{files:?}"
    );
    assert_eq!(files.iter().filter(|f| f.ends_with(".sys")).count(), 8);
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("initrd-virtio.img.virtio-win.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["source"], "tree");
    assert_eq!(record["files"], 24);
    assert_eq!(record["drivers"][2]["name"], "NetKVM");
    assert!(
        msg.contains("virtio-win") && msg.contains("24 files"),
        "{msg}"
    );

    // Nothing to add is an error, and a bad package writes nothing.
    let (ok, msg) = image_builder(&[
        "customize".as_ref(),
        "--initrd".as_ref(),
        input.as_os_str(),
        "--out".as_ref(),
        dir.path().join("x").as_os_str(),
    ]);
    assert!(!ok && msg.contains("--virtio-win PATH"), "{msg}");
    let never = dir.path().join("never.img");
    let (ok, msg) = image_builder(&[
        "customize".as_ref(),
        "--initrd".as_ref(),
        input.as_os_str(),
        "--virtio-win".as_ref(),
        dir.path().join("nowhere").as_os_str(),
        "--out".as_ref(),
        never.as_os_str(),
    ]);
    assert!(!ok && msg.contains("nowhere"), "{msg}");
    assert!(!never.exists());
}

#[test]
fn customize_adds_the_drivers_to_a_ferry_iso_and_keeps_its_boot_records() {
    let have_grub = Command::new("grub-mkrescue")
        .arg("--version")
        .output()
        .is_ok();
    if !has_xorriso() || !have_grub {
        eprintln!("skipped: needs xorriso and grub-mkrescue (grub-common grub-pc-bin grub-efi-amd64-bin mtools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path());
    // A Ferry-shaped ISO made the way `build` makes it.
    let stage = dir.path().join("stage");
    std::fs::create_dir_all(stage.join("boot/grub")).unwrap();
    std::fs::write(
        stage.join("boot/grub/grub.cfg"),
        image_builder::boot::grub_cfg(""),
    )
    .unwrap();
    std::fs::write(stage.join("boot/vmlinuz"), b"kernel").unwrap();
    let base = b"base initramfs bytes".to_vec();
    std::fs::write(stage.join("boot/initrd.img"), &base).unwrap();
    std::fs::write(
        stage.join("boot/site.img"),
        image_builder::site::empty_area(),
    )
    .unwrap();
    let iso = dir.path().join("ferry-rescue.iso");
    image_builder::iso::make(&stage, &iso, 1_700_000_000).unwrap();

    let out = dir.path().join("ferry-rescue-virtio.iso");
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/image/fixtures/test-ca.pem"
        ))
        .unwrap(),
    )
    .unwrap();
    let (ok, msg) = image_builder(&[
        "customize".as_ref(),
        "--iso".as_ref(),
        iso.as_os_str(),
        "--virtio-win".as_ref(),
        tree.as_os_str(),
        "--appliance".as_ref(),
        "https://10.0.2.2:8443".as_ref(),
        "--ca".as_ref(),
        ca.as_os_str(),
        "--token".as_ref(),
        "tok".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(ok, "{msg}");
    // The initrd carries the drivers after the base; the site layer is in the embed area.
    let initrd = dir.path().join("initrd.out");
    let x = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&out)
        .args(["-extract", "/boot/initrd.img"])
        .arg(&initrd)
        .output()
        .unwrap();
    assert!(x.status.success());
    let bytes = std::fs::read(&initrd).unwrap();
    assert_eq!(&bytes[..base.len()], &base[..]);
    assert_eq!(
        appended_files(&bytes, base.len())
            .iter()
            .filter(|f| f.ends_with(".inf"))
            .count(),
        8
    );
    let site = image_builder::site::read_iso_area(&out).unwrap().unwrap();
    assert!(
        site.contains(&"etc/ferry/site.conf".to_string()),
        "{site:?}"
    );
    // BIOS and UEFI boot records and the EFI partition survive the rewrite.
    let report = |p: &Path| {
        let o = Command::new("xorriso")
            .arg("-indev")
            .arg(p)
            .args(["-report_el_torito", "plain", "-report_system_area", "plain"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let r = report(&out);
    for want in ["BIOS  y", "UEFI  y", "/efi.img", "grub2-mbr", "GPT"] {
        assert!(r.contains(want), "{want} not in:\n{r}");
    }
}
