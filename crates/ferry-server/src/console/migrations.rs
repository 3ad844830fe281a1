//! Migrations: the list (machine, standby, state, lag) and one migration's page (standby, lag,
//! history, cutover timeline) with the cutover form. The cutover is confirmed by typing the
//! machine's name, and asked of the store exactly as `POST /api/v1/migrations/{id}/cutover`
//! asks it ([`ferry_store::Store::request_cutover_with`], then the same webhook event); a
//! refusal (not syncing, standby not in sync, source not enrolled) shows the store's message
//! and changes nothing.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::extract::{Form, Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_format::source::format_interval;
use ferry_format::units::human_bytes;
use ferry_store::migrations::{
    lag_seconds, CutoverTimeline, Happened, MigrationRecord, MigrationState,
};
use ferry_store::sources::{next_due, SourceRecord};
use maud::{html, Markup};
use serde::Deserialize;

use super::dashboard::duration_text;
use super::{checked_post, error_page, page, read, secure, signed_in};
use crate::standby::blocking_m;
use crate::state::SharedState;

fn lag_text(lag: Option<u64>) -> String {
    match lag {
        Some(0) => "none: in step with the newest snapshot".into(),
        Some(s) => format!("{} behind the newest snapshot", duration_text(s)),
        None => "—".into(),
    }
}

fn state_cell(s: &MigrationState) -> Markup {
    html! {
        @match s {
            MigrationState::Failed { reason } => { "failed: " (reason) }
            other => (other.name()),
        }
    }
}

/// `GET /ui/migrations`: every migration, newest first.
pub async fn migrations(State(st): State<SharedState>, headers: HeaderMap) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = st.clone();
    let data = read(&csrf, move || {
        Ok((s.store.list_migrations()?, s.store.list_snapshots(None)?))
    })
    .await;
    let (mut list, snapshots) = match data {
        Ok(d) => d,
        Err(r) => return r,
    };
    list.sort_by(|a, b| b.created.cmp(&a.created));
    // The list is oldest first: the last one seen per machine is its newest.
    let newest: HashMap<&str, &str> = snapshots
        .iter()
        .map(|s| (s.machine.as_str(), s.created.as_str()))
        .collect();
    let body = html! {
        section aria-label="migrations" {
            h2 { "Migrations" }
            @if list.is_empty() {
                p { "No migrations. Create one with " code { "appliance migrations create" } " (docs/migration.md)." }
            } @else {
                table #migration-list {
                    thead { tr {
                        th scope="col" { "Migration" } th scope="col" { "Machine" } th scope="col" { "Standby agent" }
                        th scope="col" { "State" } th scope="col" { "Standby" } th scope="col" { "Lag" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for m in &list {
                            @let lag = m.standby.basis_taken.as_deref().zip(newest.get(m.machine.as_str())).and_then(|(b, n)| lag_seconds(b, n));
                            tr data-migration=(m.id) {
                                td { a.migration href=(format!("/ui/migrations/{}", m.id)) { (m.id) } }
                                td { a href=(format!("/ui/machines/{}", m.machine)) { (m.machine) } }
                                td { a href=(format!("/ui/agents/{}", m.agent)) { (m.agent) } }
                                td.state { (state_cell(&m.state)) }
                                td { (m.standby.describe()) }
                                td { (lag_text(lag)) }
                                td { (m.created) }
                            }
                        }
                    }
                }
            }
        }
    };
    secure(page("Migrations", Some(&csrf), body).into_response())
}

/// What one migration's page shows besides the record.
struct Context {
    newest: Option<(String, String)>,
    source: Option<SourceRecord>,
    job_state: Option<String>,
    booted: Option<String>,
}

fn context(st: &SharedState, m: &MigrationRecord) -> Result<Context, ferry_store::StoreError> {
    let newest = st
        .store
        .list_snapshots(Some(&m.machine))?
        .pop()
        .map(|s| (s.snapshot, s.created));
    Ok(Context {
        newest,
        source: st.store.source(&m.machine).ok(),
        job_state: st
            .store
            .job(&m.job)
            .ok()
            .map(|j| j.state.name().to_string()),
        booted: st
            .store
            .beacon(&m.job)
            .ok()
            .flatten()
            .and_then(|b| b.booted),
    })
}

