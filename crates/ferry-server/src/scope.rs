//! What a token may reach beyond its role (docs/protocol.md, "Tokens"):
//! - a backup session only by the token that opened it ([`own_session`]);
//! - a restore token with a machine scope reads only manifests and indexes of snapshots of its
//!   machines, and only chunks some such snapshot references ([`may_read_snapshot`],
//!   [`may_read_chunk`]); agent credentials are checked by `standby.rs` (a migration's standby)
//!   and `agents.rs` (any other agent).
//!
//! Chunk checks ask the state's [`crate::scope_cache::ScopeCache`].

use std::time::SystemTime;

use axum::http::StatusCode;
use ferry_format::api::Role;
use ferry_format::ChunkId;
use ferry_store::sessions::SessionRecord;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::{blocking, SharedState};

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
        return crate::standby::may_read_snapshot(st, caller, snapshot).await;
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
        return crate::standby::may_read_chunk(st, caller, id).await;
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
