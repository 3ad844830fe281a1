//! Routes of a migration's standby target (docs/protocol.md, "Standby"; docs/migration.md,
//! "Standby target"), and what a standby agent's credential may read.
//!
//! - `GET /agents/{id}/standby/next?basis=X&wait=S`: the newest snapshot of the migration's
//!   machine when it is not `X` (200 [`StandbyNext`]), 204 after `wait` seconds without one,
//!   410 when the agent is no longer the standby of an active migration (its job ended: stop).
//! - `PUT /agents/{id}/standby/state` [`StandbyReport`]: the disks hold `basis` now.
//! - `POST /agents/{id}/standby/proof` [`StandbyProof`]: an unapproved agent answers the
//!   challenge its enrollment got (a standby that rebooted between applies proves its disks
//!   hold the snapshot it last applied); 200 [`StandbyProven`] binds the standby job to it.
//! - `PUT /agents/{id}/standby/cutover` [`StandbyCutover`]: a step of the cutover with the
//!   final snapshot (`next` answers it with `final: true`); 409 when the migration is not
//!   cutting over to it (an aborted cutover: the standby writes nothing).
//!
//! While an agent is a standby its credential reads exactly the snapshot these routes last
//! handed it and the basis it last reported (manifests, indexes and their chunks), nothing else
//! — not its job's snapshot field, not another snapshot of the same machine. Like the job poll,
//! the long poll re-reads the store every [`POLL_EVERY`]: syncs commit in other requests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_format::agent::{StandbyProof, StandbyProven, StandbyReport};
use ferry_format::api::Role;
use ferry_format::source::StandbyCutover;
use ferry_format::ChunkId;
use ferry_store::migrations::MigrationError;
use ferry_store::StoreError;
use serde::Deserialize;

use crate::agents::{MAX_WAIT, POLL_EVERY};
use crate::auth::Caller;
use crate::error::{parse_json, ApiError, ApiResult};
use crate::state::{blocking, SharedState};

/// Snapshots whose chunk sets the shared cache holds before it starts over (as for restore
/// agents).
const CHUNK_SET_CACHE: usize = 16;

/// `?basis=X&wait=S`.
#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    basis: Option<String>,
    #[serde(default)]
    wait: u64,
}

/// 410 for an agent that is no longer a standby; the store's statuses otherwise.
pub(crate) fn api_error(e: MigrationError) -> ApiError {
    match e {
        MigrationError::NotStandby { .. } => ApiError::new(StatusCode::GONE, e.to_string()),
        other => ApiError::from(StoreError::from(other)),
    }
}

/// Run migration store work off the async threads.
pub(crate) async fn blocking_m<T, F>(f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, MigrationError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a store task failed: {e}")))?
        .map_err(api_error)
}

