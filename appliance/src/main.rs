//! `appliance`: parses the command line ([`cli`]) and dispatches to `ferry_server`'s commands,
//! on the store directory (`--data`) or on a remote appliance's admin API (`--appliance`,
//! [`remote`]).

#![forbid(unsafe_code)]

mod cli;
mod migrations;
mod remote;
mod sources;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{At, Cli, Cmd, JobsCmd, SnapshotsCmd, TokenCmd, WebhookCmd};
use ferry_format::admin::PruneRequest;
use ferry_server::ops::Admin;
use ferry_server::{commands, job_commands as jobs, token_commands as tokens};
use ferry_store::Store;

fn main() -> ExitCode {
    commands::init_logging();
    let cli = Cli::parse();
    match run(cli.cmd, &cli.at) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The store directory, for the commands that only run on the appliance host.
fn local_dir(at: &At, what: &str) -> Result<PathBuf> {
    if at.appliance.is_some() {
        bail!("`appliance {what}` works on the appliance host only: run it there with --data DIR");
    }
    at.data
        .clone()
        .with_context(|| format!("give the store directory: appliance {what} --data DIR"))
}

/// Where the other commands run: the store at `--data`, or the appliance at `--appliance`.
fn admin(at: &At) -> Result<Box<dyn Admin>> {
    match (&at.appliance, &at.data) {
        (Some(url), _) => Ok(Box::new(remote::Remote::connect(
            url,
            at.ca.as_deref(),
            at.token.as_deref(),
        )?)),
        (None, Some(dir)) => Ok(Box::new(
            Store::open(dir).with_context(|| format!("open the store {}", dir.display()))?,
        )),
        (None, None) => bail!(
            "give the store directory (--data DIR, on the appliance host) or a remote appliance (--appliance URL --ca FILE, with an admin token in FERRY_TOKEN)"
        ),
    }
}

fn run(cmd: Cmd, at: &At) -> Result<()> {
    match cmd {
        Cmd::Init { names, json } => commands::init(&local_dir(at, "init")?, &names, json),
        Cmd::Serve {
            listen,
            gc_every,
            limits,
        } => commands::serve(&local_dir(at, "serve")?, listen, gc_every, limits.resolve()),
        Cmd::Verify {
            rate,
            resume,
            restart,
            json,
        } => commands::verify(&local_dir(at, "verify")?, rate, resume, restart, json),
        Cmd::Webhook(w) => {
            let data = local_dir(at, "webhook")?;
            match w {
                WebhookCmd::Set {
                    url,
                    secret_file,
                    ca,
                    attempts,
                    backoff,
                } => webhook::set(&data, url, secret_file.as_deref(), ca, attempts, &backoff),
                WebhookCmd::Show => webhook::show(&data),
                WebhookCmd::Remove => webhook::remove(&data),
                WebhookCmd::Test => webhook::test(&data),
            }
        }
        Cmd::Token(TokenCmd::Create {
            role,
            machines,
            all_machines,
            expires,
            name,
            json,
        }) => tokens::token_create(
            admin(at)?.as_ref(),
            role,
            tokens::CreateArgs {
                machines,
                all_machines,
                expires,
                name,
                json,
            },
        ),
        Cmd::Token(TokenCmd::List { json }) => tokens::token_list(admin(at)?.as_ref(), json),
        Cmd::Token(TokenCmd::Revoke { id }) => tokens::token_revoke(admin(at)?.as_ref(), &id),
        Cmd::Snapshots(s) => match s.cmd {
            None => commands::snapshots(admin(at)?.as_ref(), s.machine.as_deref(), s.json),
            Some(SnapshotsCmd::Delete { id }) => {
                commands::snapshot_delete(admin(at)?.as_ref(), &id)
            }
        },
        Cmd::Prune {
            machine,
            keep,
            keep_within,
            dry_run,
        } => commands::prune(
            admin(at)?.as_ref(),
            &machine,
            &PruneRequest {
                keep: keep.into(),
                keep_within,
                dry_run,
            },
        ),
        Cmd::Store { json } => commands::store_usage(admin(at)?.as_ref(), json),
        Cmd::Gc { status: true, json } => commands::gc_status(admin(at)?.as_ref(), json),
        Cmd::Gc {
            status: false,
            json,
        } => commands::gc(admin(at)?.as_ref(), json),
        Cmd::Agents(a) => a.dispatch(admin(at)?.as_ref()),
        Cmd::Jobs(JobsCmd::List { json }) => jobs::jobs_list(admin(at)?.as_ref(), json),
        Cmd::Jobs(JobsCmd::Show { id, json }) => jobs::jobs_show(admin(at)?.as_ref(), &id, json),
        Cmd::Jobs(JobsCmd::Cancel { id }) => jobs::jobs_cancel(admin(at)?.as_ref(), &id),
        Cmd::Jobs(JobsCmd::Create(c)) => {
            let json = c.json;
            let req = c.request()?;
            jobs::jobs_create(admin(at)?.as_ref(), &req, json)
        }
        Cmd::Sources(s) => s.dispatch(admin(at)?.as_ref()),
        Cmd::Migrations(m) => m.dispatch(admin(at)?.as_ref()),
    }
}
