//! The chunk catalogue of an S3 store in PostgreSQL ([`crate::data::catalogue`]), shared by
//! every node of the store: table `chunk_catalogue` (id, stored length, GC's mark) and advisory
//! locks: keyed (the schema's hash, N) 100 the chunk lock, 101 GC; a snapshot's publication
//! keyed (hash of "ferry publish" and the schema, hash of the snapshot id).
//!
//! The chunk lock is taken shared by every chunk write and touch, so a PostgreSQL session per
//! holder would use up the pool under load. A node holds it through one connection of its own,
//! outside the pool, for all its shared holders (the first one in takes
//! `pg_advisory_lock_shared`, the last one out releases it), and a node-side reader-writer
//! state orders them against this node's exclusive holders (GC's deletions, verify's
//! quarantine), which wait for the node's shared holders to leave, keep new ones out meanwhile,
//! and then take the lock exclusively in PostgreSQL, where they also wait for the other nodes'
//! shared holders. The exclusive, GC and publication locks are taken like the records' locks,
//! on the connection the thread holds its locks on, and catalogue reads and writes run on that
//! connection too while the thread holds one: a thread never needs a second connection while it
//! holds one (8 threads committing at once on a pool of 16 timed out waiting for connections
//! when each lock took a connection of its own).
//!
//! A node's shared hold can last as long as it has uploads in flight, which on a busy node is
//! always, and PostgreSQL grants a waiting exclusive request only once every shared holder is
//! gone: GC on another node would wait for this one to go idle. So a node holding the lock
//! shared looks, at most every [`DRAIN_CHECK`], whether an exclusive request waits for it
//! (`pg_locks`); if one does, it drains: new holders wait, the ones in flight finish (a chunk
//! write each), the lock is released, and the next holder's `pg_advisory_lock_shared` queues
//! behind the exclusive request in PostgreSQL. GC deletes in batches ([`crate::gc`]), so it pays
//! the drain once per batch.
//!
//! If a connection holding a lock dies, PostgreSQL drops the lock with it; the release then
//! logs a warning. Marks are the node's clock (as a local store's mtimes are): GC's margin
//! ([`crate::gc::GC_MARGIN`]) covers the skew between nodes.

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ferry_format::ChunkId;

use super::{off_runtime, LockHow, PgConn, PgRecords};
use crate::chunks::ChunkUsage;
use crate::data::catalogue::{Catalogue, CatalogueEntry};
use crate::data::{DataLock, LockMode};
use crate::error::{Result, StoreError};

const CHUNK_LOCK: i32 = 100;
const GC_LOCK: i32 = 101;
/// How often a node holding the chunk lock shared looks for an exclusive request waiting for it
/// (module doc): a bound on how long GC on another node waits past the uploads in flight.
const DRAIN_CHECK: Duration = Duration::from_millis(250);
/// Whether an exclusive request waits for the chunk lock: the lock function's two keys are
/// `classid` and `objid` in `pg_locks` (`objsubid` 2), as unsigned 32-bit numbers.
const EXCLUSIVE_WAITING: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks \
     WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database \
     WHERE datname = current_database()) AND classid = $1::int4::oid \
     AND objid = $2::int4::oid AND objsubid = 2 AND mode = 'ExclusiveLock' AND NOT granted)";
/// Ids per statement of a batched touch (a known-chunks query holds up to a few thousand).
const TOUCH_BATCH: usize = 4096;

/// The catalogue's view of a [`PgRecords`]: the same pool, schema, lock space and held
/// connections.
#[derive(Clone)]
pub struct PgCatalogue {
    records: PgRecords,
}

impl fmt::Debug for PgCatalogue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chunk catalogue in PostgreSQL {}",
            self.records.inner.target
        )
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
    /// Another node waits for the exclusive lock: no new holders until the readers have left
    /// and the PostgreSQL lock is released (module doc).
    draining: bool,
    /// When this node last looked for a waiting exclusive request.
    checked: Option<Instant>,
    /// The node's connection for the shared lock (kept between holds; held while readers > 0).
    conn: Option<PgConn>,
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

