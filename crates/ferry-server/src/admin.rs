//! The admin API (docs/protocol.md, "Admin API"): the `appliance` CLI's operations over HTTPS
//! with an admin token — tokens, machines and snapshots, agents, jobs, sources and their
//! schedules, migrations, store usage and GC. Each handler checks the role first, then runs the
//! operation of [`crate::ops`] the CLI runs on `--data` (the same checks and messages), before
//! anything is created.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use ferry_format::admin::{
    AgentApprove, JobCreate, MachineSummary, MigrationCreate, PruneReport, PruneRequest,
    ScheduleChange, StoreUsage, TokenCreate, TokenCreated,
};
use ferry_format::agent::{AgentInfo, JobRecord};
use ferry_format::api::{Role, SnapshotSummary, TokenInfo};
use ferry_store::gc::{GcReport, GcStatus};
use ferry_store::views::{MigrationView, SourceView};

use crate::auth::Caller;
use crate::error::{parse_json, ApiError, ApiResult};
use crate::job_commands::JobView;
use crate::ops;
use crate::standby::blocking_m;
use crate::state::{blocking, blocking_api, SharedState};

pub use crate::ops::usage;

/// A JSON body, or `T::default()` for an empty one.
fn body_or_default<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

/// `GET /tokens`: every token without its secret (role, scope, state, last use).
pub async fn tokens(
    State(st): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    caller.need(Role::Admin)?;
    Ok(Json(
        blocking(move || st.store.list_tokens(SystemTime::now())).await?,
    ))
}

/// `POST /tokens` [`TokenCreate`]: 201 [`TokenCreated`] (the token is shown this once).
pub async fn token_create(
    State(st): State<SharedState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    caller.need(Role::Admin)?;
    let req: TokenCreate = parse_json(&body)?;
    let created =
        blocking_api(move || ops::token_create(&st.store, &req, SystemTime::now())).await?;
    tracing::info!(
        "token {} ({}) created over the API",
        created.info.id,
        created.info.role.name()
    );
    Ok((StatusCode::CREATED, Json(created)))
}

/// `DELETE /tokens/{id}`: the revoked token's record.
pub async fn token_revoke(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    caller.need(Role::Admin)?;
    let now = SystemTime::now();
    let info = blocking(move || st.store.revoke_token(&id, now).map(|r| r.info(now))).await?;
    tracing::info!("token {} revoked over the API", info.id);
    Ok(Json(info))
}

/// `GET /machines`: machines with snapshots, each with its newest.
pub async fn machines(
    State(st): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<MachineSummary>>> {
    caller.need(Role::Admin)?;
    Ok(Json(blocking(move || ops::machines(&st.store)).await?))
}

/// `POST /machines/{machine}/prune` [`PruneRequest`]: the plan, executed unless `dry_run`.
pub async fn prune(
    State(st): State<SharedState>,
    caller: Caller,
    Path(machine): Path<String>,
    body: Bytes,
) -> ApiResult<Json<PruneReport>> {
    caller.need(Role::Admin)?;
    let req: PruneRequest = parse_json(&body)?;
    let report =
        blocking_api(move || ops::prune(&st.store, &machine, &req, SystemTime::now())).await?;
    if report.removed > 0 {
        tracing::info!(
            "prune over the API: {} snapshots of {} removed",
            report.removed,
            report.machine
        );
    }
    Ok(Json(report))
}

/// `DELETE /snapshots/{id}`: the removed snapshot (409 while a job uses it or a migration
/// pins it).
pub async fn snapshot_delete(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SnapshotSummary>> {
    caller.need(Role::Admin)?;
    let s = blocking(move || st.store.delete_snapshot(&id)).await?;
    tracing::info!(
        "snapshot {} of {} deleted over the API",
        s.snapshot,
        s.machine
    );
    Ok(Json(s))
}

/// `GET /agents`.
pub async fn agents(
    State(st): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<AgentInfo>>> {
    caller.need(Role::Admin)?;
    Ok(Json(blocking(move || st.store.list_agents()).await?))
}

/// `GET /agents/{id}`: state, approval and inventory (disks, NICs, problems).
pub async fn agent(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    caller.need(Role::Admin)?;
    let list = blocking(move || st.store.list_agents()).await?;
    list.into_iter()
        .find(|a| a.agent == id)
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no agent {id}: see GET /api/v1/agents"),
            )
        })
}

