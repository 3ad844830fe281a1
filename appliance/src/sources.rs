//! `appliance sources`: the source machines that sync to this appliance, their schedules and
//! last syncs (docs/migration.md, "Schedules and retention"; store format docs/store.md,
//! "Sources"). The commands work on the store directly, beside `serve` (another process): a
//! change is seen at the source agent's next poll.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use ferry_format::source::{format_interval, format_rate, Consistency, Schedule, TaskState};
use ferry_format::units::human_bytes;
use ferry_store::snapshots::rfc3339;
use ferry_store::sources::{next_due, Pin, SourceRecord, TaskRecord};
use ferry_store::Store;
use serde::Serialize;

/// History entries `sources show` prints (`--json` has all of them).
const SHOWN_HISTORY: usize = 10;

/// What `sources set` changes; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScheduleChange {
    pub interval_seconds: Option<u64>,
    pub keep: Option<u32>,
    pub consistency: Option<Consistency>,
    /// `Some(None)`: uncapped.
    pub rate: Option<Option<u64>>,
    pub reads_in_flight: Option<u32>,
    pub idle_io: Option<bool>,
    pub chunk_size: Option<u32>,
}

impl ScheduleChange {
    fn apply(&self, s: &mut Schedule) {
        if let Some(v) = self.interval_seconds {
            s.interval_seconds = v;
        }
        if let Some(v) = self.keep {
            s.keep = v;
        }
        if let Some(v) = self.consistency {
            s.consistency = v;
        }
        if let Some(v) = self.rate {
            s.limits.rate_bytes_per_s = v;
        }
        if let Some(v) = self.reads_in_flight {
            s.limits.reads_in_flight = v;
        }
        if let Some(v) = self.idle_io {
            s.limits.idle_io = v;
        }
        if let Some(v) = self.chunk_size {
            s.chunk_size = v;
        }
    }
}

/// `sources list|show --json`: the record without its credential hash, plus the next sync.
#[derive(Serialize)]
pub struct SourceView<'a> {
    pub machine: &'a str,
    /// `not enrolled`, `syncing`, `paused` or `waiting`.
    pub state: &'static str,
    pub enrolled: Option<&'a str>,
    pub last_seen: Option<&'a str>,
    pub version: Option<&'a str>,
    pub schedule: &'a Schedule,
    pub sync_now: bool,
    /// RFC 3339 UTC; absent while a task runs or the schedule is paused.
    pub next_sync: Option<String>,
    pub task: Option<&'a TaskRecord>,
    pub last_sync: Option<&'a TaskRecord>,
    pub history: &'a [TaskRecord],
    pub pinned: &'a [Pin],
}

impl<'a> SourceView<'a> {
    fn new(rec: &'a SourceRecord, now: SystemTime) -> SourceView<'a> {
        SourceView {
            machine: &rec.machine,
            state: state(rec),
            enrolled: rec.enrolled.as_deref(),
            last_seen: rec.last_seen.as_deref(),
            version: rec.version.as_deref(),
            schedule: &rec.schedule,
            sync_now: rec.sync_now,
            next_sync: next_due(rec, now).map(|t| rfc3339(t.max(now))),
            task: rec.task.as_ref(),
            last_sync: rec.last_sync(),
            history: &rec.history,
            pinned: &rec.pinned,
        }
    }
}

fn state(rec: &SourceRecord) -> &'static str {
    if rec.credential_hash.is_empty() {
        "not enrolled"
    } else if rec.task.is_some() {
        "syncing"
    } else if rec.schedule.paused && !rec.sync_now {
        "paused"
    } else {
        "waiting"
    }
}

