//! `sources/<machine>.json`: source machines (a running server whose `backup-agent service`
//! syncs to the appliance), their schedule, credential hash, current sync task, history and the
//! snapshots pinned for them (docs/store.md, "Sources"; docs/migration.md).
//!
//! - A record may exist before the agent enrolls (`appliance sources set` configures the
//!   schedule first); enrolling ([`Store::enroll_source`]) sets the credential hash and keeps
//!   the schedule. The credential `src-<machine>.<64 hex>` is shown once; only its BLAKE3 is
//!   kept, and a re-enrollment replaces it (the old one stops working).
//! - Tasks: [`Store::take_task`] hands out the running task again (a restarted agent resumes
//!   reporting it) or starts a new sync when [`next_due`] says so; [`Store::set_task_state`]
//!   accepts only running → running | succeeded | failed (a finished task is a conflict).
//! - After a sync succeeds the machine is pruned to its schedule's `keep`
//!   ([`Store::retain_source`], `prune::compute_source_prune`): never a snapshot a pending or
//!   running job uses, nor one in the record's `pinned` list (filled by migrations and standby
//!   targets: [`Store::replace_source_pins`], kept by `migrations.rs` to the standby's basis,
//!   the snapshot handed to it and the machine's newest while the migration is active).
//!
//! Every read-modify-write holds `sources/.lock`. Lock order: jobs, then sources.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ferry_format::agent::Inventory;
use ferry_format::names::{check_name, NameKind};
use ferry_format::source::{
    credential_machine, Consistency, Schedule, SourceEnrollReply, SourceEnrollRequest, SyncTask,
    TaskKind, TaskState, CREDENTIAL_PREFIX,
};
use serde::{Deserialize, Serialize};

use crate::agents::constant_time_eq;
use crate::error::{Result, StoreError};
use crate::fsx;
use crate::meta::{Collection, RecordLock};
use crate::snapshots::rfc3339;
use crate::tokens::{hash_token, parse_rfc3339};
use crate::Store;

/// Finished tasks kept in a record's history (the oldest goes first).
pub const MAX_HISTORY: usize = 50;
/// `last_seen` is rewritten by a poll at most this often (a long poll every 30 s per source
/// would otherwise rewrite the record each time).
const LAST_SEEN_GRANULARITY: Duration = Duration::from_secs(60);

/// One sync task: handed out, running, then finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRecord {
    /// `task-<8 hex>`.
    pub id: String,
    pub kind: TaskKind,
    /// The consistency asked for (the figures say what the agent achieved).
    pub consistency: Consistency,
    /// When it was handed out (RFC 3339 UTC).
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// `running`, or the outcome: succeeded with the snapshot and figures, failed with a reason.
    pub state: TaskState,
}

impl TaskRecord {
    /// The wire task the agent runs.
    pub fn to_task(&self, schedule: &Schedule) -> SyncTask {
        SyncTask {
            id: self.id.clone(),
            kind: self.kind,
            consistency: self.consistency,
            limits: schedule.limits.clone(),
            chunk_size: schedule.chunk_size,
        }
    }
}

/// A snapshot that retention must not remove, and who needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub snapshot: String,
    /// What holds it: `migration mig-…`, `standby agent-…`.
    pub by: String,
}

/// The stored record of a source machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRecord {
    pub machine: String,
    pub schedule: Schedule,
    /// Lowercase hex BLAKE3 of the credential's text; empty until the agent enrolls.
    #[serde(default)]
    pub credential_hash: String,
    /// RFC 3339 UTC of the latest enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// The agent's version at enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// The task handed out and not finished (at most one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRecord>,
    /// The operator asked for a sync now: the next poll gets one, paused or not.
    #[serde(default)]
    pub sync_now: bool,
    /// Finished tasks, oldest first, at most [`MAX_HISTORY`]; the last is the last sync.
    #[serde(default)]
    pub history: Vec<TaskRecord>,
    /// Snapshots retention keeps whatever `keep` says.
    #[serde(default)]
    pub pinned: Vec<Pin>,
    /// A migration's cutover asked for (`mig-…`): the next poll without a running task gets
    /// the `cutover` task, before any scheduled sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<String>,
    /// A cutover was aborted after this source's final sync stopped its services (`mig-…`):
    /// the next poll without a running task gets a `cutover-abort` task, before anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_cutover: Option<String>,
    /// A cutover asked with `--poweroff-source` passed its point of no return (`mig-…`): the
    /// next poll without a running task gets a `poweroff` task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poweroff: Option<String>,
}

