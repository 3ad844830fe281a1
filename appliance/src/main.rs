//! `appliance`: parses the command line ([`cli`]) and dispatches to `ferry_server`'s commands,
//! on the store directory (`--data`) or on a remote appliance's admin API (`--appliance`,
//! [`remote`]).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use appliance::cli::{At, Cli, Cmd, JobsCmd, SnapshotsCmd, TokenCmd, WebhookCmd};
use appliance::config::{self, process_env, FileLayer, Place, TokenFrom};
use appliance::{remote, webhook};
use clap::Parser;
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
            appliance::exit::exit_status(&e).into()
        }
    }
}

fn system_config(at: &At) -> Result<FileLayer, config::ConfigError> {
    FileLayer::load(at.config.as_deref(), &process_env)
}

/// The store directory, for the commands that only run on the appliance host.
fn local_dir(at: &At, what: &str) -> Result<PathBuf> {
    if at.appliance.is_some() {
        bail!("`appliance {what}` works on the appliance host only: run it there with --data DIR");
    }
    Ok(system_config(at)?
        .data_dir(at.data.as_deref(), &process_env)?
        .dir)
}

/// Where the other commands run: a store directory on this host, or a remote appliance.
fn admin(at: &At) -> Result<Box<dyn Admin>> {
    let cli_file = || match config::cli_file_path(&process_env) {
        Some(p) => config::CliFile::load(&p),
        None => Ok(None),
    };
    match config::place(at, &process_env, || system_config(at), cli_file)? {
        Place::Remote(r) => {
            let token = match r.token {
                Some(TokenFrom::Given(t)) => Some(t),
                Some(TokenFrom::File(p)) => Some(config::read_token_file(&p)?),
                None => None,
            };
            Ok(Box::new(remote::Remote::connect(
                &r.url,
                r.ca.as_deref(),
                token.as_deref(),
            )?))
        }
        Place::Local(d) => Ok(Box::new(Store::open(&d.dir).with_context(|| {
            format!("open the store {} ({})", d.dir.display(), d.hint())
        })?)),
    }
}

fn run(cmd: Cmd, at: &At) -> Result<()> {
    match cmd {
        Cmd::Init {
            names,
            storage,
            records,
            json,
        } => {
            let backends = appliance::storage::backends_from_args(storage, records)?;
            commands::init(&local_dir(at, "init")?, &names, &backends, json)
        }
        Cmd::MoveStore {
            to,
            storage,
            records,
            dry_run,
            json,
        } => {
            let backends = appliance::storage::backends_from_args(storage, records)?;
            commands::move_store(&local_dir(at, "move-store")?, &to, &backends, dry_run, json)
        }
        Cmd::Serve {
            listen,
            gc_every,
            limits,
        } => {
            let data = local_dir(at, "serve")?;
            let s = system_config(at)?.serve(&process_env, listen, gc_every, limits)?;
            commands::serve(&data, s.listen, s.gc_every, s.limits)
        }
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
