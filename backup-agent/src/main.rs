//! backup-agent: reads a server's disks (or disk images) and stores them as a snapshot on the
//! appliance. Parses arguments and dispatches: a one-shot backup ([`commands`]), or the
//! long-running source agent ([`service`]).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use backup_agent::cli::{Cli, Cmd};
use backup_agent::{commands, service};
use clap::Parser;

fn main() -> ExitCode {
    // RUST_LOG, FERRY_LOG_FORMAT=json; colour only on a terminal.
    ferry_sys::log::init(false);
    let result = match Cli::parse().cmd {
        Cmd::Backup(args) => commands::backup(&args),
        Cmd::Service(args) => service::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backup-agent: error: {e:#}");
            commands::exit_status(&e).into()
        }
    }
}
