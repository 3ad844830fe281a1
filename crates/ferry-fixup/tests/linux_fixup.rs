//! The Linux fix-up's plan/apply wrapper on temp trees, and the bootability report on
//! initramfs images made with the real cpio/gzip/zstd/xz.

use ferry_fixup::linux::{self, FileAction, OsFamily, Params};
use ferry_fixup::report::{self, initrd, LinuxInput};
use ferry_fixup::{Change, GuestTask};
use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap()
}

const FSTAB: &str = "# /etc/fstab: static file system information.\n\
/dev/sda1\t/\text4\terrors=remount-ro 0 1\n\
UUID=5555-eeee /boot/efi vfat umask=0077 0 1\n\
/dev/sda2  none  swap  sw  0 0\n\
proc /proc proc defaults 0 0\n";

fn params() -> Params {
    let devices = [("/dev/sda1", "1111-aaaa"), ("/dev/sda2", "2222-bbbb")]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
    Params {
        devices,
        boot_disk: Some("/dev/vda".into()),
        uefi: false,
        keep_old_tools: false,
        beacon: None,
        retire_source_agent: false,
        network: None,
    }
}

fn debian_tree(root: &Path) {
    write(
        root,
        "etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n",
    );
    write(root, "etc/fstab", FSTAB);
    write(root, "etc/default/grub", "GRUB_DEFAULT=0\nGRUB_DISABLE_LINUX_UUID=true\nGRUB_CMDLINE_LINUX=\"root=/dev/sda1 quiet\"\n");
    write(
        root,
        "boot/grub/grub.cfg",
        "menuentry 'Debian' {\n\tlinux /vmlinuz-6.1.0 root=/dev/sda1 ro quiet\n}\n",
    );
    write(root, "etc/initramfs-tools/modules", "# List of modules\n");
    write(
        root,
        "etc/initramfs-tools/initramfs.conf",
        "MODULES=dep\nBUSYBOX=auto\n",
    );
    write(
        root,
        "etc/udev/rules.d/70-persistent-net.rules",
        "SUBSYSTEM==\"net\", ATTR{address}==\"00:50:56:aa:bb:cc\", NAME=\"eth0\"\n",
    );
    write(
        root,
        "etc/netplan/01-netcfg.yaml",
        "network:\n  ethernets:\n    e:\n      match:\n        macaddress: 00:50:56:aa:bb:cc\n",
    );
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    symlink(
        "/lib/systemd/system/open-vm-tools.service",
        wants.join("open-vm-tools.service"),
    )
    .unwrap();
    symlink("/lib/systemd/system/ssh.service", wants.join("ssh.service")).unwrap();
}

#[test]
fn debian_plan_apply_and_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    debian_tree(root);
    let plan = linux::plan(root, &params()).unwrap();
    assert_eq!(plan.family, OsFamily::Debian);
    let paths: Vec<String> = plan
        .edits
        .iter()
        .map(|e| e.path.display().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "etc/fstab",
            "etc/default/grub",
            "boot/grub/grub.cfg",
            "etc/initramfs-tools/modules",
            "etc/initramfs-tools/initramfs.conf",
            "etc/udev/rules.d/70-persistent-net.rules",
            "etc/systemd/system/multi-user.target.wants/open-vm-tools.service",
        ]
    );
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("01-netcfg.yaml") && n.contains("MAC")),
        "{:?}",
        plan.notes
    );
    assert_eq!(
        plan.commands[0].argv,
        ["update-initramfs", "-u", "-k", "all"]
    );
    assert_eq!(
        plan.commands.last().unwrap().argv,
        ["grub-install", "--target=i386-pc", "/dev/vda"]
    );
    // The plan's changes carry the commands and notes as data, in order, after the edits.
    let changes = plan.changes();
    let commands: Vec<(String, GuestTask)> = changes
        .iter()
        .filter_map(|c| match c {
            Change::GuestCommand { argv, why } => Some((argv.join("|"), *why)),
            _ => None,
        })
        .collect();
    let want = [
        ("update-initramfs|-u|-k|all", GuestTask::Initramfs),
        (
            "grub-mkconfig|-o|/boot/grub/grub.cfg",
            GuestTask::BootConfig,
        ),
        (
            "grub-install|--target=i386-pc|/dev/vda",
            GuestTask::BiosBootLoader,
        ),
    ]
    .map(|(a, w)| (a.to_owned(), w));
    assert_eq!(commands, want, "{changes:?}");
    assert!(
        changes.iter().any(|c| matches!(c,
            Change::Note { file: None, text } if text.contains("01-netcfg.yaml") && text.contains("MAC"))),
        "{changes:?}"
    );
    let printed: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert!(
        printed
            .iter()
            .any(|l| l == "run in chroot: update-initramfs -u -k all"),
        "{printed:?}"
    );

    linux::apply(root, &plan).unwrap();
    assert_eq!(
        read(root, "etc/fstab"),
        FSTAB
            .replace("/dev/sda1\t", "UUID=1111-aaaa\t")
            .replace("/dev/sda2  ", "UUID=2222-bbbb  ")
    );
    assert_eq!(read(root, "etc/fstab.ferry-orig"), FSTAB);
    assert_eq!(
        read(root, "etc/default/grub"),
        "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"root=UUID=1111-aaaa quiet\"\n"
    );
    assert!(read(root, "boot/grub/grub.cfg").contains("root=UUID=1111-aaaa ro"));
    assert!(read(root, "etc/initramfs-tools/modules").ends_with("virtio_pci\nvirtio_ring\n"));
    assert_eq!(
        read(root, "etc/initramfs-tools/initramfs.conf"),
        "MODULES=most\nBUSYBOX=auto\n"
    );
    assert!(!root
        .join("etc/udev/rules.d/70-persistent-net.rules")
        .exists());
    assert!(root
        .join("etc/udev/rules.d/70-persistent-net.rules.ferry-orig")
        .exists());
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    assert!(wants
        .join("open-vm-tools.service")
        .symlink_metadata()
        .is_err());
    assert!(wants.join("ssh.service").symlink_metadata().is_ok());

    let again = linux::plan(root, &params()).unwrap();
    assert!(again.edits.is_empty(), "{:?}", again.edits);
    // A second apply must not overwrite the kept originals.
    assert_eq!(read(root, "etc/fstab.ferry-orig"), FSTAB);
}