fn first4(h: blake3::Hash) -> [u8; 4] {
    let [a, b, c, d, ..] = *h.as_bytes();
    [a, b, c, d]
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
    pub(super) fn new(records: PgRecords) -> PgCatalogue {
        PgCatalogue { records }
    }

    fn key(&self, n: i32) -> (i32, i32) {
        (self.records.inner.lock_space, n)
    }

    fn with_conn<T: Send>(
        &self,
        op: &str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T> {
        self.records.with_conn(op, f)
    }

    /// Run `sql` (a lock function of key `CHUNK_LOCK`, or a query of it) on the node's
    /// shared-lock connection, opening it first if needed. Called with the lock state held.
    fn on_shared_conn<T: Send>(
        &self,
        st: &mut LockState,
        op: &str,
        sql: &'static str,
        read: impl FnOnce(postgres::Row) -> T + Send,
    ) -> Result<T> {
        let inner = &*self.records.inner;
        let key = self.key(CHUNK_LOCK);
        if st
            .conn
            .as_ref()
            .is_none_or(|c| c.0.as_ref().is_none_or(|c| c.is_closed()))
        {
            let (pg, tls) = (inner.pg.clone(), inner.tls.clone());
            let client =
                off_runtime(move || pg.connect(tls)).map_err(super::db_err(&inner.target, op))?;
            st.conn = Some(PgConn::from(client));
        }
        let Some(conn) = st.conn.as_mut() else {
            return Err(StoreError::Conflict(format!("{op}: no connection")));
        };
        let done = off_runtime(move || {
            inner.run(conn, op, |c| c.query_one(sql, &[&key.0, &key.1]).map(read))
        });
        if done.is_err() {
            // Broken: opened again next time (PostgreSQL dropped its locks with it).
            st.conn = None;
        }
        done
    }

    fn lock_shared(&self) -> Result<DataLock> {
        let lock = &self.records.inner.chunk_lock;
        let mut st = lock.state();
        loop {
            while st.writer || st.writers_waiting > 0 || st.draining {
                st = lock.wait(st);
            }
            if st.readers == 0 || st.checked.is_some_and(|t| t.elapsed() < DRAIN_CHECK) {
                break;
            }
            st.checked = Some(Instant::now());
            let op = "look for a node waiting for the exclusive chunk lock";
            match self.on_shared_conn(&mut st, op, EXCLUSIVE_WAITING, |r| r.get::<_, bool>(0)) {
                Ok(true) => st.draining = true,
                Ok(false) => break,
                // The connection is gone, and the lock with it: the holders in flight fail
                // or finish unprotected either way; drain so the next one takes it again.
                Err(e) => {
                    tracing::warn!("{op}: {e}");
                    st.draining = true;
                }
            }
        }
        if st.readers == 0 {
            self.on_shared_conn(
                &mut st,
                "take the chunk lock (shared)",
                "SELECT pg_advisory_lock_shared($1, $2)",
                drop,
            )?;
            st.checked = Some(Instant::now());
        }
        st.readers += 1;
        drop(st);
        Ok(DataLock::new(SharedGuard { cat: self.clone() }))
    }

    fn lock_exclusive(&self) -> Result<DataLock> {
        let lock = &self.records.inner.chunk_lock;
        let mut st = lock.state();
        st.writers_waiting += 1;
        while st.writer || st.readers > 0 {
            st = lock.wait(st);
        }
        st.writers_waiting -= 1;
        st.writer = true;
        drop(st);
        let taken = self.records.lock_key(
            self.key(CHUNK_LOCK),
            "take the chunk lock (exclusive)",
            LockHow::Wait,
        );
        match taken {
            Ok(Some(pg)) => Ok(DataLock::new(ExclusiveGuard {
                cat: self.clone(),
                pg: Some(pg),
            })),
            Ok(None) | Err(_) => {
                let mut st = lock.state();
                st.writer = false;
                lock.changed.notify_all();
                Err(taken.err().unwrap_or_else(|| {
                    StoreError::Conflict("the exclusive chunk lock was not taken".into())
                }))
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
        let lock = &self.cat.records.inner.chunk_lock;
        let mut st = lock.state();
        st.readers -= 1;
        // No connection: it broke, and PostgreSQL dropped the lock with it (opening one only
        // to unlock would release nothing).
        if st.readers == 0 && st.conn.is_some() {
            let op = "release the shared chunk lock";
            let sql = "SELECT pg_advisory_unlock_shared($1, $2)";
            if let Err(e) = self.cat.on_shared_conn(&mut st, op, sql, drop) {
                // The connection is gone, and the lock with it.
                tracing::warn!("{op}: {e}");
            }
        }
        if st.readers == 0 {
            st.draining = false;
        }
        lock.changed.notify_all();
    }
}

struct ExclusiveGuard {
    cat: PgCatalogue,
    /// The PostgreSQL lock (released first).
    pg: Option<Box<dyn std::any::Any>>,
}

impl Drop for ExclusiveGuard {
    fn drop(&mut self) {
        drop(self.pg.take());
        let lock = &self.cat.records.inner.chunk_lock;
        lock.state().writer = false;
        lock.changed.notify_all();
    }
}

impl Catalogue for PgCatalogue {
    fn describe(&self) -> String {
        format!(
            "the chunk catalogue in PostgreSQL {}",
            self.records.inner.target
        )
    }

    fn lock_chunks(&self, mode: LockMode) -> Result<DataLock> {
        match mode {
            LockMode::Shared => self.lock_shared(),
            LockMode::Exclusive => self.lock_exclusive(),
        }
    }

    fn try_lock_gc(&self) -> Result<Option<DataLock>> {
        Ok(self
            .records
            .lock_key(self.key(GC_LOCK), "take the GC lock", LockHow::Try)?
            .map(DataLock::new))
    }

    fn lock_publish(&self, id: &str) -> Result<DataLock> {
        // Per id: commits of different snapshots publish at once (a publication on S3 is a
        // few requests, ~200 ms); a hash collision only makes two of them wait for each other.
        let space = i32::from_le_bytes(first4(blake3::hash(
            format!("ferry publish\0{}", self.records.inner.schema).as_bytes(),
        )));
        let key = i32::from_le_bytes(first4(blake3::hash(id.as_bytes())));
        self.records
            .lock_key(
                (space, key),
                "take the snapshot publication lock",
                LockHow::Wait,
            )?
            .map(DataLock::new)
            .ok_or_else(|| StoreError::Conflict("the publication lock was not taken".into()))
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
