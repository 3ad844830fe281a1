//! Where `appliance` settings come from (docs/configuration.md): a flag, else a `FERRY_*`
//! variable, else the config file (`/etc/ferry/appliance.toml`, or `--config FILE` /
//! `FERRY_CONFIG`), else the built-in default. The remote CLI's connection (`appliance`, `ca`,
//! `token_file`) comes from the per-user `$XDG_CONFIG_HOME/ferry/cli.toml` instead, so an
//! operator's laptop needs no system file.
//!
//! Every value, whatever its layer, is checked by the same parser as its flag; an error names the
//! file and key (or the variable) and what is allowed. A missing default file is no error; a
//! missing file named by `--config` is.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_server::limits::ServerLimits;
use serde::Deserialize;

use crate::cli::{At, ServeLimits};

/// The appliance's config file unless `--config` or `FERRY_CONFIG` names another.
pub const DEFAULT_CONFIG: &str = "/etc/ferry/appliance.toml";
/// The store directory when nothing names one (the packages' `ferry` user owns it).
pub const DEFAULT_DATA: &str = "/var/lib/ferry";
/// How often `serve` runs GC unless told.
pub const DEFAULT_GC_EVERY: Duration = Duration::from_secs(86_400);
/// Largest config file read (they are a few lines).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a variable; the process's environment in `main`, a table in tests. An empty value is
/// treated as unset (as `FERRY_TOKEN=` in a script usually means).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where a setting that failed its check came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Env(&'static str),
    File { path: PathBuf, key: &'static str },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::File { path, key } => write!(f, "config file {}, key `{key}`", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {detail} (docs/configuration.md lists every key)")]
    Parse { path: PathBuf, detail: String },
    #[error("{origin}: {problem}")]
    Invalid { origin: Origin, problem: String },
    #[error(
        "token file {path} is readable by group or others (mode {mode:04o}): `chmod 600 {path}`, \
         a token is a password"
    )]
    TokenFileMode { path: PathBuf, mode: u32 },
    #[error(
        "serve has no address to listen on: give --listen ADDR:PORT, FERRY_LISTEN or \
         `listen = \"0.0.0.0:8443\"` in {path}"
    )]
    NoListen { path: PathBuf },
    #[error(
        "FERRY_DATA and FERRY_APPLIANCE are both set: unset one, or give --data or --appliance"
    )]
    BothPlaces,
}

/// A value of the config file: TOML string or integer, checked as the flag's text would be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `/etc/ferry/appliance.toml`: one key per `serve` flag, named as the flag with `_`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceFile {
    pub data: Option<PathBuf>,
    pub listen: Option<Scalar>,
    pub gc_every: Option<Scalar>,
    pub max_connections: Option<Scalar>,
    pub tls_handshake_timeout: Option<Scalar>,
    pub header_timeout: Option<Scalar>,
    pub idle_timeout: Option<Scalar>,
    pub max_chunk_uploads: Option<Scalar>,
    pub max_chunk_downloads: Option<Scalar>,
    pub max_index_uploads: Option<Scalar>,
    pub queue_wait: Option<Scalar>,
}

/// The appliance's config file as read (empty when the default file does not exist).
#[derive(Debug, Default)]
pub struct FileLayer {
    pub path: PathBuf,
    pub file: ApplianceFile,
}

/// Read a config file of at most [`MAX_CONFIG_BYTES`]; `Ok(None)` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    Ok(Some(text))
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string().trim_end().to_string(),
    })
}

