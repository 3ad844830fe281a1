//! Small bounded caches shared by the sparse formats: mapping tables (qcow2 L2, VMDK GT) and the
//! last decompressed cluster.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ImageError;

/// Bytes of mapping tables kept per open image. 32 MiB of qcow2 L2 tables with 64 KiB clusters
/// map 256 GiB of guest disk, enough that a sequential read never reloads a table.
pub(crate) const TABLE_CACHE_BYTES: usize = 32 << 20;

/// Tables keyed by their file offset, evicted oldest-first. The lock is held only to look up and
/// insert, never across I/O: two threads missing on one table both load it, which is harmless.
pub(crate) struct TableCache<T> {
    inner: Mutex<Inner<T>>,
    max_tables: usize,
}

struct Inner<T> {
    tables: HashMap<u64, Arc<[T]>>,
    order: VecDeque<u64>,
}

impl<T> TableCache<T> {
    pub(crate) fn new(table_bytes: usize) -> Self {
        let max_tables = (TABLE_CACHE_BYTES / table_bytes.max(1)).max(1);
        Self {
            inner: Mutex::new(Inner {
                tables: HashMap::new(),
                order: VecDeque::new(),
            }),
            max_tables,
        }
    }

    pub(crate) fn get_or_load(
        &self,
        key: u64,
        load: impl FnOnce() -> Result<Vec<T>, ImageError>,
    ) -> Result<Arc<[T]>, ImageError> {
        if let Some(t) = lock(&self.inner).tables.get(&key) {
            return Ok(Arc::clone(t));
        }
        let table: Arc<[T]> = load()?.into();
        let mut inner = lock(&self.inner);
        if !inner.tables.contains_key(&key) {
            while inner.order.len() >= self.max_tables {
                match inner.order.pop_front() {
                    Some(old) => {
                        inner.tables.remove(&old);
                    }
                    None => break,
                }
            }
            inner.tables.insert(key, Arc::clone(&table));
            inner.order.push_back(key);
        }
        Ok(table)
    }
}

/// The most recently decompressed cluster or grain, so that small sequential reads inside one
/// compressed cluster inflate it once instead of once per read.
pub(crate) struct LastBlock {
    inner: Mutex<Option<(u64, Arc<[u8]>)>>,
}

impl LastBlock {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(None),
        }
    }

    pub(crate) fn get_or_load(
        &self,
        key: u64,
        load: impl FnOnce() -> Result<Vec<u8>, ImageError>,
    ) -> Result<Arc<[u8]>, ImageError> {
        if let Some((k, data)) = lock(&self.inner).as_ref() {
            if *k == key {
                return Ok(Arc::clone(data));
            }
        }
        let data: Arc<[u8]> = load()?.into();
        *lock(&self.inner) = Some((key, Arc::clone(&data)));
        Ok(data)
    }
}

/// A panic while holding one of these locks cannot leave the cache inconsistent (every update is a
/// single insert or remove), so a poisoned lock is simply taken over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
