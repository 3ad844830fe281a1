//! The service's config file (`/etc/ferry/agent.toml`, `packaging/backup-agent.toml.example`,
//! every key in docs/configuration.md):
//! where the appliance is and which CA it must present, the machine and its disks, the state
//! directory, the enroll token, the operator's hooks, and whose network configuration each
//! sync records (`network`, [`crate::network`]). Everything is checked at start
//! ([`Config::load`]); an error names the file, the key and what to do.
//!
//! Hooks are argv lists, never shell strings: the appliance only says which moment it is, the
//! commands are the operator's (docs/migration.md, "Hooks live on the source"). The `[hooks]`
//! table is read by [`crate::hooks_config`], the same reader as `backup --hooks FILE`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_engine::backup::{default_disk_name, DiskSpec};
use ferry_format::names::{check_name, NameKind};
use ferry_format::signing::TrustBundle;
use serde::Deserialize;

pub use crate::hooks_config::Hooks;
use crate::hooks_config::HooksError;
use crate::network::NetworkChoice;

/// Where the service reads its config unless `--config` or FERRY_AGENT_CONFIG says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/ferry/agent.toml";
/// The default before it was renamed: still read when only it exists, so an installed source
/// keeps working after an upgrade.
pub const LEGACY_CONFIG: &str = "/etc/ferry/backup-agent.toml";
/// Where the credential (and nothing else yet) is kept unless `state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferry";
/// How long a request keeps retrying through a network cut or an appliance restart.
pub const DEFAULT_RETRY_WINDOW: Duration = ferry_client::DEFAULT_RETRY_WINDOW;
/// Largest config file read (it is a few lines).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The file to read: the one named (`--config`, FERRY_AGENT_CONFIG), else [`DEFAULT_CONFIG`],
/// else [`LEGACY_CONFIG`] when only that one `exists`.
pub fn config_path(named: Option<&Path>, exists: impl Fn(&Path) -> bool) -> PathBuf {
    match named {
        Some(p) => p.to_path_buf(),
        None if !exists(Path::new(DEFAULT_CONFIG)) && exists(Path::new(LEGACY_CONFIG)) => {
            PathBuf::from(LEGACY_CONFIG)
        }
        None => PathBuf::from(DEFAULT_CONFIG),
    }
}

/// A config the service cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}; write it (docs/configuration.md lists every key) or pass --config FILE")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {detail}(docs/configuration.md lists every key)")]
    Parse { path: PathBuf, detail: String },
    #[error(transparent)]
    Hooks(#[from] HooksError),
    #[error("config file {path}, key `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// The cutover's hooks, which the service runs itself (the engine runs `pre_capture` and
/// `post_capture` around its capture), named as their keys in `[hooks]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookMoment {
    PreCutover,
    PostCutoverAbort,
}

impl HookMoment {
    pub fn key(self) -> &'static str {
        match self {
            HookMoment::PreCutover => "pre_cutover",
            HookMoment::PostCutoverAbort => "post_cutover_abort",
        }
    }
}

impl std::fmt::Display for HookMoment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// The argv of `moment`'s hook, if one is configured.
pub fn hook_argv(hooks: &Hooks, moment: HookMoment) -> Option<&[String]> {
    match moment {
        HookMoment::PreCutover => hooks.pre_cutover.as_deref(),
        HookMoment::PostCutoverAbort => hooks.post_cutover_abort.as_deref(),
    }
}

/// A checked config.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from (named in later errors).
    pub path: PathBuf,
    /// `https://host:port` of the appliance.
    pub appliance: String,
    /// The pinned CA file, and what it holds.
    pub ca: PathBuf,
    pub trust: TrustBundle,
    pub machine: String,
    pub disks: Vec<DiskSpec>,
    pub state_dir: PathBuf,
    pub enroll_token_file: Option<PathBuf>,
    pub retry_window: Duration,
    pub hooks: Hooks,
    /// Power this machine off when the appliance asks, after a cutover asked with
    /// `--poweroff-source` passed its point of no return. Off by default: the appliance alone
    /// cannot switch a server off.
    pub poweroff_after_cutover: bool,
    /// Whose network configuration each sync records (`network = "auto"`, the default;
    /// `"none"`; or an absolute directory where the source's root is mounted).
    pub network: NetworkChoice,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    appliance: String,
    ca: PathBuf,
    machine: String,
    #[serde(default)]
    disk: Vec<RawDisk>,
    state_dir: Option<PathBuf>,
    enroll_token_file: Option<PathBuf>,
    retry_window: Option<String>,
    #[serde(default)]
    poweroff_after_cutover: bool,
    network: Option<String>,
    /// Read by [`Hooks::parse`]; named here so that `deny_unknown_fields` accepts it.
    #[serde(default, rename = "hooks")]
    _hooks: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    path: PathBuf,
    name: Option<String>,
}

