//! `appliance`: parses the command line ([`cli`]) and dispatches to `ferry_server::commands`.

#![forbid(unsafe_code)]

mod cli;
mod migrations;
mod sources;
mod webhook;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Cmd, JobsCmd, TokenCmd, WebhookCmd};
use ferry_server::{commands, job_commands as jobs, token_commands as tokens};

fn main() -> ExitCode {
    commands::init_logging();
    let result = match Cli::parse().cmd {
        Cmd::Init { data, names, json } => commands::init(&data, &names, json),
        Cmd::Serve {
            data,
            listen,
            gc_every,
            limits,
        } => commands::serve(&data, listen, gc_every, limits.resolve()),
        Cmd::Token(TokenCmd::Create {
            data,
            role,
            machines,
            all_machines,
            expires,
            name,
            json,
        }) => tokens::token_create(
            &data,
            role,
            tokens::CreateArgs {
                machines,
                all_machines,
                expires,
                name,
                json,
            },
        ),
        Cmd::Token(TokenCmd::List { data, json }) => tokens::token_list(&data, json),
        Cmd::Webhook(WebhookCmd::Set {
            data,
            url,
            secret_file,
            ca,
            attempts,
            backoff,
        }) => webhook::set(&data, url, secret_file.as_deref(), ca, attempts, &backoff),
        Cmd::Webhook(WebhookCmd::Show { data }) => webhook::show(&data),
        Cmd::Webhook(WebhookCmd::Remove { data }) => webhook::remove(&data),
        Cmd::Webhook(WebhookCmd::Test { data }) => webhook::test(&data),
        Cmd::Token(TokenCmd::Revoke { data, id }) => tokens::token_revoke(&data, &id),
        Cmd::Snapshots {
            data,
            machine,
            json,
        } => commands::snapshots(&data, machine.as_deref(), json),
        Cmd::Prune {
            data,
            machine,
            keep,
            keep_within,
            dry_run,
        } => commands::prune(
            &data,
            &commands::PruneArgs {
                machine,
                keep: keep.into(),
                keep_within,
                dry_run,
            },
        ),
        Cmd::Store { data, json } => commands::store_usage(&data, json),
        Cmd::Gc { data, json } => commands::gc(&data, json),
        Cmd::Verify {
            data,
            rate,
            resume,
            restart,
            json,
        } => commands::verify(&data, rate, resume, restart, json),
        Cmd::Agents(a) => a.dispatch(),
        Cmd::Jobs(JobsCmd::List { data, json }) => jobs::jobs_list(&data, json),
        Cmd::Jobs(JobsCmd::Show { data, id, json }) => jobs::jobs_show(&data, &id, json),
        Cmd::Jobs(JobsCmd::Create(c)) => c.dispatch(),
        Cmd::Sources(s) => s.dispatch(),
        Cmd::Migrations(m) => m.dispatch(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
