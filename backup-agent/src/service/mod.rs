//! `backup-agent service`: the long-running source agent (docs/migration.md, "The source
//! agent"). It dials out to the appliance with the pinned CA (the source opens no port),
//! enrolls once with a backup token, then long-polls sync tasks with its own credential and runs
//! them, until SIGTERM. Started by `packaging/systemd/ferry-backup-agent.service`.
//!
//! Steps: [`Config::load`] (everything checked before anything else happens) → the state
//! directory → the credential ([`credential`]: kept, or enrolled once) → the task loop
//! ([`run::TaskLoop`]) on a worker thread, while this thread waits for the loop's end or a
//! signal ([`stop_now`]).
//!
//! Survives: a network cut or appliance restart shorter than `retry_window` is absorbed by the
//! client's retries (the sync goes on; chunks already sent are not sent again); a longer one
//! fails the task and the loop backs off with jitter, then takes the next task as usual.
//! SIGTERM/SIGINT: no new task is taken; a sync in flight is abandoned (reported failed; its
//! snapshot was never committed, so nothing of it is visible; the appliance drops the open
//! session when it has been idle for its limit) and the process exits 0.

pub mod config;
mod hooks;
mod live;
pub mod run;
mod state;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use ferry_client::{Client, ClientConfig, ClientError};
use ferry_format::source::{SourceEnrollRequest, TaskState};

use config::Config;
use live::{Machine, Remote};
use run::{Shared, TaskLoop};

/// How long a task poll waits on the appliance.
const TASK_WAIT: Duration = Duration::from_secs(30);
/// How long the stop path tries to tell the appliance that the task in flight was abandoned.
const STOP_REPORT_WINDOW: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct ServiceArgs {
    /// The service's config file (docs/configuration.md lists every key) [default:
    /// /etc/ferry/agent.toml, else /etc/ferry/backup-agent.toml if only that exists]
    #[arg(long, value_name = "FILE", env = "FERRY_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the config file (CA, disks, hooks) and the kept credential, then exit
    #[arg(long)]
    pub check: bool,
}

/// What the worker thread and the signal path share.
struct Service {
    config: Config,
    /// The appliance with no credential yet (the pinned CA, the retry window).
    base: Client,
    shared: Shared,
    /// Set once enrolled (or read from the state directory).
    credential: OnceLock<String>,
}

enum Event {
    Ended(Result<()>),
    Signal(i32),
}

/// Run the service until SIGTERM (`Ok`: exit 0) or an error retrying cannot fix.
pub fn run(args: &ServiceArgs) -> Result<()> {
    let path = config::config_path(args.config.as_deref(), Path::exists);
    let config = Config::load(&path)?;
    tracing::info!(
        "backup-agent {} service: machine {}, appliance {} (CA {}), disks {}, state {}",
        env!("CARGO_PKG_VERSION"),
        config.machine,
        config.appliance,
        config.ca.display(),
        config
            .disks
            .iter()
            .map(|d| format!("{}={}", d.name, d.path.display()))
            .collect::<Vec<_>>()
            .join(", "),
        config.state_dir.display()
    );
    if args.check {
        let kept = state::read_credential(&config.credential_path(), &config.machine)?;
        println!(
            "{}: valid; {}",
            config.path.display(),
            if kept.is_some() {
                "enrolled"
            } else {
                "not enrolled yet (enroll_token_file is read at the first start)"
            }
        );
        return Ok(());
    }
    state::ensure_dir(&config.state_dir)?;
    // A previous run killed mid-capture may have left filesystems frozen or snapshots behind.
    ferry_engine::backup::recover_capture(std::path::Path::new(
        ferry_engine::backup::DEFAULT_RUN_DIR,
    ));
    let base = Client::new(ClientConfig {
        url: config.appliance.clone(),
        trust: config.trust.clone(),
        token: String::new(),
        retry_window: config.retry_window,
        connections: live::CONNECTIONS,
    })?;
    let service = Arc::new(Service {
        config,
        base,
        shared: Shared::default(),
        credential: OnceLock::new(),
    });
    let (tx, rx) = mpsc::channel();
    watch_signals(tx.clone())?;
    let worker = Arc::clone(&service);
    std::thread::Builder::new()
        .name("tasks".into())
        .spawn(move || {
            let _ = tx.send(Event::Ended(work(&worker)));
        })
        .context("start the task loop's thread")?;
    match rx.recv() {
        Ok(Event::Ended(result)) => result,
        Ok(Event::Signal(sig)) => {
            stop_now(&service, sig);
            Ok(())
        }
        Err(_) => Err(anyhow!("the task loop's thread ended without a word")),
    }
}

/// A thread that turns SIGTERM/SIGINT into an [`Event::Signal`].
fn watch_signals(tx: mpsc::Sender<Event>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("install the SIGTERM handler")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = tx.send(Event::Signal(sig));
            }
        })
        .context("start the signal thread")?;
    Ok(())
}

