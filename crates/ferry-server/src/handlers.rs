//! One small handler per route of docs/protocol.md: authorise, parse, hand the store work to a
//! blocking thread, answer.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use ferry_format::api::{
    BackupSession, BackupStart, CommitReply, CommitRequest, Hello, KnownChunksQuery,
    KnownChunksReply, Role, SignedManifest, SnapshotSummary, MAX_KNOWN_QUERY,
};
use ferry_format::consistency::Consistency;
use ferry_format::ChunkId;
use ferry_store::chunks::PutOutcome;
use serde::Deserialize;

use crate::auth::Caller;
use crate::download::blob_response;
use crate::error::{parse_json, ApiError, ApiResult};
use crate::scope::{may_read_chunk, may_read_snapshot, own_session};
use crate::state::{blocking, SharedState};

fn parse_chunk_id(text: &str) -> ApiResult<ChunkId> {
    text.parse()
        .map_err(|e: ferry_format::FormatError| ApiError::bad_request(e.to_string()))
}

pub async fn hello(State(st): State<SharedState>, caller: Caller) -> Json<Hello> {
    Json(Hello {
        appliance: st.store.config().name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        api: 1,
        role: caller.role,
    })
}

pub async fn start_backup(
    State(st): State<SharedState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Json<BackupSession>> {
    caller.need(Role::Backup)?;
    let req: BackupStart = parse_json(&body)?;
    caller.need_machine(&req.machine)?;
    let token = caller.token_id().map(str::to_string);
    let session = blocking(move || {
        st.store.start_session_for(
            &req.machine,
            req.chunk_size,
            token.as_deref(),
            SystemTime::now(),
        )
    })
    .await?;
    Ok(Json(BackupSession { session }))
}

pub async fn known_chunks(
    State(st): State<SharedState>,
    caller: Caller,
    Path(session): Path<String>,
    body: Bytes,
) -> ApiResult<Json<KnownChunksReply>> {
    caller.need(Role::Backup)?;
    let q: KnownChunksQuery = parse_json(&body)?;
    if q.ids.len() > MAX_KNOWN_QUERY {
        return Err(ApiError::bad_request(format!(
            "{} ids in one known-chunks query: ask about at most {MAX_KNOWN_QUERY} at a time",
            q.ids.len()
        )));
    }
    own_session(&st, &caller, &session).await?;
    let missing = blocking(move || st.store.touch_chunks(&q.ids)).await?;
    Ok(Json(KnownChunksReply { missing }))
}

pub async fn put_chunk(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.need(Role::Backup)?;
    let id = parse_chunk_id(&id)?;
    let bytes = body.len() as u64;
    let st2 = st.clone();
    let new = match blocking(move || st2.store.put_chunk(&id, &body)).await? {
        PutOutcome::Stored | PutOutcome::Replaced => true,
        PutOutcome::AlreadyPresent => false,
    };
    st.metrics.chunk_upload(new, bytes);
    Ok(if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    })
}

pub async fn put_index(
    State(st): State<SharedState>,
    caller: Caller,
    Path((session, disk)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<StatusCode> {
    own_session(&st, &caller, &session).await?;
    // Streamed to disk: an index is never held in memory whole (upload.rs).
    crate::upload::receive_index(st, session, disk, &headers, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn commit(
    State(st): State<SharedState>,
    caller: Caller,
    Path(session): Path<String>,
    body: Bytes,
) -> ApiResult<Json<CommitReply>> {
    own_session(&st, &caller, &session).await?;
    let req: CommitRequest = parse_json(&body)?;
    let job = caller.backup_job().map(str::to_owned);
    // `offline` is the rescue image's word about a source that was not running: accepted
    // from an agent's backup job only.
    if req.consistency == Consistency::Offline && job.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "only a rescue agent's backup job records a snapshot as offline: send the \
             consistency the backup actually had (live or point-in-time)",
        ));
    }
    let s = st.clone();
    let (snapshot, summary) = blocking(move || {
        let snapshot = s
            .store
            .commit(&session, &req, &s.signer, SystemTime::now())?;
        if let Some(job) = &job {
            s.store.record_backup_snapshot(job, &snapshot)?;
        }
        let m = s.store.manifest(&snapshot)?;
        let summary = serde_json::json!({
            "snapshot": snapshot,
            "machine": m.machine,
            "created": m.created,
            "consistency": m.consistency,
            "disks": m.disks.iter().map(|d| &d.name).collect::<Vec<_>>(),
            "job": job,
        });
        Ok((snapshot, summary))
    })
    .await?;
    tracing::info!("committed snapshot {snapshot}");
    st.webhooks.emit("snapshot.committed", summary);
    Ok(Json(CommitReply { snapshot }))
}

pub async fn abandon(
    State(st): State<SharedState>,
    caller: Caller,
    Path(session): Path<String>,
) -> ApiResult<StatusCode> {
    own_session(&st, &caller, &session).await?;
    blocking(move || st.store.abandon_session(&session)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct ListQuery {
    machine: Option<String>,
}

pub async fn list_snapshots(
    State(st): State<SharedState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<SnapshotSummary>>> {
    caller.need(Role::Restore)?;
    let scope = caller.scope();
    let mut list = blocking(move || st.store.list_snapshots(q.machine.as_deref())).await?;
    list.retain(|s| scope.allows(&s.machine));
    Ok(Json(list))
}

pub async fn manifest(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SignedManifest>> {
    may_read_snapshot(&st, &caller, &id).await?;
    Ok(Json(
        blocking(move || st.store.signed_manifest(&id, &st.key_id)).await?,
    ))
}

pub async fn snapshot_index(
    State(st): State<SharedState>,
    caller: Caller,
    Path((id, disk)): Path<(String, String)>,
) -> ApiResult<Response> {
    may_read_snapshot(&st, &caller, &id).await?;
    // Streamed from the local file: an index may be 512 MiB (download.rs).
    Ok(blob_response(
        blocking(move || st.store.open_snapshot_index(&id, &disk)).await?,
    ))
}

pub async fn get_chunk(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_chunk_id(&id)?;
    may_read_chunk(&st, &caller, id).await?;
    Ok(blob_response(
        blocking(move || st.store.open_chunk(&id)).await?,
    ))
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route: see docs/protocol.md (all routes are under /api/v1)",
    )
}
