//! The source's network configuration, on the real path: backup-agent's `--network` choice,
//! the commit, and the manifest the appliance signed. Image files record nothing by default
//! (the running system is not the one on them); `--network ROOT` reads a mounted root's files.
//! The live merge with /sys is unit-tested in backup-agent (`network::tests`), on a fake sysfs.

mod common;

use common::*;
use ferry_format::network::ConfigSystem;
use ferry_format::Manifest;

fn manifest(a: &Appliance, snapshot: &str) -> Manifest {
    serde_json::from_str(&a.manifest_json(snapshot)).expect("parse the manifest")
}

#[test]
fn network_is_recorded_from_a_mounted_root_and_not_for_image_files() {
    let a = Appliance::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("disk.img");
    make_image(&img, 4 << 20, 1);

    // auto (the default) with an image file: nothing.
    let s = a.backup("web01", &[&img]);
    assert_eq!(s["network_interfaces"], 0, "{s}");
    let snapshot = s["snapshot"].as_str().expect("snapshot");
    assert_eq!(manifest(&a, snapshot).network, None);

    // A mounted root: its networkd files, one refused (a warning, not a failed backup).
    let root = dir.path().join("root");
    let net = root.join("etc/systemd/network");
    std::fs::create_dir_all(&net).expect("mkdir");
    std::fs::write(
        net.join("10-ens192.network"),
        "[Match]\nName=ens192\n\n[Network]\nAddress=10.1.2.3/24\nGateway=10.1.2.1\n",
    )
    .expect("write");
    std::fs::write(
        net.join("20-broken.network"),
        "[Match]\nName=ens224\n[Network]\nAddress=10.1.2.300/24\n",
    )
    .expect("write");
    let out = run(a.backup_cmd("web01", &[&img]).arg("--network").arg(&root));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("/etc/systemd/network/20-broken.network"),
        "the refused file is named: {stderr}"
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("backup --json");
    assert_eq!(s["network_interfaces"], 1, "{s}");
    let m = manifest(&a, s["snapshot"].as_str().expect("snapshot"));
    let net = m.network.expect("recorded");
    assert_eq!(net.interfaces.len(), 1);
    let i = &net.interfaces[0];
    assert_eq!(
        (i.name.as_str(), i.system),
        ("ens192", ConfigSystem::Networkd)
    );
    assert_eq!(i.addresses, ["10.1.2.3/24".parse().expect("cidr")]);
    assert_eq!(i.driver, None, "no kernel data for a mounted root");

    // none: nothing, whatever the sources.
    let s: serde_json::Value = serde_json::from_str(&ok(a
        .backup_cmd("web01", &[&img])
        .args(["--network", "none"])))
    .expect("backup --json");
    assert_eq!(s["network_interfaces"], 0, "{s}");
}
