//! The new restore job form (checked by the store exactly as `appliance jobs create` is) and the
//! job page with its JSON state (polled by `app.js`).

use std::time::SystemTime;

use axum::extract::{Form, Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_format::agent::{JobFor, JobOptions, JobState, Mapping, Then};
use ferry_format::units::human_bytes;
use ferry_store::jobs::NewJob;
use maud::html;
use serde::Deserialize;

use super::dashboard::duration_text;
use super::{checked_post, page, pct, read, secure, signed_in};
use crate::state::{blocking, SharedState};

#[derive(Deserialize, Default)]
pub struct NewJobQuery {
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    agent: Option<String>,
}

/// What the new-job form shows: choices and the values to keep after a refusal.
struct JobForm {
    snapshot: String,
    agent: String,
    map: String,
    grow: bool,
    fixup: bool,
    then: String,
}

async fn job_form_page(st: &SharedState, csrf: &str, f: &JobForm, error: Option<&str>) -> Response {
    let s = st.clone();
    let data = read(csrf, move || {
        Ok((s.store.list_snapshots(None)?, s.store.list_agents()?))
    })
    .await;
    let (snapshots, agents) = match data {
        Ok(d) => d,
        Err(r) => return r,
    };
    let body = html! {
        section {
            h2 { "New restore job" }
            @if let Some(e) = error { p #error .err role="alert" { (e) } }
            form #new-job method="post" action="/ui/jobs" {
                input type="hidden" name="csrf" value=(csrf);
                label for="snapshot" { "Snapshot" }
                select #snapshot name="snapshot" required {
                    @for s in snapshots.iter().rev() {
                        option value=(s.snapshot) selected[s.snapshot == f.snapshot] {
                            (s.snapshot) " — " (s.disks.join(", ")) ", " (human_bytes(s.size))
                        }
                    }
                }
                label for="agent" { "Agent (the machine to restore onto)" }
                select #agent name="agent" required {
                    @for a in &agents {
                        option value=(a.agent) selected[a.agent == f.agent] {
                            (a.agent) " — " (a.inventory.disks.iter().map(|d| format!("{} {}", d.name, human_bytes(d.size))).collect::<Vec<_>>().join(", "))
                            @if a.approved.is_none() { " (not approved)" }
                        }
                    }
                }
                label for="map" { "Disk mapping: SOURCE=TARGET, several separated by spaces (" code { "sda=auto" } ", " code { "sda=/dev/vdb" } ", " code { "sda=serial:XYZ" } ")" }
                input #map type="text" name="map" value=(f.map) required;
                label { input #grow type="checkbox" name="grow" value="on" checked[f.grow]; " Grow the last partition and its filesystem into a larger disk" }
                label { input #fixup type="checkbox" name="fixup" value="on" checked[f.fixup]; " Adapt the restored system to this machine (drivers, boot)" }
                label for="then" { "Then" }
                select #then name="then" {
                    @for t in ["reboot", "poweroff", "none"] { option value=(t) selected[t == f.then] { (t) } }
                }
                p { button #create type="submit" { "Create the job" } }
            }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    secure((status, page("New restore job", Some(csrf), body)).into_response())
}

/// `GET /ui/jobs/new[?snapshot=ID&agent=ID]`.
pub async fn new_job(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<NewJobQuery>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = JobForm {
        snapshot: q.snapshot.unwrap_or_default(),
        agent: q.agent.unwrap_or_default(),
        map: "disk=auto".into(),
        grow: false,
        fixup: true,
        then: "reboot".into(),
    };
    job_form_page(&st, &csrf, &f, None).await
}

#[derive(Deserialize)]
pub struct JobPost {
    /// Missing: refused as a wrong token is (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
    snapshot: String,
    agent: String,
    map: String,
    #[serde(default)]
    grow: Option<String>,
    #[serde(default)]
    fixup: Option<String>,
    then: String,
}

/// `POST /ui/jobs`: the same checks as `appliance jobs create` (the store's), before anything
/// exists; a refusal shows the form again with the message.
pub async fn create_job(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Form(p): Form<JobPost>,
) -> Response {
    let csrf = match checked_post(&st, &headers, &p.csrf) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = JobForm {
        snapshot: p.snapshot.clone(),
        agent: p.agent.clone(),
        map: p.map.clone(),
        grow: p.grow.is_some(),
        fixup: p.fixup.is_some(),
        then: p.then.clone(),
    };
    let mappings: Result<Vec<Mapping>, String> = p
        .map
        .split_whitespace()
        .map(str::parse::<Mapping>)
        .collect();
    let then = match p.then.as_str() {
        "reboot" => Ok(Then::Reboot),
        "poweroff" => Ok(Then::Poweroff),
        "none" => Ok(Then::None),
        other => Err(format!(
            "unknown then-action {other:?}: reboot, poweroff or none"
        )),
    };
    let (mappings, then) = match (mappings, then) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(e), _) | (_, Err(e)) => return job_form_page(&st, &csrf, &f, Some(&e)).await,
    };
    let new = NewJob {
        snapshot: p.snapshot,
        for_: JobFor::Agent(p.agent),
        mappings,
        then,
        overwrite: false,
        options: JobOptions {
            grow: f.grow,
            fixup: f.fixup,
            ..JobOptions::default()
        },
    };
    let s = st.clone();
    match blocking(move || s.store.create_job(new, SystemTime::now())).await {
        Ok(job) => {
            tracing::info!("console: job {} created", job.id);
            secure(
                (
                    StatusCode::SEE_OTHER,
                    [(LOCATION, format!("/ui/jobs/{}", job.id))],
                )
                    .into_response(),
            )
        }
        Err(e) => job_form_page(&st, &csrf, &f, Some(&e.message)).await,
    }
}

/// `GET /ui/jobs/{id}`: state, progress and events, updated in place by /ui/app.js.
pub async fn job(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (s, i) = (st.clone(), id.clone());
    let v = match read(&csrf, move || crate::job_commands::job_view(&s.store, &i)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let j = &v.job;
    let body = html! {
        section #job data-job=(j.id) data-final=(j.state.is_final()) {
            h2 { "Job " (j.id) }
            p {
                "State: " strong { span #state { (j.state.name()) } } " · progress "
                span #progress { (pct(j.progress.bytes_done, j.progress.bytes_total)) }
                " · " span #rate { (human_bytes(j.progress.rate)) "/s" } " · ETA " span #eta { (duration_text(j.progress.eta)) }
            }
            progress #bar max=(j.progress.bytes_total.max(1)) value=(j.progress.bytes_done) {}
            @if let JobState::Failed { reason } = &j.state { p #reason .err role="alert" { (reason) } }
            p { "Snapshot " (j.snapshot) " onto " (match &j.for_ { JobFor::Agent(a) => format!("agent {a}"), JobFor::Mac(m) => format!("the machine with MAC {m}") }) " · created " (j.created) }
        }
        section {
            h2 { "Events" }
            ol #events { @for e in &v.events { li { (e.time) " " (format!("{:?}", e.level).to_lowercase()) " " (e.message) } } }
        }
        script src="/ui/app.js" {}
    };
    secure(page(&format!("Job {id}"), Some(&csrf), body).into_response())
}

/// `GET /ui/jobs/{id}/state`: what the job page polls (JSON).
pub async fn job_state(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = st.clone();
    match read(&csrf, move || crate::job_commands::job_view(&s.store, &id)).await {
        Ok(v) => {
            let j = &v.job;
            let reason = match &j.state {
                JobState::Failed { reason } => Some(reason.clone()),
                _ => None,
            };
            let events: Vec<String> = v
                .events
                .iter()
                .map(|e| {
                    format!(
                        "{} {} {}",
                        e.time,
                        format!("{:?}", e.level).to_lowercase(),
                        e.message
                    )
                })
                .collect();
            secure(
                axum::Json(serde_json::json!({
                    "state": j.state.name(),
                    "final": j.state.is_final(),
                    "progress": pct(j.progress.bytes_done, j.progress.bytes_total),
                    "bytes_done": j.progress.bytes_done,
                    "bytes_total": j.progress.bytes_total,
                    "rate": format!("{}/s", human_bytes(j.progress.rate)),
                    "eta": duration_text(j.progress.eta),
                    "reason": reason,
                    "events": events,
                }))
                .into_response(),
            )
        }
        Err(r) => r,
    }
}
