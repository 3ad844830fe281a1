//! The first-boot beacon's routes (docs/protocol.md, "First-boot beacon"):
//!
//! - `POST /agents/{id}/jobs/{job}/beacon` (the agent's credential, its running job): a new
//!   one-time beacon credential, which the fix-up installs in the restored system.
//! - `POST /beacon` (the beacon credential): the restored system is up. The first report is
//!   recorded with the address it came from (200); a second one is 410 Gone; an unknown or
//!   replaced credential is 401.
//!
//! A beacon credential is not a [`Caller`]: the bearer extractor resolves tokens, agent and
//! source credentials only, so it is refused (401) on every other route. `/beacon` reads its
//! own bearer and asks nothing else of it.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::Json;
use ferry_format::agent::beacon::{credential_job, BeaconIssued, BeaconReply, BeaconReport};
use ferry_store::beacons::BeaconUse;

use crate::auth::Caller;
use crate::error::{parse_json, ApiError, ApiResult};
use crate::state::{blocking, SharedState};

/// `POST /agents/{id}/jobs/{job}/beacon`.
pub async fn issue(
    State(st): State<SharedState>,
    caller: Caller,
    Path((agent, job)): Path<(String, String)>,
) -> ApiResult<Json<BeaconIssued>> {
    caller.need_agent(&agent)?;
    let (a, j) = (agent.clone(), job.clone());
    let credential = blocking(move || st.store.issue_beacon(&a, &j, SystemTime::now())).await?;
    tracing::info!("agent {agent}: issued the first-boot beacon credential of job {job}");
    Ok(Json(BeaconIssued { job, credential }))
}

/// `POST /beacon`.
pub async fn report(
    State(st): State<SharedState>,
    headers: HeaderMap,
    ext: Extensions,
    body: Bytes,
) -> ApiResult<Json<BeaconReply>> {
    let credential = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let job = credential_job(&credential).unwrap_or("?").to_string();
    let report: BeaconReport = parse_json(&body)?;
    let address = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    let addr = address.clone();
    let outcome = blocking(move || {
        st.store
            .record_beacon(&credential, &report, &addr, SystemTime::now())
    })
    .await?;
    match outcome {
        BeaconUse::Recorded(rec) => {
            let booted = rec.booted.unwrap_or_default();
            tracing::info!(
                "job {job}: the restored system reported its first boot from {address} ({})",
                rec.hostname.as_deref().unwrap_or("?")
            );
            Ok(Json(BeaconReply { job, booted }))
        }
        BeaconUse::AlreadyUsed(rec) => Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "this beacon credential was used at {}: a beacon reports once; remove it",
                rec.booted.as_deref().unwrap_or("?")
            ),
        )),
        BeaconUse::Unknown => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown beacon credential: it was replaced by a later fix-up or the job is gone",
        )),
    }
}
