//! The network fix-up on temp trees (issue 12): the restored system's files carried to the
//! target's NICs through `linux::plan`/`apply`, the names pinned by MAC, the report's network
//! section read back, and refusals before anything is written.

use ferry_fixup::linux::{self, FileAction, NetworkParams, Params};
use ferry_fixup::network::{NetworkRules, TargetNic};
use ferry_fixup::report;
use ferry_format::agent::JobNetwork;
use std::path::Path;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap()
}

fn nic(name: &str, mac: &str) -> TargetNic {
    TargetNic {
        name: name.into(),
        mac: mac.into(),
        driver: Some("virtio_net".into()),
        pci_path: Some("pci-0000:00:03.0".into()),
    }
}

fn params(targets: Vec<TargetNic>, nic: &[&str], reip: &[&str], ip: &[&str]) -> Params {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
    let rules = NetworkRules::parse(&JobNetwork {
        nic: v(nic),
        reip: v(reip),
        ip: v(ip),
    })
    .unwrap();
    Params {
        network: Some(NetworkParams { targets, rules }),
        ..Params::default()
    }
}

const LINK: &str =
    "# VMware NIC, named as before\n[Match]\nMACAddress=00:50:56:aa:00:01\n\n[Link]\nName=ens192\n";
const NETWORK: &str =
    "[Match]\nName=ens192\n\n[Network]\nAddress=10.1.0.15/24\nGateway=10.1.0.1\nDNS=10.1.0.3\n";

/// A Debian system configured by systemd-networkd, with a `.link` naming its VMware NIC.
fn networkd_tree(root: &Path) {
    write(root, "etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    write(root, "usr/lib/systemd/systemd-udevd", "");
    write(root, "etc/systemd/network/10-ens192.link", LINK);
    write(root, "etc/systemd/network/20-ens192.network", NETWORK);
    write(
        root,
        "etc/udev/rules.d/70-persistent-net.rules",
        "SUBSYSTEM==\"net\", ATTR{address}==\"00:50:56:aa:00:01\", NAME=\"eth0\"\n",
    );
}

#[test]
fn the_network_follows_onto_the_new_nic_with_its_new_address() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    networkd_tree(root);
    let p = params(
        vec![nic("ens3", "52:54:00:11:be:02")],
        &[],
        &["10.1.0.0/16=10.2.0.0/16"],
        &[],
    );
    let plan = linux::plan(root, &p).unwrap();
    // Nothing is written by planning.
    assert_eq!(read(root, "etc/systemd/network/10-ens192.link"), LINK);
    assert!(
        plan.notes.iter().any(|n| n.contains(
            "ens192 (00:50:56:aa:00:01) -> ens3 (52:54:00:11:be:02, virtio_net) in order"
        )),
        "{:?}",
        plan.notes
    );
    assert_eq!(
        plan.network,
        ["ens192 -> ens3: 10.2.0.15/24 (/etc/systemd/network/20-ens192.network)"]
    );
    linux::apply(root, &plan).unwrap();

    assert_eq!(
        read(root, "etc/systemd/network/10-ens192.link"),
        "# VMware NIC, named as before\n[Match]\nMACAddress=52:54:00:11:be:02\n\n[Link]\nName=ens3\n"
    );
    assert_eq!(
        read(root, "etc/systemd/network/20-ens192.network"),
        "[Match]\nName=ens3\n\n[Network]\nAddress=10.2.0.15/24\nGateway=10.2.0.1\nDNS=10.2.0.3\n"
    );
    assert_eq!(
        read(root, "etc/systemd/network/20-ens192.network.ferry-orig"),
        NETWORK
    );
    let pin = read(root, "etc/systemd/network/10-ferry-ens3.link");
    assert!(
        pin.contains("[Match]\nMACAddress=52:54:00:11:be:02\n\n[Link]\nName=ens3\n"),
        "{pin}"
    );
    assert!(!root
        .join("etc/udev/rules.d/70-persistent-net.rules")
        .exists());

    // The report reads the files back: the interface has a NIC of its name.
    let checks = report::network(root, &[nic("ens3", "52:54:00:11:be:02")]).unwrap();
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert!(checks[0].ok, "{checks:?}");
    assert_eq!(checks[0].name, "network ens3");
    assert!(checks[0].detail.contains("10.2.0.15/24"), "{checks:?}");
    // On another machine without that NIC: a warning saying so.
    let checks = report::network(root, &[nic("enp1s0", "52:54:00:11:be:03")]).unwrap();
    assert!(!checks[0].ok && !checks[0].critical);
    assert!(checks[0].detail.contains("will not come up"), "{checks:?}");

    // A second run changes nothing more.
    let again = linux::plan(root, &p).unwrap();
    let rewritten: Vec<_> = again
        .edits
        .iter()
        .filter(|e| e.path.starts_with("etc/systemd/network"))
        .collect();
    assert!(rewritten.is_empty(), "{rewritten:?}");
}

