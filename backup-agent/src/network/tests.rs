use std::fs;
use std::os::unix::fs::symlink;

use super::*;

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, text).expect("write");
}

fn nic(name: &str, mac: &str, driver: &str, pci: &str) -> SysNic {
    SysNic {
        name: name.into(),
        address: Some(mac.into()),
        driver: Some(driver.into()),
        pci_path: Some(pci.into()),
    }
}

fn configured(name: &str, mac: Option<&str>, file: &str) -> Interface {
    Interface {
        name: name.into(),
        mac: mac.map(Into::into),
        system: ConfigSystem::Networkd,
        file: file.into(),
        ..Interface::default()
    }
}

/// A root whose networkd files configure ens192 by name, `lan` by MAC, bond0 over ens256
/// and everything else matching `en*`; one file cannot be read.
fn root_with_networkd(root: &Path) {
    put(
        root,
        "etc/systemd/network/10-ens192.network",
        "[Match]\nName=ens192\n\n[Network]\nAddress=10.1.2.3/24\nGateway=10.1.2.1\n",
    );
    put(
        root,
        "etc/systemd/network/20-lan.link",
        "[Match]\nMACAddress=00:50:56:AA:00:03\n\n[Link]\nName=lan\n",
    );
    put(
        root,
        "etc/systemd/network/30-bond0.network",
        "[Match]\nName=bond0\n\n[Network]\nDHCP=yes\n",
    );
    put(
        root,
        "etc/systemd/network/99-rest.network",
        "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n",
    );
    put(
        root,
        "etc/systemd/network/50-broken.network",
        "[Match]\nName=ens999\n[Network]\nAddress=10.1.2.300/24\n",
    );
}

/// A sysfs with lo, a bridge (no device link), ens192 (virtio on 0000:00:03.0), ens224 (an
/// unbound PCI NIC, upper-case address), ens161 renamed `lan` by a .link (matched by MAC,
/// seen under its new name) and eth9 whose address is not a MAC.
fn fake_sysfs(sys: &Path) {
    put(sys, "class/net/lo/address", "00:00:00:00:00:00\n");
    put(sys, "class/net/br0/address", "00:50:56:aa:00:01\n");
    let virtio = sys.join("devices/pci0000:00/0000:00:03.0/virtio0");
    fs::create_dir_all(&virtio).expect("mkdir");
    symlink(
        "../../../../bus/virtio/drivers/virtio_net",
        virtio.join("driver"),
    )
    .expect("link");
    put(sys, "class/net/ens192/address", "00:50:56:aa:00:01\n");
    symlink(&virtio, sys.join("class/net/ens192/device")).expect("link");
    for (name, mac, func) in [
        ("ens224", "00:50:56:AA:00:02", "0000:0b:00.0"),
        ("lan", "00:50:56:aa:00:03", "0000:13:00.0"),
        (
            "eth9",
            "80:00:02:08:fe:80:00:00:00:00:00:00",
            "0000:1b:00.0",
        ),
    ] {
        let dev = sys.join("devices/pci0000:00").join(func);
        fs::create_dir_all(&dev).expect("mkdir");
        put(
            sys,
            &format!("class/net/{name}/address"),
            &format!("{mac}\n"),
        );
        symlink(&dev, sys.join(format!("class/net/{name}/device"))).expect("link");
    }
}

#[test]
fn choices_parse_and_print() {
    let table: &[(&str, Option<NetworkChoice>)] = &[
        ("auto", Some(NetworkChoice::Auto)),
        ("none", Some(NetworkChoice::None)),
        ("/mnt/src", Some(NetworkChoice::Root("/mnt/src".into()))),
        ("mnt", Some(NetworkChoice::Root("mnt".into()))),
        ("", None),
    ];
    for (text, want) in table {
        let got = text.parse::<NetworkChoice>().ok();
        assert_eq!(&got, want, "{text:?}");
        if let Some(c) = got {
            assert_eq!(c.to_string(), *text);
        }
    }
    assert_eq!(NetworkChoice::default(), NetworkChoice::Auto);
}

/// Name, MAC, driver, PCI path and system of an interface.
type Row<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    ConfigSystem,
);

fn row(i: &Interface) -> Row<'_> {
    (
        i.name.as_str(),
        i.mac.as_deref(),
        i.driver.as_deref(),
        i.pci_path.as_deref(),
        i.system,
    )
}

