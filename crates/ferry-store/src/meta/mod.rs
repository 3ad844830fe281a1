//! The appliance's records behind one trait: agents, jobs and their event logs, sources,
//! migrations, backup sessions, beacons and the token table. Two backends:
//!
//! - [`LocalRecords`]: `DIR/<collection>/<id>.json` files written atomically, an flock per
//!   collection (`DIR/<collection>/.lock`): the layout docs/store.md describes. Safe between the
//!   threads and processes of one host.
//! - [`PgRecords`]: one PostgreSQL table of JSON documents, a session advisory lock per
//!   collection: safe between the nodes of a scaled-out appliance (docs/store.md, "Several
//!   nodes").
//!
//! The store's logic (who may take a job, when a schedule fires, what GC may delete) is written
//! once, above this trait, as reads and writes of whole records under the collection's lock; a
//! backend only has to make `lock` exclusive everywhere the store is served from and `put`
//! atomic (a reader sees the old record or the new one).

mod local;
mod pg;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

pub use local::LocalRecords;
pub use pg::{PgConfig, PgRecords, SCHEMA_VERSION};

use crate::config::{RecordsConfig, DEFAULT_PG_POOL};
use crate::error::{io_err, StoreError};
use crate::Result;

/// The records config.json names for the store rooted at `root`. PostgreSQL is connected to
/// and its schema brought up to date here, so a database that is away fails the open, naming
/// it.
pub fn open_records(root: &Path, cfg: &RecordsConfig) -> Result<Arc<dyn Records>> {
    match cfg {
        RecordsConfig::Local => Ok(Arc::new(LocalRecords::new(root))),
        RecordsConfig::Postgres(pg) => Ok(Arc::new(PgRecords::open(&PgConfig {
            url: read_url_file(&pg.url_file)?,
            schema: pg.schema.clone(),
            pool_size: pg.pool_size.unwrap_or(DEFAULT_PG_POOL),
            ca: pg.ca.clone(),
        })?)),
    }
}

/// The PostgreSQL URL from its file: private (like the S3 credentials file), holding the URL
/// alone or a `FERRY_PG_URL=...` line (the env file scripts/pg writes).
pub fn read_url_file(path: &Path) -> Result<String> {
    const WHAT: &str = "the PostgreSQL URL file";
    let meta = std::fs::metadata(path).map_err(io_err("read the PostgreSQL URL file", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::SecretReadable {
            what: WHAT,
            path: path.to_path_buf(),
            mode,
        });
    }
    let text =
        std::fs::read_to_string(path).map_err(io_err("read the PostgreSQL URL file", path))?;
    let from_env = crate::data::s3::parse_env_lines(&text)
        .into_iter()
        .find(|(k, _)| k == "FERRY_PG_URL")
        .map(|(_, v)| v);
    let url = from_env.or_else(|| {
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
    });
    url.filter(|u| !u.is_empty()).ok_or_else(|| {
        StoreError::Invalid(format!(
            "{WHAT} {} holds no URL: write postgres://USER:PASSWORD@HOST:PORT/DATABASE in it",
            path.display()
        ))
    })
}

/// A kind of record. The numbers are part of the PostgreSQL advisory lock keys: never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Collection {
    Agents,
    Jobs,
    Sources,
    Migrations,
    Sessions,
    /// A job's first-boot beacon, keyed by the job's id. Written under the jobs lock (as it
    /// always was): `lock(Beacons)` takes that lock.
    Beacons,
    /// One record, [`TOKENS_RECORD`]: the whole token table (hash -> token record), small and
    /// read whole by every request's authentication.
    Tokens,
    /// A cache, keyed by snapshot id: the snapshot's `SnapshotSummary`, so listing snapshots on
    /// S3 does not GET every manifest. Made again from the manifests when missing; not in
    /// [`Collection::ALL`] (a store move does not copy it).
    SnapshotSummaries,
    /// Documents about the store as a whole ([`crate::state::StateDoc`]: GC's last run,
    /// verify's checkpoint, the webhook), each id a file name at the store's root when the
    /// records are local. Its lock is verify's, taken with [`Records::try_lock`].
    StoreState,
}

/// The id of the token table in [`Collection::Tokens`].
pub const TOKENS_RECORD: &str = "tokens";

impl Collection {
    /// Every collection that holds state (not [`Collection::SnapshotSummaries`], a cache).
    pub const ALL: [Collection; 8] = [
        Collection::Agents,
        Collection::Jobs,
        Collection::Sources,
        Collection::Migrations,
        Collection::Sessions,
        Collection::Beacons,
        Collection::Tokens,
        Collection::StoreState,
    ];

