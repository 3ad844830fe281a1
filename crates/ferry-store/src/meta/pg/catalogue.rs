//! The chunk catalogue of an S3 store in PostgreSQL ([`crate::data::catalogue`]), shared by
//! every node of the store: table `chunk_catalogue` (id, stored length, GC's mark) and three
//! advisory locks keyed (the schema's hash, N): 100 the chunk lock, 101 GC, 102 publication.
//!
//! The chunk lock is taken shared by every chunk write and touch, so a PostgreSQL session per
//! holder would use up the pool under load. A node holds it through one connection for all its
//! shared holders (the first one in takes `pg_advisory_lock_shared`, the last one out releases
//! it), and a node-side reader-writer state orders them against this node's exclusive holders
//! (GC's deletions, verify's quarantine), which wait for the node's shared holders to leave,
//! keep new ones out meanwhile, and then take the lock exclusively in PostgreSQL on their own
//! connection, where they also wait for the other nodes' shared holders.
//!
//! If a connection holding a lock dies, PostgreSQL drops the lock with it; the release then
//! logs a warning. Marks are the node's clock (as a local store's mtimes are): GC's margin
//! ([`crate::gc::GC_MARGIN`]) covers the skew between nodes.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use ferry_format::ChunkId;

use super::{off_runtime, pool_err, Conn, Inner};
use crate::chunks::ChunkUsage;
use crate::data::catalogue::{Catalogue, CatalogueEntry};
use crate::data::{DataLock, LockMode};
use crate::error::{Result, StoreError};

const CHUNK_LOCK: i32 = 100;
const GC_LOCK: i32 = 101;
const PUBLISH_LOCK: i32 = 102;
/// Ids per statement of a batched touch (a known-chunks query holds up to a few thousand).
const TOUCH_BATCH: usize = 4096;

/// The catalogue's view of a [`super::PgRecords`]: the same pool, schema and lock space.
#[derive(Clone)]
pub struct PgCatalogue {
    inner: Arc<Inner>,
}

impl fmt::Debug for PgCatalogue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chunk catalogue in PostgreSQL {}", self.inner.target)
    }
}

/// The node side of the chunk lock (module doc).
#[derive(Default)]
pub(super) struct ChunkLock {
    state: Mutex<LockState>,
    changed: Condvar,
}

#[derive(Default)]
struct LockState {
    readers: usize,
    writer: bool,
    writers_waiting: usize,
    /// The connection holding the shared lock for this node's readers.
    shared: Option<Conn>,
}

impl ChunkLock {
    fn state(&self) -> MutexGuard<'_, LockState> {
        // A panic under the mutex leaves plain counters: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, LockState>) -> MutexGuard<'a, LockState> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }
}

fn id_of(bytes: &[u8]) -> Result<ChunkId> {
    <[u8; 32]>::try_from(bytes)
        .map(ChunkId)
        .map_err(|_| StoreError::Invalid(format!("a chunk catalogue id of {} bytes", bytes.len())))
}

fn len_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The id range of a prefix (4 hex digits): [lo, hi).
fn prefix_range(prefix: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let bad = || StoreError::Invalid(format!("chunk prefix {prefix:?}: want 4 hex digits"));
    if !crate::data::is_prefix_name(prefix) {
        return Err(bad());
    }
    let n = u16::from_str_radix(prefix, 16).map_err(|_| bad())?;
    let lo = n.to_be_bytes().to_vec();
    // Past the last id of prefix ffff: 33 bytes of 0xff sort after every 32-byte id.
    let hi = match n.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 33],
    };
    Ok((lo, hi))
}

impl PgCatalogue {
    pub(super) fn new(inner: Arc<Inner>) -> PgCatalogue {
        PgCatalogue { inner }
    }

    fn key(&self, n: i32) -> (i32, i32) {
        (self.inner.lock_space, n)
    }

