//! Routes of source machines (docs/protocol.md, "Sources"; docs/migration.md): enrollment with
//! a backup token scoped to the machine, the long-polled sync task, and the task's state.
//!
//! A source credential (`src-<machine>.<64 hex>`, [`crate::auth`]) is a backup credential for
//! its one machine, with the public id `src-<machine>` (sessions are bound to it, snapshots
//! record it in `origin.json`), plus these routes for that machine. Like the agents' job, the
//! long poll re-reads the store every [`POLL_EVERY`]: `appliance sources sync-now` runs in
//! another process.

use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_format::api::Role;
use ferry_format::source::{SourceEnrollReply, SourceEnrollRequest, TaskState, CREDENTIAL_PREFIX};
use serde::Deserialize;

use crate::agents::{MAX_WAIT, POLL_EVERY};
use crate::auth::Caller;
use crate::error::{parse_json, ApiError, ApiResult};
use crate::state::{blocking, SharedState};

/// The public id a source credential acts under: `src-<machine>`.
pub fn source_id(machine: &str) -> String {
    format!("{CREDENTIAL_PREFIX}{machine}")
}

/// Source `machine`'s credential, or an admin token.
fn need_source(caller: &Caller, machine: &str) -> Result<(), ApiError> {
    if caller.role == Role::Admin || caller.token_id() == Some(source_id(machine).as_str()) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "this route needs source {machine}'s credential: enroll its backup-agent service \
             (POST /sources/enroll with a backup token for {machine})"
        ),
    ))
}

/// `?wait=S`: how long a poll may wait for a task.
#[derive(Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    wait: u64,
}

/// `POST /sources/enroll`: a backup token whose scope includes the machine.
pub async fn enroll(
    State(st): State<SharedState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Json<SourceEnrollReply>> {
    caller.need(Role::Backup)?;
    if let Some(job) = caller.backup_job() {
        // The grant is for the job's one backup, not for a credential that outlives it.
        return Err(crate::error::ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "this agent credential may only upload the backup of its job {job}: enroll a \
                 source with a backup token (`appliance token create --role backup --machine M`)"
            ),
        ));
    }
    let req: SourceEnrollRequest = parse_json(&body)?;
    caller.need_machine(&req.machine)?;
    let machine = req.machine.clone();
    let reply = blocking(move || st.store.enroll_source(&req, SystemTime::now())).await?;
    tracing::info!(
        "source {machine} enrolled with token {}",
        caller.token_id().unwrap_or("?")
    );
    Ok(Json(reply))
}

/// `GET /sources/{machine}/task?wait=S`: the running task again, or a new one when due; 204
/// after `wait` seconds (at most [`MAX_WAIT`]) without one.
pub async fn task(
    State(st): State<SharedState>,
    caller: Caller,
    Path(machine): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    need_source(&caller, &machine)?;
    let deadline = Instant::now() + Duration::from_secs(q.wait.min(MAX_WAIT));
    loop {
        let (s, m) = (st.clone(), machine.clone());
        let found = blocking(move || s.store.take_task(&m, SystemTime::now())).await?;
        if let Some(task) = found {
            return Ok(Json(task).into_response());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::time::sleep(POLL_EVERY.min(deadline - now)).await;
    }
}

/// `PUT /sources/{machine}/tasks/{id}/state`: running, succeeded or failed; 409 for a task
/// that already ended.
pub async fn task_state(
    State(st): State<SharedState>,
    caller: Caller,
    Path((machine, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    need_source(&caller, &machine)?;
    let state: TaskState = parse_json(&body)?;
    let name = state.name();
    let (m, i) = (machine.clone(), id.clone());
    blocking(move || st.store.set_task_state(&m, &i, state, SystemTime::now())).await?;
    tracing::info!("task {id} of source {machine} is {name}");
    Ok(StatusCode::NO_CONTENT)
}