impl FileLayer {
    /// `--config FILE`, else `FERRY_CONFIG`, else [`DEFAULT_CONFIG`] (which may be missing).
    pub fn load(flag: Option<&Path>, env: Env) -> Result<FileLayer, ConfigError> {
        let named = flag
            .map(Path::to_path_buf)
            .or_else(|| env("FERRY_CONFIG").map(PathBuf::from));
        let path = named
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        match read_optional(&path)? {
            Some(text) => FileLayer::parse(&path, &text),
            None if named.is_some() => Err(ConfigError::Read {
                path,
                source: std::io::ErrorKind::NotFound.into(),
            }),
            None => Ok(FileLayer {
                path,
                file: ApplianceFile::default(),
            }),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<FileLayer, ConfigError> {
        Ok(FileLayer {
            path: path.to_path_buf(),
            file: parse_toml(path, text)?,
        })
    }

    /// The flag's value, else the variable's, else the file's, each checked by `parse`.
    fn pick<T>(
        &self,
        env: Env,
        flag: Option<T>,
        (var, key, value): (&'static str, &'static str, Option<&Scalar>),
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        if flag.is_some() {
            return Ok(flag);
        }
        let (text, origin) = match (env(var), value) {
            (Some(v), _) => (v, Origin::Env(var)),
            (None, Some(Scalar(v))) => (
                v.clone(),
                Origin::File {
                    path: self.path.clone(),
                    key,
                },
            ),
            (None, None) => return Ok(None),
        };
        parse(&text)
            .map(Some)
            .map_err(|problem| ConfigError::Invalid { origin, problem })
    }

    /// The store directory: `--data`, `FERRY_DATA`, `data`, then [`DEFAULT_DATA`].
    pub fn data_dir(&self, flag: Option<&Path>, env: Env) -> Result<DataDir, ConfigError> {
        if let Some(p) = flag {
            return Ok(DataDir::new(p.to_path_buf(), DataFrom::Flag));
        }
        if let Some(p) = env("FERRY_DATA") {
            return Ok(DataDir::new(p.into(), DataFrom::Env));
        }
        if let Some(p) = &self.file.data {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid {
                    origin: Origin::File {
                        path: self.path.clone(),
                        key: "data",
                    },
                    problem: format!("{} is relative: give an absolute directory", p.display()),
                });
            }
            return Ok(DataDir::new(p.clone(), DataFrom::File(self.path.clone())));
        }
        Ok(DataDir::new(DEFAULT_DATA.into(), DataFrom::Default))
    }

    /// Everything `serve` runs with.
    pub fn serve(
        &self,
        env: Env,
        listen: Option<SocketAddr>,
        gc_every: Option<Duration>,
        flags: ServeLimits,
    ) -> Result<ServeSettings, ConfigError> {
        let f = &self.file;
        let listen = self
            .pick(
                env,
                listen,
                ("FERRY_LISTEN", "listen", f.listen.as_ref()),
                parse_listen,
            )?
            .ok_or_else(|| ConfigError::NoListen {
                path: self.path.clone(),
            })?;
        let gc_every = self
            .pick(
                env,
                gc_every,
                ("FERRY_GC_EVERY", "gc_every", f.gc_every.as_ref()),
                parse_gc_every,
            )?
            .unwrap_or(DEFAULT_GC_EVERY);
        let count = |flag, var, key, v: &Option<Scalar>| {
            self.pick(env, flag, (var, key, v.as_ref()), parse_count)
        };
        let secs = |flag, var, key, v: &Option<Scalar>| {
            self.pick(env, flag, (var, key, v.as_ref()), parse_duration)
        };
        let limits = ServeLimits {
            max_connections: count(
                flags.max_connections,
                "FERRY_MAX_CONNECTIONS",
                "max_connections",
                &f.max_connections,
            )?,
            tls_handshake_timeout: secs(
                flags.tls_handshake_timeout,
                "FERRY_TLS_HANDSHAKE_TIMEOUT",
                "tls_handshake_timeout",
                &f.tls_handshake_timeout,
            )?,
            header_timeout: secs(
                flags.header_timeout,
                "FERRY_HEADER_TIMEOUT",
                "header_timeout",
                &f.header_timeout,
            )?,
            idle_timeout: secs(
                flags.idle_timeout,
                "FERRY_IDLE_TIMEOUT",
                "idle_timeout",
                &f.idle_timeout,
            )?,
            max_chunk_uploads: count(
                flags.max_chunk_uploads,
                "FERRY_MAX_CHUNK_UPLOADS",
                "max_chunk_uploads",
                &f.max_chunk_uploads,
            )?,
            max_chunk_downloads: count(
                flags.max_chunk_downloads,
                "FERRY_MAX_CHUNK_DOWNLOADS",
                "max_chunk_downloads",
                &f.max_chunk_downloads,
            )?,
            max_index_uploads: count(
                flags.max_index_uploads,
                "FERRY_MAX_INDEX_UPLOADS",
                "max_index_uploads",
                &f.max_index_uploads,
            )?,
            queue_wait: self.pick(
                env,
                flags.queue_wait,
                ("FERRY_QUEUE_WAIT", "queue_wait", f.queue_wait.as_ref()),
                parse_wait,
            )?,
        };
        Ok(ServeSettings {
            listen,
            gc_every,
            limits: limits.resolve(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub gc_every: Duration,
    pub limits: ServerLimits,
}

/// Which layer named the store directory (said when it cannot be opened).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataFrom {
    Flag,
    Env,
    File(PathBuf),
    Default,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    pub dir: PathBuf,
    pub from: DataFrom,
}

impl DataDir {
    fn new(dir: PathBuf, from: DataFrom) -> DataDir {
        DataDir { dir, from }
    }

    /// Said after "open the store DIR" when it fails: how the directory was chosen.
    pub fn hint(&self) -> String {
        match &self.from {
            DataFrom::Flag => "given by --data".into(),
            DataFrom::Env => "given by FERRY_DATA".into(),
            DataFrom::File(p) => format!("key `data` in {}", p.display()),
            DataFrom::Default => format!(
                "the default: give --data DIR, FERRY_DATA or `data` in {DEFAULT_CONFIG}, or \
                 --appliance URL for a remote appliance"
            ),
        }
    }
}

// The flags' parsers, shared by every layer.

pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not ADDR:PORT (0.0.0.0:8443, [::]:8443)"))
}

pub fn parse_count(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?}: give a whole number, at least 1")),
    }
}

