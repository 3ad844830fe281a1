//! `restore-agent fixup` on a restored Linux root: dry run changes nothing, a real run edits
//! the files, keeps the originals, and says which in-chroot commands it could not run; `--json`
//! gives the changes tagged by kind; the in-chroot commands run as argument vectors, no shell.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A Debian root the fix-up has work in: fstab by device name, no virtio modules, a MAC-bound
/// udev rule. Returns the rule's path.
fn debian_root(root: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(root.join("etc/initramfs-tools")).unwrap();
    std::fs::create_dir_all(root.join("etc/udev/rules.d")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/fstab"), "/dev/sda1 / ext4 defaults 0 1\n").unwrap();
    std::fs::write(root.join("etc/initramfs-tools/modules"), "# modules\n").unwrap();
    let rules = root.join("etc/udev/rules.d/70-persistent-net.rules");
    std::fs::write(
        &rules,
        "SUBSYSTEM==\"net\", ATTR{address}==\"00:50:56:aa:bb:cc\", NAME=\"eth0\"\n",
    )
    .unwrap();
    rules
}

#[test]
fn fixup_cli_on_a_linux_root() {
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
    let rules = debian_root(root);

    let out = ok(Command::new(bin("restore-agent"))
        .args(["fixup", "--dry-run", "--root"])
        .arg(root));
    assert!(
        out.contains("would change") && out.contains("virtio_blk"),
        "{out}"
    );
    assert!(rules.exists(), "a dry run must change nothing");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/initramfs-tools/modules")).unwrap(),
        "# modules\n"
    );

    // None of the guest's tools in this fake root: the fix-up edits files but must say the
    // initramfs was not rebuilt.
    let e = fails(
        Command::new(bin("restore-agent"))
            .args(["fixup", "--root"])
            .arg(root),
    );
    assert!(e.contains("fix-up incomplete"), "{e}");
    let modules = std::fs::read_to_string(root.join("etc/initramfs-tools/modules")).unwrap();
    assert!(
        modules.contains("virtio_blk") && modules.contains("virtio_pci"),
        "{modules}"
    );
    assert!(root.join("etc/initramfs-tools/modules.ferry-orig").exists());
    assert!(
        !rules.exists()
            && root
                .join("etc/udev/rules.d/70-persistent-net.rules.ferry-orig")
                .exists()
    );
}

#[test]
fn fixup_cli_json_tags_each_change_by_kind() {
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
    debian_root(root);
    let out = ok(Command::new(bin("restore-agent"))
        .args(["fixup", "--dry-run", "--json", "--root"])
        .arg(root));
    let changes: serde_json::Value = serde_json::from_str(&out).unwrap();
    let changes = changes.as_array().unwrap();
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        changes.iter().filter(|c| c["kind"] == kind).collect()
    };
    assert!(
        of("edit")
            .iter()
            .any(|c| c["file"] == "etc/initramfs-tools/modules"),
        "{out}"
    );
    let commands = of("guest_command");
    assert_eq!(
        commands[0]["argv"],
        serde_json::json!(["update-initramfs", "-u", "-k", "all"]),
        "{out}"
    );
    assert_eq!(commands[0]["why"], "initramfs", "{out}");
    assert!(commands.iter().all(|c| c["argv"].is_array()), "{out}");
}

/// Copies `prog` and the shared libraries it needs into `root` as `name`.
fn install_into(root: &Path, prog: &str, name: &str) {
    let ldd = Command::new("ldd").arg(prog).output().unwrap();
    let libs = String::from_utf8_lossy(&ldd.stdout).into_owned();
    for lib in libs.split_whitespace().filter(|t| t.starts_with('/')) {
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, &to).unwrap();
    }
    let to = root.join(name);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(prog, &to).unwrap();
}

