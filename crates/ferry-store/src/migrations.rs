//! `migrations/<id>.json`: migrations, each binding a source machine's syncs to a standby target
//! (an approved rescue-image agent) that applies every newer snapshot as it lands
//! (docs/migration.md, "Standby target"; docs/store.md, "Migrations").
//!
//! - Creating a migration records it and, in the same locked step, a `standby` job for its agent
//!   (`jobs/<job>.json`, kind `standby`): the agent takes it through the ordinary job poll, so
//!   enrollment, approval, mapping resolution, events and the in-progress marker work as for a
//!   restore. The agent may be named by id or by a MAC of an approved agent.
//! - The standby routes hand the agent the newest snapshot of the machine newer than its basis
//!   ([`Store::standby_next`], remembered as `handed`) and record what it applied
//!   ([`Store::standby_report`]): the basis its disks now hold, when, and the bytes written.
//!   The job's snapshot follows the basis, so `appliance prune` keeps it as a job's snapshot.
//! - While a migration is active (syncing, cutting over) the source record pins its standby's
//!   basis, the snapshot handed to it and the machine's newest snapshot (`pinned`, holder
//!   `migration <id>`); a migration that ends releases them and fails its standby job.
//! - States: syncing → cutting-over → cut-over; syncing → cancelled; syncing | cutting-over →
//!   failed; cutting-over → syncing (an aborted cutover). Anything else is a
//!   [`MigrationError::Transition`]. History (applies and state changes) keeps the newest
//!   [`MAX_MIGRATION_HISTORY`] entries.
//!
//! - Cutover ([`Store::request_cutover`]): syncing → cutting-over, and the source record asks its
//!   agent for a `cutover` task (handed before any scheduled sync). The task's end moves the
//!   migration ([`Store::cutover_task_ended`]): failed → back to syncing with the reason;
//!   succeeded → its snapshot is the final one, which `standby_next` hands with `final: true`.
//!   The standby reports its steps ([`Store::standby_cutover`]): `applying` is the point of no
//!   return (refused once the cutover was aborted); a failure before it aborts (syncing), after
//!   it fails the migration; `rebooting` makes it cut-over. [`CutoverTimeline`] keeps each
//!   phase's time for `migrations show`.
//!
//! Every read-modify-write holds `migrations/.lock`. Lock order: jobs, migrations, agents,
//! sources.

use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use ferry_format::agent::{
    normalize_mac, JobFor, JobKind, JobOptions, JobProgress, JobRecord, JobState, Mapping,
    StandbyNext, StandbyReport, Then,
};
use ferry_format::api::SnapshotSummary;
use ferry_format::source::{Consistency, CutoverStep, StandbyCutover, TaskState};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, StoreError};
use crate::fsx::{self, FileLock, LockMode};
use crate::snapshots::rfc3339;
use crate::tokens::parse_rfc3339;
use crate::Store;

/// History entries a record keeps (the oldest goes first).
pub const MAX_MIGRATION_HISTORY: usize = 50;

/// A migration's life (JSON: `"syncing"`, `"cutting-over"`, `"cut-over"`, `"cancelled"` or
/// `{"failed": {"reason": "..."}}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum MigrationState {
    /// The standby applies each new snapshot.
    Syncing,
    /// The final sync, its apply, the fix-up and the reboot are under way.
    CuttingOver,
    /// Done: the standby's disks are the migrated server's.
    CutOver,
    Failed {
        reason: String,
    },
    Cancelled,
}

impl MigrationState {
    pub fn name(&self) -> &'static str {
        match self {
            MigrationState::Syncing => "syncing",
            MigrationState::CuttingOver => "cutting-over",
            MigrationState::CutOver => "cut-over",
            MigrationState::Failed { .. } => "failed",
            MigrationState::Cancelled => "cancelled",
        }
    }

    /// Its standby is working and its snapshots are pinned.
    pub fn is_active(&self) -> bool {
        matches!(self, MigrationState::Syncing | MigrationState::CuttingOver)
    }

    /// The legal moves (see the module docs).
    pub fn may_become(&self, next: &MigrationState) -> bool {
        use MigrationState::*;
        matches!(
            (self, next),
            (Syncing, CuttingOver | Cancelled | Failed { .. })
                | (CuttingOver, CutOver | Syncing | Failed { .. })
        )
    }
}

/// What the standby last reported, and what it was last handed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyStatus {
    /// The snapshot the standby routes last handed the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_at: Option<String>,
    /// The snapshot the standby's disks hold, written and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    /// When the basis was taken (its manifest's `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis_taken: Option<String>,
    /// When the agent finished applying it (the agent's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// Bytes the last apply wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<u64>,
    /// Seconds the last apply took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

impl StandbyStatus {
    /// `in sync with snapshot X, taken T`, or what it waits for.
    pub fn describe(&self) -> String {
        match (&self.basis, &self.basis_taken, &self.handed) {
            (Some(b), Some(t), _) => format!("in sync with snapshot {b}, taken {t}"),
            (Some(b), None, _) => format!("in sync with snapshot {b}"),
            (None, _, Some(h)) => format!("applying its first snapshot {h}"),
            (None, _, None) => "waiting for its agent to take the standby job".into(),
        }
    }
}