fn history_line(what: &Happened) -> String {
    match what {
        Happened::Created { snapshot } => format!("created from snapshot {snapshot}"),
        Happened::Applied {
            snapshot,
            taken,
            bytes_written,
            seconds,
        } => format!(
            "the standby applied {snapshot} (taken {taken}): {} written in {seconds:.1} s",
            human_bytes(*bytes_written)
        ),
        Happened::Rebound { from, to } => format!(
            "the standby came back as agent {to}{}",
            from.as_deref()
                .map(|f| format!(" (was {f})"))
                .unwrap_or_default()
        ),
        Happened::State { from, to, reason } => format!(
            "{from} → {to}{}",
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    }
}

/// The cutover's steps as they happened, in order.
fn timeline(c: &CutoverTimeline, booted: Option<&str>) -> Markup {
    let steps: [(&str, Option<&str>); 8] = [
        ("asked by the operator", Some(c.requested.as_str())),
        (
            "source's pre_cutover hook started",
            c.hook_started.as_deref(),
        ),
        ("final sync read and sent", c.sync_ended.as_deref()),
        (
            "standby started writing (no way back)",
            c.apply_started.as_deref(),
        ),
        ("standby finished writing", c.apply_ended.as_deref()),
        ("fix-up done", c.fixup_ended.as_deref()),
        ("standby rebooting", c.rebooting.as_deref()),
        ("migrated system booted (beacon)", booted),
    ];
    let times = c.times(booted);
    html! {
        ol #timeline {
            @for (what, when) in steps {
                @if let Some(t) = when { li { (t) " — " (what) } }
            }
        }
        @if let Some(s) = &c.snapshot { p { "Final snapshot " (s)
            @if let Some(k) = &c.consistency { ", " (k.to_string()) }
            @if let Some(b) = c.bytes_sent { ", " (human_bytes(b)) " sent" }
            @if let Some(b) = c.bytes_written { ", " (human_bytes(b)) " written" } } }
        @if c.poweroff_source { p { "The source is powered off once the standby writes"
            @if let Some(t) = &c.poweroff_asked { " (asked " (t) ")" } "." } }
        @if let Some(f) = &c.fixup { p { "Fix-up: " (f) } }
        @if !times.phases.is_empty() {
            table #phases {
                thead { tr { th scope="col" { "Phase" } th.num scope="col" { "Seconds" } } }
                tbody { @for p in &times.phases { tr { td { (p.name) } td.num { (format!("{:.1}", p.seconds)) } } } }
            }
        }
        @if let Some(d) = times.downtime_seconds {
            p #downtime { "Downtime " strong { (format!("{d:.1} s")) }
                @if let Some(u) = &times.downtime_until { " (until the " (u) ")" } }
        }
        @if let Some(e) = &c.ended_by { p.err { "Ended: " (e) } }
    }
}

fn cutover_form(csrf: &str, m: &MigrationRecord, poweroff: bool) -> Markup {
    html! {
        form #cutover method="post" action=(format!("/ui/migrations/{}/cutover", m.id)) {
            input type="hidden" name="csrf" value=(csrf);
            p { "The source's " code { "pre_cutover" } " hook runs, a final sync is taken and applied to the standby, "
                "which is fixed up and reboots as " (m.machine) ". Until the standby starts writing, a failure returns to syncing." }
            label for="confirm" { "To confirm, type the machine's name (" strong { (m.machine) } ")" }
            input #confirm type="text" name="confirm" required autocomplete="off" spellcheck="false";
            label { input #poweroff type="checkbox" name="poweroff" value="on" checked[poweroff];
                " Power off the source once the standby starts writing the final snapshot" }
            p { button #cut-over type="submit" { "Cut over " (m.machine) } }
        }
    }
}