    /// The directory name (local) and the `collection` column (PostgreSQL).
    pub fn name(self) -> &'static str {
        match self {
            Collection::Agents => "agents",
            Collection::Jobs => "jobs",
            Collection::Sources => "sources",
            Collection::Migrations => "migrations",
            Collection::Sessions => "sessions",
            Collection::Beacons => "beacons",
            Collection::Tokens => "tokens",
            Collection::SnapshotSummaries => "snapshot-summaries",
            Collection::StoreState => "store-state",
        }
    }

    /// The collection whose lock guards this one's writes (itself but for beacons).
    pub fn lock_owner(self) -> Collection {
        match self {
            Collection::Beacons => Collection::Jobs,
            c => c,
        }
    }

    /// Second half of the collection's advisory lock key.
    fn lock_number(self) -> i32 {
        match self {
            Collection::Agents => 1,
            Collection::Jobs => 2,
            Collection::Sources => 3,
            Collection::Migrations => 4,
            Collection::Sessions => 5,
            Collection::Beacons => 6,
            Collection::Tokens => 7,
            Collection::SnapshotSummaries => 8,
            Collection::StoreState => 9,
        }
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An exclusive lock on one collection, held until dropped. Not `Send`: the PostgreSQL backend
/// holds it on the taking thread's connection.
pub struct RecordLock {
    _held: Box<dyn std::any::Any>,
}

impl fmt::Debug for RecordLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordLock")
    }
}

/// Where the store keeps its records. Ids are checked by the caller (`names::check_name`);
/// bodies are JSON documents.
pub trait Records: Send + Sync + fmt::Debug {
    /// Exclusive lock on `c` against every thread, process and node using this store. Locks
    /// are taken in the store's lock order (jobs, migrations, agents, sources, ...) to stay
    /// free of deadlocks.
    fn lock(&self, c: Collection) -> Result<RecordLock>;
    /// [`Records::lock`] if no one holds it, else `None` at once.
    fn try_lock(&self, c: Collection) -> Result<Option<RecordLock>>;
    /// The record, or `None` if there is none.
    fn get(&self, c: Collection, id: &str) -> Result<Option<Vec<u8>>>;
    /// Create or replace a record, atomically and durably.
    fn put(&self, c: Collection, id: &str, body: &[u8]) -> Result<()>;
    /// Remove a record and its log; false if there was none.
    fn delete(&self, c: Collection, id: &str) -> Result<bool>;
    /// Every record's id, sorted.
    fn ids(&self, c: Collection) -> Result<Vec<String>>;
    /// Every record with its id, sorted by id; one whose body cannot be read is left out with a
    /// warning (as a damaged file always was).
    fn all(&self, c: Collection) -> Result<Vec<(String, Vec<u8>)>> {
        self.all_with_prefix(c, "")
    }
    /// [`Records::all`] of the records whose id starts with `prefix` (one machine's snapshot
    /// summaries: ids are `<machine>-<time>`).
    fn all_with_prefix(&self, c: Collection, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for id in self.ids(c)?.into_iter().filter(|id| id.starts_with(prefix)) {
            match self.get(c, &id) {
                Ok(Some(body)) => out.push((id, body)),
                // Deleted since the listing.
                Ok(None) => {}
                Err(e) => tracing::warn!("skipping {c} record {id}: {e}"),
            }
        }
        Ok(out)
    }
    /// Append to a record's log (a job's events: JSON lines); returns the log's size after.
    fn append_log(&self, c: Collection, id: &str, data: &[u8]) -> Result<u64>;
    /// A record's log (empty if none).
    fn read_log(&self, c: Collection, id: &str) -> Result<Vec<u8>>;
    /// Bytes in a record's log.
    fn log_size(&self, c: Collection, id: &str) -> Result<u64>;
    /// A value that changes whenever the record is written (`None`: no record), so a reader
    /// that caches a record (the server's token table) re-reads it only when it changed.
    fn stamp(&self, c: Collection, id: &str) -> Result<Option<String>>;
    /// Where the records are, for messages: a directory, or a database and schema.
    fn describe(&self) -> String;
    /// The chunk catalogue an S3 store's nodes share ([`crate::data::catalogue`]), where the
    /// records are shared: `None` keeps it local to the node.
    fn chunk_catalogue(&self) -> Option<Arc<dyn crate::data::catalogue::Catalogue>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_url_file_is_private_and_holds_a_url_alone_or_as_ferry_pg_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg.url");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("# the database\npostgres://u:p@db:5432/ferry\n", 0o600);
        assert_eq!(
            read_url_file(&path).unwrap(),
            "postgres://u:p@db:5432/ferry"
        );
        write("export FERRY_PG_URL='postgres://u:p@h:1/f'\n", 0o400);
        assert_eq!(read_url_file(&path).unwrap(), "postgres://u:p@h:1/f");
        write("postgres://u:p@db/ferry\n", 0o640);
        let e = read_url_file(&path).unwrap_err();
        assert!(
            matches!(e, StoreError::SecretReadable { mode: 0o640, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        write("\n# nothing\n", 0o600);
        assert!(matches!(read_url_file(&path), Err(StoreError::Invalid(_))));
        assert!(read_url_file(&dir.path().join("absent"))
            .unwrap_err()
            .is_not_found());
    }
}