/// One entry of a migration's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Happened {
    Created {
        snapshot: String,
    },
    /// The standby applied a snapshot.
    Applied {
        snapshot: String,
        taken: String,
        bytes_written: u64,
        seconds: f64,
    },
    /// The migration changed state (cutover, abort, cancel, failure).
    State {
        from: String,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// RFC 3339 UTC (the appliance's clock).
    pub time: String,
    pub what: Happened,
}

/// A cutover's phases as they happened (RFC 3339 UTC, the appliance's clock: each is when the
/// appliance heard of it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutoverTimeline {
    /// The operator asked for it.
    pub requested: String,
    /// The source agent took its cutover task: `pre_cutover` starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_started: Option<String>,
    /// How long `pre_cutover` ran (the source agent's figure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_seconds: Option<f64>,
    /// The source reported its final sync read and sent (or the task's failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_ended: Option<String>,
    /// The final snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// How the final snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    /// The standby starts writing the final delta: the point of no return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_ended: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixup_ended: Option<String>,
    /// The fix-up's summary as the standby reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixup: Option<String>,
    /// The standby reboots into the migrated system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebooting: Option<String>,
    /// Why the cutover was aborted (back to syncing) or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
}

/// One phase of a cutover for `migrations show`: its name and seconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub seconds: f64,
}

/// The phases of a cutover and its downtime, from its timeline and the first-boot beacon's
/// `booted` time (when it reported).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CutoverTimes {
    pub phases: Vec<Phase>,
    /// From `pre_cutover`'s start to the beacon (or to the reboot when no beacon reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
    /// `"beacon"` or `"reboot"`: where the downtime ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_until: Option<&'static str>,
}

impl CutoverTimeline {
    /// Each phase that both ends of are known, in order, and the downtime.
    pub fn times(&self, booted: Option<&str>) -> CutoverTimes {
        let t = |s: &Option<String>| s.as_deref().and_then(parse_rfc3339);
        let secs = |a: Option<SystemTime>, b: Option<SystemTime>| {
            let (a, b) = (a?, b?);
            Some(b.duration_since(a).map_or(0.0, |d| d.as_secs_f64()))
        };
        let hook_ended = t(&self.hook_started).and_then(|h| {
            let s = self.hook_seconds.filter(|s| s.is_finite() && *s >= 0.0)?;
            Some(h + std::time::Duration::from_secs_f64(s))
        });
        let booted = booted.and_then(parse_rfc3339);
        let steps = [
            (
                "waiting for the source agent",
                t(&Some(self.requested.clone())),
                t(&self.hook_started),
            ),
            ("pre_cutover hook", t(&self.hook_started), hook_ended),
            (
                "final sync (read and send)",
                hook_ended.or(t(&self.hook_started)),
                t(&self.sync_ended),
            ),
            (
                "handing to the standby",
                t(&self.sync_ended),
                t(&self.apply_started),
            ),
            (
                "standby apply",
                t(&self.apply_started),
                t(&self.apply_ended),
            ),
            ("fix-up", t(&self.apply_ended), t(&self.fixup_ended)),
            ("to the reboot", t(&self.fixup_ended), t(&self.rebooting)),
            ("reboot to the beacon", t(&self.rebooting), booted),
        ];
        let phases = steps
            .into_iter()
            .filter_map(|(name, a, b)| secs(a, b).map(|seconds| Phase { name, seconds }))
            .collect();
        let (end, until) = match (booted, t(&self.rebooting)) {
            (Some(b), _) => (Some(b), Some("beacon")),
            (None, Some(r)) => (Some(r), Some("reboot")),
            (None, None) => (None, None),
        };
        let downtime_seconds = secs(t(&self.hook_started), end);
        CutoverTimes {
            phases,
            downtime_seconds,
            downtime_until: downtime_seconds.and(until),
        }
    }
}

/// The stored record of a migration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationRecord {
    /// `mig-<8 hex>`.
    pub id: String,
    /// The source machine.
    pub machine: String,
    /// The standby agent.
    pub agent: String,
    /// Its standby job (`jobs/<job>.json`, kind `standby`).
    pub job: String,
    /// Snapshot disk onto the standby's disk, as a restore job's.
    pub mappings: Vec<Mapping>,
    pub overwrite: bool,
    pub created: String,
    pub state: MigrationState,
    #[serde(default)]
    pub standby: StandbyStatus,
    /// Oldest first, at most [`MAX_MIGRATION_HISTORY`].
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// The latest cutover's timeline (none before the first cutover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<CutoverTimeline>,
}

impl MigrationRecord {
    /// Who the migration's pins in the source record are by.
    pub fn pin_holder(&self) -> String {
        format!("migration {}", self.id)
    }

    fn record(&mut self, now: SystemTime, what: Happened) {
        self.history.push(HistoryEntry {
            time: rfc3339(now),
            what,
        });
        let extra = self.history.len().saturating_sub(MAX_MIGRATION_HISTORY);
        self.history.drain(..extra);
    }
}

