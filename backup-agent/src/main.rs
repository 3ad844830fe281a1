//! backup-agent: reads a server's disks (or disk images) and stores them as a snapshot on the
//! appliance. Parses arguments and dispatches to ferry-engine.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_client::cli::ConnectArgs;
use ferry_client::ClientError;
use ferry_engine::backup::{self, BackupOptions, DiskSpec};
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
    } = Cli::parse().cmd;
    let disks = disks.iter().map(|d| parse_disk(d)).collect();
    let opts = BackupOptions {
        machine,
        disks,
        chunk_size,
        parallel,
        level,
        quiet: json,
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
            eprintln!(
                "snapshot {}: read {} bytes in {:.1}s; {} chunks ({} zero), {} new uploaded ({} bytes), {} already stored",
                s.snapshot, s.bytes_read, s.seconds, s.chunks_total, s.chunks_zero, s.chunks_new, s.bytes_uploaded, s.chunks_present
            );
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