    /// `f` on a pooled connection.
    fn with_conn<T: Send>(
        &self,
        op: &str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T> {
        let inner = &*self.inner;
        off_runtime(move || {
            let mut conn = inner.pool.get().map_err(pool_err(&inner.target, op))?;
            inner.run(&mut conn, op, f)
        })
    }

    /// A connection of its own, for a lock held on it.
    fn lock_conn(&self, op: &str) -> Result<Conn> {
        let inner = &*self.inner;
        off_runtime(|| inner.pool.get()).map_err(pool_err(&inner.target, op))
    }

    /// Run a lock function on `conn`: `pg_advisory_lock*` (void: `true`) or `pg_try_*` (its
    /// answer).
    fn advisory(&self, conn: &mut Conn, op: &str, sql: &'static str, n: i32) -> Result<bool> {
        let key = self.key(n);
        let inner = &*self.inner;
        off_runtime(move || {
            inner.run(conn, op, |c| {
                if sql.contains("_try_") {
                    c.query_one(sql, &[&key.0, &key.1]).map(|r| r.get(0))
                } else {
                    c.execute(sql, &[&key.0, &key.1]).map(|_| true)
                }
            })
        })
    }

    fn release(&self, conn: &mut Conn, sql: &'static str, n: i32, what: &str) {
        if let Err(e) = self.advisory(conn, what, sql, n) {
            // The connection is gone, and the lock with it.
            tracing::warn!("{what}: {e}");
        }
    }

    fn lock_shared(&self) -> Result<DataLock> {
        let lock = &self.inner.chunk_lock;
        let mut st = lock.state();
        while st.writer || st.writers_waiting > 0 {
            st = lock.wait(st);
        }
        if st.readers == 0 {
            let op = "take the chunk lock (shared)";
            let mut conn = self.lock_conn(op)?;
            self.advisory(
                &mut conn,
                op,
                "SELECT pg_advisory_lock_shared($1, $2)",
                CHUNK_LOCK,
            )?;
            st.shared = Some(conn);
        }
        st.readers += 1;
        drop(st);
        Ok(DataLock::new(SharedGuard { cat: self.clone() }))
    }

    fn lock_exclusive(&self) -> Result<DataLock> {
        let lock = &self.inner.chunk_lock;
        let mut st = lock.state();
        st.writers_waiting += 1;
        while st.writer || st.readers > 0 {
            st = lock.wait(st);
        }
        st.writers_waiting -= 1;
        st.writer = true;
        drop(st);
        let op = "take the chunk lock (exclusive)";
        let taken = self.lock_conn(op).and_then(|mut conn| {
            self.advisory(&mut conn, op, "SELECT pg_advisory_lock($1, $2)", CHUNK_LOCK)
                .map(|_| conn)
        });
        match taken {
            Ok(conn) => Ok(DataLock::new(ExclusiveGuard {
                cat: self.clone(),
                conn,
            })),
            Err(e) => {
                let mut st = lock.state();
                st.writer = false;
                lock.changed.notify_all();
                Err(e)
            }
        }
    }
}

/// This node's share of the shared chunk lock.
struct SharedGuard {
    cat: PgCatalogue,
}

impl Drop for SharedGuard {
    fn drop(&mut self) {
        let lock = &self.cat.inner.chunk_lock;
        let mut st = lock.state();
        st.readers -= 1;
        if st.readers == 0 {
            if let Some(mut conn) = st.shared.take() {
                self.cat.release(
                    &mut conn,
                    "SELECT pg_advisory_unlock_shared($1, $2)",
                    CHUNK_LOCK,
                    "release the shared chunk lock",
                );
            }
        }
        lock.changed.notify_all();
    }
}

struct ExclusiveGuard {
    cat: PgCatalogue,
    conn: Conn,
}

impl Drop for ExclusiveGuard {
    fn drop(&mut self) {
        self.cat.release(
            &mut self.conn,
            "SELECT pg_advisory_unlock($1, $2)",
            CHUNK_LOCK,
            "release the exclusive chunk lock",
        );
        let lock = &self.cat.inner.chunk_lock;
        lock.state().writer = false;
        lock.changed.notify_all();
    }
}

/// A lock held on a connection of its own (GC's, a publication's).
struct ConnGuard {
    cat: PgCatalogue,
    conn: Conn,
    n: i32,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let n = self.n;
        self.cat.release(
            &mut self.conn,
            "SELECT pg_advisory_unlock($1, $2)",
            n,
            "release a catalogue lock",
        );
    }
}

impl Catalogue for PgCatalogue {
    fn describe(&self) -> String {
        format!("the chunk catalogue in PostgreSQL {}", self.inner.target)
    }

    fn lock_chunks(&self, mode: LockMode) -> Result<DataLock> {
        match mode {
            LockMode::Shared => self.lock_shared(),
            LockMode::Exclusive => self.lock_exclusive(),
        }
    }

    fn try_lock_gc(&self) -> Result<Option<DataLock>> {
        let op = "take the GC lock";
        let mut conn = self.lock_conn(op)?;
        let got = self.advisory(
            &mut conn,
            op,
            "SELECT pg_try_advisory_lock($1, $2)",
            GC_LOCK,
        )?;
        Ok(got.then(|| {
            DataLock::new(ConnGuard {
                cat: self.clone(),
                conn,
                n: GC_LOCK,
            })
        }))
    }