impl SourceRecord {
    fn new(machine: &str) -> SourceRecord {
        SourceRecord {
            machine: machine.to_string(),
            schedule: Schedule::default(),
            credential_hash: String::new(),
            enrolled: None,
            last_seen: None,
            version: None,
            inventory: None,
            task: None,
            sync_now: false,
            history: Vec::new(),
            pinned: Vec::new(),
            cutover: None,
            abort_cutover: None,
            poweroff: None,
        }
    }

    /// The last finished task that took a snapshot or tried to (a sync or a cutover), if any;
    /// `cutover-abort` and `poweroff` tasks are not syncs.
    pub fn last_sync(&self) -> Option<&TaskRecord> {
        self.history
            .iter()
            .rev()
            .find(|t| matches!(t.kind, TaskKind::Sync | TaskKind::Cutover))
    }

    /// The last task that succeeded, if any (snapshot and figures).
    pub fn last_success(&self) -> Option<&TaskRecord> {
        self.history
            .iter()
            .rev()
            .find(|t| matches!(t.state, TaskState::Succeeded { .. }))
    }
}

/// When the next sync of `rec` is due (`<= now`: due now), `None` when none will start by
/// itself: a task is running, or the schedule is paused (without `sync_now`).
///
/// - `sync_now` → now.
/// - paused → none (the first sync too: pausing a machine configured ahead stops it).
/// - never synced → now.
/// - otherwise the previous task's *finish* plus the interval, whether it succeeded or failed
///   (a finish time that does not parse counts as due now).
pub fn next_due(rec: &SourceRecord, now: SystemTime) -> Option<SystemTime> {
    if rec.task.is_some() {
        return None;
    }
    if rec.sync_now {
        return Some(now);
    }
    if rec.schedule.paused {
        return None;
    }
    let Some(last) = rec.last_sync() else {
        return Some(now);
    };
    let finished = last.finished.as_deref().and_then(parse_rfc3339);
    match finished {
        Some(f) => f.checked_add(Duration::from_secs(rec.schedule.interval_seconds)),
        None => Some(now),
    }
}

