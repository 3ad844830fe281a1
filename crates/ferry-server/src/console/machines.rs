//! A machine's page: its retention, its schedule when it is a source, and its snapshot
//! timeline, newest first and [`PER_PAGE`] a page, each with "restore from here".

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_format::source::{format_interval, TaskState};
use ferry_format::units::human_bytes;
use ferry_store::sources::SourceRecord;
use ferry_store::StoreError;
use maud::{html, Markup};
use serde::Deserialize;

use super::{error_page, page, paged, read, secure, signed_in};
use crate::state::SharedState;

/// Snapshots per page of the timeline.
const PER_PAGE: usize = 100;

#[derive(Deserialize, Default)]
pub struct MachineQuery {
    /// 1-based; page 1 holds the newest snapshots.
    #[serde(default)]
    page: Option<usize>,
}

/// What prunes this machine, in words.
fn retention(name: &str, src: Option<&SourceRecord>) -> Markup {
    match src {
        Some(r) => {
            let s = &r.schedule;
            html! {
                p #retention {
                    "Source machine: after each successful sync the newest " strong { (s.keep) }
                    " snapshots of " (name) " are kept, whoever wrote them; older ones are removed. "
                    "Never removed: a snapshot a pending or running job restores, and the snapshots pinned for a migration or standby"
                    @if r.pinned.is_empty() { " (none now)." } @else { ":" }
                }
                @if !r.pinned.is_empty() {
                    ul #pins { @for p in &r.pinned { li { (p.snapshot) " — held by " (p.by) } } }
                }
                p #schedule {
                    "Schedule: a " (s.consistency.to_string()) " sync every " (format_interval(s.interval_seconds))
                    " after the previous one ended"
                    @if s.paused { strong { " (paused)" } }
                    @if r.credential_hash.is_empty() { " · its backup-agent service has not enrolled yet" }
                    @if let Some(seen) = &r.last_seen { " · agent last seen " (seen) }
                }
            }
        }
        None => html! {
            p #retention {
                "Not a source machine: nothing prunes it automatically. Its snapshots stay until "
                code { "appliance prune --machine " (name) " --keep N" }
                " (or " code { "POST /api/v1/machines/" (name) "/prune" } ") keeps the newest N written by each credential, "
                "never one a pending or running job restores."
            }
        },
    }
}

/// `GET /ui/machines/{name}[?page=N]`.
pub async fn machine(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<MachineQuery>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (s, m) = (st.clone(), name.clone());
    let data = read(&csrf, move || {
        let list = s.store.list_snapshots(Some(&m))?;
        let src = match s.store.source(&m) {
            Ok(r) => Some(r),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        Ok((list, src))
    })
    .await;
    let (mut list, src) = match data {
        Ok(d) => d,
        Err(r) => return r,
    };
    if list.is_empty() && src.is_none() {
        return error_page(
            &csrf,
            StatusCode::NOT_FOUND,
            &format!("No snapshots of machine {name}, and it is not a source machine."),
        );
    }
    list.reverse();
    // What the source agent's syncs reported for the snapshots they took (its recent history).
    let uploaded: HashMap<&str, (u64, u64)> = src
        .iter()
        .flat_map(|r| r.history.iter())
        .filter_map(|t| match &t.state {
            TaskState::Succeeded { snapshot, figures } => {
                Some((snapshot.as_str(), (figures.bytes_read, figures.bytes_sent)))
            }
            _ => None,
        })
        .collect();
    let total: u64 = list.iter().map(|s| s.size).sum();
    let (rows, nav) = paged(&list, q.page, PER_PAGE, &format!("/ui/machines/{name}?"));
    let body = html! {
        section aria-label="retention" {
            h2 { "Machine " (name) }
            p { (list.len()) " snapshots, " (human_bytes(total)) " of disks in all (before deduplication)"
                @if let Some(n) = list.first() { " · newest " (n.created) } }
            (retention(&name, src.as_ref()))
        }
        section aria-label="snapshots" {
            h2 { "Snapshots, newest first" }
            p.muted { "Read / uploaded: what the source agent's sync read and sent (new chunks only, compressed); known for the syncs in its recent history, — otherwise." }
            table #snapshots {
                thead { tr {
                    th scope="col" { "Snapshot" } th scope="col" { "Taken" } th scope="col" { "How it was taken" } th scope="col" { "Disks" }
                    th.num scope="col" { "Size" } th.num scope="col" { "Chunks" } th.num scope="col" { "Read / uploaded" } th scope="col" { span.muted { "Action" } }
                } }
                tbody {
                    @for s in rows {
                        tr data-snapshot=(s.snapshot) {
                            td.wrap { (s.snapshot) } td { (s.created) } td { (s.consistency.to_string()) }
                            td { (s.disks.join(", ")) } td.num { (human_bytes(s.size)) } td.num { (s.data_chunks) }
                            td.num { @match uploaded.get(s.snapshot.as_str()) {
                                Some((r, u)) => { (human_bytes(*r)) " / " (human_bytes(*u)) }
                                None => "—",
                            } }
                            td { a.restore href=(format!("/ui/jobs/new?snapshot={}", s.snapshot)) { "Restore from here" } }
                        }
                    }
                }
            }
            (nav)
        }
    };
    secure(page(&format!("Machine {name}"), Some(&csrf), body).into_response())
}
