//! `appliance migrations`: bind a source machine's syncs to a standby target, and watch it
//! (docs/migration.md, "Standby target"; store format docs/store.md, "Migrations"). The
//! commands work on the store directly, beside `serve`, or on a remote appliance's admin API:
//! the standby's agent takes its job at its next poll.

use std::io::Write;

use anyhow::{Context, Result};
use ferry_format::admin::MigrationCreate;
use ferry_format::source::{format_interval, TaskState};
use ferry_format::units::human_bytes;
use ferry_server::ops::Admin;
use ferry_store::migrations::{Happened, MigrationState};
use ferry_store::views::MigrationView;
use serde::Serialize;

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `appliance migrations create --machine M --agent ID|MAC --map ... [--overwrite]`.
pub fn create(a: &dyn Admin, req: &MigrationCreate, json: bool) -> Result<()> {
    let v = a
        .migration_create(req)
        .with_context(|| format!("create a migration of {} onto {}", req.machine, req.agent))?;
    if json {
        return print_json(&v);
    }
    let m = &v.record;
    println!(
        "{}: {} onto standby {} (job {}); the standby restores the newest snapshot at its next poll, then applies each new one",
        m.id, m.machine, m.agent, m.job
    );
    Ok(())
}

/// `appliance migrations list [--json]`.
pub fn list(a: &dyn Admin, json: bool) -> Result<()> {
    let views = a.migrations().context("list migrations")?;
    if json {
        return print_json(&views);
    }
    let mut out = std::io::stdout().lock();
    if views.is_empty() {
        writeln!(
            out,
            "no migrations: create one with `appliance migrations create --machine M --agent ID|MAC --map DISK=TARGET`"
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<12} {:<16} {:<24} {:<12} {:>8}  STANDBY",
        "ID", "MACHINE", "AGENT", "STATE", "LAG"
    )?;
    for v in &views {
        writeln!(
            out,
            "{:<12} {:<16} {:<24} {:<12} {:>8}  {}",
            v.record.id,
            v.record.machine,
            v.record.agent,
            v.record.state.name(),
            v.lag_seconds.map_or("-".into(), format_interval),
            v.standby_state
        )?;
    }
    Ok(())
}

/// `appliance migrations show ID [--json]`.
pub fn show(a: &dyn Admin, id: &str, json: bool) -> Result<()> {
    let v = a.migration(id)?;
    if json {
        return print_json(&v);
    }
    let mut out = std::io::stdout().lock();
    write_view(&mut out, &v)?;
    Ok(())
}

