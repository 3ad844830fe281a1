//! One runner for external programs: find the tool (PID 1 of the rescue image starts with no
//! PATH at all, and a shell's PATH may lack the sbin directories), run it with stdin closed,
//! capture its output, and turn every failure into a [`ToolError`] that names the tool, its
//! arguments, the exit status, the tail of stderr, and the Debian package that provides it.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output, Stdio};

/// Directories searched for tools besides $PATH.
pub const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// At most this many trailing stderr lines go into an error: enough for the tool's own reason,
/// not a page of progress output on the console.
const STDERR_TAIL_LINES: usize = 20;

/// Why an external tool did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("run {tool}: not found; install it with `apt-get install {package}`")]
    Missing { tool: String, package: String },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{tool} {args} failed ({status}): {stderr}")]
    Failed {
        tool: String,
        /// The arguments, space-separated, for the message.
        args: String,
        status: ExitStatus,
        /// The last lines of stderr, trimmed.
        stderr: String,
    },
}

/// An external program and the package to install when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

impl Tool {
    pub const fn new(name: &'static str, package: &'static str) -> Tool {
        Tool { name, package }
    }

    /// Where the tool is: $PATH first, then [`TOOL_DIRS`].
    pub fn find(&self) -> Option<PathBuf> {
        find(self.name)
    }

    /// A command for the tool (found as [`Tool::find`] does, else by bare name).
    pub fn command(&self) -> Command {
        Command::new(self.find().unwrap_or_else(|| PathBuf::from(self.name)))
    }

    /// Run with `args`; stdout on exit status 0.
    pub fn run(&self, args: &[&str]) -> Result<String, ToolError> {
        self.run_ok(args, &[0])
    }

    /// Run with `args`; stdout when the exit status is one of `ok` (fsck's 1, blkid's 2).
    pub fn run_ok(&self, args: &[&str], ok: &[i32]) -> Result<String, ToolError> {
        let mut cmd = self.command();
        cmd.args(args);
        let out = run_named(&mut cmd, self.name, self.package, ok)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Where `name` is: $PATH first, then [`TOOL_DIRS`].
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(TOOL_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Run a prepared command to completion with stdin closed and output captured; an exit status
/// outside `ok` is an error. `package` provides the program, for the message when it is
/// missing. For commands that need more than arguments (environment, working directory).
pub fn output(cmd: &mut Command, package: &str, ok: &[i32]) -> Result<Output, ToolError> {
    let tool = display(cmd.get_program());
    run_named(cmd, &tool, package, ok)
}

/// [`output`], with `tool` naming the program in errors (not the path it was found at).
fn run_named(
    cmd: &mut Command,
    tool: &str,
    package: &str,
    ok: &[i32],
) -> Result<Output, ToolError> {
    let tool = tool.to_string();
    let out = cmd.stdin(Stdio::null()).output().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ToolError::Missing {
                tool: tool.clone(),
                package: package.into(),
            }
        } else {
            ToolError::Spawn {
                tool: tool.clone(),
                source,
            }
        }
    })?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Ok(out);
    }
    let args: Vec<String> = cmd.get_args().map(display).collect();
    Err(ToolError::Failed {
        tool,
        args: args.join(" "),
        status: out.status,
        stderr: tail(&String::from_utf8_lossy(&out.stderr)),
    })
}

/// Best effort: load a kernel module (the rescue image loads drivers by modalias only, and
/// neither dm_mod nor loop has hardware to match).
pub fn modprobe(module: &str) {
    let tool = Tool::new("modprobe", "kmod");
    if tool.find().is_some() {
        let _ = tool.run(&[module]);
    }
}

/// The last non-blank line of a tool's output (resize2fs and xfs_growfs end with their result).
pub fn last_line(out: &str) -> String {
    out.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// A program path or argument as text, for messages.
fn display(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    let from = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[from..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_tool_arguments_status_and_stderr() {
        let sh = Tool::new("sh", "dash");
        let e = sh
            .run(&["-c", "echo one >&2; echo two >&2; exit 3"])
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("sh -c echo one"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.ends_with("one\ntwo"), "{text}");
        assert_eq!(
            sh.run_ok(&["-c", "echo hi; exit 1"], &[0, 1]).unwrap(),
            "hi\n"
        );
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let e = Tool::new("ferry-no-such-tool", "ferry-pkg")
            .run(&[])
            .unwrap_err();
        assert!(matches!(e, ToolError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains("apt-get install ferry-pkg"), "{e}");
    }

    #[test]
    fn stderr_keeps_its_tail() {
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&long);
        assert_eq!(t.lines().count(), STDERR_TAIL_LINES);
        assert!(t.ends_with("line 99"), "{t}");
        assert_eq!(last_line("a\nb\n\n"), "b");
    }
}