#[test]
fn merge_fills_what_the_files_left_out_and_adds_unnamed_nics() {
    let file = "/etc/systemd/network/10.network";
    let mut said = configured("ens192", Some("02:00:00:00:00:09"), file);
    said.driver = Some("vmxnet3".into());
    let files = NetworkConfig {
        interfaces: vec![
            said,
            configured("ens192", None, "/etc/netplan/01.yaml"),
            Interface {
                // A bond takes a member's MAC: not a match for the member's NIC.
                kind: InterfaceKind::Bond,
                ..configured("bond0", Some("00:50:56:aa:00:04"), file)
            },
            configured("lan", Some("00:50:56:aa:00:03"), file),
        ],
    };
    let nics = [
        nic("ens256", "00:50:56:AA:00:04", "vmxnet3", "pci-0000:1b:00.0"),
        nic(
            "ens192",
            "00:50:56:aa:00:01",
            "virtio_net",
            "pci-0000:00:03.0",
        ),
        nic("ens161", "00:50:56:aa:00:03", "e1000", "pci-0000:13:00.0"),
        nic("ens224", "00:50:56:aa:00:02", "e1000", "pci-0000:0b:00.0"),
    ];
    let got = merge(files, &nics);
    let summary: Vec<Row> = got.interfaces.iter().map(row).collect();
    use ConfigSystem::{Networkd, Unconfigured};
    assert_eq!(
        summary,
        [
            // What a file said stays; the rest comes from the kernel, in every entry of the name.
            (
                "ens192",
                Some("02:00:00:00:00:09"),
                Some("vmxnet3"),
                Some("pci-0000:00:03.0"),
                Networkd
            ),
            (
                "ens192",
                Some("00:50:56:aa:00:01"),
                Some("virtio_net"),
                Some("pci-0000:00:03.0"),
                Networkd
            ),
            ("bond0", Some("00:50:56:aa:00:04"), None, None, Networkd),
            // Matched by MAC under another name.
            (
                "lan",
                Some("00:50:56:aa:00:03"),
                Some("e1000"),
                Some("pci-0000:13:00.0"),
                Networkd
            ),
            // Named by no file: after the files' interfaces, by name, MAC lowercase.
            (
                "ens224",
                Some("00:50:56:aa:00:02"),
                Some("e1000"),
                Some("pci-0000:0b:00.0"),
                Unconfigured
            ),
            (
                "ens256",
                Some("00:50:56:aa:00:04"),
                Some("vmxnet3"),
                Some("pci-0000:1b:00.0"),
                Unconfigured
            ),
        ]
    );
    let added = &got.interfaces[4];
    assert_eq!(
        (added.kind, added.file.as_str()),
        (InterfaceKind::Ethernet, "")
    );
    got.check().expect("in bounds");
}

#[test]
fn the_live_view_merges_a_roots_files_with_sysfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, sys) = (dir.path().join("root"), dir.path().join("sys"));
    root_with_networkd(&root);
    fake_sysfs(&sys);
    let got = live(&root, &sys);
    let names: Vec<(&str, ConfigSystem)> = got
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.system))
        .collect();
    use ConfigSystem::{Networkd, Unconfigured};
    // Files in name order (the broken one left out), then eth9 and ens224, which only
    // `Name=en*` configures, by name; lo and br0 are not NICs.
    assert_eq!(
        names,
        [
            ("ens192", Networkd),
            ("lan", Networkd),
            ("bond0", Networkd),
            ("ens224", Unconfigured),
            ("eth9", Unconfigured),
        ]
    );
    let ens192 = &got.interfaces[0];
    assert_eq!(ens192.mac.as_deref(), Some("00:50:56:aa:00:01"));
    assert_eq!(ens192.driver.as_deref(), Some("virtio_net"));
    assert_eq!(ens192.pci_path.as_deref(), Some("pci-0000:00:03.0"));
    assert_eq!(ens192.addresses, ["10.1.2.3/24".parse().expect("cidr")]);
    assert_eq!(ens192.file, "/etc/systemd/network/10-ens192.network");
    let lan = &got.interfaces[1];
    assert_eq!(
        (lan.mac.as_deref(), lan.pci_path.as_deref()),
        (Some("00:50:56:aa:00:03"), Some("pci-0000:13:00.0"))
    );
    assert_eq!(got.interfaces[3].mac.as_deref(), Some("00:50:56:aa:00:02"));
    // An address that is not a MAC is left out, the NIC is not.
    assert_eq!(got.interfaces[4].mac, None);
    assert_eq!(bounded(got.clone()), Some(got));

    // A root that holds no files: the kernel's NICs alone.
    let bare = live(&dir.path().join("empty"), &sys);
    assert_eq!(bare.interfaces.len(), 4);
    assert!(bare.interfaces.iter().all(|i| i.system == Unconfigured));
}

#[test]
fn the_choice_decides_what_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    root_with_networkd(&root);
    let image = dir.path().join("disk.img");
    fs::write(&image, [0u8; 512]).expect("image");
    let disks = [DiskSpec {
        name: "disk".into(),
        path: image,
    }];
    // Image files: auto records nothing (the running system is not the one on them).
    assert_eq!(gather(&NetworkChoice::Auto, &disks), None);
    assert_eq!(gather(&NetworkChoice::None, &disks), None);
    // A mounted root: its files only, no kernel data.
    let got = gather(&NetworkChoice::Root(root), &disks).expect("recorded");
    let names: Vec<&str> = got.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["ens192", "lan", "bond0"]);
    assert!(got.interfaces.iter().all(|i| i.driver.is_none()));
    assert_eq!(got.interfaces[1].mac.as_deref(), Some("00:50:56:aa:00:03"));
    // Not a directory, or no config files: nothing.
    for missing in [dir.path().join("nowhere"), dir.path().join("disk.img")] {
        assert_eq!(gather(&NetworkChoice::Root(missing), &disks), None);
    }
    fs::create_dir(dir.path().join("bare")).expect("mkdir");
    assert_eq!(
        gather(&NetworkChoice::Root(dir.path().join("bare")), &disks),
        None
    );
}

#[test]
fn a_configuration_out_of_bounds_is_not_recorded() {
    let nics: Vec<SysNic> = (0..300)
        .map(|n| {
            nic(
                &format!("eth{n}"),
                "00:50:56:aa:00:01",
                "e1000",
                "pci-0000:00:03.0",
            )
        })
        .collect();
    let got = merge(NetworkConfig::default(), &nics);
    assert_eq!(got.interfaces.len(), 300);
    assert_eq!(bounded(got), None);
    assert_eq!(bounded(NetworkConfig::default()), None);
}