#[test]
fn redhat_tree_gets_dracut_and_loses_hwaddr() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "etc/os-release",
        "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n",
    );
    write(root, "etc/fstab", "/dev/sda1 / xfs defaults 0 0\n");
    write(root, "etc/crypttab", "luks-home /dev/sda2 none discard\n");
    write(
        root,
        "etc/sysconfig/network-scripts/ifcfg-ens192",
        "DEVICE=ens192\nHWADDR=00:50:56:aa:bb:cc\nONBOOT=yes\n",
    );
    write(
        root,
        "boot/loader/entries/abc-5.14.conf",
        "title Rocky\noptions root=/dev/sda1 ro resume=/dev/sda2\n",
    );
    let plan = linux::plan(root, &params()).unwrap();
    assert_eq!(plan.family, OsFamily::RedHat);
    assert_eq!(plan.commands[0].argv, ["dracut", "-f", "--regenerate-all"]);
    assert_eq!(plan.commands[0].why, GuestTask::Initramfs);
    linux::apply(root, &plan).unwrap();
    assert_eq!(
        read(root, "etc/dracut.conf.d/ferry-virtio.conf"),
        linux::transform::DRACUT_CONF
    );
    assert_eq!(
        read(root, "etc/crypttab"),
        "luks-home UUID=2222-bbbb none discard\n"
    );
    assert_eq!(
        read(root, "etc/sysconfig/network-scripts/ifcfg-ens192"),
        "DEVICE=ens192\nONBOOT=yes\n"
    );
    assert_eq!(
        read(root, "boot/loader/entries/abc-5.14.conf"),
        "title Rocky\noptions root=UUID=1111-aaaa ro resume=UUID=2222-bbbb\n"
    );
}

#[test]
fn symlinked_files_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write(&root, "etc/os-release", "ID=debian\n");
    let outside = dir.path().join("host-fstab");
    std::fs::write(&outside, "/dev/sda1 / ext4 defaults 0 1\n").unwrap();
    symlink(&outside, root.join("etc/fstab")).unwrap();
    let plan = linux::plan(&root, &params()).unwrap();
    assert!(plan.edits.iter().all(|e| e.path != Path::new("etc/fstab")));
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("etc/fstab is not a regular file")));
    linux::apply(&root, &plan).unwrap();
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "/dev/sda1 / ext4 defaults 0 1\n"
    );
}

#[test]
fn unmapped_unstable_devices_are_noted_and_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    debian_tree(root);
    let changes = ferry_fixup::run(root, ferry_fixup::OsChoice::Auto, None, true).unwrap();
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::Note { text, .. } if text.contains("/dev/sda1"))),
        "{changes:?}"
    );
    assert_eq!(read(root, "etc/fstab"), FSTAB);
    let plan = linux::plan(root, &Params::default()).unwrap();
    assert!(plan
        .edits
        .iter()
        .any(|e| matches!(e.action, FileAction::RemoveLink { .. })));
}