pub async fn next(
    State(st): State<SharedState>,
    caller: Caller,
    Path(agent): Path<String>,
    Query(q): Query<NextQuery>,
) -> ApiResult<Response> {
    caller.need_agent(&agent)?;
    let basis = q.basis.filter(|b| !b.is_empty());
    let deadline = Instant::now() + Duration::from_secs(q.wait.min(MAX_WAIT));
    loop {
        let (s, a, b) = (st.clone(), agent.clone(), basis.clone());
        let found =
            blocking_m(move || s.store.standby_next(&a, b.as_deref(), SystemTime::now())).await?;
        if let Some(next) = found {
            tracing::info!(
                "standby {agent} of {}: next is snapshot {}",
                next.migration,
                next.snapshot
            );
            return Ok(Json(next).into_response());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::time::sleep(POLL_EVERY.min(deadline - now)).await;
    }
}

pub async fn state(
    State(st): State<SharedState>,
    caller: Caller,
    Path(agent): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.need_agent(&agent)?;
    let report: StandbyReport = parse_json(&body)?;
    let a = agent.clone();
    let m = blocking_m(move || st.store.standby_report(&a, &report, SystemTime::now())).await?;
    tracing::info!("standby {agent} of {}: {}", m.id, m.standby.describe());
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /agents/{id}/standby/proof` [`StandbyProof`]: the answers to the challenge of the
/// agent's enrollment (ferry_store's `possession`). 200 [`StandbyProven`]; 403 when they do
/// not hold (the challenge is used up either way).
pub async fn proof(
    State(st): State<SharedState>,
    caller: Caller,
    Path(agent): Path<String>,
    body: Bytes,
) -> ApiResult<Json<StandbyProven>> {
    caller.need_agent(&agent)?;
    let proof: StandbyProof = parse_json(&body)?;
    let proven =
        blocking(move || st.store.prove_standby(&agent, &proof, SystemTime::now())).await?;
    Ok(Json(proven))
}

pub async fn cutover(
    State(st): State<SharedState>,
    caller: Caller,
    Path(agent): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.need_agent(&agent)?;
    let report: StandbyCutover = parse_json(&body)?;
    let (a, step) = (agent.clone(), report.step);
    let s = st.clone();
    let m = blocking_m(move || s.store.standby_cutover(&a, &report, SystemTime::now())).await?;
    st.webhooks.emit(
        &format!("migration.{}", m.state.name()),
        serde_json::json!({ "migration": m.id, "state": m.state.name(), "cutover_step": step.name(), "standby": agent }),
    );
    tracing::info!(
        "standby {agent} of {}: cutover step {}; the migration is {}",
        m.id,
        step.name(),
        m.state.name()
    );
    Ok(StatusCode::NO_CONTENT)
}

fn not_yours(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "a standby agent's credential reads only the snapshot the standby route handed it and its basis, and {what} is neither"
        ),
    )
}

/// The snapshots an agent caller may read as a standby; `None` when it is not one.
async fn standby_snapshots(st: &SharedState, caller: &Caller) -> ApiResult<Option<Vec<String>>> {
    let Some(agent) = caller.agent.clone().filter(|_| caller.role == Role::Agent) else {
        return Ok(None);
    };
    let s = st.clone();
    blocking(move || s.store.standby_snapshots(&agent)).await
}

/// A standby reads its handed snapshot and basis; any other agent its job's snapshot.
pub async fn may_read_snapshot(st: &SharedState, caller: &Caller, snapshot: &str) -> ApiResult<()> {
    match standby_snapshots(st, caller).await? {
        Some(allowed) if allowed.iter().any(|s| s == snapshot) => Ok(()),
        Some(_) => Err(not_yours(&format!("snapshot {snapshot}"))),
        None => crate::agents::may_read_snapshot(st, caller, snapshot).await,
    }
}

/// A standby reads the chunks of its handed snapshot and basis; any other agent its job's.
pub async fn may_read_chunk(st: &SharedState, caller: &Caller, id: ChunkId) -> ApiResult<()> {
    let Some(allowed) = standby_snapshots(st, caller).await? else {
        return crate::agents::may_read_chunk(st, caller, id).await;
    };
    for snapshot in allowed {
        let s = st.clone();
        let set = blocking(move || chunk_set(&s, &snapshot)).await?;
        if set.contains(&id) {
            return Ok(());
        }
    }
    Err(not_yours(&format!("chunk {id}")))
}

/// Every chunk `snapshot` references, from the state's cache (shared with restore agents).
fn chunk_set(st: &SharedState, snapshot: &str) -> Result<Arc<HashSet<ChunkId>>, StoreError> {
    if let Some(set) = st
        .chunk_sets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(snapshot)
    {
        return Ok(Arc::clone(set));
    }
    let set = Arc::new(st.store.snapshot_chunk_ids(snapshot)?);
    let mut cache = st.chunk_sets.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CHUNK_SET_CACHE {
        cache.clear();
    }
    cache.insert(snapshot.to_string(), Arc::clone(&set));
    Ok(set)
}
