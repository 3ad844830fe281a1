//! DIR/config.json: the appliance's name, the layout version, where the data lives and where the
//! records live (absent: the store's own directory); its presence marks a store. It holds no
//! secret: S3 credentials come from a file it names or from the environment, the PostgreSQL
//! URL from a file it names.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, StoreError};
use crate::fsx;
use crate::STORE_VERSION;

pub const CONFIG_FILE: &str = "config.json";

/// Directories `init` creates (chunk prefix directories are created lazily).
pub const STORE_DIRS: [&str; 6] = ["keys", "chunks", "snapshots", "sessions", "tmp", "trash"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The appliance's name, reported by `GET /hello`.
    pub name: String,
    /// Layout version ([`STORE_VERSION`]).
    pub version: u32,
    /// Where chunks, session indexes and snapshots live; absent for the local directory, so a
    /// local store's config.json is what it always was.
    #[serde(default, skip_serializing_if = "Storage::is_local")]
    pub storage: Storage,
    /// Where agents, jobs, sources, migrations, sessions, beacons and tokens live
    /// ([`crate::meta`]); absent for the local directory, as `storage`.
    #[serde(default, skip_serializing_if = "RecordsConfig::is_local")]
    pub records: RecordsConfig,
}

/// The records backend ([`crate::meta`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RecordsConfig {
    /// Files in the store's directory (docs/store.md, "Layout").
    #[default]
    Local,
    /// PostgreSQL, shared by several appliance nodes (docs/store.md, "Records on PostgreSQL").
    Postgres(PostgresConfig),
}

impl RecordsConfig {
    pub fn is_local(&self) -> bool {
        matches!(self, RecordsConfig::Local)
    }
}

/// PostgreSQL as `appliance init --records postgres` recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A file (mode 0600) holding the connection URL `postgres://USER:PASSWORD@HOST:PORT/DB`,
    /// alone or as a `FERRY_PG_URL=...` line: the password never enters config.json.
    pub url_file: std::path::PathBuf,
    /// The store's schema in that database (one database may hold several stores).
    pub schema: String,
    /// Connections per node; absent: [`DEFAULT_PG_POOL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
    /// PEM CA certificate(s) that sign the server's certificate: TLS is then required and the
    /// server's name (the URL's host) verified. Absent: no TLS (a database on this host or a
    /// private link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
}

/// Connections per node to PostgreSQL unless config.json says otherwise.
pub const DEFAULT_PG_POOL: u32 = 16;
/// The schema `init --records postgres` uses without `--pg-schema`.
pub const DEFAULT_PG_SCHEMA: &str = "ferry";

/// Where a new store keeps its data and its records: what `init` is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backends {
    pub storage: Storage,
    pub records: RecordsConfig,
}

impl From<Storage> for Backends {
    fn from(storage: Storage) -> Backends {
        Backends {
            storage,
            records: RecordsConfig::Local,
        }
    }
}

/// The data backend ([`crate::data`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Storage {
    /// The store's own directory (docs/store.md, "Layout").
    #[default]
    Local,
    /// An S3-compatible bucket (docs/store.md, "S3").
    S3(S3Config),
}

impl Storage {
    pub fn is_local(&self) -> bool {
        matches!(self, Storage::Local)
    }
}

/// An S3 bucket as `appliance init --storage s3` recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoints of one cluster (`https://s3.example:9000`), tried in order: a connection
    /// failure moves to the next one.
    pub endpoints: Vec<String>,
    pub bucket: String,
    pub region: String,
    /// Prepended to every key (`""` or ending in `/`).
    #[serde(default)]
    pub prefix: String,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`.
    pub path_style: bool,
    /// A file of `AWS_ACCESS_KEY_ID=...` and `AWS_SECRET_ACCESS_KEY=...` (mode 0600); absent:
    /// those variables from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<std::path::PathBuf>,
    /// PEM CA certificates that sign the endpoints' TLS certificates, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
}

impl StoreConfig {
    pub fn load(root: &Path) -> Result<StoreConfig> {
        let path = root.join(CONFIG_FILE);
        let text = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(format!(
                    "{} holds no appliance store: run `appliance init --data {}` first",
                    root.display(),
                    root.display()
                ))
            } else {
                io_err("read", &path)(e)
            }
        })?;
        let cfg: StoreConfig = serde_json::from_slice(&text)
            .map_err(|e| StoreError::Invalid(format!("parse {}: {e}", path.display())))?;
        if cfg.version != STORE_VERSION {
            return Err(StoreError::Invalid(format!(
                "{} has store version {}; this appliance reads version {STORE_VERSION}",
                path.display(),
                cfg.version
            )));
        }
        Ok(cfg)
    }
}

/// Create the directories of a new store. Refuses a directory that already holds a store.
/// The caller writes keys and tokens, then [`write_config`] last: a store without config.json is
/// an interrupted init and may be initialised again.
pub fn create_layout(root: &Path) -> Result<()> {
    if root.join(CONFIG_FILE).exists() {
        return Err(StoreError::Conflict(format!(
            "{} already holds an appliance store: choose another --data directory or use this one",
            root.display()
        )));
    }
    for d in STORE_DIRS {
        fsx::create_dir_all(&root.join(d))?;
    }
    make_root_private(root)?;
    fs::set_permissions(
        root.join("keys"),
        std::os::unix::fs::PermissionsExt::from_mode(fsx::PRIVATE_DIR_MODE),
    )
    .map_err(io_err("chmod", &root.join("keys")))?;
    Ok(())
}

/// Make the store's directory 0700 (an operator may have made it 0755 before `init`; stores
/// made by older versions hold files created 0644). `Ok(true)` when its mode was changed.
pub fn make_root_private(root: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root)
        .map_err(io_err("stat", root))?
        .permissions()
        .mode();
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(root, fs::Permissions::from_mode(fsx::PRIVATE_DIR_MODE))
        .map_err(io_err("chmod 0700", root))?;
    Ok(true)
}

pub fn write_config(root: &Path, name: &str) -> Result<()> {
    write_config_with(root, name, &Storage::Local)
}

/// [`write_config`] with the data backend `init` was given.
pub fn write_config_with(root: &Path, name: &str, storage: &Storage) -> Result<()> {
    write_config_on(root, name, &Backends::from(storage.clone()))
}

/// [`write_config`] with the data and records backends `init` was given.
pub fn write_config_on(root: &Path, name: &str, backends: &Backends) -> Result<()> {
    let cfg = StoreConfig {
        name: name.to_string(),
        version: STORE_VERSION,
        storage: backends.storage.clone(),
        records: backends.records.clone(),
    };
    let mut bytes =
        serde_json::to_vec_pretty(&cfg).map_err(|e| StoreError::Invalid(e.to_string()))?;
    bytes.push(b'\n');
    // write_atomic fsyncs `root`: the store exists once this returns.
    fsx::write_atomic(&root.join(CONFIG_FILE), &bytes, 0o600)
}