impl Config {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read;
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(read_err)?
            .take(MAX_CONFIG_BYTES)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        Config::parse(path, &text)
    }

    /// Check `text` as the contents of `path`: the CA is read and parsed, every disk opened.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let bad = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            problem,
        };
        let appliance = check_url(&raw.appliance).map_err(|p| bad("appliance", p))?;
        let trust = ferry_client::load_trust(&raw.ca).map_err(|e| {
            bad(
                "ca",
                format!(
                    "{e}; give the ca.pem of the appliance (`appliance init` wrote it into its data directory)"
                ),
            )
        })?;
        check_name(NameKind::Machine, &raw.machine).map_err(|e| {
            bad(
                "machine",
                format!("{e}; use the machine name the backup token was created for"),
            )
        })?;
        let disks = check_disks(&raw.disk, &bad)?;
        let state_dir = raw
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if !state_dir.is_absolute() {
            return Err(bad(
                "state_dir",
                format!(
                    "{} is relative: give an absolute directory (default {DEFAULT_STATE_DIR})",
                    state_dir.display()
                ),
            ));
        }
        if let Some(t) = &raw.enroll_token_file {
            if !t.is_absolute() {
                return Err(bad(
                    "enroll_token_file",
                    format!("{} is relative: give an absolute path", t.display()),
                ));
            }
        }
        let retry_window = duration(raw.retry_window.as_deref(), DEFAULT_RETRY_WINDOW)
            .map_err(|p| bad("retry_window", p))?;
        let network = network_choice(raw.network.as_deref()).map_err(|p| bad("network", p))?;
        let hooks = Hooks::parse(path, text)?;
        Ok(Config {
            path: path.to_path_buf(),
            appliance,
            ca: raw.ca,
            trust,
            machine: raw.machine,
            disks,
            state_dir,
            enroll_token_file: raw.enroll_token_file,
            retry_window,
            hooks,
            poweroff_after_cutover: raw.poweroff_after_cutover,
            network,
        })
    }

    /// `<state_dir>/source.cred`.
    pub fn credential_path(&self) -> PathBuf {
        self.state_dir.join(super::state::CREDENTIAL_FILE)
    }
}

/// One URL, or the URLs of several appliance nodes separated by commas.
fn check_url(url: &str) -> Result<String, String> {
    ferry_format::urls::ApplianceUrls::parse(url)
        .map(|urls| urls.to_string())
        .map_err(|e| {
            format!(
                "{url:?} is not an appliance URL ({e}): give https://HOST:PORT, or the nodes' \
                 URLs separated by commas (the appliance speaks HTTPS only)"
            )
        })
}

/// `network`: auto (the default), none, or an absolute directory.
fn network_choice(text: Option<&str>) -> Result<NetworkChoice, String> {
    let choice = text.map_or(Ok(NetworkChoice::Auto), str::parse)?;
    match &choice {
        NetworkChoice::Root(r) if !r.is_absolute() => Err(format!(
            "{:?} is neither auto nor none, nor an absolute directory (where the source's \
             root is mounted)",
            r.display().to_string()
        )),
        _ => Ok(choice),
    }
}

fn duration(text: Option<&str>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => match ferry_client::parse_duration(t) {
            Ok(d) if !d.is_zero() => Ok(d),
            _ => Err(format!("{t:?} is not a duration: use e.g. 90s, 15m or 1h")),
        },
    }
}

