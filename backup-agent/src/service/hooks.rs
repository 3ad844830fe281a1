//! Running the operator's hooks from the config's `[hooks]` table: an argv list (no shell), stdin
//! closed, the service's stdout/stderr (so its lines reach the journal), `FERRY_HOOK` set to the
//! moment, in a process group of its own that is killed whole when the hook's timeout passes.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::config::HookMoment;

/// How often a running hook is checked.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(
        "hook {moment} `{command}` did not start: {source}; fix [hooks] {moment} in the config"
    )]
    Spawn {
        moment: HookMoment,
        command: String,
        source: std::io::Error,
    },
    #[error("hook {moment} `{command}` failed ({status})")]
    Failed {
        moment: HookMoment,
        command: String,
        status: ExitStatus,
    },
    #[error("hook {moment} `{command}` did not finish in {timeout:?}: killed it and its children (raise [hooks] timeout if it needs longer)")]
    TimedOut {
        moment: HookMoment,
        command: String,
        timeout: Duration,
    },
}

/// Run `argv` (checked non-empty by the config) to its end or `timeout`; how long it took.
pub fn run(moment: HookMoment, argv: &[String], timeout: Duration) -> Result<Duration, HookError> {
    let started = Instant::now();
    let command = argv.join(" ");
    let spawn_err = |source| HookError::Spawn {
        moment,
        command: command.clone(),
        source,
    };
    let (prog, args) = argv.split_first().ok_or_else(|| {
        spawn_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ))
    })?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .env("FERRY_HOOK", moment.key())
        .process_group(0)
        .spawn()
        .map_err(spawn_err)?;
    loop {
        if let Some(status) = child.try_wait().map_err(spawn_err)? {
            if status.success() {
                return Ok(started.elapsed());
            }
            return Err(HookError::Failed {
                moment,
                command,
                status,
            });
        }
        if started.elapsed() >= timeout {
            // The hook leads its own process group: end everything it started.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::TimedOut {
                moment,
                command,
                timeout,
            });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_hook_runs_with_its_moment_and_fails_or_times_out_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("moment");
        let script = format!("echo \"$FERRY_HOOK\" > {}", out.display());
        run(
            HookMoment::PreCutover,
            &argv(&["/bin/sh", "-c", &script]),
            Duration::from_secs(10),
        )
        .expect("hook runs");
        assert_eq!(
            std::fs::read_to_string(&out).expect("written").trim(),
            "pre_cutover"
        );

        let e = run(
            HookMoment::PostCutoverAbort,
            &argv(&["/bin/sh", "-c", "exit 3"]),
            Duration::from_secs(10),
        )
        .expect_err("exit 3");
        assert!(matches!(e, HookError::Failed { .. }), "{e}");
        assert!(e.to_string().contains("post_cutover_abort"), "{e}");

        let t = Instant::now();
        let e = run(
            HookMoment::PreCutover,
            &argv(&["/bin/sh", "-c", "sleep 30 & wait"]),
            Duration::from_millis(300),
        )
        .expect_err("too slow");
        assert!(matches!(e, HookError::TimedOut { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

        let e = run(
            HookMoment::PreCutover,
            &argv(&["/no/such/hook"]),
            Duration::from_secs(1),
        )
        .expect_err("missing");
        assert!(e.to_string().contains("fix [hooks] pre_cutover"), "{e}");
    }
}
