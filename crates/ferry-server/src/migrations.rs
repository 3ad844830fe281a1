//! The operator's migration routes (admin token; docs/protocol.md, "Migrations"): read a
//! migration, and cut it over as `appliance migrations cutover` does (creating, listing and
//! cancelling are in [`crate::admin`]).

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use ferry_format::api::Role;
use ferry_format::source::CutoverRequest;
use ferry_store::views::MigrationView;

use crate::auth::Caller;
use crate::error::{parse_json, ApiResult};
use crate::standby::blocking_m;
use crate::state::{blocking, SharedState};

/// `GET /migrations/{id}`: the record (state, standby, cutover timeline, history) with its lag,
/// its source's schedule and the cutover's phases.
pub async fn show(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<MigrationView>> {
    caller.need(Role::Admin)?;
    let s = st.clone();
    let rec = blocking_m(move || s.store.migration(&id)).await?;
    Ok(Json(
        blocking(move || st.store.migration_view(rec, SystemTime::now())).await?,
    ))
}

/// `POST /migrations/{id}/cutover` [`CutoverRequest`]: 202 with the record, now cutting over;
/// 409 when it cannot be (not syncing, standby not in sync, source not enrolled), 404 for an
/// unknown id. An empty body is the default request.
pub async fn cutover(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<MigrationView>)> {
    caller.need(Role::Admin)?;
    let req: CutoverRequest = if body.is_empty() {
        CutoverRequest::default()
    } else {
        parse_json(&body)?
    };
    let s = st.clone();
    let rec = blocking_m(move || {
        s.store
            .request_cutover_with(&id, req.poweroff_source, SystemTime::now())
    })
    .await?;
    st.webhooks.emit(
        &format!("migration.{}", rec.state.name()),
        serde_json::json!({ "migration": rec.id, "state": rec.state.name(), "cutover": "asked" }),
    );
    tracing::info!(
        "migration {}: cutover asked over the API{}",
        rec.id,
        if req.poweroff_source {
            ", the source powers off once the standby writes"
        } else {
            ""
        }
    );
    let view = blocking(move || st.store.migration_view(rec, SystemTime::now())).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
