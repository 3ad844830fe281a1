//! What a token may reach beyond its role (docs/protocol.md, "Tokens"):
//! - a backup session only by the token that opened it ([`own_session`]);
//! - a restore token with a machine scope reads only manifests and indexes of snapshots of its
//!   machines, and only chunks some such snapshot references ([`may_read_snapshot`],
//!   [`may_read_chunk`]); agent credentials are checked by `agents.rs`.
//!
//! Chunk checks use [`ScopeCache`]: per scope, the snapshots seen and the union of the chunk ids
//! of those in scope. A hit needs no I/O. A miss re-lists `snapshots/` (one readdir), reads the
//! manifest of each new snapshot and the indexes of new ones in scope, and asks again; when an
//! in-scope snapshot disappeared (prune) the union is rebuilt. A chunk once readable stays
//! readable only until such a rebuild, and it belonged to a snapshot in scope anyway.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::StatusCode;
use ferry_format::api::{MachineScope, Role};
use ferry_format::ChunkId;
use ferry_store::sessions::SessionRecord;
use ferry_store::{Store, StoreError};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::handlers::ApiResult;
use crate::state::{blocking, SharedState};

/// Scopes whose chunk sets are kept; past this the cache starts over.
const SCOPES_CACHED: usize = 16;

/// The session's record when `caller` opened it (403 otherwise).
pub async fn own_session(
    st: &SharedState,
    caller: &Caller,
    session: &str,
) -> ApiResult<SessionRecord> {
    caller.need(Role::Backup)?;
    let (s, id) = (st.clone(), session.to_string());
    let rec = blocking(move || s.store.session(&id, SystemTime::now())).await?;
    let forbidden = |why: String| Err(ApiError::new(StatusCode::FORBIDDEN, why));
    match (&rec.token, caller.token_id()) {
        (Some(owner), Some(me)) if owner == me => {}
        (None, _) => {
            return forbidden(format!(
                "backup session {session} was opened before sessions were bound to tokens: start a new backup"
            ))
        }
        _ => {
            return forbidden(format!(
                "backup session {session} was opened by another token: a session is used only by \
                 the token that opened it; start your own backup (POST /backups)"
            ))
        }
    }
    caller.need_machine(&rec.machine)?;
    Ok(rec)
}

fn out_of_scope(caller: &Caller, what: String) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "token {} reads only machines {}, and {what}: use a restore token whose scope includes it",
            caller.token_id().unwrap_or("?"),
            caller.scope()
        ),
    )
}

/// Restore tokens read the snapshots of machines in their scope; agents their job's snapshot.
pub async fn may_read_snapshot(st: &SharedState, caller: &Caller, snapshot: &str) -> ApiResult<()> {
    if caller.role == Role::Agent {
        return crate::agents::may_read_snapshot(st, caller, snapshot).await;
    }
    caller.need(Role::Restore)?;
    if caller.scope().is_all() {
        return Ok(());
    }
    let (s, id) = (st.clone(), snapshot.to_string());
    let machine = blocking(move || s.store.manifest(&id).map(|m| m.machine)).await?;
    if caller.scope().allows(&machine) {
        Ok(())
    } else {
        Err(out_of_scope(
            caller,
            format!("snapshot {snapshot} is of machine {machine}"),
        ))
    }
}

/// Restore tokens read chunks referenced by a snapshot in their scope; agents their job's.
pub async fn may_read_chunk(st: &SharedState, caller: &Caller, id: ChunkId) -> ApiResult<()> {
    if caller.role == Role::Agent {
        return crate::agents::may_read_chunk(st, caller, id).await;
    }
    caller.need(Role::Restore)?;
    let scope = caller.scope();
    if scope.is_all() {
        return Ok(());
    }
    let s = st.clone();
    let allowed = blocking(move || s.scopes.allows(&s.store, &scope, &id)).await?;
    if allowed {
        Ok(())
    } else {
        Err(out_of_scope(
            caller,
            format!("chunk {id} is in no snapshot of those machines"),
        ))
    }
}

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
