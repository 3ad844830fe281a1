//! The command line: clap definitions and the site-argument check. Kept out of main.rs so main only
//! dispatches; `tests/cli.rs` checks the help text.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::site;

#[derive(Parser)]
#[command(
    version,
    about = "Build Ferry's rescue image (hybrid BIOS/UEFI ISO + PXE) and stamp per-site settings"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Build the ISO, PXE files, initramfs and manifest.json into an output directory
    Build {
        /// Output directory: ferry-rescue.iso, pxe/, initramfs and manifest.json
        #[arg(long)]
        out: PathBuf,
        /// A linux-image-*.deb (default: fetch bookworm-backports' linux-image-6.12.*-amd64-unsigned)
        #[arg(long)]
        kernel_deb: Option<PathBuf>,
        /// Cache for the private apt state and kernel packages (default: ~/.cache/ferry)
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Static /init binary (default: WORKSPACE/target/x86_64-unknown-linux-musl/release/restore-agent)
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Static first-boot beacon the fix-up installs in restored systems, carried as
        /// /usr/lib/ferry/beacon (default: WORKSPACE/target/x86_64-unknown-linux-musl/release/beacon;
        /// when that is missing the image carries none, with a warning)
        #[arg(long)]
        beacon: Option<PathBuf>,
        /// Static busybox for the operator shell (package busybox-static)
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// Directory holding catalog.txt (default: WORKSPACE/drivers)
        #[arg(long)]
        drivers_dir: Option<PathBuf>,
        /// Directory holding rootfs.txt (default: WORKSPACE/initramfs)
        #[arg(long)]
        initramfs_dir: Option<PathBuf>,
        /// Extra kernel arguments for the ISO and the iPXE script (e.g. "ferry.debug=1")
        #[arg(long, default_value = "")]
        append: String,
        /// mtime of every initramfs entry (default: the kernel image's date in its package)
        #[arg(long, env = "SOURCE_DATE_EPOCH")]
        source_date_epoch: Option<u64>,
        /// The virtio-win ISO or its unpacked tree: the image carries its viostor, vioscsi, NetKVM
        /// and Balloon drivers (.inf/.cat/.sys, every Windows version and architecture) for the
        /// Windows fix-up
        #[arg(long, value_name = "PATH")]
        virtio_win: Option<PathBuf>,
        /// Firmware files for the shipped modules (`modinfo -F firmware`), from Debian's firmware
        /// packages: none; common (bnx2, bnx2x, intel-misc, misc-nonfree, qlogic, realtek); all (also
        /// cavium, myricom, netronome, netxen, linux-free)
        #[arg(long, value_enum, default_value = "common")]
        firmware: crate::firmware::Level,
        /// A firmware-*.deb to take firmware from instead of fetching the --firmware packages
        /// (repeatable; for offline builds)
        #[arg(long, value_name = "DEB")]
        firmware_deb: Vec<PathBuf>,
        #[command(flatten)]
        site: SiteArgs,
    },
    /// Copy a built ISO or PXE initrd and stamp site settings and/or add virtio-win to the copy
    Customize {
        /// ISO to customize: its /boot/site.img embed area is overwritten in place
        #[arg(long, required_unless_present = "initrd", conflicts_with = "initrd")]
        iso: Option<PathBuf>,
        /// PXE initrd to customize: the site cpio is appended
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// The customized copy to write (the input is never changed)
        #[arg(long)]
        out: PathBuf,
        /// The virtio-win ISO or its unpacked tree: its drivers are appended to the copy's initrd
        /// (written next to OUT as OUT.virtio-win.json)
        #[arg(long, value_name = "PATH")]
        virtio_win: Option<PathBuf>,
        #[command(flatten)]
        site: SiteArgs,
    },
}

/// Per-site settings; appliance, CA and token go together.
#[derive(Args)]
pub struct SiteArgs {
    /// Appliance URL (https://HOST[:PORT])
    #[arg(long, requires_all = ["ca", "token"])]
    appliance: Option<String>,
    /// PEM file with the appliance's CA certificate
    #[arg(long, requires_all = ["appliance", "token"])]
    ca: Option<PathBuf>,
    /// Enrollment token for the appliance
    #[arg(long, requires_all = ["appliance", "ca"])]
    token: Option<String>,
    /// Network setup in dracut `ip=` syntax (repeatable), e.g. dhcp or IP::GW:MASK:HOST:IFACE:none
    #[arg(long)]
    ip: Vec<String>,
    /// DNS server (repeatable)
    #[arg(long)]
    nameserver: Vec<String>,
}

impl SiteArgs {
    pub fn load(&self) -> Result<Option<site::Site>> {
        match (&self.appliance, &self.ca, &self.token) {
            (Some(a), Some(c), Some(t)) => {
                Ok(Some(site::Site::new(a, c, t, &self.ip, &self.nameserver)?))
            }
            _ if !self.ip.is_empty() || !self.nameserver.is_empty() => {
                anyhow::bail!("use --ip/--nameserver: they need --appliance, --ca and --token")
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_flag_and_subcommand_has_help_text() {
        use clap::CommandFactory;
        ferry_test_support::cli::assert_documented(super::Cli::command());
    }
}