fn migration_body(csrf: &str, m: &MigrationRecord, cx: &Context, error: Option<&str>) -> Markup {
    let lag = m
        .standby
        .basis_taken
        .as_deref()
        .zip(cx.newest.as_ref())
        .and_then(|(b, (_, n))| lag_seconds(b, n));
    let now = SystemTime::now();
    html! {
        section #migration data-migration=(m.id) {
            h2 { "Migration " (m.id) " of " a href=(format!("/ui/machines/{}", m.machine)) { (m.machine) } }
            @if let Some(e) = error { p #error .err role="alert" { (e) } }
            dl {
                dt { "State" } dd #migration-state { (state_cell(&m.state)) }
                dt { "Standby agent" } dd { a href=(format!("/ui/agents/{}", m.agent)) { (m.agent) } " · job "
                    a href=(format!("/ui/jobs/{}", m.job)) { (m.job) } " (" (cx.job_state.as_deref().unwrap_or("gone")) ")" }
                dt { "Standby" } dd #standby { (m.standby.describe()) }
                dt { "Lag" } dd #lag { (lag_text(lag)) }
                dt { "Newest snapshot" } dd { @match &cx.newest { Some((s, t)) => { (s) " (" (t) ")" }, None => "none" } }
                @if let (Some(b), Some(s)) = (m.standby.bytes_written, m.standby.seconds) {
                    dt { "Last apply" } dd { (human_bytes(b)) " written in " (format!("{s:.1}")) " s"
                        @if let Some(t) = &m.standby.applied_at { ", done " (t) } }
                }
                dt { "Source syncs" } dd { @match &cx.source {
                    Some(r) => {
                        "every " (format_interval(r.schedule.interval_seconds)) ", keeping " (r.schedule.keep) " · next "
                        (match (r.task.as_ref(), next_due(r, now)) {
                            (Some(t), _) => format!("running now ({})", t.kind.name()),
                            (None, Some(t)) if t <= now => "due now".to_string(),
                            (None, Some(t)) => ferry_store::snapshots::rfc3339(t),
                            (None, None) => "paused".to_string(),
                        })
                    }
                    None => "no source record",
                } }
                dt { "Created" } dd { (m.created) }
            }
            @if m.state == MigrationState::Syncing { (cutover_form(csrf, m, false)) }
        }
        @if let Some(c) = &m.cutover {
            section aria-label="cutover" {
                h2 { "Cutover" }
                (timeline(c, cx.booted.as_deref()))
            }
        }
        section aria-label="history" {
            h2 { "History, newest first" }
            ol #history reversed { @for h in m.history.iter().rev() { li { (h.time) " — " (history_line(&h.what)) } } }
        }
    }
}

/// The migration's page, with `error` (status, message) shown above the form when given.
async fn migration_page(
    st: &SharedState,
    csrf: &str,
    id: String,
    error: Option<(StatusCode, String)>,
) -> Response {
    let s = st.clone();
    let m = match blocking_m(move || s.store.migration(&id)).await {
        Ok(m) => m,
        Err(e) => return error_page(csrf, e.status, &e.message),
    };
    let (s, rec) = (st.clone(), m.clone());
    let cx = match read(csrf, move || context(&s, &rec)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (status, message) = match error {
        Some((s, e)) => (s, Some(e)),
        None => (StatusCode::OK, None),
    };
    let body = migration_body(csrf, &m, &cx, message.as_deref());
    secure(
        (
            status,
            page(&format!("Migration {}", m.id), Some(csrf), body),
        )
            .into_response(),
    )
}

/// `GET /ui/migrations/{id}`.
pub async fn migration(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match signed_in(&st, &headers) {
        Ok(csrf) => migration_page(&st, &csrf, id, None).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub struct CutoverForm {
    /// Missing: refused as a wrong token is (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
    /// The machine's name, typed by the operator.
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    poweroff: Option<String>,
}

/// `POST /ui/migrations/{id}/cutover`: with the machine's name typed as confirmation, asks the
/// cutover as the admin API does; otherwise (or refused) the page again with why, unchanged.
pub async fn cutover(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CutoverForm>,
) -> Response {
    let csrf = match checked_post(&st, &headers, &f.csrf) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (s, i) = (st.clone(), id.clone());
    let m = match blocking_m(move || s.store.migration(&i)).await {
        Ok(m) => m,
        Err(e) => return error_page(&csrf, e.status, &e.message),
    };
    if f.confirm.trim() != m.machine {
        let msg = format!(
            "Type the machine's name, {}, to confirm the cutover: nothing was changed.",
            m.machine
        );
        return migration_page(
            &st,
            &csrf,
            id,
            Some((StatusCode::UNPROCESSABLE_ENTITY, msg)),
        )
        .await;
    }
    let poweroff = f.poweroff.is_some();
    let (s, i) = (st.clone(), id.clone());
    let asked = blocking_m(move || {
        s.store
            .request_cutover_with(&i, poweroff, SystemTime::now())
    })
    .await;
    let rec = match asked {
        Ok(r) => r,
        Err(e) => {
            let msg = format!(
                "The cutover was refused, nothing was changed: {}",
                e.message
            );
            return migration_page(&st, &csrf, id, Some((e.status, msg))).await;
        }
    };
    st.webhooks.emit(
        &format!("migration.{}", rec.state.name()),
        serde_json::json!({ "migration": rec.id, "state": rec.state.name(), "cutover": "asked" }),
    );
    tracing::info!(
        "migration {}: cutover asked in the console{}",
        rec.id,
        if poweroff {
            ", the source powers off once the standby writes"
        } else {
            ""
        }
    );
    secure(
        (
            StatusCode::SEE_OTHER,
            [(LOCATION, format!("/ui/migrations/{id}"))],
        )
            .into_response(),
    )
}