/// Seconds between the basis being taken and the newest snapshot being taken: how far behind
/// the standby is. `None` when a time does not parse.
pub fn lag_seconds(basis_taken: &str, newest_taken: &str) -> Option<u64> {
    let (b, n) = (parse_rfc3339(basis_taken)?, parse_rfc3339(newest_taken)?);
    Some(n.duration_since(b).map_or(0, |d| d.as_secs()))
}

/// What `appliance migrations create` asks for.
#[derive(Clone, Debug)]
pub struct NewMigration {
    pub machine: String,
    /// An agent id, or a MAC of an approved agent.
    pub agent: String,
    pub mappings: Vec<Mapping>,
    pub overwrite: bool,
}

/// Why a migration operation was refused; each names the thing and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("migration {id} is {from} and cannot become {to}")]
    Transition {
        id: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("there is no migration {0}: see `appliance migrations list`")]
    NotFound(String),
    #[error("no approved agent has MAC {mac}: boot the standby from the rescue image, approve it (`appliance agents approve --mac {mac}`), then create the migration")]
    NoAgentWithMac { mac: String },
    #[error("MAC {mac} belongs to several approved agents ({}): name one by its id", agents.join(", "))]
    AmbiguousMac { mac: String, agents: Vec<String> },
    #[error(
        "agent {agent} is not approved: approve it first (`appliance agents approve {agent}`)"
    )]
    NotApproved { agent: String },
    #[error("agent {agent} already {busy}: cancel that first or choose another standby")]
    AgentBusy { agent: String, busy: String },
    #[error("machine {machine} already migrates in {migration}: cancel it first (`appliance migrations cancel {migration}`)")]
    MachineBusy { machine: String, migration: String },
    #[error("machine {machine} has no snapshot yet: wait for its first sync (`appliance sources sync-now {machine}`)")]
    NoSnapshot { machine: String },
    #[error("{0}")]
    Mapping(String),
    #[error("agent {agent} serves no active migration: its standby job has ended")]
    NotStandby { agent: String },
    #[error("agent {agent} reports snapshot {basis}, which it was not handed (it was handed {}): ask GET /agents/{agent}/standby/next first", handed.as_deref().unwrap_or("nothing"))]
    WrongBasis {
        agent: String,
        basis: String,
        handed: Option<String>,
    },
    #[error("migration {id} cannot cut over yet: its standby holds no snapshot; wait until `appliance migrations show {id}` says it is in sync")]
    NotInSync { id: String },
    #[error("migration {id} cannot cut over: the source agent of {machine} has not enrolled (start `backup-agent service` on it)")]
    SourceNotEnrolled { id: String, machine: String },
    #[error("migration {id} is {state}, not cutting over to snapshot {snapshot}: the standby writes nothing")]
    NotCuttingOver {
        id: String,
        state: &'static str,
        snapshot: String,
    },
    #[error("the standby report of agent {agent} is invalid: {why}")]
    BadReport { agent: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<MigrationError> for StoreError {
    fn from(e: MigrationError) -> StoreError {
        use MigrationError::*;
        match e {
            Store(s) => s,
            Transition { .. }
            | AmbiguousMac { .. }
            | AgentBusy { .. }
            | MachineBusy { .. }
            | WrongBasis { .. }
            | NotInSync { .. }
            | SourceNotEnrolled { .. }
            | NotCuttingOver { .. } => StoreError::Conflict(e.to_string()),
            NotFound(_) | NoAgentWithMac { .. } | NoSnapshot { .. } | NotStandby { .. } => {
                StoreError::NotFound(e.to_string())
            }
            NotApproved { .. } | Mapping(_) | BadReport { .. } => {
                StoreError::Invalid(e.to_string())
            }
        }
    }
}

type MResult<T> = std::result::Result<T, MigrationError>;

/// `mig-` and 8 lowercase hex digits.
fn check_id(id: &str) -> MResult<()> {
    let ok = id
        .strip_prefix("mig-")
        .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(MigrationError::NotFound(id.chars().take(80).collect()))
    }
}

impl Store {
    pub fn migrations_dir(&self) -> PathBuf {
        self.root().join("migrations")
    }

    fn migration_path(&self, id: &str) -> PathBuf {
        self.migrations_dir().join(format!("{id}.json"))
    }

    fn lock_migrations(&self) -> Result<FileLock> {
        fsx::create_dir_all(&self.migrations_dir())?;
        FileLock::acquire(&self.migrations_dir().join(".lock"), LockMode::Exclusive)
    }

