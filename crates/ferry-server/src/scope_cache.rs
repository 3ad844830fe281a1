//! What restore tokens with a machine scope may read, cached: per scope, the snapshots seen and
//! the union of the chunk ids of those in scope. A hit needs no I/O. A miss re-lists
//! `snapshots/` (one readdir), reads the manifest of each new snapshot and the indexes of new
//! ones in scope, and asks again; when an in-scope snapshot disappeared (prune) the union is
//! rebuilt. A chunk once readable stays readable only until such a rebuild, and it belonged to a
//! snapshot in scope anyway. The checks that use it are in `scope.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ferry_format::api::MachineScope;
use ferry_format::ChunkId;
use ferry_store::{Store, StoreError};

/// Scopes whose chunk sets are kept; past this the cache starts over.
const SCOPES_CACHED: usize = 16;

/// Per machine scope, the chunks its snapshots reference.
#[derive(Default)]
pub struct ScopeCache {
    scopes: Mutex<HashMap<MachineScope, Arc<Mutex<ScopeChunks>>>>,
}

#[derive(Default)]
struct ScopeChunks {
    /// Every snapshot id looked at, in scope or not.
    seen: HashSet<String>,
    in_scope: HashSet<String>,
    chunks: HashSet<ChunkId>,
}

impl ScopeCache {
    /// Whether a snapshot of a machine in `scope` references chunk `id`. Blocking.
    pub fn allows(
        &self,
        store: &Store,
        scope: &MachineScope,
        id: &ChunkId,
    ) -> Result<bool, StoreError> {
        let entry = {
            let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
            if !scopes.contains_key(scope) && scopes.len() >= SCOPES_CACHED {
                scopes.clear();
            }
            Arc::clone(scopes.entry(scope.clone()).or_default())
        };
        let mut chunks = entry.lock().unwrap_or_else(|p| p.into_inner());
        if chunks.chunks.contains(id) {
            return Ok(true);
        }
        chunks.refresh(store, scope)?;
        Ok(chunks.chunks.contains(id))
    }
}

impl ScopeChunks {
    fn refresh(&mut self, store: &Store, scope: &MachineScope) -> Result<(), StoreError> {
        let now: HashSet<String> = store.snapshot_ids()?.into_iter().collect();
        if self.in_scope.iter().any(|s| !now.contains(s)) {
            // A snapshot in scope was pruned: its chunks may no longer be referenced.
            *self = ScopeChunks::default();
        }
        for id in &now {
            if self.seen.contains(id) {
                continue;
            }
            match store.manifest(id) {
                Ok(m) if scope.allows(&m.machine) => match store.snapshot_chunk_ids(id) {
                    Ok(ids) => {
                        self.chunks.extend(ids);
                        self.in_scope.insert(id.clone());
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                },
                Ok(_) => {}
                // Pruned between the listing and now: nothing to read in it.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            self.seen.insert(id.clone());
        }
        self.seen.retain(|s| now.contains(s));
        Ok(())
    }
}
