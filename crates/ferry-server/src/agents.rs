//! Routes of unattended restores (docs/protocol.md, "Agents and jobs"): enrollment, the
//! long-polled job, events, job state; and what an agent credential may read.
//!
//! The long poll re-reads the jobs directory every [`POLL_EVERY`]: `appliance jobs create` runs
//! in another process (or on another appliance sharing the store), so no in-process signal would
//! reach every waiter. A poll that finds nothing within `wait` seconds answers 204.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_format::agent::{AgentState, EnrollReply, EnrollRequest, EventBatch, JobState};
use ferry_format::api::Role;
use ferry_format::ChunkId;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{parse_json, ApiError, ApiResult};
use crate::state::{blocking, SharedState};

/// How often a waiting long poll looks for a new job.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// Longest `wait` a long poll may ask for (below the agents' 60 s read timeout).
pub const MAX_WAIT: u64 = 55;
/// Snapshots whose chunk sets are kept for agent chunk reads.
const CHUNK_SET_CACHE: usize = 16;

pub async fn enroll(
    State(st): State<SharedState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Json<EnrollReply>> {
    caller.need(Role::Enroll)?;
    let req: EnrollRequest = parse_json(&body)?;
    let reply = blocking(move || st.store.enroll_agent(&req, SystemTime::now())).await?;
    tracing::info!(
        "agent {} enrolled ({}, code {})",
        reply.agent,
        if reply.approved {
            "approved by the proof of its running job"
        } else {
            "waiting for approval: appliance agents approve"
        },
        reply.code
    );
    Ok(Json(reply))
}

#[derive(Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    wait: u64,
}

pub async fn job(
    State(st): State<SharedState>,
    caller: Caller,
    Path(agent): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    caller.need_agent(&agent)?;
    let deadline = Instant::now() + Duration::from_secs(q.wait.min(MAX_WAIT));
    let mut first = true;
    loop {
        let (s, a) = (st.clone(), agent.clone());
        let found = blocking(move || {
            let job = s.store.take_job(&a, SystemTime::now())?;
            if job.is_none() && first {
                s.store.update_agent(&a, |info| {
                    info.last_seen = ferry_store::snapshots::rfc3339(SystemTime::now());
                    if !matches!(info.state, AgentState::Running) {
                        info.state = AgentState::Waiting;
                    }
                })?;
            }
            Ok(job)
        })
        .await?;
        first = false;
        if let Some(job) = found {
            return Ok(Json(job).into_response());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::time::sleep(POLL_EVERY.min(deadline - now)).await;
    }
}

pub async fn events(
    State(st): State<SharedState>,
    caller: Caller,
    Path(agent): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.need_agent(&agent)?;
    let batch: EventBatch = parse_json(&body)?;
    blocking(move || st.store.append_events(&agent, &batch, SystemTime::now())).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn job_state(
    State(st): State<SharedState>,
    caller: Caller,
    Path((agent, job)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.need_agent(&agent)?;
    let state: JobState = parse_json(&body)?;
    let name = state.name();
    let s = st.clone();
    let j = blocking(move || {
        s.store
            .set_job_state(&agent, &job, state, SystemTime::now())
    })
    .await?;
    tracing::info!(
        "job {} of agent {} is {name}",
        j.id,
        j.agent.as_deref().unwrap_or_default()
    );
    st.webhooks.emit(
        &format!("job.{name}"),
        serde_json::json!({
            "job": j.id,
            "kind": j.kind,
            "state": j.state,
            "agent": j.agent,
            "snapshot": j.snapshot,
            "machine": j.backup.as_ref().map(|b| &b.machine),
            "started": j.started,
            "finished": j.finished,
        }),
    );
    Ok(StatusCode::NO_CONTENT)
}

fn not_yours(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("an agent credential reads only the snapshot of its current job, and {what} is not part of it"),
    )
}

/// A restore token reads every snapshot; an agent only its current job's.
pub async fn may_read_snapshot(st: &SharedState, caller: &Caller, snapshot: &str) -> ApiResult<()> {
    let Some(agent) = caller.agent.clone().filter(|_| caller.role == Role::Agent) else {
        return caller.need(Role::Restore);
    };
    let s = st.clone();
    let allowed = blocking(move || s.store.agent_snapshot(&agent)).await?;
    if allowed.as_deref() == Some(snapshot) {
        Ok(())
    } else {
        Err(not_yours(&format!("snapshot {snapshot}")))
    }
}

/// A restore token reads every chunk; an agent only the chunks of its current job's snapshot.
pub async fn may_read_chunk(st: &SharedState, caller: &Caller, id: ChunkId) -> ApiResult<()> {
    let Some(agent) = caller.agent.clone().filter(|_| caller.role == Role::Agent) else {
        return caller.need(Role::Restore);
    };
    let s = st.clone();
    let set = blocking(move || {
        let Some(snapshot) = s.store.agent_snapshot(&agent)? else {
            return Ok(None);
        };
        if let Some(set) = s
            .chunk_sets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&snapshot)
        {
            return Ok(Some(Arc::clone(set)));
        }
        let set: Arc<HashSet<ChunkId>> = Arc::new(s.store.snapshot_chunk_ids(&snapshot)?);
        let mut cache = s.chunk_sets.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CHUNK_SET_CACHE {
            cache.clear();
        }
        cache.insert(snapshot, Arc::clone(&set));
        Ok(Some(set))
    })
    .await?;
    match set {
        Some(set) if set.contains(&id) => Ok(()),
        _ => Err(not_yours(&format!("chunk {id}"))),
    }
}