/// `DELETE /agents/{id}`: forget an agent (its credential stops working; refused while it runs
/// a job).
pub async fn agent_remove(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.need(Role::Admin)?;
    let gone = id.clone();
    blocking(move || st.store.remove_agent(&id)).await?;
    tracing::info!("agent {gone} removed over the API");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /agents/{id}/approve` [`AgentApprove`]: trust the agent with jobs.
pub async fn agent_approve(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AgentInfo>> {
    caller.need(Role::Admin)?;
    let req: AgentApprove = body_or_default(&body)?;
    let info = blocking(move || {
        st.store
            .approve_agent(&id, req.code.as_deref(), SystemTime::now())
    })
    .await?;
    tracing::info!("agent {} approved over the API", info.agent);
    Ok(Json(info))
}

/// `GET /jobs`: every job, oldest first.
pub async fn jobs(
    State(st): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<JobRecord>>> {
    caller.need(Role::Admin)?;
    Ok(Json(blocking(move || st.store.list_jobs()).await?))
}

/// `GET /jobs/{id}`: the record, its beacon and its event log.
pub async fn job(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    caller.need(Role::Admin)?;
    Ok(Json(
        blocking(move || crate::job_commands::job_view(&st.store, &id)).await?,
    ))
}

/// `POST /jobs` [`JobCreate`]: 201 with the record; refused (400, 404, 409) with the CLI's
/// message before anything is created.
pub async fn job_create(
    State(st): State<SharedState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<JobRecord>)> {
    caller.need(Role::Admin)?;
    let req: JobCreate = parse_json(&body)?;
    let job = blocking_api(move || ops::job_create(&st.store, &req, SystemTime::now())).await?;
    tracing::info!("job {} created over the API", job.id);
    Ok((StatusCode::CREATED, Json(job)))
}

/// `POST /jobs/{id}/cancel`: a job no agent has started becomes failed ("cancelled by the
/// operator") and never runs; 409 for a running or ended one.
pub async fn job_cancel(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobRecord>> {
    caller.need(Role::Admin)?;
    let s = st.clone();
    let job = blocking(move || s.store.cancel_job(&id, SystemTime::now())).await?;
    tracing::info!("job {} cancelled over the API", job.id);
    st.webhooks.emit(
        "job.failed",
        serde_json::json!({ "job": job.id, "kind": job.kind, "state": job.state, "cancelled": true }),
    );
    Ok(Json(job))
}

/// `GET /sources`: every source machine with its schedule, last and next sync.
pub async fn sources(
    State(st): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<SourceView>>> {
    caller.need(Role::Admin)?;
    Ok(Json(
        blocking(move || st.store.source_views(SystemTime::now())).await?,
    ))
}

/// `GET /sources/{machine}`.
pub async fn source(
    State(st): State<SharedState>,
    caller: Caller,
    Path(machine): Path<String>,
) -> ApiResult<Json<SourceView>> {
    caller.need(Role::Admin)?;
    let rec = blocking(move || st.store.source(&machine)).await?;
    Ok(Json(SourceView::new(&rec, SystemTime::now())))
}

/// `PATCH /sources/{machine}` [`ScheduleChange`]: change the schedule and limits (creates the
/// record for a machine whose agent has not enrolled yet).
pub async fn source_set(
    State(st): State<SharedState>,
    caller: Caller,
    Path(machine): Path<String>,
    body: Bytes,
) -> ApiResult<Json<SourceView>> {
    caller.need(Role::Admin)?;
    let change: ScheduleChange = parse_json(&body)?;
    let v =
        blocking(move || ops::source_set(&st.store, &machine, &change, SystemTime::now())).await?;
    tracing::info!("source {}: schedule changed over the API", v.machine);
    Ok(Json(v))
}

/// `POST /sources/{machine}/sync-now`: a sync at the agent's next poll, paused or not.
pub async fn source_sync_now(
    State(st): State<SharedState>,
    caller: Caller,
    Path(machine): Path<String>,
) -> ApiResult<Json<SourceView>> {
    caller.need(Role::Admin)?;
    let rec = blocking(move || st.store.sync_now(&machine)).await?;
    Ok(Json(SourceView::new(&rec, SystemTime::now())))
}

/// `POST /sources/{machine}/pause`.
pub async fn source_pause(
    st: State<SharedState>,
    caller: Caller,
    machine: Path<String>,
) -> ApiResult<Json<SourceView>> {
    set_paused(st, caller, machine, true).await
}

/// `POST /sources/{machine}/resume`.
pub async fn source_resume(
    st: State<SharedState>,
    caller: Caller,
    machine: Path<String>,
) -> ApiResult<Json<SourceView>> {
    set_paused(st, caller, machine, false).await
}

async fn set_paused(
    State(st): State<SharedState>,
    caller: Caller,
    Path(machine): Path<String>,
    paused: bool,
) -> ApiResult<Json<SourceView>> {
    caller.need(Role::Admin)?;
    let rec = blocking(move || st.store.set_paused(&machine, paused)).await?;
    Ok(Json(SourceView::new(&rec, SystemTime::now())))
}

/// `GET /migrations`: every migration with its standby state and lag.
pub async fn migrations(
    State(st): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<MigrationView>>> {
    caller.need(Role::Admin)?;
    Ok(Json(
        blocking(move || st.store.migration_views(SystemTime::now())).await?,
    ))
}

/// `POST /migrations` [`MigrationCreate`]: 201 with the migration; refused with the CLI's
/// message before anything is created.
pub async fn migration_create(
    State(st): State<SharedState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<MigrationView>)> {
    caller.need(Role::Admin)?;
    let req: MigrationCreate = parse_json(&body)?;
    let s = st.clone();
    let v = blocking_api(move || ops::migration_create(&s.store, &req, SystemTime::now())).await?;
    tracing::info!(
        "migration {} of {} onto {} created over the API",
        v.record.id,
        v.record.machine,
        v.record.agent
    );
    st.webhooks.emit(
        &format!("migration.{}", v.record.state.name()),
        serde_json::json!({ "migration": v.record.id, "machine": v.record.machine, "state": v.record.state.name(), "created": true }),
    );
    Ok((StatusCode::CREATED, Json(v)))
}

/// `POST /migrations/{id}/cancel`: its standby stops, its snapshots are no longer pinned.
pub async fn migration_cancel(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<MigrationView>> {
    caller.need(Role::Admin)?;
    let s = st.clone();
    let m = blocking_m(move || s.store.cancel_migration(&id, SystemTime::now())).await?;
    let s = st.clone();
    let v = blocking(move || s.store.migration_view(m, SystemTime::now())).await?;
    tracing::info!("migration {} cancelled over the API", v.record.id);
    st.webhooks.emit(
        &format!("migration.{}", v.record.state.name()),
        serde_json::json!({ "migration": v.record.id, "state": v.record.state.name() }),
    );
    Ok(Json(v))
}

/// `GET /store`: chunks, bytes, deduplication.
pub async fn store_usage(
    State(st): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<StoreUsage>> {
    caller.need(Role::Admin)?;
    Ok(Json(blocking(move || ops::usage(&st.store)).await?))
}

/// `POST /gc`: run a garbage collection now (safe while backups run: the store's GC rules) and
/// answer its report; 409 while another runs.
pub async fn gc(State(st): State<SharedState>, caller: Caller) -> ApiResult<Json<GcReport>> {
    caller.need(Role::Admin)?;
    let report = blocking(move || st.store.gc(SystemTime::now())).await?;
    tracing::info!(
        "gc over the API: {} chunks removed, {} kept",
        report.removed_chunks,
        report.kept_chunks
    );
    Ok(Json(report))
}

/// `GET /gc`: whether a GC runs now and the last run's outcome (whoever ran it).
pub async fn gc_status(State(st): State<SharedState>, caller: Caller) -> ApiResult<Json<GcStatus>> {
    caller.need(Role::Admin)?;
    Ok(Json(blocking(move || st.store.gc_status()).await?))
}
