//! The dashboard (`GET /ui`) and its JSON state (`GET /ui/state`, polled by `app.js`).
//!
//! One blocking task reads the snapshot list, agents, jobs and source records once; nothing is
//! read per row. What is rendered is bounded: every machine (a row each), at most
//! [`AGENTS_SHOWN`] agents (online and unapproved first, the rest counted with a link to
//! `/ui/agents`), every unfinished job and the last [`FINISHED_SHOWN`] finished ones.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ferry_format::agent::{JobRecord, JobState};
use ferry_format::api::SnapshotSummary;
use ferry_format::source::format_interval;
use ferry_format::units::human_bytes;
use ferry_store::snapshots::rfc3339;
use ferry_store::sources::{next_due, SourceRecord};
use maud::{html, Markup};
use serde::Serialize;

use super::agents::{agent_table, by_attention, is_online};
use super::{page, pct, read, secure, signed_in};
use crate::state::SharedState;

/// Agents listed on the dashboard; the rest are on `/ui/agents`.
const AGENTS_SHOWN: usize = 12;
/// Finished jobs listed after the unfinished ones.
const FINISHED_SHOWN: usize = 10;

/// A job as the dashboard's table and its JSON show it.
#[derive(Serialize)]
struct JobLine {
    id: String,
    kind: String,
    state: &'static str,
    agent: String,
    #[serde(rename = "final")]
    final_: bool,
    progress: String,
    bytes: String,
    rate: String,
    eta: String,
    created: String,
}

/// `3 h 05 min`, `4 min 10 s`, `12 s`.
pub(super) fn duration_text(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {:02} s", secs / 60, secs % 60),
        _ => format!("{} h {:02} min", secs / 3600, (secs % 3600) / 60),
    }
}

fn job_line(j: &JobRecord) -> JobLine {
    let p = &j.progress;
    let running = matches!(j.state, JobState::Running);
    JobLine {
        id: j.id.clone(),
        kind: format!("{:?}", j.kind).to_lowercase(),
        state: j.state.name(),
        agent: j.agent.clone().unwrap_or_else(|| "—".into()),
        final_: j.state.is_final(),
        progress: pct(p.bytes_done, p.bytes_total),
        bytes: if p.bytes_total == 0 {
            "—".into()
        } else {
            format!(
                "{} of {}",
                human_bytes(p.bytes_done),
                human_bytes(p.bytes_total)
            )
        },
        rate: if running && p.rate > 0 {
            format!("{}/s", human_bytes(p.rate))
        } else {
            "—".into()
        },
        eta: if running && p.rate > 0 {
            duration_text(p.eta)
        } else {
            "—".into()
        },
        created: j.created.clone(),
    }
}

/// Every unfinished job, newest first, then the last [`FINISHED_SHOWN`] finished ones.
fn shown_jobs(jobs: &[JobRecord]) -> Vec<JobLine> {
    let open = jobs.iter().rev().filter(|j| !j.state.is_final());
    let done = jobs
        .iter()
        .rev()
        .filter(|j| j.state.is_final())
        .take(FINISHED_SHOWN);
    open.chain(done).map(job_line).collect()
}

fn jobs_table(lines: &[JobLine]) -> Markup {
    html! {
        table #job-list {
            thead { tr {
                th scope="col" { "Job" } th scope="col" { "Kind" } th scope="col" { "State" } th scope="col" { "Agent" }
                th.num scope="col" { "Progress" } th.num scope="col" { "Bytes" } th.num scope="col" { "Rate" }
                th.num scope="col" { "ETA" } th scope="col" { "Created" }
            } }
            tbody #job-rows {
                @for j in lines {
                    tr data-job=(j.id) {
                        td { a.job href=(format!("/ui/jobs/{}", j.id)) { (j.id) } }
                        td { (j.kind) } td.state { (j.state) } td { (j.agent) }
                        td.num.progress { (j.progress) } td.num.bytes { (j.bytes) }
                        td.num.rate { (j.rate) } td.num.eta { (j.eta) } td { (j.created) }
                    }
                }
            }
        }
    }
}

/// When a machine's next backup starts: only source machines are scheduled.
fn next_backup(src: Option<&SourceRecord>, now: SystemTime) -> String {
    let Some(rec) = src else {
        return "not scheduled".into();
    };
    if let Some(t) = &rec.task {
        return format!("{} running since {}", t.kind.name(), t.started);
    }
    let every = format_interval(rec.schedule.interval_seconds);
    match next_due(rec, now) {
        Some(t) if t <= now => format!("due now (every {every})"),
        Some(t) => format!("{} (every {every})", rfc3339(t)),
        None => "paused".into(),
    }
}

/// One row of the machines table.
struct MachineLine<'a> {
    snapshots: usize,
    newest: Option<&'a SnapshotSummary>,
}

/// Every machine with a snapshot, by name.
fn machine_lines(snapshots: &[SnapshotSummary]) -> BTreeMap<&str, MachineLine<'_>> {
    let mut by: BTreeMap<&str, MachineLine> = BTreeMap::new();
    // The list is oldest first: the last one seen is the newest.
    for s in snapshots {
        let e = by.entry(&s.machine).or_insert(MachineLine {
            snapshots: 0,
            newest: None,
        });
        e.snapshots += 1;
        e.newest = Some(s);
    }
    by
}