/// `0` (never), `90m`, `12h`, `1d`.
pub fn parse_gc_every(text: &str) -> Result<Duration, String> {
    ferry_format::api::parse_duration_secs(text).map(Duration::from_secs)
}

/// `0`, `10s`, ...
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    ferry_format::api::parse_duration_secs(text).map(Duration::from_secs)
}

/// `90`, `30s`, `2m`, ... (at least one second).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match ferry_format::api::parse_duration_secs(text)? {
        0 => Err(format!("{text}: give at least one second")),
        s => Ok(Duration::from_secs(s)),
    }
}

/// The per-user file of the remote CLI.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliFile {
    /// https://HOST:PORT of the appliance.
    pub appliance: Option<String>,
    /// Its ca.pem (relative: to the file's directory).
    pub ca: Option<PathBuf>,
    /// A file holding an admin token, mode 0600 (relative: to the file's directory).
    pub token_file: Option<PathBuf>,
}

/// `$XDG_CONFIG_HOME/ferry/cli.toml`, else `$HOME/.config/ferry/cli.toml`.
pub fn cli_file_path(env: Env) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("ferry").join("cli.toml"))
}

impl CliFile {
    /// The file at `path`, if it exists; its relative paths made relative to its directory.
    pub fn load(path: &Path) -> Result<Option<CliFile>, ConfigError> {
        let Some(text) = read_optional(path)? else {
            return Ok(None);
        };
        let mut f: CliFile = parse_toml(path, &text)?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        for p in [&mut f.ca, &mut f.token_file].into_iter().flatten() {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        Ok(Some(f))
    }
}

/// Read the token in `path`, refusing a file that group or others may read (as ssh refuses a
/// private key).
pub fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_err)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::TokenFileMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(std::fs::read_to_string(path)
        .map_err(read_err)?
        .trim()
        .to_string())
}

/// How the commands that may run remotely reach the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    Local(DataDir),
    Remote(RemoteSettings),
}

#[derive(Debug, PartialEq, Eq)]
pub struct RemoteSettings {
    pub url: String,
    pub ca: Option<PathBuf>,
    /// The token, or the file to read it from (only when connecting).
    pub token: Option<TokenFrom>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenFrom {
    Given(String),
    File(PathBuf),
}

/// `--appliance`, then `--data`, then `FERRY_APPLIANCE`/`FERRY_DATA`, then the user's
/// cli.toml `appliance`, then the appliance's own config (`data` or the default). `cli` is
/// only loaded when no flag or variable decides. `ca` and `token_file` of cli.toml apply to the
/// appliance it names only.
pub fn place(
    at: &At,
    env: Env,
    system: impl FnOnce() -> Result<FileLayer, ConfigError>,
    cli: impl FnOnce() -> Result<Option<CliFile>, ConfigError>,
) -> Result<Place, ConfigError> {
    let url = match (&at.appliance, &at.data) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(dir)) => return Ok(Place::Local(DataDir::new(dir.clone(), DataFrom::Flag))),
        (None, None) => match (env("FERRY_APPLIANCE"), env("FERRY_DATA")) {
            (Some(_), Some(_)) => return Err(ConfigError::BothPlaces),
            (None, Some(dir)) => return Ok(Place::Local(DataDir::new(dir.into(), DataFrom::Env))),
            (url, None) => url,
        },
    };
    let user = cli()?.unwrap_or_default();
    let url = match url.or_else(|| user.appliance.clone()) {
        Some(u) => u,
        None => return Ok(Place::Local(system()?.data_dir(None, env)?)),
    };
    let same = user.appliance.as_deref() == Some(url.as_str());
    let ca = at.ca.clone().or_else(|| user.ca.clone().filter(|_| same));
    let token = at.token.clone().map(TokenFrom::Given).or_else(|| {
        user.token_file
            .clone()
            .filter(|_| same)
            .map(TokenFrom::File)
    });
    Ok(Place::Remote(RemoteSettings { url, ca, token }))
}

#[cfg(test)]
mod tests;