#[test]
fn fixup_cli_runs_guest_commands_without_a_shell() {
    if !Command::new("chroot")
        .args(["/", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        println!("SKIPPED: chroot needs root");
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
    debian_root(root);
    // The guest's tools are `true`; the root has no sh, so a command given to a shell fails.
    for tool in ["usr/sbin/update-initramfs", "usr/sbin/grub-mkconfig"] {
        install_into(root, "/usr/bin/true", tool);
    }
    assert!(!root.join("bin/sh").exists() && !root.join("usr/bin/sh").exists());
    let out = ok(Command::new(bin("restore-agent"))
        .args(["fixup", "--root"])
        .arg(root));
    assert!(
        out.contains("ran in the restored system: update-initramfs -u -k all")
            && out.contains("ran in the restored system: grub-mkconfig -o /boot/grub/grub.cfg")
            && !out.contains("NOT DONE"),
        "{out}"
    );
}

#[test]
fn fixup_cli_installs_the_first_boot_beacon_into_a_systemd_root() {
    use std::os::unix::fs::PermissionsExt;
    let w = tempfile::tempdir().unwrap();
    let root = w.path().join("root");
    debian_root(&root);
    let conf = w.path().join("beacon.conf");
    let config = ferry_format::agent::beacon::BeaconConfig {
        url: "https://10.0.2.2:8443".into(),
        job: "job-0011aabb".into(),
        credential: format!("beacon-job-0011aabb.{}", "5a".repeat(32)),
        ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
    };
    std::fs::write(&conf, config.to_text().unwrap()).unwrap();
    let fixup = |extra: &[&str]| {
        let mut c = Command::new(bin("restore-agent"));
        c.args(["fixup", "--root"])
            .arg(&root)
            .arg("--beacon")
            .arg(&conf)
            .arg("--beacon-program")
            .arg(bin("beacon"))
            .args(extra);
        c
    };
    // Without systemd: a note, nothing installed.
    let out = ok(&mut fixup(&["--dry-run"]));
    assert!(
        out.contains("note: the first-boot beacon is not installed: the restored system does not use systemd"),
        "{out}"
    );
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    std::fs::write(root.join("usr/lib/systemd/systemd"), b"").unwrap();

    // Dry run: shown (text and JSON, tagged beacon, no credential), nothing written.
    let out = ok(&mut fixup(&["--dry-run"]));
    assert!(
        out.contains("would change: etc/systemd/system/ferry-beacon.service: install the first-boot beacon of job job-0011aabb"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&mut fixup(&["--dry-run", "--json"]))).unwrap();
    let b: Vec<&serde_json::Value> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "beacon")
        .collect();
    assert_eq!(b.len(), 1, "{json}");
    assert_eq!(b[0]["config"], "etc/ferry/beacon.conf");
    assert!(!json.to_string().contains(&"5a".repeat(32)), "{json}");
    assert!(!root.join("etc/ferry/beacon.conf").exists());

    // The real run (it fails on the guest commands this fake root cannot run) installs it.
    fails(&mut fixup(&[]));
    let mode = |rel: &str| {
        std::fs::metadata(root.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("usr/local/lib/ferry/beacon"), 0o755);
    assert_eq!(mode("etc/systemd/system/ferry-beacon.service"), 0o644);
    assert_eq!(mode("etc/ferry/beacon.conf"), 0o600);
    assert_eq!(
        std::fs::read_link(
            root.join("etc/systemd/system/multi-user.target.wants/ferry-beacon.service")
        )
        .unwrap(),
        Path::new("/etc/systemd/system/ferry-beacon.service")
    );
    assert_eq!(
        std::fs::read(root.join("usr/local/lib/ferry/beacon")).unwrap(),
        std::fs::read(bin("beacon")).unwrap()
    );
    let installed = std::fs::read_to_string(root.join("etc/ferry/beacon.conf")).unwrap();
    assert_eq!(
        ferry_format::agent::beacon::BeaconConfig::parse(&installed).unwrap(),
        config
    );
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/ferry-beacon.service")).unwrap();
    assert!(
        unit.contains("Type=oneshot") && unit.contains("After=network-online.target"),
        "{unit}"
    );
}
