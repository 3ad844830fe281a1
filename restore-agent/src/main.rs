//! restore-agent: restores a snapshot from the appliance onto disks or image files; as PID 1 of
//! the rescue image it runs the unattended loop. Parses arguments and dispatches.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ferry_engine::restore::RestoreOptions;
use restore_agent::cli::{Cli, Cmd};

mod commands;
mod pid1;

fn main() -> ExitCode {
    if std::process::id() == 1 {
        pid1::run(); // the rescue image: ferry-init takes over, never returns
    }
    // RUST_LOG, FERRY_LOG_FORMAT=json; colour only on a terminal.
    ferry_sys::log::init(false);
    let result = match Cli::parse().cmd {
        Cmd::Agent(args) => return ferry_agent::cli::main(args),
        Cmd::Restore {
            connect,
            snapshot,
            basis,
            targets,
            dry_run,
            overwrite,
            grow,
            grow_lv,
            parallel,
            json,
        } => {
            let opts = RestoreOptions {
                snapshot,
                targets,
                overwrite,
                dry_run,
                parallel,
                quiet: json,
                grow,
                grow_lv,
                job: None,
            };
            commands::restore(&connect, &opts, basis.as_deref(), json)
        }
        Cmd::Fixup {
            root: Some(root),
            os,
            drivers,
            dry_run,
            json,
            beacon,
            beacon_program,
            ..
        } => commands::fixup(
            &root,
            os,
            drivers.as_deref(),
            commands::beacon_install(beacon.as_deref(), beacon_program),
            dry_run,
            json,
        ),
        Cmd::Fixup {
            root: None,
            disk,
            uefi,
            drivers,
            dry_run,
            json,
            ..
        } => commands::fixup_disks(&disk, uefi, drivers, dry_run, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restore-agent: error: {e:#}");
            commands::exit_status(&e).into()
        }
    }
}