#[test]
fn an_ip_rule_gives_the_new_interface_a_static_address() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    networkd_tree(root);
    let p = params(
        vec![nic("ens3", "52:54:00:11:be:02")],
        &[],
        &[],
        &["ens3=10.1.0.20/24,gw=10.1.0.1"],
    );
    let plan = linux::plan(root, &p).unwrap();
    linux::apply(root, &plan).unwrap();
    let net = read(root, "etc/systemd/network/20-ens192.network");
    assert!(
        net.contains("Name=ens3\n") && net.contains("Address=10.1.0.20/24\n"),
        "{net}"
    );
    assert!(!net.contains("10.1.0.15"), "{net}");
}

#[test]
fn ifcfg_files_are_renamed_even_when_two_names_swap() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "etc/os-release", "ID=rhel\nVERSION_ID=\"7.9\"\n");
    let eth0 =
        "DEVICE=eth0\nHWADDR=00:50:56:AA:00:01\nBOOTPROTO=none\nIPADDR=10.1.0.5\nPREFIX=24\n";
    let eth1 = "DEVICE=eth1\nHWADDR=00:50:56:AA:00:02\nBOOTPROTO=dhcp\n";
    write(root, "etc/sysconfig/network-scripts/ifcfg-eth0", eth0);
    write(root, "etc/sysconfig/network-scripts/ifcfg-eth1", eth1);
    let p = params(
        vec![
            nic("eth0", "52:54:00:00:00:10"),
            nic("eth1", "52:54:00:00:00:11"),
        ],
        &["eth0=eth1", "eth1=eth0"],
        &[],
        &[],
    );
    let plan = linux::plan(root, &p).unwrap();
    let removed = plan
        .edits
        .iter()
        .filter(|e| e.path.starts_with("etc/sysconfig"))
        .take_while(|e| e.action == FileAction::RemoveFile)
        .count();
    assert_eq!(
        removed, 2,
        "renames move both old files aside first: {:?}",
        plan.edits
    );
    linux::apply(root, &plan).unwrap();
    let new0 = read(root, "etc/sysconfig/network-scripts/ifcfg-eth0");
    let new1 = read(root, "etc/sysconfig/network-scripts/ifcfg-eth1");
    assert!(
        new1.contains("DEVICE=eth1\n") && new1.contains("IPADDR=10.1.0.5\n"),
        "{new1}"
    );
    assert!(
        new1.contains("HWADDR=52:54:00:00:00:11")
            || new1.contains("HWADDR=52:54:00:00:00:11".to_uppercase().as_str()),
        "{new1}"
    );
    assert!(
        new0.contains("DEVICE=eth0\n") && new0.contains("BOOTPROTO=dhcp"),
        "{new0}"
    );
    assert_eq!(
        read(root, "etc/sysconfig/network-scripts/ifcfg-eth0.ferry-orig"),
        eth0
    );
    assert_eq!(
        read(root, "etc/sysconfig/network-scripts/ifcfg-eth1.ferry-orig"),
        eth1
    );
    // No systemd-udevd in this tree: no pin, and a note saying so.
    assert!(!root.join("etc/systemd/network").exists());
    assert!(
        plan.notes.iter().any(|n| n.contains("no systemd-udevd")),
        "{:?}",
        plan.notes
    );
}

#[test]
fn rules_that_do_not_fit_are_refused_before_anything_is_written() {
    let cases: [(&[&str], &[&str], &str); 2] = [
        (
            &["ens192=enp7s0"],
            &[],
            "the target has no NIC enp7s0 (it has: ens3)",
        ),
        (
            &[],
            &["10.1.0.15/32=10.2.0.255/32"],
            "10.1.0.15/24 would become 10.2.0.255/24, the broadcast address of its subnet",
        ),
    ];
    for (nics, reip, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        networkd_tree(root);
        let p = params(vec![nic("ens3", "52:54:00:11:be:02")], nics, reip, &[]);
        let err = linux::plan(root, &p).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
        assert_eq!(read(root, "etc/systemd/network/10-ens192.link"), LINK);
        assert!(root
            .join("etc/udev/rules.d/70-persistent-net.rules")
            .exists());
    }
}
