//! What the operator sees of a source machine and of a migration: the stored record with what it
//! means now (state, next sync, lag), never a credential. The same value is printed by the CLI
//! on `--data`, answered by the admin API and read back by the CLI on `--appliance`.

use std::time::SystemTime;

use ferry_format::source::{Schedule, TaskKind};
use serde::{Deserialize, Serialize};

use crate::migrations::{lag_seconds, CutoverTimes, MigrationRecord};
use crate::snapshots::rfc3339;
use crate::sources::{next_due, Pin, SourceRecord, TaskRecord};
use crate::{Result, Store};

/// `sources list|show`: the record without its credential hash, plus the next sync.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceView {
    pub machine: String,
    /// `not enrolled`, `syncing`, `paused` or `waiting`.
    pub state: String,
    pub enrolled: Option<String>,
    pub last_seen: Option<String>,
    pub version: Option<String>,
    pub schedule: Schedule,
    pub sync_now: bool,
    /// RFC 3339 UTC; absent while a task runs or the schedule is paused.
    pub next_sync: Option<String>,
    pub task: Option<TaskRecord>,
    pub last_sync: Option<TaskRecord>,
    pub history: Vec<TaskRecord>,
    pub pinned: Vec<Pin>,
}

impl SourceView {
    pub fn new(rec: &SourceRecord, now: SystemTime) -> SourceView {
        SourceView {
            machine: rec.machine.clone(),
            state: source_state(rec).to_string(),
            enrolled: rec.enrolled.clone(),
            last_seen: rec.last_seen.clone(),
            version: rec.version.clone(),
            schedule: rec.schedule.clone(),
            sync_now: rec.sync_now,
            next_sync: next_due(rec, now).map(|t| rfc3339(t.max(now))),
            task: rec.task.clone(),
            last_sync: rec.last_sync().cloned(),
            history: rec.history.clone(),
            pinned: rec.pinned.clone(),
        }
    }
}

fn source_state(rec: &SourceRecord) -> &'static str {
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

/// `migrations list|show`: the record, plus what the standby state means now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrationView {
    #[serde(flatten)]
    pub record: MigrationRecord,
    /// `in sync with snapshot X, taken T`, or what the standby waits for.
    pub standby_state: String,
    /// The machine's newest snapshot and how far the standby's basis is behind it.
    pub newest_snapshot: Option<String>,
    pub lag_seconds: Option<u64>,
    /// The standby job's state (`pending`, `running`, ...); absent when its record is gone.
    pub job_state: Option<String>,
    pub schedule: Option<Schedule>,
    pub last_sync: Option<TaskRecord>,
    /// RFC 3339 UTC; absent while a sync runs or the schedule is paused.
    pub next_sync: Option<String>,
    /// The latest cutover's phases in seconds and its downtime (with the first-boot beacon's
    /// report when it came); absent before the first cutover.
    pub cutover_times: Option<CutoverTimes>,
    /// When the migrated system's first-boot beacon reported (RFC 3339 UTC).
    pub beacon_booted: Option<String>,
    /// The source's latest `poweroff` task (`--poweroff-source`), running or ended.
    pub source_poweroff: Option<TaskRecord>,
}

impl Store {
    /// Every source machine as the operator sees it.
    pub fn source_views(&self, now: SystemTime) -> Result<Vec<SourceView>> {
        Ok(self
            .list_sources()?
            .iter()
            .map(|r| SourceView::new(r, now))
            .collect())
    }

    /// A migration as the operator sees it: lag behind the machine's newest snapshot, the
    /// schedule and last sync of its source, the cutover's phases.
    pub fn migration_view(&self, m: MigrationRecord, now: SystemTime) -> Result<MigrationView> {
        let newest = self.list_snapshots(Some(&m.machine))?.pop();
        let lag = match (&m.standby.basis_taken, &newest) {
            (Some(b), Some(n)) => lag_seconds(b, &n.created),
            _ => None,
        };
        let source: Option<SourceRecord> = self.source(&m.machine).ok();
        let booted = self.beacon(&m.job).ok().flatten().and_then(|b| b.booted);
        let source_poweroff = source.as_ref().and_then(|s| {
            s.task
                .iter()
                .chain(s.history.iter().rev())
                .find(|t| t.kind == TaskKind::Poweroff)
                .cloned()
        });
        Ok(MigrationView {
            source_poweroff,
            cutover_times: m.cutover.as_ref().map(|c| c.times(booted.as_deref())),
            beacon_booted: booted,
            standby_state: m.standby.describe(),
            newest_snapshot: newest.map(|n| n.snapshot),
            lag_seconds: lag,
            job_state: self.job(&m.job).ok().map(|j| j.state.name().to_string()),
            next_sync: source
                .as_ref()
                .and_then(|s| next_due(s, now))
                .map(|t| rfc3339(t.max(now))),
            last_sync: source.as_ref().and_then(|s| s.last_sync().cloned()),
            schedule: source.map(|s| s.schedule),
            record: m,
        })
    }

    /// Every migration as the operator sees it, oldest first.
    pub fn migration_views(&self, now: SystemTime) -> Result<Vec<MigrationView>> {
        self.list_migrations()?
            .into_iter()
            .map(|m| self.migration_view(m, now))
            .collect()
    }
}