fn to_json(rec: &SourceRecord) -> Result<Vec<u8>> {
    let mut bytes =
        serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Invalid(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

impl Store {
    pub fn sources_dir(&self) -> PathBuf {
        self.root().join("sources")
    }

    /// Serialises read-modify-write of source records between threads, processes and nodes.
    pub(crate) fn lock_sources(&self) -> Result<RecordLock> {
        self.records().lock(Collection::Sources)
    }

    fn write_source(&self, rec: &SourceRecord) -> Result<()> {
        self.records()
            .put(Collection::Sources, &rec.machine, &to_json(rec)?)
    }

    /// The record of `machine`; `NotFound` naming what to do when there is none.
    pub fn source(&self, machine: &str) -> Result<SourceRecord> {
        check_name(NameKind::Machine, machine)?;
        let bytes = self
            .records()
            .get(Collection::Sources, machine)?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "there is no source machine {machine}: configure it with `appliance sources \
                     set {machine}` or enroll its backup-agent service"
                ))
            })?;
        parse_source(machine, &bytes)
    }

    /// Every source record, by machine name (unreadable ones are skipped with a warning).
    pub fn list_sources(&self) -> Result<Vec<SourceRecord>> {
        let mut out = Vec::new();
        for (machine, bytes) in self.records().all(Collection::Sources)? {
            match parse_source(&machine, &bytes) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("skipping source record {machine}: {e}"),
            }
        }
        out.sort_by(|a, b| a.machine.cmp(&b.machine));
        Ok(out)
    }

    /// Read-modify-write `machine`'s record under the lock; `create` makes a default record
    /// when there is none (otherwise that is `NotFound`).
    fn update_source<T>(
        &self,
        machine: &str,
        create: bool,
        f: impl FnOnce(&mut SourceRecord) -> Result<T>,
    ) -> Result<(SourceRecord, T)> {
        check_name(NameKind::Machine, machine)?;
        let _lock = self.lock_sources()?;
        let (mut rec, new) = match self.source(machine) {
            Err(e) if create && e.is_not_found() => (SourceRecord::new(machine), true),
            other => (other?, false),
        };
        let before = rec.clone();
        let out = f(&mut rec)?;
        // A new record is written even when it holds only defaults (`sources set` with the
        // default settings creates the machine's record).
        if new || rec != before {
            self.write_source(&rec)?;
        }
        Ok((rec, out))
    }

    /// Enroll (or re-enroll) a source agent. The caller has checked that the backup token's
    /// scope includes `req.machine`. Keeps an existing record's schedule, task and history;
    /// the previous credential stops working.
    pub fn enroll_source(
        &self,
        req: &SourceEnrollRequest,
        now: SystemTime,
    ) -> Result<SourceEnrollReply> {
        check_name(NameKind::Machine, &req.machine)?;
        if let Some(inv) = &req.inventory {
            inv.check_bounds()
                .map_err(|e| StoreError::Invalid(format!("refuse the enrollment: {e}")))?;
        }
        if req.version.len() > 64 {
            return Err(StoreError::Invalid(
                "refuse the enrollment: the version is longer than 64 characters".into(),
            ));
        }
        let credential = format!(
            "{CREDENTIAL_PREFIX}{}.{}",
            req.machine,
            fsx::random_hex(32)?
        );
        let t = rfc3339(now);
        self.update_source(&req.machine, true, |rec| {
            rec.credential_hash = hash_token(&credential);
            rec.enrolled = Some(t.clone());
            rec.last_seen = Some(t);
            rec.version = Some(req.version.clone());
            rec.inventory = req.inventory.clone();
            Ok(())
        })?;
        tracing::info!("source {} enrolled", req.machine);
        Ok(SourceEnrollReply { credential })
    }

    /// The source record a credential belongs to, `None` when it is not a current source
    /// credential (unknown machine, replaced by a newer enrollment, not enrolled).
    pub fn source_for_credential(&self, credential: &str) -> Result<Option<SourceRecord>> {
        let Some(machine) = credential_machine(credential) else {
            return Ok(None);
        };
        let rec = match self.source(machine) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let ok = !rec.credential_hash.is_empty()
            && constant_time_eq(
                rec.credential_hash.as_bytes(),
                hash_token(credential).as_bytes(),
            );
        Ok(ok.then_some(rec))
    }

    /// Change `machine`'s schedule (creating its record when the agent has not enrolled yet).
    /// The changed schedule is checked as a whole; nothing is written when it is refused.
    pub fn set_schedule(
        &self,
        machine: &str,
        change: impl FnOnce(&mut Schedule),
    ) -> Result<SourceRecord> {
        let (rec, ()) = self.update_source(machine, true, |rec| {
            change(&mut rec.schedule);
            rec.schedule
                .check()
                .map_err(|e| StoreError::Invalid(format!("source {machine}: {e}")))
        })?;
        Ok(rec)
    }

    /// Ask for a sync at the next poll, paused or not.
    pub fn sync_now(&self, machine: &str) -> Result<SourceRecord> {
        Ok(self
            .update_source(machine, false, |rec| {
                rec.sync_now = true;
                Ok(())
            })?
            .0)
    }

    /// Pause (no scheduled sync starts; a running one finishes) or resume.
    pub fn set_paused(&self, machine: &str, paused: bool) -> Result<SourceRecord> {
        Ok(self
            .update_source(machine, false, |rec| {
                rec.schedule.paused = paused;
                Ok(())
            })?
            .0)
    }

    /// A migration cut over: pause the schedule and drop a sync asked for, so the source (down,
    /// its copy running elsewhere) gets no task if it comes back; `sources resume` undoes it.
    pub fn retire_source(&self, machine: &str) -> Result<SourceRecord> {
        Ok(self
            .update_source(machine, false, |rec| {
                rec.schedule.paused = true;
                rec.sync_now = false;
                Ok(())
            })?
            .0)
    }

    /// Keep `snapshot` from retention for `by` (a migration, a standby target).
    pub fn pin_source_snapshot(&self, machine: &str, snapshot: &str, by: &str) -> Result<()> {
        check_name(NameKind::Snapshot, snapshot)?;
        self.update_source(machine, false, |rec| {
            let pin = Pin {
                snapshot: snapshot.to_string(),
                by: by.to_string(),
            };
            if !rec.pinned.contains(&pin) {
                rec.pinned.push(pin);
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Make `snapshots` exactly the pins `by` holds on `machine` (one write: a retention
    /// running meanwhile sees the old set or the new one). A migration re-pins its standby's
    /// basis and the newest snapshot this way each time they move.
    pub fn replace_source_pins(&self, machine: &str, by: &str, snapshots: &[&str]) -> Result<()> {
        for s in snapshots {
            check_name(NameKind::Snapshot, s)?;
        }
        self.update_source(machine, false, |rec| {
            rec.pinned.retain(|p| p.by != by);
            for s in snapshots {
                let pin = Pin {
                    snapshot: s.to_string(),
                    by: by.to_string(),
                };
                if !rec.pinned.contains(&pin) {
                    rec.pinned.push(pin);
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Ask `machine`'s source agent for the cutover of `migration` (or withdraw the request
    /// with `None` when it was not handed out yet). Called holding the migrations lock.
    pub(crate) fn set_source_cutover(&self, machine: &str, migration: Option<&str>) -> Result<()> {
        self.update_source(machine, false, |rec| {
            rec.cutover = migration.map(str::to_string);
            Ok(())
        })?;
        Ok(())
    }

    /// Ask `machine`'s source agent to run `post_cutover_abort` (the cutover of `migration` was
    /// aborted after its final sync). Called holding the migrations lock.
    pub(crate) fn set_source_abort(&self, machine: &str, migration: &str) -> Result<()> {
        self.update_source(machine, false, |rec| {
            rec.abort_cutover = Some(migration.to_string());
            Ok(())
        })?;
        Ok(())
    }

    /// Ask `machine`'s source agent to power the source off (the cutover of `migration`, asked
    /// with `--poweroff-source`, passed its point of no return). Called holding the migrations
    /// lock.
    pub(crate) fn set_source_poweroff(&self, machine: &str, migration: &str) -> Result<()> {
        self.update_source(machine, false, |rec| {
            rec.poweroff = Some(migration.to_string());
            Ok(())
        })?;
        Ok(())
    }

    /// Release the pins `by` holds on `machine`'s snapshots.
    pub fn unpin_source_snapshots(&self, machine: &str, by: &str) -> Result<()> {
        self.update_source(machine, false, |rec| {
            rec.pinned.retain(|p| p.by != by);
            Ok(())
        })?;
        Ok(())
    }

    /// The task the source agent of `machine` is to run now: the running one again (a
    /// restarted agent resumes reporting it), else a new sync when one is due, else `None`.
    pub fn take_task(&self, machine: &str, now: SystemTime) -> Result<Option<SyncTask>> {
        let id = format!("task-{}", fsx::random_hex(4)?);
        let (_, task) = self.update_source(machine, false, |rec| {
            touch_last_seen(rec, now);
            if let Some(t) = &rec.task {
                return Ok(Some(t.to_task(&rec.schedule)));
            }
            let kind = if rec.abort_cutover.take().is_some() {
                Some(TaskKind::CutoverAbort)
            } else if rec.cutover.take().is_some() {
                Some(TaskKind::Cutover)
            } else if rec.poweroff.take().is_some() {
                Some(TaskKind::Poweroff)
            } else {
                None
            };
            if let Some(kind) = kind {
                let t = TaskRecord {
                    id,
                    kind,
                    consistency: Consistency::PointInTime,
                    started: rfc3339(now),
                    finished: None,
                    state: TaskState::Running,
                };
                let wire = t.to_task(&rec.schedule);
                rec.task = Some(t);
                return Ok(Some(wire));
            }
            if next_due(rec, now).is_none_or(|due| due > now) {
                return Ok(None);
            }
            let t = TaskRecord {
                id,
                kind: TaskKind::Sync,
                consistency: rec.schedule.consistency,
                started: rfc3339(now),
                finished: None,
                state: TaskState::Running,
            };
            rec.sync_now = false;
            let wire = t.to_task(&rec.schedule);
            rec.task = Some(t);
            Ok(Some(wire))
        })?;
        Ok(task)
    }

    /// The agent reports task `id`'s state. Legal: running → running | succeeded | failed;
    /// anything else is a `Conflict`. A succeeded task must name a snapshot of this machine.
    /// After a success the machine is pruned to `keep` ([`Store::retain_source`]); a failed
    /// prune is logged, not returned (the report itself was recorded).
    pub fn set_task_state(
        &self,
        machine: &str,
        id: &str,
        state: TaskState,
        now: SystemTime,
    ) -> Result<SourceRecord> {
        if let TaskState::Succeeded { snapshot, .. } = &state {
            let manifest = self.manifest(snapshot).map_err(|e| {
                StoreError::Invalid(format!(
                    "task {id} of {machine} reports snapshot {snapshot}, which cannot be read: {e}"
                ))
            })?;
            if manifest.machine != machine {
                return Err(StoreError::Invalid(format!(
                    "task {id} of {machine} reports snapshot {snapshot}, which is of machine {}",
                    manifest.machine
                )));
            }
        }
        let succeeded = matches!(state, TaskState::Succeeded { .. });
        let (rec, ended) = self.update_source(machine, false, |rec| {
            touch_last_seen(rec, now);
            let Some(task) = rec.task.as_mut().filter(|t| t.id == id) else {
                return Err(match rec.history.iter().find(|t| t.id == id) {
                    Some(done) => StoreError::Conflict(format!(
                        "task {id} of {machine} already {} and cannot become {}",
                        done.state.name(),
                        state.name()
                    )),
                    None => StoreError::NotFound(format!("source {machine} has no task {id}")),
                });
            };
            if !task.state.may_become(&state) {
                return Err(StoreError::Conflict(format!(
                    "task {id} of {machine} is {} and cannot become {}",
                    task.state.name(),
                    state.name()
                )));
            }
            task.state = state;
            let mut ended = None;
            if task.state.is_final() {
                task.finished = Some(rfc3339(now));
                if let Some(done) = rec.task.take() {
                    ended = Some(done.clone());
                    rec.history.push(done);
                }
                let extra = rec.history.len().saturating_sub(MAX_HISTORY);
                rec.history.drain(..extra);
            }
            Ok(ended)
        })?;
        if let Some(done) = ended.filter(|t| t.kind == TaskKind::Cutover) {
            // The report is recorded either way; the migration's move is logged when it fails
            // (the operator sees the migration still cutting over and the source's history).
            if let Err(e) = self.cutover_task_ended(machine, &done, now) {
                tracing::error!("migration of {machine}: its cutover task {id} ended: {e}");
            }
        }
        if succeeded {
            if let Err(e) = self.retain_source(machine, now) {
                tracing::warn!("prune {machine} after its sync {id}: {e}");
            }
        }
        Ok(rec)
    }
}

/// Record a contact, at most once per [`LAST_SEEN_GRANULARITY`].
fn touch_last_seen(rec: &mut SourceRecord, now: SystemTime) {
    let stale = rec
        .last_seen
        .as_deref()
        .and_then(parse_rfc3339)
        .is_none_or(|seen| {
            now.duration_since(seen)
                .is_ok_and(|d| d >= LAST_SEEN_GRANULARITY)
        });
    if stale {
        rec.last_seen = Some(rfc3339(now));
    }
}

fn parse_source(machine: &str, bytes: &[u8]) -> Result<SourceRecord> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Invalid(format!("parse the record of source machine {machine}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn done(finished: u64, ok: bool) -> TaskRecord {
        TaskRecord {
            id: format!("task-{finished:08x}"),
            kind: TaskKind::Sync,
            consistency: Consistency::Live,
            started: rfc3339(at(finished.saturating_sub(30))),
            finished: Some(rfc3339(at(finished))),
            state: if ok {
                TaskState::Succeeded {
                    snapshot: "m-x".into(),
                    figures: ferry_format::source::SyncFigures {
                        cpu_seconds: 1.0,
                        peak_rss_bytes: 1,
                        bytes_read: 1,
                        bytes_sent: 1,
                        freeze_seconds: None,
                        hook_seconds: None,
                        consistency: Consistency::Live,
                    },
                }
            } else {
                TaskState::Failed {
                    reason: "network".into(),
                }
            },
        }
    }

    #[test]
    fn next_due_table() {
        const HOUR: u64 = 3600;
        let base = |interval: u64| {
            let mut r = SourceRecord::new("m");
            r.schedule.interval_seconds = interval;
            r
        };
        // (name, record, now, expected due)
        let cases: Vec<(&str, SourceRecord, u64, Option<u64>)> = vec![
            ("never synced: now", base(HOUR), 100, Some(100)),
            (
                "interval counts from the previous finish",
                {
                    let mut r = base(6 * HOUR);
                    r.history.push(done(1000, true));
                    r
                },
                2000,
                Some(1000 + 6 * HOUR),
            ),
            (
                "a failed task: the interval still counts from its end",
                {
                    let mut r = base(HOUR);
                    r.history.push(done(500, true));
                    r.history.push(done(4000, false));
                    r
                },
                4100,
                Some(4000 + HOUR),
            ),
            (
                "a cutover-abort or poweroff task is not a sync: the interval counts from the sync",
                {
                    let mut r = base(HOUR);
                    r.history.push(done(1000, true));
                    for kind in [TaskKind::CutoverAbort, TaskKind::Poweroff] {
                        r.history.push(TaskRecord {
                            kind,
                            state: TaskState::Done {
                                detail: "ran".into(),
                            },
                            ..done(3000, true)
                        });
                    }
                    r
                },
                3100,
                Some(1000 + HOUR),
            ),
            (
                "paused: none",
                {
                    let mut r = base(HOUR);
                    r.schedule.paused = true;
                    r.history.push(done(0, true));
                    r
                },
                10 * HOUR,
                None,
            ),
            (
                "paused and never synced: none",
                {
                    let mut r = base(HOUR);
                    r.schedule.paused = true;
                    r
                },
                10,
                None,
            ),
            (
                "sync now: now, even paused",
                {
                    let mut r = base(HOUR);
                    r.schedule.paused = true;
                    r.sync_now = true;
                    r.history.push(done(100, true));
                    r
                },
                200,
                Some(200),
            ),
            (
                "a running task: none",
                {
                    let mut r = base(HOUR);
                    r.sync_now = true;
                    let mut t = done(0, true);
                    t.finished = None;
                    t.state = TaskState::Running;
                    r.task = Some(t);
                    r
                },
                200,
                None,
            ),
            (
                "an unreadable finish time: now",
                {
                    let mut r = base(HOUR);
                    let mut t = done(0, true);
                    t.finished = Some("yesterday".into());
                    r.history.push(t);
                    r
                },
                300,
                Some(300),
            ),
        ];
        for (name, rec, now, want) in cases {
            assert_eq!(next_due(&rec, at(now)), want.map(at), "{name}");
        }
    }

    #[test]
    fn last_seen_is_rewritten_at_most_once_a_minute() {
        let mut r = SourceRecord::new("m");
        touch_last_seen(&mut r, at(0));
        assert_eq!(r.last_seen, Some(rfc3339(at(0))));
        touch_last_seen(&mut r, at(59));
        assert_eq!(r.last_seen, Some(rfc3339(at(0))));
        touch_last_seen(&mut r, at(60));
        assert_eq!(r.last_seen, Some(rfc3339(at(60))));
    }
}
