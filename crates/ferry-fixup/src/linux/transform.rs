//! Pure text transforms of a restored Linux system's configuration: input text and
//! parameters in, new text out. Lines that need no change are kept byte for byte
//! (comments, spacing, line endings).

use crate::{FixupError, GuestTask};
use serde::Serialize;
use std::collections::BTreeMap;

/// Old device name (as the restored files spell it: `/dev/sda1`,
/// `/dev/disk/by-id/...`) to the filesystem UUID that now identifies it.
pub type DeviceMap = BTreeMap<String, String>;

/// Modules an initramfs needs to find its root on virtio hardware.
pub const VIRTIO_MODULES: &[&str] = &[
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_pci",
    "virtio_ring",
];
/// What dracut is told to add (virtio_ring comes in as a dependency).
pub const DRACUT_CONF: &str =
    "# Added by ferry: virtio drivers for the restored system's new hardware.\n\
add_drivers+=\" virtio_blk virtio_scsi virtio_net virtio_pci \"\n";
const ADDED_BY: &str = "# added by ferry: virtio drivers for the new hardware";

fn bad(what: &str, detail: impl Into<String>) -> FixupError {
    FixupError::Transform {
        what: what.to_owned(),
        detail: detail.into(),
    }
}

fn check_map(what: &str, devs: &DeviceMap) -> Result<(), FixupError> {
    for (dev, uuid) in devs {
        if uuid.is_empty() || uuid.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            return Err(bad(
                what,
                format!("UUID {uuid:?} for {dev} is not a plain token"),
            ));
        }
    }
    Ok(())
}

/// Byte range of the `n`th (0-based) whitespace-separated field of a line.
fn field_range(line: &str, n: usize) -> Option<(usize, usize)> {
    let mut idx = 0;
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                if idx == n {
                    return Some((s, i));
                }
                idx += 1;
                start = None;
            }
            _ => {}
        }
    }
    start.filter(|_| idx == n).map(|s| (s, line.len()))
}

/// Replaces field `n` of every non-comment line with `UUID=<uuid>` when it names a
/// device in the map.
fn replace_device_field(
    what: &str,
    text: &str,
    n: usize,
    devs: &DeviceMap,
) -> Result<String, FixupError> {
    check_map(what, devs)?;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        if body.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        match field_range(body, n).and_then(|(s, e)| Some((s, e, devs.get(&body[s..e])?))) {
            Some((s, e, uuid)) => {
                out.push_str(&line[..s]);
                out.push_str("UUID=");
                out.push_str(uuid);
                out.push_str(&line[e..]);
            }
            None => out.push_str(line),
        }
    }
    Ok(out)
}

/// /etc/fstab: device names in the first field become `UUID=...`; UUID=, LABEL=,
/// PARTUUID= and devices not in the map are left alone.
pub fn fstab(text: &str, devs: &DeviceMap) -> Result<String, FixupError> {
    replace_device_field("fstab", text, 0, devs)
}

/// /etc/crypttab: the second field (the encrypted device) likewise.
pub fn crypttab(text: &str, devs: &DeviceMap) -> Result<String, FixupError> {
    replace_device_field("crypttab", text, 1, devs)
}

/// Devices named in the first field of fstab that are plain kernel names or by-id/by-path
/// links (which change with the hardware), whatever the map says.
pub fn unstable_fstab_devices(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| field_range(l, 0).map(|(s, e)| l[s..e].to_owned()))
        .filter(|d| is_unstable_device(d))
        .collect()
}

/// Kernel device names and hardware-path links that a new machine renames.
pub fn is_unstable_device(dev: &str) -> bool {
    [
        "/dev/sd",
        "/dev/hd",
        "/dev/vd",
        "/dev/xvd",
        "/dev/nvme",
        "/dev/cciss/",
        "/dev/disk/by-id/",
        "/dev/disk/by-path/",
    ]
    .iter()
    .any(|p| dev.starts_with(p))
}

