//! `appliance sources`: the source machines that sync to this appliance, their schedules and
//! last syncs (docs/migration.md, "Schedules and retention"; store format docs/store.md,
//! "Sources"). The commands work on the store directly, beside `serve` (another process), or
//! on a remote appliance's admin API: a change is seen at the source agent's next poll.

use std::io::Write;

use anyhow::{Context, Result};
use ferry_format::admin::ScheduleChange;
use ferry_format::source::{format_interval, format_rate, TaskState};
use ferry_format::units::human_bytes;
use ferry_server::ops::Admin;
use ferry_store::sources::TaskRecord;
use ferry_store::views::SourceView;
use serde::Serialize;

/// History entries `sources show` prints (`--json` has all of them).
const SHOWN_HISTORY: usize = 10;

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `appliance sources list [--json]`.
pub fn list(a: &dyn Admin, json: bool) -> Result<()> {
    let views = a.sources().context("list source machines")?;
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
            v.last_sync.as_ref().map_or("never".into(), outcome_line),
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
pub fn show(a: &dyn Admin, machine: &str, json: bool) -> Result<()> {
    let view = a.source(machine)?;
    if json {
        return print_json(&view);
    }
    let mut out = std::io::stdout().lock();
    write_view(&mut out, &view)?;
    Ok(())
}

fn write_view(out: &mut impl Write, v: &SourceView) -> Result<()> {
    let s = &v.schedule;
    writeln!(out, "machine:      {}", v.machine)?;
    writeln!(out, "state:        {}", v.state)?;
    if let Some(e) = &v.enrolled {
        writeln!(
            out,
            "enrolled:     {e} (agent {}, last seen {})",
            v.version.as_deref().unwrap_or("?"),
            v.last_seen.as_deref().unwrap_or("-")
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
    if let Some(t) = &v.task {
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
    match &v.last_sync {
        None => writeln!(out, "last sync:    never")?,
        Some(t) => {
            writeln!(out, "last sync:    {} ({})", t.id, outcome_line(t))?;
            write_outcome(out, &t.state)?;
        }
    }
    for p in &v.pinned {
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
pub fn set(a: &dyn Admin, machine: &str, change: &ScheduleChange, json: bool) -> Result<()> {
    let view = a
        .source_set(machine, change)
        .with_context(|| format!("change the schedule of source {machine}"))?;
    if json {
        return print_json(&view);
    }
    let mut out = std::io::stdout().lock();
    write_view(&mut out, &view)?;
    Ok(())
}

/// `appliance sources sync-now MACHINE`.
pub fn sync_now(a: &dyn Admin, machine: &str) -> Result<()> {
    let v = a
        .source_sync_now(machine)
        .with_context(|| format!("ask source {machine} for a sync"))?;
    if v.state == "not enrolled" {
        println!("{machine} syncs as soon as its backup-agent service enrolls");
    } else if let Some(t) = &v.task {
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
pub fn set_paused(a: &dyn Admin, machine: &str, paused: bool) -> Result<()> {
    let verb = if paused { "pause" } else { "resume" };
    let v = a
        .source_pause(machine, paused)
        .with_context(|| format!("{verb} source {machine}"))?;
    if paused {
        let running = v
            .task
            .as_ref()
            .map_or(String::new(), |t| format!(" ({} finishes first)", t.id));
        println!("{machine}: no scheduled sync starts until `appliance sources resume {machine}`{running}");
    } else {
        let next = v
            .next_sync
            .unwrap_or_else(|| "after the running sync".into());
        println!("{machine}: resumed; next sync {next}");
    }
    Ok(())
}
