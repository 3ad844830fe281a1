//! The appliance's records behind one trait: agents, jobs and their event logs, sources,
//! migrations, sessions and beacons. Two backends:
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

pub use local::LocalRecords;
pub use pg::{PgConfig, PgRecords, SCHEMA_VERSION};

use crate::Result;

/// A kind of record. The numbers are part of the PostgreSQL advisory lock keys: never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Collection {
    Agents,
    Jobs,
    Sources,
    Migrations,
    Sessions,
    Beacons,
}

impl Collection {
    pub const ALL: [Collection; 6] = [
        Collection::Agents,
        Collection::Jobs,
        Collection::Sources,
        Collection::Migrations,
        Collection::Sessions,
        Collection::Beacons,
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
        let mut out = Vec::new();
        for id in self.ids(c)? {
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
}
