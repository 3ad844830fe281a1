//! backup-agent: reads a server's disks (or disk images) and stores them as a snapshot on the
//! appliance. Parses arguments and dispatches to ferry-engine.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use ferry_client::cli::ConnectArgs;
use ferry_client::ClientError;
use ferry_engine::backup::{self, BackupOptions, BackupSummary, DiskSpec};
use ferry_engine::source_load::{parse_rate_limit, SourceLimits, DEFAULT_READS_IN_FLIGHT};
use ferry_engine::EngineError;

#[derive(Parser)]
#[command(
    version,
    about = "Back up disks and disk images to a Ferry appliance",
    after_help = "Exit status: 0 the snapshot is committed; 1 the backup failed; 2 bad arguments; \
                  3 the appliance stayed unreachable or kept failing (e.g. its disk is full) for \
                  the whole --retry-window: nothing was committed, run again later"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Back up disks; the first backup of a machine is full, later ones upload only new chunks
    #[command(args_override_self = true)]
    Backup {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Machine name the snapshot belongs to
        #[arg(long)]
        machine: String,
        /// A block device or image file (raw, qcow2, VMDK), optionally named: [NAME=]SRC
        #[arg(long = "disk", required = true)]
        disks: Vec<String>,
        /// Chunk size in bytes (power of two, 64 KiB to 64 MiB)
        #[arg(long, default_value_t = ferry_engine::backup::DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        /// Uploads in flight
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// zstd compression level
        #[arg(long, default_value_t = backup::DEFAULT_LEVEL)]
        level: i32,
        /// Cap on bytes sent per second: 300Mbit, 1Gbit, 50MB, 40MiB; 0 for no cap
        #[arg(long, default_value = "300Mbit", value_name = "RATE", value_parser = rate_arg)]
        rate_limit: RateArg,
        /// Source reads in flight at once
        #[arg(long, default_value_t = DEFAULT_READS_IN_FLIGHT, value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
        reads_in_flight: usize,
        /// Read at normal I/O priority instead of the idle class
        #[arg(long)]
        no_idle_io: bool,
        /// Run at normal CPU priority instead of nice 19
        #[arg(long)]
        no_nice: bool,
        /// Leave what is read in the page cache (default: drop it, POSIX_FADV_DONTNEED)
        #[arg(long)]
        no_drop_cache: bool,
        /// Print a JSON summary on stdout
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let Cmd::Backup {
        connect,
        machine,
        disks,
        chunk_size,
        parallel,
        level,
        json,
        rate_limit,
        reads_in_flight,
        no_idle_io,
        no_nice,
        no_drop_cache,
    } = Cli::parse().cmd;
    let limits = SourceLimits {
        rate_bytes_per_s: rate_limit.0,
        reads_in_flight,
        idle_io: !no_idle_io,
        nice: !no_nice,
        drop_cache: !no_drop_cache,
    };
    let disks = disks.iter().map(|d| parse_disk(d)).collect();
    let opts = BackupOptions {
        machine,
        disks,
        chunk_size,
        parallel,
        level,
        quiet: json,
        limits,
    };
    let result = connect
        .client(parallel + 1)
        .map_err(anyhow::Error::from)
        .and_then(|client| backup::backup(&client, &opts).map_err(anyhow::Error::from));
    match result {
        Ok(s) if json => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(s) => {
            eprintln!("{}", summary_line(&s));
            println!("{}", s.snapshot);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("backup-agent: error: {e:#}");
            exit_code(&e)
        }
    }
}

/// 3 when retrying for the whole window did not help (a scheduler may try again later), else 1.
/// Clap exits with 2 on bad arguments.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    let gave_up = match e.downcast_ref::<EngineError>() {
        Some(EngineError::Client(c)) => c.gave_up_retrying(),
        _ => e
            .downcast_ref::<ClientError>()
            .is_some_and(ClientError::gave_up_retrying),
    };
    ExitCode::from(if gave_up { 3 } else { 1 })
}

/// `--rate-limit`: bytes per second, `None` for no cap.
#[derive(Clone, Copy, Debug)]
struct RateArg(Option<u64>);

fn rate_arg(text: &str) -> Result<RateArg, String> {
    parse_rate_limit(text)
        .map(RateArg)
        .map_err(|e| format!("{e}, or 0 for no cap"))
}

fn summary_line(s: &BackupSummary) -> String {
    format!(
        "snapshot {}: read {} bytes in {:.1}s; {} chunks ({} zero), {} new uploaded ({} bytes), \
         {} already stored; sent {} bytes; agent CPU {:.2}s, peak RSS {} MiB",
        s.snapshot,
        s.bytes_read,
        s.seconds,
        s.chunks_total,
        s.chunks_zero,
        s.chunks_new,
        s.bytes_uploaded,
        s.chunks_present,
        s.bytes_sent,
        s.cpu_seconds,
        s.peak_rss_bytes >> 20
    )
}

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
        let Cmd::Backup {
            rate_limit,
            reads_in_flight,
            no_idle_io,
            no_nice,
            no_drop_cache,
            ..
        } = Cli::try_parse_from(argv)?.cmd;
        Ok(SourceLimits {
            rate_bytes_per_s: rate_limit.0,
            reads_in_flight,
            idle_io: !no_idle_io,
            nice: !no_nice,
            drop_cache: !no_drop_cache,
        })
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
        for bad in [
            &["--rate-limit", "300Mb"][..],
            &["--reads-in-flight", "0"],
            &["--reads-in-flight", "1000"],
        ] {
            assert!(limits(bad).is_err(), "{bad:?} accepted");
        }
    }
}
