//! `restore-agent agent`: the unattended loop on an ordinary host. `--root` points the agent at
//! another /sys, /proc and /dev (tests: a directory tree with image files for disks). The host is
//! never rebooted: the job's `then` is only printed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ferry_client::cli::ConnectArgs;
use ferry_format::agent::Then;

use crate::{run, AgentConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Where /sys, /proc and /dev are read (a seam for tests)
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Stop after the first job, succeeded or failed (exit status 0 only on success)
    #[arg(long)]
    pub once: bool,
    /// Chunk fetches in flight
    #[arg(long, default_value_t = ferry_engine::restore::DEFAULT_PARALLEL)]
    pub parallel: usize,
}

pub fn main(args: AgentArgs) -> ExitCode {
    let trust = match ferry_client::load_trust(&args.connect.ca) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("restore-agent: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = AgentConfig {
        appliance: args.connect.appliance,
        trust,
        enroll_token: args.connect.token,
        retry_window: args.connect.retry_window,
        parallel: args.parallel.max(1),
        once: args.once,
    };
    let mut console = |line: &str| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    };
    match run(cfg, &args.root, &mut console) {
        Ok(outcome) if outcome.succeeded => {
            if outcome.then != Then::None {
                let then = format!("{:?}", outcome.then).to_lowercase();
                console(&format!(
                    "{} the job says {then} now; host mode leaves this machine running",
                    crate::console::now_rfc3339()
                ));
            }
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("restore-agent: error: {e}");
            ExitCode::FAILURE
        }
    }
}
