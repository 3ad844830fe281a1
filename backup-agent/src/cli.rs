//! The command line: clap types, and the engine's options they make.

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};
use ferry_client::cli::ConnectArgs;
use ferry_engine::backup::{self, BackupOptions, ConsistencyRequest, DiskSpec, LvmPolicy};
use ferry_engine::source_load::{parse_rate_limit, SourceLimits, DEFAULT_READS_IN_FLIGHT};

use crate::network::NetworkChoice;

#[derive(Parser)]
#[command(
    version,
    about = "Back up disks and disk images to a Ferry appliance",
    after_help = "Exit status: 0 done (the snapshot is committed); 1 failed; 2 bad arguments or \
                  config file; 3 the appliance stayed unreachable or kept failing (e.g. its disk \
                  is full) for the whole --retry-window: nothing was committed, run again later; \
                  4 refused (the appliance refused the token or the machine, or its certificate \
                  is not the pinned CA's); 5 verification failed (docs/configuration.md)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Back up disks; the first backup of a machine is full, later ones upload only new chunks
    #[command(args_override_self = true)]
    Backup(BackupArgs),
    /// Run as the source agent: enroll once, take sync tasks from the appliance (systemd)
    Service(crate::service::ServiceArgs),
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Machine name the snapshot belongs to
    #[arg(long)]
    pub machine: String,
    /// A block device or image file (raw, qcow2, VMDK), optionally named: [NAME=]SRC
    #[arg(long = "disk", required = true)]
    pub disks: Vec<String>,
    /// Chunk size: a power of two from 64KiB to 64MiB, in bytes or with a unit (1MiB), as
    /// `appliance sources set --chunk-size` takes it
    #[arg(long, value_name = "SIZE", default_value_t = ferry_engine::backup::DEFAULT_CHUNK_SIZE,
          value_parser = |s: &str| ferry_format::source::parse_chunk_size(s).map_err(|e| e.to_string()))]
    pub chunk_size: u32,
    /// Uploads in flight
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// zstd compression level
    #[arg(long, default_value_t = backup::DEFAULT_LEVEL)]
    pub level: i32,
    /// Cap on bytes sent per second: 300Mbit, 1Gbit, 50MB, 40MiB; off (or 0) for no cap
    #[arg(long, default_value = "300Mbit", value_name = "RATE", value_parser = rate_arg)]
    pub rate_limit: RateArg,
    /// Source reads in flight at once
    #[arg(long, default_value_t = DEFAULT_READS_IN_FLIGHT, value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub reads_in_flight: usize,
    /// Read at normal I/O priority instead of the idle class
    #[arg(long)]
    pub no_idle_io: bool,
    /// Run at normal CPU priority instead of nice 19
    #[arg(long)]
    pub no_nice: bool,
    /// Leave what is read in the page cache (default: drop it, POSIX_FADV_DONTNEED)
    #[arg(long)]
    pub no_drop_cache: bool,
    /// Print a JSON summary on stdout
    #[arg(long)]
    pub json: bool,
    /// live, point-in-time (freeze the source's filesystems for the read, or fail), or auto
    /// (point-in-time when possible, else live with a warning); the snapshot records which
    #[arg(long, default_value_t = ConsistencyRequest::Auto, value_name = "MODE")]
    pub consistency: ConsistencyRequest,
    /// A TOML file whose [hooks] pre_capture/post_capture run around the capture
    #[arg(long, value_name = "FILE")]
    pub hooks: Option<PathBuf>,
    /// Point-in-time: read LVs from LVM snapshots where the VG has room, instead of freezing
    #[arg(long)]
    pub lvm_snapshots: bool,
    /// Network configuration to record in the snapshot: auto (this system's files and NICs
    /// when a source is a block device, nothing for image files), none, or the directory where
    /// the source's root is mounted (its files only)
    #[arg(long, default_value_t = NetworkChoice::Auto, value_name = "auto|none|ROOT")]
    pub network: NetworkChoice,
}

impl BackupArgs {
    /// How light the backup is on the source.
    pub fn limits(&self) -> SourceLimits {
        SourceLimits {
            rate_bytes_per_s: self.rate_limit.0,
            reads_in_flight: self.reads_in_flight,
            idle_io: !self.no_idle_io,
            nice: !self.no_nice,
            drop_cache: !self.no_drop_cache,
        }
    }