fn write_view(out: &mut impl Write, v: &MigrationView) -> Result<()> {
    let m = &v.record;
    writeln!(out, "migration:    {}", m.id)?;
    writeln!(out, "machine:      {}", m.machine)?;
    writeln!(
        out,
        "standby:      agent {} (job {}, {})",
        m.agent,
        m.job,
        v.job_state.as_deref().unwrap_or("record missing")
    )?;
    let maps: Vec<String> = m
        .mappings
        .iter()
        .map(|x| format!("{} -> {}", x.disk, x.target))
        .collect();
    writeln!(out, "disks:        {}", maps.join(", "))?;
    writeln!(out, "state:        {}", m.state.name())?;
    match &v.schedule {
        Some(s) => writeln!(
            out,
            "schedule:     every {} after the previous sync finished, keep {}{}",
            format_interval(s.interval_seconds),
            s.keep,
            if s.paused { ", paused" } else { "" }
        )?,
        None => writeln!(out, "schedule:     none (no source record)")?,
    }
    let last = v.last_sync.as_ref().map_or("never".to_string(), |t| {
        format!(
            "{} {} ({})",
            t.finished.as_deref().unwrap_or(&t.started),
            t.state.name(),
            t.id
        )
    });
    writeln!(out, "last sync:    {last}")?;
    let next = match (&v.next_sync, &m.state) {
        (Some(n), _) => n.clone(),
        (None, MigrationState::CutOver) => format!(
            "none: the schedule was paused at the cut-over (`appliance sources resume {}` syncs \
             the old source again)",
            m.machine
        ),
        (None, _) => "none scheduled".into(),
    };
    writeln!(out, "next sync:    {next}")?;
    writeln!(out, "standby now:  {}", v.standby_state)?;
    if let (Some(at), Some(b), Some(s)) = (
        &m.standby.applied_at,
        m.standby.bytes_written,
        m.standby.seconds,
    ) {
        writeln!(
            out,
            "last apply:   {at}, {} written in {s:.1}s",
            human_bytes(b)
        )?;
    }
    match (&v.newest_snapshot, v.lag_seconds) {
        (Some(n), Some(lag)) => {
            writeln!(out, "lag:          {} (newest {n})", format_interval(lag))?
        }
        (Some(n), None) => writeln!(out, "lag:          unknown (newest {n})")?,
        (None, _) => writeln!(out, "lag:          no snapshot")?,
    }
    let cutovers: Vec<String> = m
        .history
        .iter()
        .filter_map(|h| match &h.what {
            Happened::State { from, to, reason } => Some(format!(
                "  {}  {from} -> {to}{}",
                h.time,
                reason
                    .as_deref()
                    .map_or(String::new(), |r| format!(": {r}"))
            )),
            Happened::Rebound { from, to } => Some(format!(
                "  {}  standby rebooted mid-apply: agent {} -> {to} (its marker proved the job); a full seeded sync follows",
                h.time,
                from.as_deref().unwrap_or("?")
            )),
            _ => None,
        })
        .collect();
    if cutovers.is_empty() {
        writeln!(out, "cutover history: none")?;
    } else {
        writeln!(out, "cutover history:")?;
        for c in cutovers {
            writeln!(out, "{c}")?;
        }
    }
    if let (Some(c), Some(t)) = (&m.cutover, &v.cutover_times) {
        writeln!(out, "cutover:      requested {}", c.requested)?;
        if let Some(s) = &c.snapshot {
            writeln!(
                out,
                "final sync:   snapshot {s} ({}), read {}, sent {}",
                c.consistency.map_or("?", |c| c.name()),
                human_bytes(c.bytes_read.unwrap_or(0)),
                human_bytes(c.bytes_sent.unwrap_or(0))
            )?;
        }
        for p in &t.phases {
            writeln!(out, "  {:<30} {:>8.1} s", p.name, p.seconds)?;
        }
        match (t.downtime_seconds, t.downtime_until.as_deref()) {
            (Some(d), Some("beacon")) => writeln!(
                out,
                "downtime:     {d:.1} s (pre_cutover start to the first-boot beacon)"
            )?,
            (Some(d), _) => writeln!(
                out,
                "downtime:     {d:.1} s (pre_cutover start to the reboot; no beacon reported yet)"
            )?,
            (None, _) => writeln!(out, "downtime:     not known yet")?,
        }
        if let Some(at) = &c.poweroff_asked {
            let outcome = match v.source_poweroff.as_ref().map(|t| &t.state) {
                None => "not taken yet".to_string(),
                Some(TaskState::Running) => "running".to_string(),
                Some(TaskState::Done { detail }) => format!("done: {detail}"),
                Some(TaskState::Failed { reason }) => format!("failed: {reason}"),
                Some(other) => other.name().to_string(),
            };
            writeln!(out, "source:       asked to power off at {at} ({outcome})")?;
        } else if c.poweroff_source {
            writeln!(
                out,
                "source:       powers off once the standby starts writing (--poweroff-source)"
            )?;
        }
        if let Some(why) = &c.ended_by {
            writeln!(out, "cutover end:  {why}")?;
        }
    }
    Ok(())
}

/// `appliance migrations cutover ID [--poweroff-source]`.
pub fn cutover(a: &dyn Admin, id: &str, poweroff_source: bool) -> Result<()> {
    let v = a
        .migration_cutover(id, poweroff_source)
        .with_context(|| format!("cut over migration {id}"))?;
    let m = &v.record;
    let off = if poweroff_source {
        "; once the standby starts writing, the source agent is asked to power the source off \
         (its config must allow it: poweroff_after_cutover = true)"
    } else {
        "; the source stays stopped, powered on"
    };
    println!(
        "{}: cutting over; the source agent of {} runs pre_cutover and the final point-in-time sync at its next poll, then standby {} applies it, runs the fix-up and reboots{off} (`appliance migrations show {}`)",
        m.id, m.machine, m.agent, m.id
    );
    Ok(())
}

/// `appliance migrations cancel ID`.
pub fn cancel(a: &dyn Admin, id: &str) -> Result<()> {
    let v = a
        .migration_cancel(id)
        .with_context(|| format!("cancel migration {id}"))?;
    let m = &v.record;
    println!(
        "{}: cancelled; standby {} stops at its next poll and its snapshots are no longer pinned",
        m.id, m.agent
    );
    Ok(())
}