/// `GET /ui`: store usage, machines with their last and next backup, agents and jobs.
pub async fn dashboard(State(st): State<SharedState>, headers: HeaderMap) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = st.clone();
    let data = read(&csrf, move || {
        Ok((
            s.sessions.chunk_usage(&s.store)?,
            s.store.list_snapshots(None)?,
            s.store.list_agents()?,
            s.store.list_jobs()?,
            s.store.list_sources()?,
        ))
    })
    .await;
    let (usage, snapshots, mut agents, jobs, sources) = match data {
        Ok(d) => d,
        Err(r) => return r,
    };
    let now = SystemTime::now();
    let refs: u64 = snapshots.iter().map(|s| s.data_chunks).sum();
    let dedup = if usage.chunks == 0 {
        0.0
    } else {
        refs as f64 / usage.chunks as f64
    };
    let machines = machine_lines(&snapshots);
    let source_of: HashMap<&str, &SourceRecord> =
        sources.iter().map(|r| (r.machine.as_str(), r)).collect();
    let unsynced: Vec<&SourceRecord> = sources
        .iter()
        .filter(|r| !machines.contains_key(r.machine.as_str()))
        .collect();
    by_attention(&mut agents, now);
    let online = agents.iter().filter(|a| is_online(a, now)).count();
    let waiting = agents.iter().filter(|a| a.approved.is_none()).count();
    let shown = &agents[..agents.len().min(AGENTS_SHOWN)];
    let lines = shown_jobs(&jobs);
    let running = jobs.iter().filter(|j| !j.state.is_final()).count();
    let body = html! {
        section #store aria-label="store" {
            h2 { "Store" }
            p {
                (snapshots.len()) " snapshots of " (machines.len()) " machines · "
                strong { (human_bytes(usage.bytes)) } " used in " (usage.chunks) " chunks · deduplication "
                strong { (format!("{dedup:.2}")) "×" } " · "
                span #agents-online { (online) } " of " (agents.len()) " agents online · "
                span #jobs-running { (running) } " jobs not finished"
            }
        }
        section #machines aria-label="machines" {
            h2 { "Machines" }
            table {
                thead { tr {
                    th scope="col" { "Machine" } th.num scope="col" { "Snapshots" } th scope="col" { "Last backup" }
                    th scope="col" { "Consistency" } th.num scope="col" { "Size" } th scope="col" { "Next backup" }
                } }
                tbody {
                    @for (m, line) in &machines {
                        tr data-machine=(m) {
                            td { a.machine href=(format!("/ui/machines/{m}")) { (m) } }
                            td.num { (line.snapshots) }
                            @if let Some(n) = line.newest {
                                td { (n.created) } td { (n.consistency.to_string()) } td.num { (human_bytes(n.size)) }
                            } @else { td { "—" } td { "—" } td.num { "—" } }
                            td.next { (next_backup(source_of.get(m).copied(), now)) }
                        }
                    }
                    @for r in &unsynced {
                        tr data-machine=(r.machine) {
                            td { a.machine href=(format!("/ui/machines/{}", r.machine)) { (r.machine) } }
                            td.num { "0" } td { "never" } td { "—" } td.num { "—" }
                            td.next { (next_backup(Some(r), now)) }
                        }
                    }
                }
            }
        }
        section #agents aria-label="agents" {
            h2 { "Rescue agents" }
            p { (agents.len()) " enrolled · " (online) " online · " (waiting) " awaiting approval"
                @if agents.len() > shown.len() {
                    " · showing " (shown.len()) ", online and awaiting approval first: "
                    a #all-agents href="/ui/agents" { "all " (agents.len()) " agents" }
                }
            }
            (agent_table(shown, now))
        }
        section #jobs aria-label="jobs" data-live="true" {
            h2 { "Jobs " a #new-job href="/ui/jobs/new" { "(new restore job)" } }
            p.muted { "Unfinished jobs, then the last " (FINISHED_SHOWN) " finished; progress updates by itself." }
            (jobs_table(&lines))
        }
        script src="/ui/app.js" {}
    };
    secure(page("Dashboard", Some(&csrf), body).into_response())
}

/// `GET /ui/state`: what the dashboard polls (JSON): the jobs it lists, with their progress,
/// and the counts that change.
pub async fn dashboard_state(State(st): State<SharedState>, headers: HeaderMap) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = st.clone();
    let (jobs, agents) = match read(&csrf, move || {
        Ok((s.store.list_jobs()?, s.store.list_agents()?))
    })
    .await
    {
        Ok(d) => d,
        Err(r) => return r,
    };
    let now = SystemTime::now();
    secure(
        axum::Json(serde_json::json!({
            "jobs": shown_jobs(&jobs),
            "jobs_running": jobs.iter().filter(|j| !j.state.is_final()).count(),
            "agents_online": agents.iter().filter(|a| is_online(a, now)).count(),
        }))
        .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::duration_text;

    #[test]
    fn durations_read_as_people_say_them() {
        for (s, want) in [
            (0, "0 s"),
            (59, "59 s"),
            (61, "1 min 01 s"),
            (3599, "59 min 59 s"),
            (3600 * 3 + 300, "3 h 05 min"),
        ] {
            assert_eq!(duration_text(s), want);
        }
    }
}