#[test]
fn a_migrated_copy_loses_the_source_agent_and_its_credential() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    debian_tree(root);
    write(root, "etc/ferry/backup-agent.toml", "machine = \"web1\"\n");
    write(root, "var/lib/ferry/source.cred", "src-web1.secret\n");
    let link = "etc/systemd/system/multi-user.target.wants/ferry-backup-agent.service";
    std::fs::create_dir_all(root.join(link).parent().unwrap()).unwrap();
    symlink(
        "/etc/systemd/system/ferry-backup-agent.service",
        root.join(link),
    )
    .unwrap();

    // A plain restore keeps both: the machine comes back as itself.
    let plan = linux::plan(root, &params()).unwrap();
    assert!(plan
        .edits
        .iter()
        .all(|e| !e.path.starts_with("var/lib/ferry")));

    let migrated = Params {
        retire_source_agent: true,
        ..params()
    };
    let plan = linux::plan(root, &migrated).unwrap();
    let changes = plan.changes();
    assert!(
        changes
            .iter()
            .any(|c| c.to_string().contains("delete the source's credential")),
        "{changes:?}"
    );
    linux::apply(root, &plan).unwrap();
    assert!(
        root.join(link).symlink_metadata().is_err(),
        "unit still enabled"
    );
    let gone: Vec<_> = std::fs::read_dir(root.join("var/lib/ferry"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(gone.is_empty(), "credential kept: {gone:?}");
    assert_eq!(
        read(root, "etc/ferry/backup-agent.toml"),
        "machine = \"web1\"\n"
    );
}

// ---- report --------------------------------------------------------------------------

/// A real initramfs: an uncompressed early-microcode cpio, then a `compress`ed main cpio
/// made by `cpio -o -H newc` from a tree holding `module`.
fn make_initrd(dir: &Path, module: &str, compress: &str) -> Vec<u8> {
    let cpio = |tree: &Path| {
        let out = Command::new("sh")
            .arg("-c")
            .arg("find . | LC_ALL=C sort | cpio --quiet -o -H newc")
            .current_dir(tree)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let early = dir.join("early");
    write(&early, "kernel/x86/microcode/GenuineIntel.bin", "ucode");
    let main = dir.join("main");
    write(&main, "init", "#!/bin/sh\n");
    write(
        &main,
        &format!("usr/lib/modules/6.1.0-13-amd64/kernel/drivers/{module}"),
        "module",
    );
    let main_cpio = cpio(&main);
    let mut child = Command::new(compress)
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&main_cpio).unwrap();
    let compressed = child.wait_with_output().unwrap().stdout;
    let mut img = cpio(&early);
    img.extend(compressed);
    img
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn linux_report_reads_real_initramfs_images() {
    for (compress, module, bootable) in [
        ("zstd", "block/virtio_blk.ko.zst", true),
        ("gzip", "scsi/virtio_scsi.ko", true),
        ("xz", "block/virtio_blk.ko.xz", true),
        ("gzip", "scsi/mptspi.ko", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write(
            &root,
            "etc/fstab",
            "UUID=1111-aaaa / ext4 defaults 0 1\nLABEL=data /data xfs nofail 0 0\n",
        );
        let img = make_initrd(dir.path(), module, compress);
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("boot/initrd.img-6.1.0-13-amd64"), img).unwrap();
        let esp = dir.path().join("esp");
        write(&esp, "EFI/BOOT/BOOTX64.EFI", "MZ");
        let (uuids, labels, parts) = (set(&["1111-aaaa"]), set(&[]), set(&[]));
        let input = LinuxInput {
            uuids: &uuids,
            labels: &labels,
            partuuids: &parts,
            esp: Some(&esp),
            decompress: &initrd::external_decompress,
        };
        let r = report::linux(&root, &input).unwrap();
        assert_eq!(r.bootable(), bootable, "{compress} {module}:\n{r}");
        // The nofail mount does not resolve, but is not critical.
        assert!(
            r.checks
                .iter()
                .any(|c| c.name == "fstab /data" && !c.ok && !c.critical),
            "{r}"
        );
    }
}

#[test]
fn linux_report_fails_on_unresolvable_root_and_missing_fallback_loader() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write(
        &root,
        "etc/fstab",
        "/dev/sda1 / ext4 defaults 0 1\nUUID=9999 /home ext4 defaults 0 2\n",
    );
    write(
        &root,
        "lib/modules/6.1.0/modules.builtin",
        "kernel/drivers/block/virtio_blk.ko\n",
    );
    let esp = dir.path().join("esp");
    std::fs::create_dir_all(&esp).unwrap();
    let (uuids, labels, parts) = (set(&["1111-aaaa"]), set(&[]), set(&[]));
    let input = LinuxInput {
        uuids: &uuids,
        labels: &labels,
        partuuids: &parts,
        esp: Some(&esp),
        decompress: &initrd::external_decompress,
    };
    let r = report::linux(&root, &input).unwrap();
    assert!(!r.bootable());
    let failed: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| !c.ok && c.critical)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        failed,
        ["fstab /", "fstab /home", "UEFI fallback loader"],
        "{r}"
    );
    // virtio_blk built into the kernel counts even without an initramfs.
    assert!(
        r.checks
            .iter()
            .any(|c| c.name == "initramfs with virtio storage" && c.ok),
        "{r}"
    );
}
