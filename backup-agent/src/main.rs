//! backup-agent: reads a server's disks (or disk images) and stores them as a snapshot on the
//! appliance. Parses arguments and dispatches to ferry-engine ([`commands`]).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Cmd};

mod cli;
mod commands;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let result = match Cli::parse().cmd {
        Cmd::Backup(args) => commands::backup(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backup-agent: error: {e:#}");
            commands::exit_code(&e)
        }
    }
}