    fn write_migration(&self, rec: &MigrationRecord) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        fsx::write_atomic(&self.migration_path(&rec.id), &bytes, 0o600)
    }

    pub fn migration(&self, id: &str) -> MResult<MigrationRecord> {
        check_id(id)?;
        let path = self.migration_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MigrationError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io_err("read", &path)(e).into()),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Invalid(format!("parse {}: {e}", path.display())).into())
    }

    /// Every migration, oldest first (unreadable records are skipped with a warning).
    pub fn list_migrations(&self) -> Result<Vec<MigrationRecord>> {
        let mut out = Vec::new();
        for id in fsx::json_record_ids(&self.migrations_dir())? {
            match self.migration(&id) {
                Ok(m) => out.push(m),
                Err(e) => tracing::warn!("skipping migration record {id}.json: {e}"),
            }
        }
        out.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        Ok(out)
    }

    /// The agent `who` names: an agent id as is, a MAC resolved to the one approved agent with
    /// it.
    pub fn resolve_standby_agent(&self, who: &str) -> MResult<String> {
        if who.starts_with("agent-") {
            let rec = self.agent_record(who)?;
            if rec.info.approved.is_none() {
                return Err(MigrationError::NotApproved {
                    agent: who.to_string(),
                });
            }
            return Ok(who.to_string());
        }
        let mac = normalize_mac(who).map_err(|e| {
            MigrationError::Mapping(format!(
                "--agent {who:?} is neither an agent id (agent-...) nor a MAC: {e}"
            ))
        })?;
        let agents: Vec<String> = self
            .list_agents()?
            .into_iter()
            .filter(|a| a.approved.is_some() && a.inventory.macs().contains(&mac))
            .map(|a| a.agent)
            .collect();
        match agents.as_slice() {
            [] => Err(MigrationError::NoAgentWithMac { mac }),
            [one] => Ok(one.clone()),
            _ => Err(MigrationError::AmbiguousMac { mac, agents }),
        }
    }

    /// Record a migration and its standby job (see the module docs), and pin the machine's
    /// newest snapshot for it.
    pub fn create_migration(&self, new: NewMigration, now: SystemTime) -> MResult<MigrationRecord> {
        // Held from the checks to both records: prune, job creation and other migrations see
        // all of it or none.
        let _jobs = self.lock_jobs()?;
        let _migrations = self.lock_migrations()?;
        self.source(&new.machine)?;
        let agent = self.resolve_standby_agent(&new.agent)?;
        for m in self.list_migrations()? {
            if !m.state.is_active() {
                continue;
            }
            if m.machine == new.machine {
                return Err(MigrationError::MachineBusy {
                    machine: new.machine,
                    migration: m.id,
                });
            }
            if m.agent == agent {
                return Err(MigrationError::AgentBusy {
                    agent,
                    busy: format!("is the standby of {}", m.id),
                });
            }
        }
        if let Some(j) = self.list_jobs()?.into_iter().find(|j| {
            matches!(j.state, JobState::Pending | JobState::Running)
                && (j.agent.as_deref() == Some(&agent) || j.for_ == JobFor::Agent(agent.clone()))
        }) {
            return Err(MigrationError::AgentBusy {
                agent,
                busy: format!("has job {} {}", j.id, j.state.name()),
            });
        }
        let newest = self
            .list_snapshots(Some(&new.machine))?
            .pop()
            .ok_or_else(|| MigrationError::NoSnapshot {
                machine: new.machine.clone(),
            })?;
        check_mappings(&new.mappings, &newest)?;
        let id = loop {
            let id = format!("mig-{}", fsx::random_hex(4)?);
            if !self.migration_path(&id).exists() {
                break id;
            }
        };
        let job_id = loop {
            let j = format!("job-{}", fsx::random_hex(4)?);
            if !self.jobs_dir().join(format!("{j}.json")).exists() {
                break j;
            }
        };
        let mut rec = MigrationRecord {
            id: id.clone(),
            machine: new.machine.clone(),
            agent: agent.clone(),
            job: job_id.clone(),
            mappings: new.mappings.clone(),
            overwrite: new.overwrite,
            created: rfc3339(now),
            state: MigrationState::Syncing,
            standby: StandbyStatus::default(),
            history: Vec::new(),
            cutover: None,
        };
        rec.record(
            now,
            Happened::Created {
                snapshot: newest.snapshot.clone(),
            },
        );
        let job = JobRecord {
            id: job_id,
            snapshot: newest.snapshot.clone(),
            for_: JobFor::Agent(agent),
            mappings: new.mappings,
            then: Then::None,
            overwrite: new.overwrite,
            // The fix-up belongs to the cutover, not to each apply.
            options: JobOptions {
                fixup: false,
                ..JobOptions::default()
            },
            created: rfc3339(now),
            agent: None,
            resolved: None,
            state: JobState::Pending,
            started: None,
            finished: None,
            progress: JobProgress::default(),
            proof_hash: None,
            kind: JobKind::Standby,
            migration: Some(id),
        };
        // The migration first: a crash in between leaves a migration without its job (shown,
        // cancellable), never a standby job without its migration.
        self.write_migration(&rec)?;
        self.write_job(&job)?;
        fsx::fsync_dir(&self.jobs_dir())?;
        self.replace_source_pins(&rec.machine, &rec.pin_holder(), &[&newest.snapshot])?;
        Ok(rec)
    }

    /// Move migration `id` to `to` if that is legal. A migration that stops being active
    /// releases its pins and ends its standby job (succeeded when cut over, failed otherwise).
    pub fn set_migration_state(
        &self,
        id: &str,
        to: MigrationState,
        now: SystemTime,
    ) -> MResult<MigrationRecord> {
        let _jobs = self.lock_jobs()?;
        let _migrations = self.lock_migrations()?;
        let mut rec = self.migration(id)?;
        let reason = match &to {
            MigrationState::Failed { reason } => Some(reason.clone()),
            _ => None,
        };
        self.move_migration(&mut rec, to, reason, now)?;
        Ok(rec)
    }

    /// Move `rec` to `to` (with `reason` in its history) if that is legal, and write it. A
    /// migration that stops being active releases its pins and ends its standby job; one that
    /// leaves cutting-over withdraws a cutover request its source agent has not taken.
    /// Called holding the jobs and migrations locks.
    fn move_migration(
        &self,
        rec: &mut MigrationRecord,
        to: MigrationState,
        reason: Option<String>,
        now: SystemTime,
    ) -> MResult<()> {
        if !rec.state.may_become(&to) {
            return Err(MigrationError::Transition {
                id: rec.id.clone(),
                from: rec.state.name(),
                to: to.name(),
            });
        }
        let leaves_cutover = rec.state == MigrationState::CuttingOver;
        // Aborted after the source's final sync: its services are stopped and must start again.
        let restart_source = leaves_cutover
            && to == MigrationState::Syncing
            && rec.cutover.as_ref().is_some_and(|c| c.snapshot.is_some());
        if leaves_cutover {
            if let Some(c) = rec.cutover.as_mut() {
                if c.ended_by.is_none() {
                    c.ended_by = reason.clone();
                }
            }
        }
        rec.record(
            now,
            Happened::State {
                from: rec.state.name().to_string(),
                to: to.name().to_string(),
                reason,
            },
        );
        rec.state = to;
        self.write_migration(rec)?;
        if leaves_cutover {
            let withdrawn = self
                .source(&rec.machine)
                .is_ok_and(|s| s.cutover.as_deref() == Some(rec.id.as_str()));
            if withdrawn {
                self.set_source_cutover(&rec.machine, None)?;
            }
            if restart_source {
                self.set_source_abort(&rec.machine, &rec.id)?;
            }
        }
        if !rec.state.is_active() {
            self.end_standby_job(rec, now)?;
            match self.unpin_source_snapshots(&rec.machine, &rec.pin_holder()) {
                Err(e) if e.is_not_found() => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// `appliance migrations cutover`: syncing → cutting-over, and the source agent is asked
    /// for its `cutover` task (handed at its next poll, before any scheduled sync; after a sync
    /// in flight ends). Refused while the standby holds nothing yet or the source agent has not
    /// enrolled, and for a migration that is not syncing (a second cutover while one runs).
    pub fn request_cutover(&self, id: &str, now: SystemTime) -> MResult<MigrationRecord> {
        let _jobs = self.lock_jobs()?;
        let _migrations = self.lock_migrations()?;
        let mut rec = self.migration(id)?;
        if !rec.state.may_become(&MigrationState::CuttingOver) {
            return Err(MigrationError::Transition {
                id: id.to_string(),
                from: rec.state.name(),
                to: MigrationState::CuttingOver.name(),
            });
        }
        if rec.standby.basis.is_none() {
            return Err(MigrationError::NotInSync { id: id.to_string() });
        }
        if self.source(&rec.machine)?.credential_hash.is_empty() {
            return Err(MigrationError::SourceNotEnrolled {
                id: id.to_string(),
                machine: rec.machine.clone(),
            });
        }
        rec.cutover = Some(CutoverTimeline {
            requested: rfc3339(now),
            ..CutoverTimeline::default()
        });
        self.move_migration(&mut rec, MigrationState::CuttingOver, None, now)?;
        self.set_source_cutover(&rec.machine, Some(&rec.id))?;
        Ok(rec)
    }

    /// The source agent ended `machine`'s cutover task (`task`, finished). Failed: the cutover
    /// is aborted (back to syncing with the task's reason; the agent ran `post_cutover_abort`
    /// itself). Succeeded: its snapshot is the final one the standby is handed next.
    pub fn cutover_task_ended(
        &self,
        machine: &str,
        task: &crate::sources::TaskRecord,
        now: SystemTime,
    ) -> MResult<()> {
        let _jobs = self.lock_jobs()?;
        let _migrations = self.lock_migrations()?;
        let Some(mut rec) = self
            .list_migrations()?
            .into_iter()
            .find(|m| m.machine == machine && m.state == MigrationState::CuttingOver)
        else {
            tracing::warn!(
                "cutover task {} of {machine} ended, but no migration of {machine} is cutting over",
                task.id
            );
            return Ok(());
        };
        let c = rec.cutover.get_or_insert_with(|| CutoverTimeline {
            requested: task.started.clone(),
            ..CutoverTimeline::default()
        });
        c.hook_started = Some(task.started.clone());
        c.sync_ended = task.finished.clone().or_else(|| Some(rfc3339(now)));
        match &task.state {
            TaskState::Succeeded { snapshot, figures } => {
                c.hook_seconds = figures.hook_seconds;
                c.snapshot = Some(snapshot.clone());
                c.consistency = Some(figures.consistency);
                c.bytes_read = Some(figures.bytes_read);
                c.bytes_sent = Some(figures.bytes_sent);
                self.write_migration(&rec)?;
                self.pin_standby(&rec, snapshot)?;
                tracing::info!(
                    "migration {}: final snapshot {snapshot} ({}) for the standby",
                    rec.id,
                    figures.consistency
                );
            }
            TaskState::Failed { reason } => {
                let reason = format!("the source's cutover task {} failed: {reason}", task.id);
                tracing::warn!("migration {}: {reason}; back to syncing", rec.id);
                self.move_migration(&mut rec, MigrationState::Syncing, Some(reason), now)?;
            }
            TaskState::Running | TaskState::Done { .. } => {}
        }
        Ok(())
    }

    /// A standby's step of the cutover (see the module docs). `applying` is refused
    /// ([`MigrationError::NotCuttingOver`]) unless the migration is cutting over to that
    /// snapshot: an aborted cutover's standby writes nothing.
    pub fn standby_cutover(
        &self,
        agent: &str,
        report: &StandbyCutover,
        now: SystemTime,
    ) -> MResult<MigrationRecord> {
        if report.seconds.is_some_and(|s| !s.is_finite() || s < 0.0) {
            return Err(MigrationError::BadReport {
                agent: agent.to_string(),
                why: "seconds is not a duration".into(),
            });
        }
        if let Some(d) = &report.detail {
            if d.len() > 4096 {
                return Err(MigrationError::BadReport {
                    agent: agent.to_string(),
                    why: "detail is longer than 4096 bytes".into(),
                });
            }
        }
        let _jobs = self.lock_jobs()?;
        let _migrations = self.lock_migrations()?;
        let mut m = self
            .active_standby(agent)?
            .ok_or_else(|| MigrationError::NotStandby {
                agent: agent.to_string(),
            })?;
        let final_snapshot = m.cutover.as_ref().and_then(|c| c.snapshot.clone());
        if m.state != MigrationState::CuttingOver
            || final_snapshot.as_deref() != Some(report.snapshot.as_str())
        {
            return Err(MigrationError::NotCuttingOver {
                id: m.id.clone(),
                state: m.state.name(),
                snapshot: report.snapshot.clone(),
            });
        }
        let t = rfc3339(now);
        let past_return = m
            .cutover
            .as_ref()
            .is_some_and(|c| c.apply_started.is_some());
        let Some(c) = m.cutover.as_mut() else {
            return Ok(m);
        };
        match report.step {
            CutoverStep::Applying => {
                c.apply_started.get_or_insert(t);
                self.write_migration(&m)?;
            }
            CutoverStep::Applied => {
                c.apply_started.get_or_insert(t.clone());
                c.apply_ended = Some(t.clone());
                c.bytes_written = report.bytes_written;
                let taken = self.manifest(&report.snapshot)?.created;
                m.standby.basis = Some(report.snapshot.clone());
                m.standby.basis_taken = Some(taken.clone());
                m.standby.applied_at = Some(t);
                m.standby.bytes_written = report.bytes_written;
                m.standby.seconds = report.seconds;
                m.record(
                    now,
                    Happened::Applied {
                        snapshot: report.snapshot.clone(),
                        taken,
                        bytes_written: report.bytes_written.unwrap_or(0),
                        seconds: report.seconds.unwrap_or(0.0),
                    },
                );
                self.write_migration(&m)?;
                let mut job = self.job(&m.job)?;
                if job.snapshot != report.snapshot {
                    job.snapshot = report.snapshot.clone();
                    self.write_job(&job)?;
                }
            }
            CutoverStep::FixedUp => {
                c.fixup_ended = Some(t);
                c.fixup = report.detail.clone();
                self.write_migration(&m)?;
            }
            CutoverStep::Rebooting => {
                c.rebooting = Some(t);
                self.move_migration(&mut m, MigrationState::CutOver, None, now)?;
            }
            CutoverStep::Failed => {
                let why = report.detail.as_deref().unwrap_or("no reason given");
                if past_return {
                    let reason = format!(
                        "the standby failed after it started writing the final snapshot {}: {why}; the source stays down",
                        report.snapshot
                    );
                    self.move_migration(
                        &mut m,
                        MigrationState::Failed {
                            reason: reason.clone(),
                        },
                        Some(reason),
                        now,
                    )?;
                } else {
                    let reason = format!(
                        "the standby could not take the final snapshot {}: {why}",
                        report.snapshot
                    );
                    self.move_migration(&mut m, MigrationState::Syncing, Some(reason), now)?;
                }
            }
        }
        Ok(m)
    }

    /// `appliance migrations cancel`: syncing → cancelled.
    pub fn cancel_migration(&self, id: &str, now: SystemTime) -> MResult<MigrationRecord> {
        self.set_migration_state(id, MigrationState::Cancelled, now)
    }

    /// The standby job of a migration that ended: finished, its agent no longer running it.
    /// Called holding the jobs lock.
    fn end_standby_job(&self, rec: &MigrationRecord, now: SystemTime) -> Result<()> {
        let mut job = match self.job(&rec.job) {
            Ok(j) => j,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        if job.state.is_final() {
            return Ok(());
        }
        job.state = match &rec.state {
            MigrationState::CutOver => JobState::Succeeded,
            other => JobState::Failed {
                reason: format!("migration {} is {}", rec.id, other.name()),
            },
        };
        job.finished = Some(rfc3339(now));
        self.write_job(&job)?;
        if let Some(agent) = &job.agent {
            let state = match job.state {
                JobState::Succeeded => ferry_format::agent::AgentState::Succeeded,
                _ => ferry_format::agent::AgentState::Failed,
            };
            match self.update_agent(agent, |a| a.state = state) {
                Err(e) if e.is_not_found() => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// The active migration `agent` is the standby of, when its standby job is live and bound
    /// to it.
    pub fn active_standby(&self, agent: &str) -> Result<Option<MigrationRecord>> {
        let Some(m) = self
            .list_migrations()?
            .into_iter()
            .find(|m| m.agent == agent && m.state.is_active())
        else {
            return Ok(None);
        };
        let job = match self.job(&m.job) {
            Ok(j) => j,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let live = matches!(job.state, JobState::Pending | JobState::Running)
            && job.agent.as_deref() == Some(agent);
        Ok(live.then_some(m))
    }

    /// What an agent may read: `Some` (the handed snapshot and its basis, either possibly
    /// absent) while it is a standby, `None` when it is not (its job's rules apply).
    pub fn standby_snapshots(&self, agent: &str) -> Result<Option<Vec<String>>> {
        Ok(self.active_standby(agent)?.map(|m| {
            let mut out: Vec<String> = m.standby.handed.into_iter().collect();
            out.extend(m.standby.basis.filter(|b| !out.contains(b)));
            out
        }))
    }

    /// The snapshot `agent`'s standby is to apply next: the newest of its machine when that is
    /// not `basis` (the snapshot its disks hold in this boot; `None` after a reboot, then the
    /// newest is the answer). Remembers it as handed and pins it. `Ok(None)`: nothing newer.
    pub fn standby_next(
        &self,
        agent: &str,
        basis: Option<&str>,
        now: SystemTime,
    ) -> MResult<Option<StandbyNext>> {
        let m = self
            .active_standby(agent)?
            .ok_or_else(|| MigrationError::NotStandby {
                agent: agent.to_string(),
            })?;
        if m.state == MigrationState::CuttingOver {
            // Only the final snapshot, once the source took it.
            let Some(snapshot) = m.cutover.as_ref().and_then(|c| c.snapshot.clone()) else {
                return Ok(None);
            };
            let created = self.manifest(&snapshot)?.created;
            if m.standby.handed.as_deref() != Some(&snapshot) {
                let _migrations = self.lock_migrations()?;
                let mut m = self.migration(&m.id)?;
                m.standby.handed = Some(snapshot.clone());
                m.standby.handed_at = Some(rfc3339(now));
                self.write_migration(&m)?;
                self.pin_standby(&m, &snapshot)?;
            }
            return Ok(Some(StandbyNext {
                migration: m.id,
                snapshot,
                created,
                final_: true,
            }));
        }
        let Some(newest) = self.list_snapshots(Some(&m.machine))?.pop() else {
            return Ok(None);
        };
        if basis == Some(newest.snapshot.as_str()) {
            return Ok(None);
        }
        let next = StandbyNext {
            migration: m.id.clone(),
            snapshot: newest.snapshot.clone(),
            created: newest.created.clone(),
            final_: false,
        };
        if m.standby.handed.as_deref() == Some(&newest.snapshot) {
            return Ok(Some(next));
        }
        let _migrations = self.lock_migrations()?;
        let mut m = self.migration(&m.id)?;
        m.standby.handed = Some(newest.snapshot.clone());
        m.standby.handed_at = Some(rfc3339(now));
        self.write_migration(&m)?;
        self.pin_standby(&m, &newest.snapshot)?;
        Ok(Some(next))
    }

    /// Pin the standby's basis, what it was handed and the machine's newest snapshot.
    fn pin_standby(&self, m: &MigrationRecord, newest: &str) -> Result<()> {
        let mut pins: Vec<&str> = vec![newest];
        for s in [&m.standby.basis, &m.standby.handed].into_iter().flatten() {
            if !pins.contains(&s.as_str()) {
                pins.push(s);
            }
        }
        self.replace_source_pins(&m.machine, &m.pin_holder(), &pins)
    }

    /// The standby reports that its disks hold `report.basis` (the snapshot it was handed, or
    /// the basis it already had). Records the status and history, moves its job's snapshot and
    /// the pins to it.
    pub fn standby_report(
        &self,
        agent: &str,
        report: &StandbyReport,
        now: SystemTime,
    ) -> MResult<MigrationRecord> {
        let bad = |why: String| MigrationError::BadReport {
            agent: agent.to_string(),
            why,
        };
        if parse_rfc3339(&report.applied).is_none() {
            return Err(bad(format!(
                "applied {:?} is not an RFC 3339 time",
                report.applied
            )));
        }
        if !report.seconds.is_finite() || report.seconds < 0.0 {
            return Err(bad(format!("seconds {} is not a duration", report.seconds)));
        }
        let _jobs = self.lock_jobs()?;
        let _migrations = self.lock_migrations()?;
        let mut m = self
            .active_standby(agent)?
            .ok_or_else(|| MigrationError::NotStandby {
                agent: agent.to_string(),
            })?;
        let known = [&m.standby.handed, &m.standby.basis]
            .into_iter()
            .any(|s| s.as_deref() == Some(report.basis.as_str()));
        if !known {
            return Err(MigrationError::WrongBasis {
                agent: agent.to_string(),
                basis: report.basis.clone(),
                handed: m.standby.handed.clone(),
            });
        }
        let taken = self.manifest(&report.basis)?.created;
        m.standby.basis = Some(report.basis.clone());
        m.standby.basis_taken = Some(taken.clone());
        m.standby.applied_at = Some(report.applied.clone());
        m.standby.bytes_written = Some(report.bytes_written);
        m.standby.seconds = Some(report.seconds);
        m.record(
            now,
            Happened::Applied {
                snapshot: report.basis.clone(),
                taken,
                bytes_written: report.bytes_written,
                seconds: report.seconds,
            },
        );
        self.write_migration(&m)?;
        let mut job = self.job(&m.job)?;
        if job.snapshot != report.basis {
            job.snapshot = report.basis.clone();
            self.write_job(&job)?;
        }
        let newest = self
            .list_snapshots(Some(&m.machine))?
            .pop()
            .map_or(report.basis.clone(), |s| s.snapshot);
        self.pin_standby(&m, &newest)?;
        Ok(m)
    }
}

/// A migration's disk map against the machine's newest snapshot: at least one, each disk of
/// the snapshot, none twice.
fn check_mappings(mappings: &[Mapping], newest: &SnapshotSummary) -> MResult<()> {
    if mappings.is_empty() {
        return Err(MigrationError::Mapping(
            "a migration needs at least one --map DISK=TARGET".into(),
        ));
    }
    for (i, m) in mappings.iter().enumerate() {
        if !newest.disks.contains(&m.disk) {
            return Err(MigrationError::Mapping(format!(
                "snapshot {} has no disk {:?}; its disks are: {}",
                newest.snapshot,
                m.disk,
                newest.disks.join(", ")
            )));
        }
        if mappings[..i].iter().any(|o| o.disk == m.disk) {
            return Err(MigrationError::Mapping(format!(
                "disk {} is mapped twice: give one --map per disk",
                m.disk
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_legal_transitions() {
        use MigrationState::*;
        let failed = || Failed { reason: "x".into() };
        let all = [Syncing, CuttingOver, CutOver, failed(), Cancelled];
        let legal = [
            ("syncing", "cutting-over"),
            ("syncing", "cancelled"),
            ("syncing", "failed"),
            ("cutting-over", "cut-over"),
            ("cutting-over", "syncing"),
            ("cutting-over", "failed"),
        ];
        for from in &all {
            for to in &all {
                let want = legal.contains(&(from.name(), to.name()));
                assert_eq!(
                    from.may_become(to),
                    want,
                    "{} -> {}",
                    from.name(),
                    to.name()
                );
            }
        }
        assert!(Syncing.is_active() && CuttingOver.is_active());
        assert!(!CutOver.is_active() && !failed().is_active() && !Cancelled.is_active());
    }

    #[test]
    fn states_serialize_as_documented() {
        let s = serde_json::to_string(&MigrationState::CuttingOver).unwrap();
        assert_eq!(s, r#""cutting-over""#);
        let f = serde_json::to_string(&MigrationState::Failed {
            reason: "disk".into(),
        })
        .unwrap();
        assert_eq!(f, r#"{"failed":{"reason":"disk"}}"#);
        assert!(serde_json::from_str::<MigrationState>(r#""cutover""#).is_err());
    }

    #[test]
    fn lag_is_newest_minus_basis() {
        assert_eq!(
            lag_seconds("2026-01-01T00:00:00Z", "2026-01-01T01:00:30Z"),
            Some(3630)
        );
        assert_eq!(
            lag_seconds("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
            Some(0)
        );
        assert_eq!(lag_seconds("soon", "2026-01-01T00:00:00Z"), None);
    }

    #[test]
    fn ids_are_checked_before_they_become_paths() {
        assert!(check_id("mig-0011aabb").is_ok());
        for bad in ["mig-../../x", "mig-0011aab", "job-0011aabb", ""] {
            assert!(
                matches!(check_id(bad), Err(MigrationError::NotFound(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn status_says_what_the_standby_holds() {
        let mut s = StandbyStatus::default();
        assert!(s.describe().contains("waiting"), "{}", s.describe());
        s.handed = Some("m-1".into());
        assert_eq!(s.describe(), "applying its first snapshot m-1");
        s.basis = Some("m-1".into());
        s.basis_taken = Some("2026-01-01T00:00:00Z".into());
        assert_eq!(
            s.describe(),
            "in sync with snapshot m-1, taken 2026-01-01T00:00:00Z"
        );
    }
}