/// Enroll if needed, then take tasks until stopped.
fn work(s: &Service) -> Result<()> {
    let Some(credential) = credential(s)? else {
        return Ok(());
    };
    let credential = s.credential.get_or_init(|| credential);
    let app = Remote {
        client: s.base.with_token(credential),
        machine: s.config.machine.clone(),
    };
    let client = s.base.with_token(credential);
    let machine = Machine {
        config: &s.config,
        client: &client,
    };
    tracing::info!("taking sync tasks from {}", s.config.appliance);
    TaskLoop::new(&app, &machine, &s.shared, TASK_WAIT)
        .run(jitter)
        .map_err(|e| explain(s, e))
}

/// The kept credential, or a new one from enrolling with the token (`None`: stopped first).
fn credential(s: &Service) -> Result<Option<String>> {
    let c = &s.config;
    let path = c.credential_path();
    if let Some(kept) = state::read_credential(&path, &c.machine)? {
        tracing::info!("enrolled: using the credential in {}", path.display());
        return Ok(Some(kept));
    }
    let token_file = c.enroll_token_file.as_ref().ok_or_else(|| {
        anyhow!(
            "{} does not exist and {} sets no enroll_token_file: create a backup token for this \
             machine (`appliance token create --role backup --machine {}`), write it to a file \
             only root can read and name that file in enroll_token_file",
            path.display(),
            c.path.display(),
            c.machine
        )
    })?;
    let token = std::fs::read_to_string(token_file)
        .with_context(|| {
            format!(
                "read the enroll token {} (key `enroll_token_file` in {}): put the backup token \
                 for machine {} there",
                token_file.display(),
                c.path.display(),
                c.machine
            )
        })?
        .trim()
        .to_string();
    let req = SourceEnrollRequest {
        machine: c.machine.clone(),
        inventory: None,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let enroller = s.base.with_token(&token);
    let mut failures = 0;
    let reply = loop {
        match enroller.enroll_source(&req) {
            Ok(r) => break r,
            Err(e) if e.gave_up_retrying() => {
                failures += 1;
                let pause = run::backoff(failures, jitter());
                tracing::warn!("enroll: {e}; trying again in {:.0}s", pause.as_secs_f64());
                if s.shared.sleep(pause) {
                    return Ok(None);
                }
            }
            Err(e) => {
                return Err(explain(s, e).context(format!(
                    "enroll source {} with the token in {}",
                    c.machine,
                    token_file.display()
                )))
            }
        }
    };
    state::check(&path, &reply.credential, &c.machine)
        .context("the appliance's enrollment answer")?;
    state::write_credential(&path, &reply.credential)?;
    tracing::info!(
        "enrolled source {}: credential kept in {} (0600); the token in {} is no longer needed \
         and may be revoked",
        c.machine,
        path.display(),
        token_file.display()
    );
    Ok(Some(reply.credential))
}

/// An error the loop cannot retry, with what the operator should check.
fn explain(s: &Service, e: ClientError) -> anyhow::Error {
    let c = &s.config;
    let hint = match &e {
        ClientError::Certificate { .. } => format!(
            "the appliance {} is not the one the CA file {} vouches for (key `ca` in {}): give \
             that appliance's ca.pem",
            c.appliance,
            c.ca.display(),
            c.path.display()
        ),
        ClientError::Refused {
            status: 401 | 403, ..
        } => format!(
            "the appliance refused this source's credentials: if the source was enrolled again \
             elsewhere or its record removed, delete {} and start the service with a new backup \
             token in enroll_token_file",
            c.credential_path().display()
        ),
        _ => "the service stops: check the appliance's log, fix the cause and start it again"
            .to_string(),
    };
    anyhow::Error::new(e).context(hint)
}

/// SIGTERM/SIGINT: take no more tasks; abandon the one in flight (report it failed; after a
/// cutover's `pre_cutover`, run `post_cutover_abort` so the source serves again).
fn stop_now(s: &Service, sig: i32) {
    s.shared.stop();
    let Some(task) = s.shared.task_in_flight() else {
        tracing::info!("signal {sig}: stopping (no task in flight)");
        return;
    };
    tracing::warn!("signal {sig}: stopping: abandoning task {task}");
    if let Some(cred) = s.credential.get() {
        let state = TaskState::Failed {
            reason: format!(
                "backup-agent on {} was stopped (signal {sig}) during the sync: nothing of it \
                 was committed; the next sync starts from the schedule",
                s.config.machine
            ),
        };
        let client = s
            .base
            .with_token(cred)
            .with_retry_window(STOP_REPORT_WINDOW);
        if let Err(e) = client.set_source_task_state(&s.config.machine, &task, &state) {
            tracing::warn!("task {task}: could not report it abandoned: {e}");
        }
    }
    if s.shared.claim_abort() {
        let client = s.base.with_token("");
        let machine = Machine {
            config: &s.config,
            client: &client,
        };
        if let Err(f) = run::Source::hook(&machine, config::HookMoment::PostCutoverAbort) {
            tracing::error!("cutover aborted by signal {sig}: {}", f.reason);
        }
    }
}

/// A number in [0, 1) that differs between calls and between machines.
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let h = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (h >> 11) as f64 / (1u64 << 53) as f64
}
