//! `beacon`: the first-boot beacon the fix-up installs in a restored system (docs/migration.md,
//! "Cutover" step 2). It reads `/etc/ferry/beacon.conf`, tells the appliance once that the
//! system is up with its network (`POST /beacon` over TLS pinned to the appliance's CA), then
//! removes its config and credential, its systemd unit and link, and itself.
//!
//! Exit status: 0 when reported, or when the appliance says the credential is spent or unknown
//! (401/410: nothing more to do, files removed); 1 when it gave up or was refused otherwise
//! (files kept, so the next boot tries again). It never waits longer than `--give-up-after`.
//! `--root DIR` runs it on a system tree that is not the running one (tests).

#![forbid(unsafe_code)]

mod cli;
mod report;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // RUST_LOG, FERRY_LOG_FORMAT=json (the client's retries log); the journal gets plain text.
    ferry_sys::log::init(false);
    let outcome = report::run(&cli.settings(), &mut |line| eprintln!("beacon: {line}"));
    match outcome {
        report::Outcome::Reported | report::Outcome::Spent => ExitCode::SUCCESS,
        report::Outcome::Kept => ExitCode::FAILURE,
    }
}