fn open(data: &Path) -> Result<Store> {
    Store::open(data).with_context(|| format!("open the store {}", data.display()))
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `appliance sources list [--json]`.
pub fn list(data: &Path, json: bool) -> Result<()> {
    let list = open(data)?.list_sources().context("list source machines")?;
    let now = SystemTime::now();
    let views: Vec<SourceView> = list.iter().map(|r| SourceView::new(r, now)).collect();
    if json {
        return print_json(&views);
    }
    let mut out = std::io::stdout().lock();
    if views.is_empty() {
        writeln!(
            out,
            "no source machines: enroll a backup-agent service, or configure one ahead with `appliance sources set MACHINE`"
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:<13} {:>8} {:>4}  {:<34} NEXT SYNC",
        "MACHINE", "STATE", "INTERVAL", "KEEP", "LAST SYNC"
    )?;
    for v in &views {
        writeln!(
            out,
            "{:<20} {:<13} {:>8} {:>4}  {:<34} {}",
            v.machine,
            v.state,
            format_interval(v.schedule.interval_seconds),
            v.schedule.keep,
            v.last_sync.map_or("never".into(), outcome_line),
            next_text(v),
        )?;
    }
    Ok(())
}

/// The next sync as the list shows it.
fn next_text(v: &SourceView) -> String {
    match &v.next_sync {
        Some(_) if v.state == "not enrolled" => "when its agent enrolls".into(),
        Some(n) => n.clone(),
        None if v.task.is_some() => "after the running sync".into(),
        None => "paused".into(),
    }
}

/// `finished outcome`, e.g. `2026-12-04T20:00:00Z succeeded`.
fn outcome_line(t: &TaskRecord) -> String {
    format!(
        "{} {}",
        t.finished.as_deref().unwrap_or(&t.started),
        t.state.name()
    )
}

/// `appliance sources show MACHINE [--json]`.
pub fn show(data: &Path, machine: &str, json: bool) -> Result<()> {
    let rec = open(data)?.source(machine)?;
    let view = SourceView::new(&rec, SystemTime::now());
    if json {
        return print_json(&view);
    }
    let mut out = std::io::stdout().lock();
    write_view(&mut out, &view)?;
    Ok(())
}

fn write_view(out: &mut impl Write, v: &SourceView) -> Result<()> {
    let s = v.schedule;
    writeln!(out, "machine:      {}", v.machine)?;
    writeln!(out, "state:        {}", v.state)?;
    if let Some(e) = v.enrolled {
        writeln!(
            out,
            "enrolled:     {e} (agent {}, last seen {})",
            v.version.unwrap_or("?"),
            v.last_seen.unwrap_or("-")
        )?;
    }
    writeln!(
        out,
        "schedule:     every {} after the previous sync finished, keep {}, {}, {} chunks{}",
        format_interval(s.interval_seconds),
        s.keep,
        s.consistency,
        human_bytes(u64::from(s.chunk_size)),
        if s.paused { ", paused" } else { "" }
    )?;
    writeln!(
        out,
        "limits:       {}, {} reads in flight, idle I/O {}, page cache {}",
        format_rate(s.limits.rate_bytes_per_s),
        s.limits.reads_in_flight,
        if s.limits.idle_io { "on" } else { "off" },
        if s.limits.drop_cache {
            "spared"
        } else {
            "used"
        }
    )?;
    if let Some(t) = v.task {
        writeln!(out, "running:      {} since {}", t.id, t.started)?;
    }
    let next = match (&v.next_sync, v.sync_now) {
        (Some(_), _) if v.state == "not enrolled" => {
            "at its agent's first poll (enroll its backup-agent service)".to_string()
        }
        (Some(_), true) => "now (sync-now asked)".to_string(),
        (Some(n), false) => n.clone(),
        (None, _) if v.task.is_some() => "after the running sync".into(),
        (None, _) => "none while paused (`appliance sources resume`)".into(),
    };
    writeln!(out, "next sync:    {next}")?;
    match v.last_sync {
        None => writeln!(out, "last sync:    never")?,
        Some(t) => {
            writeln!(out, "last sync:    {} ({})", t.id, outcome_line(t))?;
            write_outcome(out, &t.state)?;
        }
    }
    for p in v.pinned {
        writeln!(out, "pinned:       {} by {}", p.snapshot, p.by)?;
    }
    if !v.history.is_empty() {
        writeln!(out, "history (newest first):")?;
        for t in v.history.iter().rev().take(SHOWN_HISTORY) {
            let what = match &t.state {
                TaskState::Succeeded { snapshot, figures } => {
                    format!("{snapshot} ({})", figures.consistency)
                }
                TaskState::Failed { reason } => reason.clone(),
                TaskState::Done { detail } => detail.clone(),
                TaskState::Running => String::new(),
            };
            writeln!(
                out,
                "  {}  {:<9} {:<13} {what}",
                t.finished.as_deref().unwrap_or(&t.started),
                t.state.name(),
                t.id
            )?;
        }
    }
    Ok(())
}

fn write_outcome(out: &mut impl Write, state: &TaskState) -> Result<()> {
    match state {
        TaskState::Succeeded {
            snapshot,
            figures: f,
        } => {
            writeln!(out, "  snapshot:   {snapshot} ({})", f.consistency)?;
            writeln!(
                out,
                "  figures:    read {}, sent {}, CPU {:.1} s, peak RSS {}, frozen {}",
                human_bytes(f.bytes_read),
                human_bytes(f.bytes_sent),
                f.cpu_seconds,
                human_bytes(f.peak_rss_bytes),
                f.freeze_seconds.map_or("-".into(), |s| format!("{s:.1} s"))
            )?;
        }
        TaskState::Failed { reason } => writeln!(out, "  reason:     {reason}")?,
        TaskState::Done { detail } => writeln!(out, "  done:       {detail}")?,
        TaskState::Running => {}
    }
    Ok(())
}

/// `appliance sources set MACHINE [...]`: creates the record when the agent has not enrolled.
pub fn set(data: &Path, machine: &str, change: &ScheduleChange, json: bool) -> Result<()> {
    let store = open(data)?;
    let rec = store
        .set_schedule(machine, |s| change.apply(s))
        .with_context(|| format!("change the schedule of source {machine}"))?;
    let view = SourceView::new(&rec, SystemTime::now());
    if json {
        return print_json(&view);
    }
    let mut out = std::io::stdout().lock();
    write_view(&mut out, &view)?;
    Ok(())
}

/// `appliance sources sync-now MACHINE`.
pub fn sync_now(data: &Path, machine: &str) -> Result<()> {
    let rec = open(data)?
        .sync_now(machine)
        .with_context(|| format!("ask source {machine} for a sync"))?;
    if rec.credential_hash.is_empty() {
        println!("{machine} syncs as soon as its backup-agent service enrolls");
    } else if let Some(t) = &rec.task {
        println!(
            "{machine} is running {} now; another sync starts when it ends",
            t.id
        );
    } else {
        println!("{machine} starts a sync at its agent's next poll");
    }
    Ok(())
}

/// `appliance sources pause|resume MACHINE`.
pub fn set_paused(data: &Path, machine: &str, paused: bool) -> Result<()> {
    let verb = if paused { "pause" } else { "resume" };
    let rec = open(data)?
        .set_paused(machine, paused)
        .with_context(|| format!("{verb} source {machine}"))?;
    if paused {
        let running = rec
            .task
            .as_ref()
            .map_or(String::new(), |t| format!(" ({} finishes first)", t.id));
        println!("{machine}: no scheduled sync starts until `appliance sources resume {machine}`{running}");
    } else {
        let next = next_due(&rec, SystemTime::now()).map_or("after the running sync".into(), |t| {
            rfc3339(t.max(SystemTime::now()))
        });
        println!("{machine}: resumed; next sync {next}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_touches_only_what_it_names() {
        let mut s = Schedule::default();
        let before = s.clone();
        ScheduleChange::default().apply(&mut s);
        assert_eq!(s, before);
        ScheduleChange {
            interval_seconds: Some(21_600),
            rate: Some(None),
            idle_io: Some(false),
            ..ScheduleChange::default()
        }
        .apply(&mut s);
        assert_eq!(s.interval_seconds, 21_600);
        assert_eq!(s.limits.rate_bytes_per_s, None);
        assert!(!s.limits.idle_io);
        assert_eq!(s.keep, before.keep);
        assert_eq!(s.limits.reads_in_flight, before.limits.reads_in_flight);
    }
}
