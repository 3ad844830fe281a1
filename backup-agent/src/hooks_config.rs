//! The operator's hooks from a TOML file's `[hooks]` table: `backup --hooks FILE`, and the same
//! table of the service's `/etc/ferry/agent.toml` (docs/migration.md, "Hooks live on the
//! source"). Other tables and keys of the file are left to their own readers.
//!
//! ```toml
//! [hooks]
//! pre_capture = ["/usr/bin/systemctl", "stop", "postgresql"]
//! post_capture = ["/usr/bin/systemctl", "start", "postgresql"]
//! pre_cutover = ["/usr/bin/systemctl", "stop", "app"]
//! post_cutover_abort = ["/usr/bin/systemctl", "start", "app"]
//! timeout = "5m"    # each hook; default 300s
//! ```
//! Each hook is an argv list (no shell): the program and its arguments.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_engine::backup::{Hook, HookCommand};
use serde::Deserialize;

/// Default time each hook may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest hooks file read: a config file, not data.
const MAX_FILE: u64 = 1 << 20;

/// Why a hooks file was refused.
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    #[error("read hooks file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hooks file {path} is larger than {MAX_FILE} bytes; give the agent's config file")]
    TooLarge { path: PathBuf },
    #[error("hooks file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("hooks file {path}: [hooks] {key}: {problem}")]
    Bad {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// The `[hooks]` table, checked: each hook an argv list with a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hooks {
    pub pre_capture: Option<Vec<String>>,
    pub post_capture: Option<Vec<String>>,
    pub pre_cutover: Option<Vec<String>>,
    pub post_cutover_abort: Option<Vec<String>>,
    /// How long each hook may run before its process group is killed.
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            pre_capture: None,
            post_capture: None,
            pre_cutover: None,
            post_cutover_abort: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    hooks: RawHooks,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    pre_capture: Option<Vec<String>>,
    post_capture: Option<Vec<String>>,
    pre_cutover: Option<Vec<String>>,
    post_cutover_abort: Option<Vec<String>>,
    timeout: Option<String>,
}

impl Hooks {
    /// Read and check the `[hooks]` table of `path` (no table: no hooks).
    pub fn load(path: &Path) -> Result<Hooks, HooksError> {
        use std::io::Read;
        let read_err = |source| HooksError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(read_err)?
            .take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_FILE {
            return Err(HooksError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Hooks::parse(path, &text)
    }

    /// Check the `[hooks]` table of `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Hooks, HooksError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| HooksError::Syntax {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        let bad = |key: &str, problem: String| HooksError::Bad {
            path: path.to_path_buf(),
            key: key.to_string(),
            problem,
        };
        let raw = raw.hooks;
        let timeout = match raw.timeout.as_deref() {
            None => DEFAULT_TIMEOUT,
            Some(t) => match ferry_client::parse_duration(t) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    return Err(bad(
                        "timeout",
                        format!("{t:?} is not a duration: use e.g. 90s, 15m or 1h"),
                    ))
                }
            },
        };
        let hooks = Hooks {
            pre_capture: raw.pre_capture,
            post_capture: raw.post_capture,
            pre_cutover: raw.pre_cutover,
            post_cutover_abort: raw.post_cutover_abort,
            timeout,
        };
        for (key, argv) in [
            ("pre_capture", &hooks.pre_capture),
            ("post_capture", &hooks.post_capture),
            ("pre_cutover", &hooks.pre_cutover),
            ("post_cutover_abort", &hooks.post_cutover_abort),
        ] {
            let Some(argv) = argv else { continue };
            let Some(prog) = argv.first().filter(|p| !p.is_empty()) else {
                return Err(bad(
                    key,
                    "the command is empty: give the program and its arguments, e.g. \
                     [\"/usr/bin/systemctl\", \"stop\", \"postgresql\"], or remove the key"
                        .into(),
                ));
            };
            if prog.contains('/') && !Path::new(prog).is_file() {
                return Err(bad(
                    key,
                    format!("the program {prog} does not exist: install it or fix the path"),
                ));
            }
        }
        Ok(hooks)
    }

    /// The capture's hooks: `pre_capture` before the source is held still, `post_capture`
    /// after it is released (also when the backup fails).
    pub fn capture(&self) -> ferry_engine::backup::Hooks {
        let hook = |argv: &Option<Vec<String>>| {
            argv.as_ref()
                .map(|a| Hook::new(HookCommand::Argv(a.clone()), self.timeout))
        };
        ferry_engine::backup::Hooks {
            pre: hook(&self.pre_capture),
            post: hook(&self.post_capture),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Hooks, HooksError> {
        Hooks::parse(Path::new("/etc/ferry/hooks.toml"), text)
    }

    #[test]
    fn the_hooks_table_is_read_and_the_rest_of_the_file_left_alone() {
        let h = parse(
            r#"
appliance = "https://a:8443"
[[disk]]
path = "/dev/sda"

[hooks]
pre_capture = ["/bin/sh", "-c", "sync"]
post_capture = ["systemctl", "start", "db"]
timeout = "30s"
"#,
        )
        .unwrap();
        assert_eq!(h.timeout, Duration::from_secs(30));
        assert_eq!(h.pre_cutover, None);
        let c = h.capture();
        let pre = c.pre.unwrap();
        assert_eq!(
            pre.command,
            HookCommand::Argv(vec!["/bin/sh".into(), "-c".into(), "sync".into()])
        );
        assert_eq!(pre.timeout_secs, 30);
        assert_eq!(
            c.post.unwrap().command,
            HookCommand::Argv(vec!["systemctl".into(), "start".into(), "db".into()])
        );
        let none = parse("machine = \"web1\"\n").unwrap();
        assert_eq!(none, Hooks::default());
        assert!(none.capture().pre.is_none() && none.capture().post.is_none());
    }

    #[test]
    fn bad_tables_are_refused_naming_the_key() {
        let cases = [
            (
                "[hooks]\npre_capture = []\n",
                "pre_capture: the command is empty",
            ),
            (
                "[hooks]\npost_capture = [\"/nonexistent/ferry-hook\"]\n",
                "post_capture: the program /nonexistent/ferry-hook does not exist",
            ),
            (
                "[hooks]\ntimeout = \"soon\"\n",
                "timeout: \"soon\" is not a duration",
            ),
            (
                "[hooks]\ntimeout = \"0s\"\n",
                "timeout: \"0s\" is not a duration",
            ),
            ("[hooks]\npre_captur = [\"true\"]\n", "pre_captur"),
            ("[hooks]\npre_capture = \"systemctl stop db\"\n", "sequence"),
            ("[hooks\n", "/etc/ferry/hooks.toml"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_missing_or_huge_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let e = Hooks::load(&t.path().join("nope.toml")).unwrap_err();
        assert!(e.to_string().contains("nope.toml"), "{e}");
        let big = t.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_FILE as usize + 10]).unwrap();
        assert!(matches!(
            Hooks::load(&big),
            Err(HooksError::TooLarge { .. })
        ));
    }
}
