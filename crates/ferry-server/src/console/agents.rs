//! Rescue agents: the list (every agent, paged), one agent's inventory and its approval form.

use std::time::{Duration, SystemTime};

use axum::extract::{Form, Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_format::agent::AgentInfo;
use ferry_format::units::human_bytes;
use ferry_store::tokens::parse_rfc3339;
use maud::{html, Markup};
use serde::Deserialize;

use super::{checked_post, error_page, page, paged, read, secure, signed_in};
use crate::state::SharedState;

/// An agent that asked the appliance for work this recently is online (agents long-poll every
/// 30 s at most).
pub(super) const ONLINE_WITHIN: Duration = Duration::from_secs(120);
/// Agents per page of the list.
const PER_PAGE: usize = 100;

pub(super) fn is_online(a: &AgentInfo, now: SystemTime) -> bool {
    parse_rfc3339(&a.last_seen)
        .is_some_and(|t| now.duration_since(t).unwrap_or_default() < ONLINE_WITHIN)
}

pub(super) fn state_name(a: &AgentInfo) -> String {
    format!("{:?}", a.state).to_lowercase()
}

/// Online first, then unapproved, then the most recently seen (RFC 3339 UTC sorts by time).
pub(super) fn by_attention(list: &mut [AgentInfo], now: SystemTime) {
    list.sort_by(|a, b| {
        (
            !is_online(a, now),
            a.approved.is_some(),
            std::cmp::Reverse(&a.last_seen),
        )
            .cmp(&(
                !is_online(b, now),
                b.approved.is_some(),
                std::cmp::Reverse(&b.last_seen),
            ))
    });
}

pub(super) fn agent_row(a: &AgentInfo, now: SystemTime) -> Markup {
    html! {
        tr data-agent=(a.agent) {
            td { a.agent href=(format!("/ui/agents/{}", a.agent)) { (a.agent) } }
            td { (state_name(a)) }
            td { @if is_online(a, now) { "online" } @else { "offline" } }
            td { @if a.approved.is_some() { "yes" } @else { strong { "awaiting approval" } } }
            td { (a.last_seen) }
            td.num { (a.inventory.disks.len()) }
        }
    }
}

pub(super) fn agent_table(rows: &[AgentInfo], now: SystemTime) -> Markup {
    html! {
        table #agent-list {
            thead { tr { th scope="col" { "Agent" } th scope="col" { "State" } th scope="col" { "Online" } th scope="col" { "Approved" } th scope="col" { "Last seen" } th.num scope="col" { "Disks" } } }
            tbody { @for a in rows { (agent_row(a, now)) } }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    /// 1-based.
    #[serde(default)]
    page: Option<usize>,
}

/// `GET /ui/agents[?page=N]`: every agent, online and unapproved first, [`PER_PAGE`] a page.
pub async fn agents(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = st.clone();
    let mut list = match read(&csrf, move || s.store.list_agents()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let now = SystemTime::now();
    by_attention(&mut list, now);
    let online = list.iter().filter(|a| is_online(a, now)).count();
    let waiting = list.iter().filter(|a| a.approved.is_none()).count();
    let (rows, nav) = paged(&list, q.page, PER_PAGE, "/ui/agents?");
    let body = html! {
        section aria-label="agents" {
            h2 { "Rescue agents" }
            p #agent-counts { (list.len()) " enrolled · " (online) " online · " (waiting) " awaiting approval" }
            (agent_table(rows, now))
            (nav)
        }
    };
    secure(page("Agents", Some(&csrf), body).into_response())
}

/// `GET /ui/agents/{id}`: state, inventory, problems; the approval form while unapproved.
pub async fn agent(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = st.clone();
    let list = match read(&csrf, move || s.store.list_agents()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Some(a) = list.into_iter().find(|a| a.agent == id) else {
        return error_page(&csrf, StatusCode::NOT_FOUND, &format!("No agent {id}."));
    };
    let inv = &a.inventory;
    let body = html! {
        section {
            h2 { "Agent " (a.agent) }
            dl #agent {
                dt { "State" } dd #agent-state { (state_name(&a)) }
                dt { "Online" } dd { @if is_online(&a, SystemTime::now()) { "yes" } @else { "no (last seen " (a.last_seen) ")" } }
                dt { "Approved" } dd { @match &a.approved { Some(ap) => (format!("{} by {}", ap.time, ap.by)), None => "no: it is given no job" } }
                dt { "Enrolled" } dd { (a.enrolled) } dt { "Last seen" } dd { (a.last_seen) }
                dt { "Firmware" } dd { (format!("{:?}", inv.firmware).to_lowercase()) }
                dt { "Memory" } dd { (human_bytes(inv.memory_bytes)) }
                dt { "CPU" } dd { (inv.cpu.count) " × " (inv.cpu.model.as_deref().unwrap_or("unknown model")) }
                dt { "Version" } dd { (a.version) }
            }
            @if a.approved.is_none() {
                form #approve method="post" action=(format!("/ui/agents/{}/approve", a.agent)) {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="code" { "The code this machine's console shows" }
                    input #code type="text" inputmode="text" name="code" required autocomplete="off";
                    p { button #approve type="submit" { "Approve" } }
                }
            }
        }
        section {
            h2 { "Disks" }
            table #disks {
                thead { tr { th { "Disk" } th.num { "Size" } th { "Model" } th { "Serial" } th { "Blank" } } }
                tbody {
                    @for d in &inv.disks {
                        tr data-disk=(d.name) {
                            td { (d.name) } td.num { (human_bytes(d.size)) }
                            td { (d.model.as_deref().unwrap_or("—")) } td { (d.serial.as_deref().unwrap_or("—")) }
                            td { @if d.blank { "yes" } @else { "no" } }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Network" }
            table #nics {
                thead { tr { th { "NIC" } th { "MAC" } th { "Driver" } th { "Link" } } }
                tbody {
                    @for n in &inv.nics {
                        tr { td { (n.name) } td { (n.mac) } td { (n.driver.as_deref().unwrap_or("—")) }
                             td { @match n.carrier { Some(true) => "up", Some(false) => "down", None => "—" } } }
                    }
                }
            }
            h2 { "Device problems" }
            @if inv.problems.is_empty() {
                p.muted { "None reported: every network and storage controller has its driver and firmware." }
            } @else {
                ul #problems { @for p in &inv.problems { li { (p.to_string()) } } }
            }
        }
    };
    secure(page(&format!("Agent {id}"), Some(&csrf), body).into_response())
}

#[derive(Deserialize)]
pub struct ApproveForm {
    /// Missing: refused as a wrong token is (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
    code: String,
}

/// `POST /ui/agents/{id}/approve`.
pub async fn approve(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ApproveForm>,
) -> Response {
    let csrf = match checked_post(&st, &headers, &f.csrf) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (s, a, code) = (st.clone(), id.clone(), f.code.trim().to_owned());
    match read(&csrf, move || {
        s.store.approve_agent(&a, Some(&code), SystemTime::now())
    })
    .await
    {
        Ok(info) => {
            tracing::info!("console: agent {} approved", info.agent);
            secure(
                (
                    StatusCode::SEE_OTHER,
                    [(LOCATION, format!("/ui/agents/{id}"))],
                )
                    .into_response(),
            )
        }
        Err(r) => r,
    }
}
