//! The command line: clap types only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferry_client::cli::ConnectArgs;
use ferry_engine::restore;

#[derive(Parser)]
#[command(
    version,
    about = "Restore Ferry snapshots onto disks or image files",
    after_help = "Exit status of restore and fixup: 0 done; 1 failed; 2 bad arguments; 3 the \
                  appliance stayed unreachable or kept failing for the whole --retry-window \
                  (run again: it resumes); 4 refused before anything was written (a target too \
                  small, holding data or in use, no safe layout, a certificate the pinned CA \
                  does not vouch for, a request the appliance refused); 5 verification failed \
                  (a chunk, an index or the manifest's signature); agent: 0 when its job \
                  succeeded, else 1 (docs/configuration.md)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Restore a snapshot: fetch only what the targets lack, verify every chunk, write
    #[command(args_override_self = true)]
    Restore {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Snapshot id (`appliance snapshots`)
        #[arg(long)]
        snapshot: String,
        /// The snapshot the targets hold exactly (restored by Ferry and not changed since): apply
        /// only the chunks that differ between its index and --snapshot's, without reading the
        /// targets. Refused unless both snapshots are of the same machine with the same disk and
        /// chunk sizes and the targets are exactly the disks' sizes
        #[arg(long, value_name = "SNAPSHOT", conflicts_with_all = ["grow", "grow_lv"])]
        basis: Option<String>,
        /// DISK=DEST: a disk of the snapshot onto a block device or an image file (created if missing)
        #[arg(long = "target", required = true, value_parser = parse_target)]
        targets: Vec<(String, PathBuf)>,
        /// Print the plan and what would be fetched and written; write nothing
        #[arg(long)]
        dry_run: bool,
        /// Allow writing a target that already holds a partition table, filesystem or other data
        #[arg(long)]
        overwrite: bool,
        /// On a larger target: grow the last partition, the LVM PV and LV on it, and the filesystem
        #[arg(long)]
        grow: bool,
        /// The LV to grow with --grow, as VG/LV (default: the last LV holding a growable filesystem)
        #[arg(long, value_name = "VG/LV", requires = "grow")]
        grow_lv: Option<String>,
        /// Chunk fetches in flight
        #[arg(long, default_value_t = restore::DEFAULT_PARALLEL)]
        parallel: usize,
        /// Print a JSON summary on stdout
        #[arg(long)]
        json: bool,
    },
    /// Unattended: enroll with the appliance, wait for a job, restore, report (the rescue image's loop)
    Agent(ferry_agent::cli::AgentArgs),
    /// Make a restored system boot on its new hardware (virtio drivers, fstab, boot loader)
    Fixup {
        /// The restored system's root: a mounted Linux root or a Windows volume's root directory
        #[arg(long, required_unless_present = "disk", conflicts_with = "disk")]
        root: Option<PathBuf>,
        /// Instead of --root: the restored disks (in snapshot order, boot disk first); their
        /// partitions and LVM volumes are found, mounted, fixed in a chroot and reported on.
        #[arg(long, value_name = "DEVICE")]
        disk: Vec<PathBuf>,
        /// With --disk: the machine boots with UEFI (default: as this system was booted)
        #[arg(long, requires = "disk")]
        uefi: Option<bool>,
        /// linux, windows or auto (detect from the files under --root)
        #[arg(long, default_value = "auto")]
        os: ferry_fixup::OsChoice,
        /// The virtio driver package laid out like the virtio-win media (Windows)
        #[arg(long)]
        drivers: Option<PathBuf>,
        /// Print each change that would be made; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the changes as JSON on stdout
        #[arg(long)]
        json: bool,
        /// With --root: install the first-boot beacon with this beacon.conf (systemd systems)
        #[arg(long, value_name = "FILE", requires = "root")]
        beacon: Option<PathBuf>,
        /// The beacon program to install [default: the rescue image's /usr/lib/ferry/beacon]
        #[arg(long, value_name = "FILE", requires = "beacon")]
        beacon_program: Option<PathBuf>,
    },
}

pub fn parse_target(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((disk, dest)) if !disk.is_empty() && !dest.is_empty() => {
            Ok((disk.to_string(), PathBuf::from(dest)))
        }
        _ => Err(format!("{s:?} is not DISK=DEST (e.g. sda=/dev/vda)")),
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
