//! restore-agent: restores a snapshot from the appliance onto disks or image files. The same
//! engine runs as PID 1 of the rescue image. Parses arguments and dispatches to ferry-engine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_client::cli::ConnectArgs;
use ferry_engine::restore::{self, RestoreOptions};

mod pid1;

#[derive(Parser)]
#[command(version, about = "Restore Ferry snapshots onto disks or image files")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Restore a snapshot: fetch only what the targets lack, verify every chunk, write
    #[command(args_override_self = true)]
    Restore {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Snapshot id (`appliance snapshots`)
        #[arg(long)]
        snapshot: String,
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
        #[arg(long, requires = "grow")]
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
}

fn parse_target(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((disk, dest)) if !disk.is_empty() && !dest.is_empty() => Ok((disk.to_string(), PathBuf::from(dest))),
        _ => Err(format!("{s:?} is not DISK=DEST (e.g. sda=/dev/vda)")),
    }
}

fn main() -> ExitCode {
    if std::process::id() == 1 {
        pid1::run(); // the rescue image: ferry-init takes over, never returns
    }
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    let (connect, opts, json) = match Cli::parse().cmd {
        Cmd::Agent(args) => return ferry_agent::cli::main(args),
        Cmd::Restore { connect, snapshot, targets, dry_run, overwrite, grow, grow_lv, parallel, json } => {
            (connect, RestoreOptions { snapshot, targets, overwrite, dry_run, parallel, quiet: json, grow, grow_lv }, json)
        }
    };
    match run(&connect, &opts, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restore-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(connect: &ConnectArgs, opts: &RestoreOptions, json: bool) -> anyhow::Result<()> {
    let client = connect.client(opts.parallel + 1)?;
    let plan = restore::plan(&client, opts)?;
    eprintln!("{plan}");
    let s = restore::apply(&client, &plan, opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let verb = if s.dry_run { "would fetch" } else { "fetched" };
        eprintln!(
            "snapshot {}: {verb} {} chunks ({} bytes), {} already present, {} zero chunks skipped, {} zeroed; {} bytes written in {:.1}s ({:.0} MB/s)",
            s.snapshot, s.chunks_fetched, s.bytes_fetched, s.chunks_present, s.chunks_zero_skipped, s.chunks_zero_written, s.bytes_written, s.seconds, s.mb_per_s
        );
    }
    Ok(())
}