fn check_disks(
    raw: &[RawDisk],
    bad: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<DiskSpec>, ConfigError> {
    if raw.is_empty() {
        return Err(bad(
            "disk",
            "no disk to sync: add a [[disk]] table with path = \"/dev/sda\" (a block device or an image file) for each disk".into(),
        ));
    }
    let mut disks: Vec<DiskSpec> = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let key = |k: &str| format!("disk[{i}].{k}");
        let p = &d.path;
        if !p.is_absolute() {
            return Err(bad(
                &key("path"),
                format!("{} is relative: give an absolute path", p.display()),
            ));
        }
        let meta = std::fs::metadata(p).map_err(|e| {
            bad(
                &key("path"),
                format!(
                    "{}: {e}; name a block device or an image file of this machine",
                    p.display()
                ),
            )
        })?;
        use std::os::unix::fs::FileTypeExt;
        if !(meta.is_file() || meta.file_type().is_block_device()) {
            return Err(bad(
                &key("path"),
                format!(
                    "{} is neither a block device nor an image file",
                    p.display()
                ),
            ));
        }
        std::fs::File::open(p).map_err(|e| {
            bad(
                &key("path"),
                format!(
                    "cannot open {} for reading: {e}; run the service as root (it reads whole disks)",
                    p.display()
                ),
            )
        })?;
        let name = d.name.clone().unwrap_or_else(|| default_disk_name(p));
        check_name(NameKind::Disk, &name).map_err(|e| {
            bad(
                &key("name"),
                format!("{e}; set name = \"...\" for this disk"),
            )
        })?;
        if let Some(j) = disks.iter().position(|o| o.name == name) {
            return Err(bad(
                &key("name"),
                format!("disk name {name:?} is also disk[{j}]'s: give one of them another name"),
            ));
        }
        disks.push(DiskSpec {
            name,
            path: p.clone(),
        });
    }
    Ok(disks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp dir with a CA file (from a real `TrustBundle`), an image and a config writer.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("ca.pem"), test_ca_pem()).expect("ca");
            std::fs::write(dir.path().join("disk.img"), vec![0u8; 1 << 20]).expect("img");
            Fixture { dir }
        }
        fn p(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }
        fn good(&self) -> String {
            format!(
                r#"
appliance = "https://appliance.example:8443/"
ca = "{ca}"
machine = "web1"
state_dir = "{state}"
enroll_token_file = "{token}"
retry_window = "2m"
poweroff_after_cutover = true
network = "none"

[[disk]]
path = "{img}"

[[disk]]
path = "{img}"
name = "data"

[hooks]
pre_capture = ["/bin/sh", "-c", "true"]
post_cutover_abort = ["systemctl", "start", "db"]
timeout = "30s"
"#,
                ca = self.p("ca.pem"),
                state = self.p("state"),
                token = self.p("token"),
                img = self.p("disk.img"),
            )
        }
        fn parse(&self, text: &str) -> Result<Config, ConfigError> {
            Config::parse(Path::new("/etc/ferry/backup-agent.toml"), text)
        }
    }

    /// The PEM an appliance's `init` writes: a CA certificate and the manifest signing key.
    /// (`TrustBundle::from_pem` reads the blocks; TLS is what checks the certificate.)
    fn test_ca_pem() -> String {
        use ferry_format::signing::{pem_block, SigningKey};
        pem_block("CERTIFICATE", b"not checked here") + &SigningKey([7; 32]).to_pem()
    }

    #[test]
    fn a_good_file_is_read_whole() {
        let f = Fixture::new();
        let c = f.parse(&f.good()).expect("good config");
        assert_eq!(c.appliance, "https://appliance.example:8443");
        assert_eq!(c.machine, "web1");
        assert_eq!(c.disks.len(), 2);
        assert_eq!(c.disks[0].name, "disk");
        assert_eq!(c.disks[1].name, "data");
        assert_eq!(c.state_dir, PathBuf::from(f.p("state")));
        assert_eq!(c.credential_path(), PathBuf::from(f.p("state/source.cred")));
        assert_eq!(c.retry_window, Duration::from_secs(120));
        assert!(c.poweroff_after_cutover);
        assert_eq!(c.network, NetworkChoice::None);
        assert_eq!(c.hooks.timeout, Duration::from_secs(30));
        assert_eq!(
            hook_argv(&c.hooks, HookMoment::PostCutoverAbort),
            Some(&["systemctl".to_string(), "start".into(), "db".into()][..])
        );
        assert_eq!(hook_argv(&c.hooks, HookMoment::PreCutover), None);
        let mounted = f.parse(&f.good().replacen("\"none\"", "\"/mnt/src\"", 1));
        assert_eq!(
            mounted.expect("a mounted root").network,
            NetworkChoice::Root("/mnt/src".into())
        );
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let f = Fixture::new();
        let text = format!(
            "appliance = \"https://a:1\"\nca = \"{}\"\nmachine = \"m\"\n[[disk]]\npath = \"{}\"\n",
            f.p("ca.pem"),
            f.p("disk.img")
        );
        let c = f.parse(&text).expect("minimal config");
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.enroll_token_file, None);
        assert_eq!(c.retry_window, DEFAULT_RETRY_WINDOW);
        assert!(!c.poweroff_after_cutover, "off unless the source says so");
        assert_eq!(c.network, NetworkChoice::Auto);
        assert_eq!(c.hooks.timeout, crate::hooks_config::DEFAULT_TIMEOUT);
        assert_eq!(c.hooks, Hooks::default());
    }

    /// Each bad key: (what to replace in the good file, with what, the key the error names,
    /// a piece of the message).
    #[test]
    fn each_bad_key_is_named() {
        let f = Fixture::new();
        let good = f.good();
        let img = f.p("disk.img");
        let ca = f.p("ca.pem");
        let cases: Vec<(String, String, &str, &str)> = vec![
            (
                "https://appliance.example:8443/".into(),
                "http://appliance.example".into(),
                "appliance",
                "https://HOST:PORT",
            ),
            (ca.clone(), f.p("nope.pem"), "ca", "cannot read it"),
            (ca.clone(), img.clone(), "ca", "ca.pem of the appliance"),
            (
                "\"web1\"".into(),
                "\"../x\"".into(),
                "machine",
                "machine name",
            ),
            (
                format!("path = \"{img}\"\n\n[[disk]]"),
                format!("path = \"{}\"\n\n[[disk]]", f.p("missing.img")),
                "disk[0].path",
                "No such file",
            ),
            (
                format!("path = \"{img}\"\n\n[[disk]]"),
                "path = \"disk.img\"\n\n[[disk]]".into(),
                "disk[0].path",
                "relative",
            ),
            (
                format!("path = \"{img}\"\n\n[[disk]]"),
                format!("path = \"{}\"\n\n[[disk]]", f.dir.path().display()),
                "disk[0].path",
                "neither a block device",
            ),
            (
                "name = \"data\"".into(),
                "name = \"disk\"".into(),
                "disk[1].name",
                "also disk[0]'s",
            ),
            (
                "name = \"data\"".into(),
                "name = \"a b\"".into(),
                "disk[1].name",
                "name = ",
            ),
            (
                format!("state_dir = \"{}\"", f.p("state")),
                "state_dir = \"var/lib/ferry\"".into(),
                "state_dir",
                "absolute",
            ),
            (
                format!("enroll_token_file = \"{}\"", f.p("token")),
                "enroll_token_file = \"token\"".into(),
                "enroll_token_file",
                "absolute",
            ),
            (
                "retry_window = \"2m\"".into(),
                "retry_window = \"soon\"".into(),
                "retry_window",
                "90s, 15m",
            ),
            (
                "network = \"none\"".into(),
                "network = \"mnt/src\"".into(),
                "network",
                "absolute directory",
            ),
            (
                "network = \"none\"".into(),
                "network = \"\"".into(),
                "network",
                "auto, none",
            ),
        ];
        for (from, to, key, piece) in cases {
            assert!(good.contains(&from), "{from} not in the good file");
            let text = good.replacen(&from, &to, 1);
            let e = f.parse(&text).expect_err(&format!("{key}: {to} accepted"));
            let msg = e.to_string();
            assert!(
                matches!(&e, ConfigError::Invalid { key: k, .. } if k == key),
                "{key}: {msg}"
            );
            assert!(msg.contains("/etc/ferry/backup-agent.toml"), "{msg}");
            assert!(msg.contains(piece), "{key}: {msg}");
        }
        // The [hooks] table is checked by the reader `backup --hooks` uses.
        let hooks_cases: Vec<(String, String, &str, &str)> = vec![
            (
                "timeout = \"30s\"".into(),
                "timeout = \"0\"".into(),
                "[hooks] timeout",
                "not a duration",
            ),
            (
                "pre_capture = [\"/bin/sh\", \"-c\", \"true\"]".into(),
                "pre_capture = []".into(),
                "[hooks] pre_capture",
                "the command is empty",
            ),
            (
                "pre_capture = [\"/bin/sh\", \"-c\", \"true\"]".into(),
                "pre_capture = [\"/no/such/program\"]".into(),
                "[hooks] pre_capture",
                "does not exist",
            ),
        ];
        for (from, to, key, piece) in hooks_cases {
            assert!(good.contains(&from), "{from} not in the good file");
            let e = f
                .parse(&good.replacen(&from, &to, 1))
                .expect_err(&format!("{key}: {to} accepted"));
            let msg = e.to_string();
            assert!(matches!(e, ConfigError::Hooks(_)), "{msg}");
            assert!(msg.contains("/etc/ferry/backup-agent.toml"), "{msg}");
            assert!(msg.contains(key) && msg.contains(piece), "{key}: {msg}");
        }
    }

    #[test]
    fn shape_errors_name_the_key() {
        let f = Fixture::new();
        let good = f.good();
        let cases = [
            // an unknown key (a typo) is refused, not ignored
            (good.replacen("machine =", "machin =", 1), "machin"),
            (good.replacen("machine = \"web1\"\n", "", 1), "machine"),
            // a hook is an argv list, not a shell string
            (
                good.replacen(
                    "pre_capture = [\"/bin/sh\", \"-c\", \"true\"]",
                    "pre_capture = \"systemctl stop db\"",
                    1,
                ),
                // (the [hooks] reader's message names the type, not the key)
                "expected a sequence",
            ),
            (good.replacen("timeout = ", "timeuot = ", 1), "timeuot"),
            (
                good.replacen("name = \"data\"", "label = \"data\"", 1),
                "label",
            ),
        ];
        for (text, key) in cases {
            let e = f.parse(&text).expect_err(key);
            let msg = e.to_string();
            assert!(
                matches!(e, ConfigError::Parse { .. } | ConfigError::Hooks(_)),
                "{msg}"
            );
            assert!(msg.contains(key), "{key}: {msg}");
            assert!(msg.contains("/etc/ferry/backup-agent.toml"), "{msg}");
        }
        let no_disk = good
            .split("[[disk]]")
            .next()
            .map(str::to_string)
            .expect("head");
        let e = f.parse(&no_disk).expect_err("no disk");
        assert!(
            matches!(&e, ConfigError::Invalid { key, .. } if key == "disk"),
            "{e}"
        );
        assert!(e.to_string().contains("[[disk]]"), "{e}");
    }

    #[test]
    fn a_missing_file_says_how_to_fix_it() {
        let e = Config::load(Path::new("/nonexistent/backup-agent.toml")).expect_err("missing");
        assert!(e.to_string().contains("docs/configuration.md"), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/backup-agent.toml"), "{msg}");
        assert!(msg.contains("--config"), "{msg}");
    }

    #[test]
    fn the_default_file_is_agent_toml_and_the_old_name_still_works() {
        use super::{config_path, DEFAULT_CONFIG, LEGACY_CONFIG};
        let only = |p: &'static str| move |q: &Path| q == Path::new(p);
        let named = Path::new("/srv/a.toml");
        assert_eq!(config_path(Some(named), only(LEGACY_CONFIG)), named);
        assert_eq!(config_path(None, |_| false), Path::new(DEFAULT_CONFIG));
        assert_eq!(
            config_path(None, only(DEFAULT_CONFIG)),
            Path::new(DEFAULT_CONFIG)
        );
        assert_eq!(
            config_path(None, only(LEGACY_CONFIG)),
            Path::new(LEGACY_CONFIG)
        );
        assert_eq!(config_path(None, |_| true), Path::new(DEFAULT_CONFIG));
    }
}
