//! What the subcommand does, in terms of the libraries, and what the process exits with.

use std::process::ExitCode;

use ferry_client::ClientError;
use ferry_engine::backup::{self, BackupSummary};
use ferry_engine::EngineError;

use crate::cli::BackupArgs;
use crate::hooks_config::Hooks;
use crate::network;

/// Back up, then print the summary: JSON on stdout with `--json`, else a line on stderr and the
/// snapshot id on stdout.
pub fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    let mut opts = args.options();
    if let Some(path) = &args.hooks {
        opts.hooks = Hooks::load(path)?.capture();
    }
    let client = args.connect.client(args.parallel + 1)?;
    opts.network = network::gather(&args.network, &opts.disks);
    if opts.consistency != backup::ConsistencyRequest::Live {
        // A previous run killed mid-capture may have left filesystems frozen or snapshots.
        backup::recover_capture(&opts.run_dir);
    }
    let s = backup::backup(&client, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
    } else {
        eprintln!("{}", summary_line(&s));
        println!("{}", s.snapshot);
    }
    Ok(())
}

/// 3 when retrying for the whole window did not help (a scheduler may try again later), else 1.
/// Clap exits with 2 on bad arguments.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    let gave_up = match e.downcast_ref::<EngineError>() {
        Some(EngineError::Client(c)) => c.gave_up_retrying(),
        _ => e
            .downcast_ref::<ClientError>()
            .is_some_and(ClientError::gave_up_retrying),
    };
    ExitCode::from(if gave_up { 3 } else { 1 })
}

fn summary_line(s: &BackupSummary) -> String {
    format!(
        "snapshot {} ({}): read {} bytes in {:.1}s; {} chunks ({} zero), {} new uploaded ({} \
         bytes), {} already stored; sent {} bytes; agent CPU {:.2}s, peak RSS {} MiB; {} \
         network interfaces recorded",
        s.snapshot,
        s.consistency,
        s.bytes_read,
        s.seconds,
        s.chunks_total,
        s.chunks_zero,
        s.chunks_new,
        s.bytes_uploaded,
        s.chunks_present,
        s.bytes_sent,
        s.cpu_seconds,
        s.peak_rss_bytes >> 20,
        s.network_interfaces
    )
}