/// Kernel arguments `root=DEV` and `resume=DEV` whose device is in the map become
/// `root=UUID=...`. Works on any text holding command lines: /etc/default/grub,
/// grub.cfg, BLS entries, /etc/kernel/cmdline.
pub fn kernel_args(text: &str, devs: &DeviceMap) -> Result<String, FixupError> {
    check_map("kernel command line", devs)?;
    let is_sep = |c: char| c.is_whitespace() || c == '"' || c == '\'';
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut search) = (0, 0);
    loop {
        let next = ["root=", "resume="]
            .iter()
            .filter_map(|k| text[search..].find(k).map(|p| (search + p, k.len())))
            .min_by_key(|m| m.0);
        let Some((pos, key_len)) = next else { break };
        let boundary = text[..pos].chars().next_back().is_none_or(is_sep);
        let vstart = pos + key_len;
        let vend = text[vstart..]
            .find(is_sep)
            .map_or(text.len(), |e| vstart + e);
        if let Some(uuid) = devs.get(&text[vstart..vend]).filter(|_| boundary) {
            out.push_str(&text[copied..vstart]);
            out.push_str("UUID=");
            out.push_str(uuid);
            copied = vend;
        }
        search = vend.max(pos + 1);
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// /etc/default/grub: root=/resume= to UUIDs, and drop `GRUB_DISABLE_LINUX_UUID=true`
/// so grub-mkconfig writes root=UUID=... itself.
pub fn grub_default(text: &str, devs: &DeviceMap) -> Result<String, FixupError> {
    let text = kernel_args(text, devs)?;
    Ok(text
        .split_inclusive('\n')
        .filter(|l| {
            let t: String = l
                .trim()
                .chars()
                .filter(|c| *c != '"' && *c != '\'')
                .collect();
            !t.eq_ignore_ascii_case("GRUB_DISABLE_LINUX_UUID=true")
        })
        .collect())
}

fn ensure_newline(s: &mut String) {
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
}

/// /etc/initramfs-tools/modules: appends the virtio modules that are not listed yet.
pub fn initramfs_modules(text: &str) -> Result<String, FixupError> {
    let listed: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let missing: Vec<&str> = VIRTIO_MODULES
        .iter()
        .copied()
        .filter(|m| !listed.contains(m))
        .collect();
    let mut out = text.to_owned();
    if missing.is_empty() {
        return Ok(out);
    }
    ensure_newline(&mut out);
    out.push_str(ADDED_BY);
    out.push('\n');
    for m in missing {
        out.push_str(m);
        out.push('\n');
    }
    Ok(out)
}

/// /etc/initramfs-tools/initramfs.conf: `MODULES=dep` (only the drivers of the machine
/// mkinitramfs runs on) and `MODULES=netboot` (no disk drivers) become `MODULES=most`;
/// `most` and `list` (which reads the modules file) stay.
pub fn initramfs_conf(text: &str) -> Result<String, FixupError> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let value = body
            .trim()
            .strip_prefix("MODULES=")
            .map(|v| v.trim_matches(['"', '\'']));
        match value {
            Some("dep") | Some("netboot") => {
                out.push_str("MODULES=most");
                out.push_str(&line[body.len()..]);
            }
            _ => out.push_str(line),
        }
    }
    Ok(out)
}

/// /etc/mkinitcpio.conf: adds the missing virtio modules to `MODULES=(...)`.
pub fn mkinitcpio_conf(text: &str) -> Result<String, FixupError> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut done = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let Some(inner) = body
            .strip_prefix("MODULES=(")
            .and_then(|r| r.split(')').next())
            .filter(|_| !done)
        else {
            out.push_str(line);
            continue;
        };
        let mut mods: Vec<&str> = inner.split_whitespace().collect();
        for m in VIRTIO_MODULES {
            if !mods.contains(m) {
                mods.push(m);
            }
        }
        let close = body
            .find(')')
            .ok_or_else(|| bad("mkinitcpio.conf", "MODULES=( without )"))?;
        out.push_str(&format!(
            "MODULES=({}){}",
            mods.join(" "),
            &body[close + 1..]
        ));
        out.push_str(&line[body.len()..]);
        done = true;
    }
    if !done {
        ensure_newline(&mut out);
        out.push_str(&format!(
            "{ADDED_BY}\nMODULES=({})\n",
            VIRTIO_MODULES.join(" ")
        ));
    }
    Ok(out)
}

/// ifcfg-*: drops `HWADDR=` lines, which bind the config to the old NIC's MAC.
pub fn ifcfg_drop_hwaddr(text: &str) -> Result<String, FixupError> {
    Ok(text
        .split_inclusive('\n')
        .filter(|l| !l.trim_start().starts_with("HWADDR="))
        .collect())
}

/// netplan YAML or systemd-networkd .network files that match interfaces by MAC.
pub fn mac_match_note(file: &str, text: &str) -> Option<String> {
    let hit = text.lines().map(str::trim).any(|l| {
        !l.starts_with('#')
            && (l.starts_with("macaddress:")
                || l.starts_with("MACAddress=")
                || l.starts_with("PermanentMACAddress="))
    });
    hit.then(|| format!("{file} matches a network interface by MAC address; the new NIC has a different MAC, edit or drop the match"))
}

