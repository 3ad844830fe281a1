//! The admin API (docs/protocol.md, "Admin API"): the `appliance` CLI's operations over HTTPS
//! with an admin token — tokens, machines, agents, jobs, migrations, store usage and GC. Each
//! handler checks the role first and validates as the CLI does (the same store calls, the same
//! messages), before anything is created.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use ferry_format::admin::{
    AgentApprove, JobCreate, MachineSummary, StoreUsage, TokenCreate, TokenCreated,
};
use ferry_format::agent::{AgentInfo, JobRecord, Mapping};
use ferry_format::api::{Role, TokenInfo};
use ferry_store::gc::GcReport;
use ferry_store::jobs::{NewBackupJob, NewJob};
use ferry_store::migrations::MigrationRecord;
use ferry_store::tokens::{parse_expiry, NewToken};

use crate::auth::Caller;
use crate::error::{parse_json, ApiError, ApiResult};
use crate::job_commands::{job_for, JobView};
use crate::state::{blocking, SharedState};
use crate::token_commands::scope_for;

fn bad(e: anyhow::Error) -> ApiError {
    ApiError::bad_request(format!("{e:#}"))
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
    if req.role == Role::Agent {
        return Err(ApiError::bad_request(
            "agent credentials are made by enrollment, not as tokens: use role backup, restore, admin, enroll or metrics",
        ));
    }
    let now = SystemTime::now();
    let new = NewToken {
        role: req.role,
        machines: scope_for(req.role, &req.machines, req.all_machines).map_err(bad)?,
        expires: req
            .expires
            .as_deref()
            .map(|e| parse_expiry(e, now))
            .transpose()
            .map_err(ApiError::from)?,
        name: req.name,
    };
    let created = blocking(move || {
        let c = st.store.create_token(&new, now)?;
        let info = st
            .store
            .list_tokens(now)?
            .into_iter()
            .find(|t| t.id == c.id)
            .ok_or_else(|| ferry_store::StoreError::NotFound(format!("token {}", c.id)))?;
        Ok(TokenCreated {
            token: c.token,
            info,
        })
    })
    .await?;
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
    let list = blocking(move || st.store.list_snapshots(None)).await?;
    let mut by: BTreeMap<String, MachineSummary> = BTreeMap::new();
    // Oldest first: each later snapshot of a machine replaces the newest.
    for s in list {
        let e = by
            .entry(s.machine.clone())
            .or_insert_with(|| MachineSummary {
                machine: s.machine.clone(),
                snapshots: 0,
                newest: String::new(),
                newest_created: String::new(),
                newest_consistency: s.consistency.clone(),
                newest_size: 0,
            });
        e.snapshots += 1;
        e.newest = s.snapshot;
        e.newest_created = s.created;
        e.newest_consistency = s.consistency;
        e.newest_size = s.size;
    }
    Ok(Json(by.into_values().collect()))
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

/// `POST /agents/{id}/approve` [`AgentApprove`]: trust the agent with jobs.
pub async fn agent_approve(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AgentInfo>> {
    caller.need(Role::Admin)?;
    let req: AgentApprove = if body.is_empty() {
        AgentApprove::default()
    } else {
        parse_json(&body)?
    };
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
    let now = SystemTime::now();
    let job = match req {
        JobCreate::Restore {
            agent,
            mac,
            snapshot,
            map,
            then,
            overwrite,
            options,
        } => {
            let for_ = job_for(agent, mac).map_err(bad)?;
            let mappings = map
                .iter()
                .map(|m| m.parse::<Mapping>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(ApiError::bad_request)?;
            let new = NewJob {
                snapshot,
                for_,
                mappings,
                then,
                overwrite,
                options,
            };
            blocking(move || st.store.create_job(new, now)).await?
        }
        JobCreate::Backup {
            agent,
            mac,
            machine,
            disks,
            then,
        } => {
            let new = NewBackupJob {
                for_: job_for(agent, mac).map_err(bad)?,
                machine,
                disks,
                then,
            };
            blocking(move || st.store.create_backup_job(new, now)).await?
        }
    };
    tracing::info!("job {} created over the API", job.id);
    Ok((StatusCode::CREATED, Json(job)))
}

/// `GET /migrations`.
pub async fn migrations(
    State(st): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<MigrationRecord>>> {
    caller.need(Role::Admin)?;
    Ok(Json(blocking(move || st.store.list_migrations()).await?))
}

/// `GET /store`: chunks, bytes, deduplication.
pub async fn store_usage(
    State(st): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<StoreUsage>> {
    caller.need(Role::Admin)?;
    let usage = blocking(move || usage(&st.store)).await?;
    Ok(Json(usage))
}

/// Chunks, bytes and deduplication of a store (`GET /store`, `appliance store`).
pub fn usage(store: &ferry_store::Store) -> Result<StoreUsage, ferry_store::StoreError> {
    let u = store.chunk_usage()?;
    let list = store.list_snapshots(None)?;
    let refs: u64 = list.iter().map(|s| s.data_chunks).sum();
    let machines = list
        .iter()
        .map(|s| s.machine.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    Ok(StoreUsage {
        chunks: u.chunks,
        chunk_bytes: u.bytes,
        chunk_references: refs,
        dedup_ratio: if u.chunks == 0 {
            0.0
        } else {
            refs as f64 / u.chunks as f64
        },
        snapshots: list.len() as u64,
        machines,
    })
}

/// `POST /gc`: run a garbage collection now (safe while backups run: the store's GC rules) and
/// answer its report.
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
