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
