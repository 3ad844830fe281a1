//! `restore-agent fixup` on a restored Linux root: dry run changes nothing, a real run edits
//! the files, keeps the originals, and says which in-chroot commands it could not run.

mod common;

use std::process::Command;

use common::*;

#[test]
fn fixup_cli_on_a_linux_root() {
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
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

    // No shell in this fake root: the fix-up edits files but must say the initramfs was not rebuilt.
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