    /// The engine's options; `--json` keeps the engine quiet.
    pub fn options(&self) -> BackupOptions {
        BackupOptions {
            machine: self.machine.clone(),
            disks: self.disks.iter().map(|d| parse_disk(d)).collect(),
            chunk_size: self.chunk_size,
            parallel: self.parallel,
            level: self.level,
            quiet: self.json,
            limits: self.limits(),
            consistency: self.consistency,
            lvm: if self.lvm_snapshots {
                LvmPolicy::Snapshot(Default::default())
            } else {
                LvmPolicy::Off
            },
            // Hooks come from --hooks, read by the command (it may fail); the network
            // configuration is gathered by the command (it reads files and sysfs).
            ..Default::default()
        }
    }
}

/// `--rate-limit`: bytes per second, `None` for no cap.
#[derive(Clone, Copy, Debug)]
pub struct RateArg(Option<u64>);

fn rate_arg(text: &str) -> Result<RateArg, String> {
    parse_rate_limit(text)
        .map(RateArg)
        .map_err(|e| format!("{e}, or 0 for no cap"))
}

/// `--disk [NAME=]SRC`: without a name (or when the part before `=` looks like a path), the
/// engine's default name for the source.
fn parse_disk(arg: &str) -> DiskSpec {
    match arg.split_once('=') {
        Some((name, path)) if !name.contains('/') => DiskSpec {
            name: name.to_string(),
            path: PathBuf::from(path),
        },
        _ => DiskSpec {
            name: backup::default_disk_name(arg.as_ref()),
            path: PathBuf::from(arg),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn limits(args: &[&str]) -> Result<SourceLimits, clap::Error> {
        parse(args).map(|a| a.limits())
    }

    fn parse(args: &[&str]) -> Result<BackupArgs, clap::Error> {
        let mut argv = vec![
            "backup-agent",
            "backup",
            "--appliance",
            "https://a",
            "--ca",
            "/dev/null",
            "--token",
            "t",
            "--machine",
            "m",
            "--disk",
            "/dev/null",
        ];
        argv.extend_from_slice(args);
        let Cmd::Backup(args) = Cli::try_parse_from(argv)?.cmd else {
            panic!("parsed as another command");
        };
        Ok(args)
    }

    #[test]
    fn network_is_auto_unless_asked() {
        let network = |args: &[&str]| parse(args).map(|a| a.network);
        assert_eq!(network(&[]).expect("default"), NetworkChoice::Auto);
        assert_eq!(
            network(&["--network", "none"]).expect("none"),
            NetworkChoice::None
        );
        assert_eq!(
            network(&["--network", "/mnt/src"]).expect("root"),
            NetworkChoice::Root("/mnt/src".into())
        );
        assert!(network(&["--network", ""]).is_err());
        // The engine's options leave it to the command, which reads files and sysfs.
        let opts = parse(&["--network", "none"]).expect("parse").options();
        assert_eq!(opts.network, None);
    }

    #[test]
    fn cli_help_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_defaults_are_the_engines_and_every_knob_turns() {
        assert_eq!(limits(&[]).expect("defaults"), SourceLimits::default());
        let cases: &[(&[&str], SourceLimits)] = &[
            (
                &["--rate-limit", "0"],
                SourceLimits {
                    rate_bytes_per_s: None,
                    ..SourceLimits::default()
                },
            ),
            (
                &["--rate-limit", "50MB", "--reads-in-flight", "1"],
                SourceLimits {
                    rate_bytes_per_s: Some(50_000_000),
                    reads_in_flight: 1,
                    ..SourceLimits::default()
                },
            ),
            (
                &["--no-idle-io", "--no-nice", "--no-drop-cache"],
                SourceLimits {
                    idle_io: false,
                    nice: false,
                    drop_cache: false,
                    ..SourceLimits::default()
                },
            ),
        ];
        for (args, want) in cases {
            assert_eq!(limits(args).expect("parse"), *want, "{args:?}");
        }
        assert_eq!(
            parse(&["--chunk-size", "1MiB"]).expect("unit").chunk_size,
            1 << 20
        );
        assert_eq!(
            parse(&["--chunk-size", "65536"]).expect("bytes").chunk_size,
            65536
        );
        assert!(parse(&["--chunk-size", "3MiB"]).is_err());
        for bad in [
            &["--rate-limit", "300Mb"][..],
            &["--reads-in-flight", "0"],
            &["--reads-in-flight", "1000"],
        ] {
            assert!(limits(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_flag_and_subcommand_has_help_text() {
        use clap::CommandFactory;
        ferry_test_support::cli::assert_documented(super::Cli::command());
    }
}