/// Distro families, for the commands to run in the chroot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum OsFamily {
    Debian,
    RedHat,
    Suse,
    Arch,
    Unknown,
}

/// The family from /etc/os-release (`ID` and `ID_LIKE`).
pub fn os_family(os_release: &str) -> OsFamily {
    let mut ids = Vec::new();
    for line in os_release.lines() {
        if let Some(v) = line
            .strip_prefix("ID=")
            .or_else(|| line.strip_prefix("ID_LIKE="))
        {
            ids.extend(
                v.trim_matches(['"', '\''])
                    .split_whitespace()
                    .map(str::to_lowercase),
            );
        }
    }
    let has = |names: &[&str]| ids.iter().any(|i| names.contains(&i.as_str()));
    if has(&["debian", "ubuntu"]) {
        OsFamily::Debian
    } else if has(&["rhel", "fedora", "centos"]) {
        OsFamily::RedHat
    } else if has(&["suse", "opensuse", "sles"]) {
        OsFamily::Suse
    } else if has(&["arch"]) {
        OsFamily::Arch
    } else {
        OsFamily::Unknown
    }
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// A command to run inside the restored system, and what it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChrootCommand {
    pub argv: Vec<String>,
    pub why: GuestTask,
}

/// Commands the caller runs inside the chroot of the restored system, in order:
/// regenerate every initramfs, regenerate the grub config, and on BIOS reinstall the boot
/// code on `boot_disk` (the new name of the boot disk, e.g. /dev/vda).
pub fn chroot_commands(
    family: OsFamily,
    boot_disk: Option<&str>,
    uefi: bool,
) -> Vec<ChrootCommand> {
    let (initramfs, mkconfig, install): (&[&str], &[&str], &str) = match family {
        OsFamily::Debian => (
            &["update-initramfs", "-u", "-k", "all"],
            &["grub-mkconfig", "-o", "/boot/grub/grub.cfg"],
            "grub-install",
        ),
        OsFamily::RedHat | OsFamily::Suse => (
            &["dracut", "-f", "--regenerate-all"],
            &["grub2-mkconfig", "-o", "/boot/grub2/grub.cfg"],
            "grub2-install",
        ),
        OsFamily::Arch => (
            &["mkinitcpio", "-P"],
            &["grub-mkconfig", "-o", "/boot/grub/grub.cfg"],
            "grub-install",
        ),
        OsFamily::Unknown => return Vec::new(),
    };
    let run = |argv: &[&str], why| ChrootCommand {
        argv: cmd(argv),
        why,
    };
    let mut out = vec![
        run(initramfs, GuestTask::Initramfs),
        run(mkconfig, GuestTask::BootConfig),
    ];
    if let (false, Some(disk)) = (uefi, boot_disk) {
        out.push(run(
            &[install, "--target=i386-pc", disk],
            GuestTask::BiosBootLoader,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devs() -> DeviceMap {
        [
            ("/dev/sda1", "1111-aaaa"),
            ("/dev/sda2", "2222-bbbb"),
            ("/dev/hda3", "3333-cccc"),
            ("/dev/disk/by-id/scsi-SVMware_disk-part1", "4444-dddd"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
    }

    #[test]
    fn fstab_table() {
        let cases = [
            (
                "/dev/sda1  /  ext4  defaults  0 1\n",
                "UUID=1111-aaaa  /  ext4  defaults  0 1\n",
            ),
            (
                "\t/dev/sda2\tswap\tswap\tdefaults\t0 0\n",
                "\tUUID=2222-bbbb\tswap\tswap\tdefaults\t0 0\n",
            ),
            (
                "/dev/hda3 /boot ext2 defaults 1 2",
                "UUID=3333-cccc /boot ext2 defaults 1 2",
            ),
            (
                "/dev/disk/by-id/scsi-SVMware_disk-part1 /data xfs defaults 0 0\r\n",
                "UUID=4444-dddd /data xfs defaults 0 0\r\n",
            ),
            ("# /dev/sda1 / ext4\n", "# /dev/sda1 / ext4\n"),
            (
                "UUID=abc / ext4 defaults 0 1\n",
                "UUID=abc / ext4 defaults 0 1\n",
            ),
            (
                "LABEL=root / ext4 defaults 0 1\n",
                "LABEL=root / ext4 defaults 0 1\n",
            ),
            (
                "PARTUUID=9 / ext4 defaults 0 1\n",
                "PARTUUID=9 / ext4 defaults 0 1\n",
            ),
            (
                "/dev/mapper/vg-root / ext4 defaults 0 1\n",
                "/dev/mapper/vg-root / ext4 defaults 0 1\n",
            ),
            (
                "/dev/sdb1 /x ext4 defaults 0 0\n",
                "/dev/sdb1 /x ext4 defaults 0 0\n",
            ),
            (
                "proc /proc proc defaults 0 0\n\n",
                "proc /proc proc defaults 0 0\n\n",
            ),
            ("/dev/sda1/ /x ext4\n", "/dev/sda1/ /x ext4\n"),
        ];
        for (input, want) in cases {
            assert_eq!(fstab(input, &devs()).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn crypttab_replaces_the_second_field() {
        let input =
            "# name device key\ncryptroot /dev/sda2 none luks,discard\ncrypt2 UUID=x none luks\n";
        let want = "# name device key\ncryptroot UUID=2222-bbbb none luks,discard\ncrypt2 UUID=x none luks\n";
        assert_eq!(crypttab(input, &devs()).unwrap(), want);
    }

    #[test]
    fn bad_uuids_are_refused() {
        let mut d = devs();
        d.insert("/dev/sdc1".into(), "has space".into());
        assert!(fstab("/dev/sdc1 / ext4\n", &d).is_err());
    }

    #[test]
    fn kernel_args_table() {
        let cases = [
            (
                "GRUB_CMDLINE_LINUX=\"root=/dev/sda1 ro quiet\"\n",
                "GRUB_CMDLINE_LINUX=\"root=UUID=1111-aaaa ro quiet\"\n",
            ),
            (
                "\tlinux /vmlinuz-6.1 root=/dev/sda1 ro resume=/dev/sda2\n",
                "\tlinux /vmlinuz-6.1 root=UUID=1111-aaaa ro resume=UUID=2222-bbbb\n",
            ),
            (
                "options root=/dev/sda1 rootflags=subvol=@\n",
                "options root=UUID=1111-aaaa rootflags=subvol=@\n",
            ),
            (
                "linux /vmlinuz root=UUID=x ro\n",
                "linux /vmlinuz root=UUID=x ro\n",
            ),
            (
                "linux /vmlinuz root=/dev/sdz9 ro\n",
                "linux /vmlinuz root=/dev/sdz9 ro\n",
            ),
            (
                "linux /vmlinuz myroot=/dev/sda1\n",
                "linux /vmlinuz myroot=/dev/sda1\n",
            ),
            ("root=/dev/sda1", "root=UUID=1111-aaaa"),
            ("set root='hd0,msdos1'\n", "set root='hd0,msdos1'\n"),
        ];
        for (input, want) in cases {
            assert_eq!(kernel_args(input, &devs()).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn grub_default_drops_disable_uuid() {
        let input = "GRUB_DEFAULT=0\nGRUB_DISABLE_LINUX_UUID=true\nGRUB_CMDLINE_LINUX=\"root=/dev/sda1\"\n# GRUB_DISABLE_LINUX_UUID=true\n";
        let want = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"root=UUID=1111-aaaa\"\n# GRUB_DISABLE_LINUX_UUID=true\n";
        assert_eq!(grub_default(input, &devs()).unwrap(), want);
        assert_eq!(
            grub_default("GRUB_DISABLE_LINUX_UUID=\"true\"\n", &devs()).unwrap(),
            ""
        );
        assert_eq!(
            grub_default("GRUB_DISABLE_LINUX_UUID=false\n", &devs()).unwrap(),
            "GRUB_DISABLE_LINUX_UUID=false\n"
        );
    }

    #[test]
    fn initramfs_modules_table() {
        let all =
            format!("{ADDED_BY}\nvirtio_blk\nvirtio_scsi\nvirtio_net\nvirtio_pci\nvirtio_ring\n");
        let cases = [
            ("".to_owned(), all.clone()),
            (
                "# comment\nvirtio_blk\nvirtio_pci\nvirtio_ring\nvirtio_net\nvirtio_scsi\n"
                    .to_owned(),
                "# comment\nvirtio_blk\nvirtio_pci\nvirtio_ring\nvirtio_net\nvirtio_scsi\n"
                    .to_owned(),
            ),
            ("raid1".to_owned(), format!("raid1\n{all}")),
            ("# virtio_blk\n".to_owned(), format!("# virtio_blk\n{all}")),
            (
                "virtio_blk\nvirtio_scsi\nvirtio_net\nvirtio_pci\n".to_owned(),
                format!(
                    "virtio_blk\nvirtio_scsi\nvirtio_net\nvirtio_pci\n{ADDED_BY}\nvirtio_ring\n"
                ),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(initramfs_modules(&input).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn initramfs_conf_table() {
        let cases = [
            (
                "MODULES=dep\nBUSYBOX=auto\n",
                "MODULES=most\nBUSYBOX=auto\n",
            ),
            ("MODULES=netboot\n", "MODULES=most\n"),
            ("MODULES=most\n", "MODULES=most\n"),
            ("MODULES=list\n", "MODULES=list\n"),
            ("# MODULES=dep\n", "# MODULES=dep\n"),
        ];
        for (input, want) in cases {
            assert_eq!(initramfs_conf(input).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn mkinitcpio_table() {
        let cases = [
            ("MODULES=()\nHOOKS=(base udev)\n", "MODULES=(virtio_blk virtio_scsi virtio_net virtio_pci virtio_ring)\nHOOKS=(base udev)\n"),
            ("MODULES=(ext4 virtio_blk) # x\n", "MODULES=(ext4 virtio_blk virtio_scsi virtio_net virtio_pci virtio_ring) # x\n"),
        ];
        for (input, want) in cases {
            assert_eq!(mkinitcpio_conf(input).unwrap(), want, "{input:?}");
        }
        assert!(mkinitcpio_conf("HOOKS=(base)")
            .unwrap()
            .ends_with("MODULES=(virtio_blk virtio_scsi virtio_net virtio_pci virtio_ring)\n"));
    }

    #[test]
    fn network_config_table() {
        assert_eq!(
            ifcfg_drop_hwaddr("DEVICE=eth0\nHWADDR=00:50:56:aa:bb:cc\nONBOOT=yes\n").unwrap(),
            "DEVICE=eth0\nONBOOT=yes\n"
        );
        assert!(mac_match_note("01-netcfg.yaml", "network:\n  ethernets:\n    id0:\n      match:\n        macaddress: 00:50:56:aa:bb:cc\n").is_some());
        assert!(
            mac_match_note("10-eth.network", "[Match]\nMACAddress=00:50:56:aa:bb:cc\n").is_some()
        );
        assert!(mac_match_note("10-eth.network", "[Match]\nName=eth0\n").is_none());
    }

    #[test]
    fn os_family_table() {
        let cases = [
            ("ID=ubuntu\nID_LIKE=debian\n", OsFamily::Debian),
            ("ID=debian\n", OsFamily::Debian),
            ("ID=\"rhel\"\nID_LIKE=\"fedora\"\n", OsFamily::RedHat),
            (
                "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n",
                OsFamily::RedHat,
            ),
            ("ID=\"sles\"\nID_LIKE=\"suse\"\n", OsFamily::Suse),
            (
                "ID=opensuse-leap\nID_LIKE=\"suse opensuse\"\n",
                OsFamily::Suse,
            ),
            ("ID=arch\n", OsFamily::Arch),
            ("ID=alpine\n", OsFamily::Unknown),
        ];
        for (input, want) in cases {
            assert_eq!(os_family(input), want, "{input:?}");
        }
    }

    #[test]
    fn chroot_commands_table() {
        let deb = chroot_commands(OsFamily::Debian, Some("/dev/vda"), false);
        assert_eq!(deb[0].argv, ["update-initramfs", "-u", "-k", "all"]);
        assert_eq!(deb[0].why, GuestTask::Initramfs);
        assert_eq!(
            deb[2].argv,
            ["grub-install", "--target=i386-pc", "/dev/vda"]
        );
        assert_eq!(deb[2].why, GuestTask::BiosBootLoader);
        let rh = chroot_commands(OsFamily::RedHat, Some("/dev/vda"), true);
        let rh: Vec<(&[String], GuestTask)> =
            rh.iter().map(|c| (c.argv.as_slice(), c.why)).collect();
        assert_eq!(
            rh,
            [
                (
                    &cmd(&["dracut", "-f", "--regenerate-all"])[..],
                    GuestTask::Initramfs
                ),
                (
                    &cmd(&["grub2-mkconfig", "-o", "/boot/grub2/grub.cfg"])[..],
                    GuestTask::BootConfig
                )
            ]
        );
        assert!(chroot_commands(OsFamily::Unknown, None, false).is_empty());
    }

    #[test]
    fn unstable_devices() {
        let f = "/dev/sda1 / ext4\nUUID=x /b ext4\n/dev/vg/lv /c xfs\n/dev/disk/by-path/pci-0-part1 /d xfs\n#/dev/sdb1 /e\n";
        assert_eq!(
            unstable_fstab_devices(f),
            ["/dev/sda1", "/dev/disk/by-path/pci-0-part1"]
        );
    }
}
