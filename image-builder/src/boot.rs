//! Boot configuration as pure text: the kernel command line, grub.cfg for the ISO and the iPXE
//! script for PXE. Tested with string literals.

use anyhow::{bail, Result};

/// Console and logging arguments of every boot. `console=ttyS0` comes last so /dev/console — the
/// agent's stdout — is the serial port (what a BMC's serial-over-LAN and `qemu -serial` show);
/// kernel messages go to both. `panic=10`: if PID 1 ever dies, reboot after 10 s instead of hanging.
pub const BASE_ARGS: &str = "console=tty0 console=ttyS0,115200 loglevel=4 panic=10";

/// Extra kernel arguments from `--append`, checked so they are safe inside grub.cfg and iPXE
/// scripts (no quoting, variables, or command separators).
pub fn check_append(args: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || " ._:/=,+@%-[]".contains(c);
    if let Some(c) = args.chars().find(|c| !ok(*c)) {
        bail!("use --append {args:?}: character {c:?} is not allowed in kernel arguments here");
    }
    Ok(())
}

/// The full kernel command line: base arguments, then extra ones.
pub fn cmdline(append: &str) -> String {
    let append = append.trim();
    if append.is_empty() {
        BASE_ARGS.to_string()
    } else {
        format!("{BASE_ARGS} {append}")
    }
}

/// grub.cfg of the ISO: menu on screen and serial, 1 s timeout, the main entry and a debug entry.
/// The site embed area is the last initrd so its files are unpacked after the base image's.
pub fn grub_cfg(cmdline: &str) -> String {
    format!(
        "\
# Ferry rescue image (written by image-builder)
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=1
set default=0

menuentry \"Ferry rescue\" {{
    linux /boot/vmlinuz {cmdline}
    initrd /boot/initrd.img /boot/site.img
}}

menuentry \"Ferry rescue (debug: verbose kernel and agent)\" {{
    linux /boot/vmlinuz {debug}
    initrd /boot/initrd.img /boot/site.img
}}
",
        debug = cmdline.replace("loglevel=4", "loglevel=7") + " ferry.debug=1"
    )
}

/// The iPXE script: URLs relative to the script's own, so the directory can be served as is
/// (TFTP or HTTP). `initrd=` lets the EFI stub find the initrd on UEFI iPXE.
pub fn ipxe_script(cmdline: &str) -> String {
    format!("#!ipxe\nkernel vmlinuz initrd=initrd.img {cmdline}\ninitrd initrd.img\nboot\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_console_is_last() {
        let c = cmdline("");
        assert!(c.find("console=tty0").unwrap() < c.find("console=ttyS0,115200").unwrap());
        assert_eq!(cmdline(" ip=dhcp "), format!("{BASE_ARGS} ip=dhcp"));
    }

    #[test]
    fn grub_cfg_loads_both_initrds() {
        let g = grub_cfg(&cmdline("ferry.appliance=https://a:8443"));
        assert!(g.contains("    linux /boot/vmlinuz console=tty0 console=ttyS0,115200 loglevel=4 panic=10 ferry.appliance=https://a:8443\n"));
        assert_eq!(
            g.matches("initrd /boot/initrd.img /boot/site.img\n")
                .count(),
            2
        );
        assert!(g.contains("loglevel=7 panic=10 ferry.appliance=https://a:8443 ferry.debug=1\n"));
        assert!(g.contains("set timeout=1\n"));
    }

    #[test]
    fn ipxe_script_is_relative() {
        assert_eq!(
            ipxe_script("x=1"),
            "#!ipxe\nkernel vmlinuz initrd=initrd.img x=1\ninitrd initrd.img\nboot\n"
        );
    }

    #[test]
    fn append_refuses_grub_metacharacters() {
        check_append("ip=192.0.2.2::192.0.2.1:24:h:eth0:none ferry.debug=1").unwrap();
        for bad in ["a;b", "$x", "a\"b", "a\nb", "{x}"] {
            assert!(check_append(bad).is_err(), "{bad}");
        }
    }
}