    fn lock_publish(&self) -> Result<DataLock> {
        let op = "take the snapshot publication lock";
        let mut conn = self.lock_conn(op)?;
        self.advisory(
            &mut conn,
            op,
            "SELECT pg_advisory_lock($1, $2)",
            PUBLISH_LOCK,
        )?;
        Ok(DataLock::new(ConnGuard {
            cat: self.clone(),
            conn,
            n: PUBLISH_LOCK,
        }))
    }

    fn insert(&self, id: &ChunkId, len: u64) -> Result<()> {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let now = SystemTime::now();
        self.with_conn(&format!("catalogue chunk {id}"), |c| {
            c.execute(
                "INSERT INTO chunk_catalogue (id, len, marked) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET len = excluded.len, marked = excluded.marked",
                &[&&id.0[..], &len, &now],
            )
            .map(drop)
        })
    }

    fn mark_at(&self, id: &ChunkId, when: SystemTime) -> Result<bool> {
        self.with_conn(&format!("mark chunk {id}"), |c| {
            c.execute(
                "UPDATE chunk_catalogue SET marked = $2 WHERE id = $1",
                &[&&id.0[..], &when],
            )
            .map(|n| n > 0)
        })
    }

    fn touch_many(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let now = SystemTime::now();
        let mut found = std::collections::HashSet::new();
        for batch in ids.chunks(TOUCH_BATCH) {
            let keys: Vec<&[u8]> = batch.iter().map(|id| &id.0[..]).collect();
            let rows = self.with_conn(&format!("mark {} chunks", batch.len()), |c| {
                c.query(
                    "UPDATE chunk_catalogue SET marked = $2 WHERE id = ANY($1) RETURNING id",
                    &[&keys, &now],
                )
            })?;
            for row in rows {
                found.insert(id_of(row.get::<_, &[u8]>(0))?);
            }
        }
        Ok(ids
            .iter()
            .filter(|id| !found.contains(id))
            .copied()
            .collect())
    }

    fn get(&self, id: &ChunkId) -> Result<Option<CatalogueEntry>> {
        let row = self.with_conn(&format!("look up chunk {id}"), |c| {
            c.query_opt(
                "SELECT len, marked FROM chunk_catalogue WHERE id = $1",
                &[&&id.0[..]],
            )
        })?;
        Ok(row.map(|r| CatalogueEntry {
            id: *id,
            len: len_of(r.get(0)),
            marked: r.get(1),
        }))
    }

    fn remove(&self, id: &ChunkId) -> Result<()> {
        self.with_conn(&format!("forget chunk {id}"), |c| {
            c.execute("DELETE FROM chunk_catalogue WHERE id = $1", &[&&id.0[..]])
                .map(drop)
        })
    }

    fn prefixes(&self) -> Result<Vec<String>> {
        let rows = self.with_conn("list the chunk prefixes", |c| {
            c.query(
                "SELECT DISTINCT substring(id FROM 1 FOR 2) AS p FROM chunk_catalogue ORDER BY p",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| hex::encode(r.get::<_, &[u8]>(0)))
            .collect())
    }

    fn list(&self, prefix: &str) -> Result<Vec<CatalogueEntry>> {
        let (lo, hi) = prefix_range(prefix)?;
        let rows = self.with_conn(&format!("list the chunks of prefix {prefix}"), |c| {
            c.query(
                "SELECT id, len, marked FROM chunk_catalogue WHERE id >= $1 AND id < $2",
                &[&lo, &hi],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(CatalogueEntry {
                    id: id_of(r.get::<_, &[u8]>(0))?,
                    len: len_of(r.get(1)),
                    marked: r.get(2),
                })
            })
            .collect()
    }

    fn usage(&self) -> Result<ChunkUsage> {
        let row = self.with_conn("sum the chunk catalogue", |c| {
            c.query_one(
                "SELECT count(*), coalesce(sum(len), 0)::bigint FROM chunk_catalogue",
                &[],
            )
        })?;
        Ok(ChunkUsage {
            chunks: len_of(row.get(0)),
            bytes: len_of(row.get(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_holds_exactly_its_ids() {
        let (lo, hi) = prefix_range("abcd").unwrap();
        assert_eq!(
            (lo.as_slice(), hi.as_slice()),
            (&[0xab, 0xcd][..], &[0xab, 0xce][..])
        );
        let (lo, hi) = prefix_range("ffff").unwrap();
        let last = [0xffu8; 32];
        assert!(lo.as_slice() <= &last[..] && &last[..] < hi.as_slice());
        for bad in ["", "abc", "abcde", "zzzz", "+abc"] {
            assert!(prefix_range(bad).is_err(), "{bad}");
        }
    }
}
