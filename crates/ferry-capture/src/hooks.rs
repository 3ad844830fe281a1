//! Operator commands run around a capture (stop a database before, start it after).
//!
//! A hook is an argv list or one `sh -c` string, from the agent's own config file (never from
//! the appliance). It runs with stdin closed and the agent's stdout/stderr, in its own process
//! group, and is killed with that group when its timeout passes. The post hook runs whenever
//! the pre hook ran, also when the capture failed ([`crate::Capture`]).

use std::fmt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Default time a hook may take.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// How often a running hook is checked.
const POLL: Duration = Duration::from_millis(20);

/// The command of a hook: `["systemctl", "stop", "db"]` or `"systemctl stop db && sync"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HookCommand {
    Argv(Vec<String>),
    Shell(String),
}

impl fmt::Display for HookCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookCommand::Argv(a) => write!(f, "{}", a.join(" ")),
            HookCommand::Shell(s) => write!(f, "sh -c {s:?}"),
        }
    }
}

/// One hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub command: HookCommand,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl Hook {
    pub fn new(command: HookCommand, timeout: Duration) -> Hook {
        Hook {
            command,
            timeout_secs: timeout.as_secs().max(1),
        }
    }
}

/// The hooks of a capture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default)]
    pub pre: Option<Hook>,
    #[serde(default)]
    pub post: Option<Hook>,
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookStage {
    PreCapture,
    PostCapture,
}

impl fmt::Display for HookStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookStage::PreCapture => "pre-capture",
            HookStage::PostCapture => "post-capture",
        })
    }
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{stage} hook has an empty command; set one in the agent's config or remove the hook")]
    Empty { stage: HookStage },
    #[error("run {stage} hook `{command}`: {source}")]
    Spawn {
        stage: HookStage,
        command: String,
        source: std::io::Error,
    },
    #[error("{stage} hook `{command}` failed ({status})")]
    Failed {
        stage: HookStage,
        command: String,
        status: ExitStatus,
    },
    #[error("{stage} hook `{command}` did not finish in {timeout:?}; killed it")]
    TimedOut {
        stage: HookStage,
        command: String,
        timeout: Duration,
    },
}

/// The command a hook runs (no process started).
pub fn command(hook: &Hook, stage: HookStage) -> Result<Command, HookError> {
    let mut cmd = match &hook.command {
        HookCommand::Argv(argv) => {
            let (prog, args) = argv.split_first().ok_or(HookError::Empty { stage })?;
            if prog.is_empty() {
                return Err(HookError::Empty { stage });
            }
            let mut c = Command::new(prog);
            c.args(args);
            c
        }
        HookCommand::Shell(s) if s.trim().is_empty() => return Err(HookError::Empty { stage }),
        HookCommand::Shell(s) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(s);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .env("FERRY_HOOK", stage.to_string())
        .process_group(0);
    Ok(cmd)
}

/// Run a hook to completion or its timeout; returns how long it took.
pub fn run(hook: &Hook, stage: HookStage) -> Result<Duration, HookError> {
    let started = Instant::now();
    let timeout = Duration::from_secs(hook.timeout_secs);
    let text = hook.command.to_string();
    let mut child = command(hook, stage)?
        .spawn()
        .map_err(|source| HookError::Spawn {
            stage,
            command: text.clone(),
            source,
        })?;
    let wait_err = |source| HookError::Spawn {
        stage,
        command: text.clone(),
        source,
    };
    loop {
        if let Some(status) = child.try_wait().map_err(wait_err)? {
            if status.success() {
                return Ok(started.elapsed());
            }
            return Err(HookError::Failed {
                stage,
                command: text,
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
                stage,
                command: text,
                timeout,
            });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &str, secs: u64) -> Hook {
        Hook::new(HookCommand::Shell(s.into()), Duration::from_secs(secs))
    }

    #[test]
    fn a_hook_that_succeeds_returns_its_time() {
        run(&sh("true", 5), HookStage::PreCapture).unwrap();
        let argv = Hook::new(
            HookCommand::Argv(vec!["sh".into(), "-c".into(), "exit 0".into()]),
            Duration::from_secs(5),
        );
        run(&argv, HookStage::PostCapture).unwrap();
    }

    #[test]
    fn a_failing_hook_names_its_stage_command_and_status() {
        let e = run(&sh("exit 7", 5), HookStage::PreCapture).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("pre-capture hook `sh -c \"exit 7\"`"),
            "{msg}"
        );
        assert!(msg.contains("exit status: 7"), "{msg}");
    }

    #[test]
    fn a_slow_hook_is_killed_with_its_children() {
        let t = Instant::now();
        let e = run(&sh("sleep 30 & sleep 30", 1), HookStage::PostCapture).unwrap_err();
        assert!(matches!(e, HookError::TimedOut { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn empty_and_missing_commands_are_errors() {
        let empty = Hook::new(HookCommand::Argv(vec![]), Duration::from_secs(1));
        assert!(matches!(
            run(&empty, HookStage::PreCapture),
            Err(HookError::Empty { .. })
        ));
        assert!(matches!(
            run(&sh("  ", 1), HookStage::PreCapture),
            Err(HookError::Empty { .. })
        ));
        let missing = Hook::new(
            HookCommand::Argv(vec!["/nonexistent/ferry-hook".into()]),
            Duration::from_secs(1),
        );
        let e = run(&missing, HookStage::PreCapture).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ferry-hook"), "{e}");
    }

    #[test]
    fn hooks_read_from_config_json() {
        let h: Hooks = serde_json::from_str(
            r#"{"pre": {"command": ["systemctl", "stop", "db"]},
                "post": {"command": "systemctl start db", "timeout_secs": 60}}"#,
        )
        .unwrap();
        assert_eq!(
            h.pre.unwrap().command,
            HookCommand::Argv(vec!["systemctl".into(), "stop".into(), "db".into()])
        );
        let post = h.post.unwrap();
        assert_eq!(post.timeout_secs, 60);
        assert_eq!(
            post.command,
            HookCommand::Shell("systemctl start db".into())
        );
        assert!(serde_json::from_str::<Hooks>(r#"{"pre": {"command": "x", "bad": 1}}"#).is_err());
    }
}
