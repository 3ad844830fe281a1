//! The operator's operations, one definition for both ways in: the admin API's handlers call the
//! functions here on the server's store, and the `appliance` CLI calls them through [`Admin`]:
//! on a store directory (`--data`, [`Store`]'s implementation) or on a remote appliance over
//! the admin API (`--appliance`, the binary's implementation). The same checks and messages
//! either way; the CLI prints what comes back.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ferry_format::admin::{
    JobCreate, MachineSummary, MigrationCreate, PruneLine, PruneReport, PruneRequest,
    ScheduleChange, StoreUsage, TokenCreate, TokenCreated,
};
use ferry_format::agent::{AgentInfo, JobRecord, Mapping};
use ferry_format::api::{Role, SnapshotSummary, TokenInfo};
use ferry_store::gc::{GcReport, GcStatus};
use ferry_store::jobs::{NewBackupJob, NewJob};
use ferry_store::migrations::NewMigration;
use ferry_store::prune::{PrunePlan, PrunePolicy};
use ferry_store::tokens::{parse_expiry, NewToken};
use ferry_store::views::{MigrationView, SourceView};
use ferry_store::{Store, StoreError};

use crate::error::ApiError;
use crate::job_commands::{job_for, job_view, JobView};
use crate::token_commands::scope_for;

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// `POST /tokens`, `appliance token create`.
pub fn token_create(
    store: &Store,
    req: &TokenCreate,
    now: SystemTime,
) -> Result<TokenCreated, ApiError> {
    if req.role == Role::Agent {
        return Err(ApiError::bad_request(
            "agent credentials are made by enrollment, not as tokens: use role backup, restore, admin, enroll or metrics",
        ));
    }
    let new = NewToken {
        role: req.role,
        machines: scope_for(req.role, &req.machines, req.all_machines)
            .map_err(|e| bad(format!("{e:#}")))?,
        expires: req
            .expires
            .as_deref()
            .map(|e| parse_expiry(e, now))
            .transpose()?,
        name: req.name.clone(),
    };
    let c = store.create_token(&new, now)?;
    let info = store
        .list_tokens(now)?
        .into_iter()
        .find(|t| t.id == c.id)
        .ok_or_else(|| StoreError::NotFound(format!("token {}", c.id)))?;
    Ok(TokenCreated {
        token: c.token,
        info,
    })
}

/// `POST /jobs`, `appliance jobs create`: checked against the snapshot and the agent's
/// inventory before the job exists.
pub fn job_create(store: &Store, req: &JobCreate, now: SystemTime) -> Result<JobRecord, ApiError> {
    match req.clone() {
        JobCreate::Restore {
            agent,
            mac,
            snapshot,
            map,
            then,
            overwrite,
            options,
        } => {
            let mappings = parse_maps(&map)?;
            let new = NewJob {
                snapshot,
                for_: job_for(agent, mac).map_err(|e| bad(format!("{e:#}")))?,
                mappings,
                then,
                overwrite,
                options,
            };
            Ok(store.create_job(new, now)?)
        }
        JobCreate::Backup {
            agent,
            mac,
            machine,
            disks,
            then,
        } => {
            let new = NewBackupJob {
                for_: job_for(agent, mac).map_err(|e| bad(format!("{e:#}")))?,
                machine,
                disks,
                then,
            };
            Ok(store.create_backup_job(new, now)?)
        }
    }
}

fn parse_maps(map: &[String]) -> Result<Vec<Mapping>, ApiError> {
    map.iter()
        .map(|m| m.parse::<Mapping>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::bad_request)
}

/// `POST /machines/{machine}/prune`, `appliance prune`: plan, then (unless a dry run) remove
/// exactly what the plan says.
pub fn prune(
    store: &Store,
    machine: &str,
    req: &PruneRequest,
    now: SystemTime,
) -> Result<PruneReport, ApiError> {
    let keep_within = req
        .keep_within
        .as_deref()
        .map(|w| {
            ferry_format::api::parse_duration_secs(w)
                .map(Duration::from_secs)
                .map_err(|e| bad(format!("keep_within {e}")))
        })
        .transpose()?;
    let policy = PrunePolicy {
        keep: req.keep as usize,
        keep_within,
    };
    let plan = store.plan_prune(machine, &policy, now)?;
    let removed = if req.dry_run {
        0
    } else {
        let n = plan.removals().count() as u64;
        if n > 0 {
            store.apply_prune(&plan)?;
        }
        n
    };
    Ok(prune_report(&plan, req.dry_run, removed))
}

fn prune_report(plan: &PrunePlan, dry_run: bool, removed: u64) -> PruneReport {
    PruneReport {
        machine: plan.machine.clone(),
        dry_run,
        removed,
        entries: plan
            .entries
            .iter()
            .map(|e| PruneLine {
                snapshot: e.summary.snapshot.clone(),
                created: e.summary.created.clone(),
                writer: e.writer.clone(),
                keep: e.keep.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }
}

/// `GET /machines`: machines with snapshots, each with its newest.
pub fn machines(store: &Store) -> Result<Vec<MachineSummary>, StoreError> {
    let mut by: BTreeMap<String, MachineSummary> = BTreeMap::new();
    // Oldest first: each later snapshot of a machine replaces the newest.
    for s in store.list_snapshots(None)? {
        let e = by
            .entry(s.machine.clone())
            .or_insert_with(|| MachineSummary {
                machine: s.machine.clone(),
                snapshots: 0,
                newest: String::new(),
                newest_created: String::new(),
                newest_consistency: s.consistency.clone(),
                newest_size: 0,
            });
        e.snapshots += 1;
        e.newest = s.snapshot;
        e.newest_created = s.created;
        e.newest_consistency = s.consistency;
        e.newest_size = s.size;
    }
    Ok(by.into_values().collect())
}

/// Chunks, bytes and deduplication of a store (`GET /store`, `appliance store`).
pub fn usage(store: &Store) -> Result<StoreUsage, StoreError> {
    let u = store.chunk_usage()?;
    let list = store.list_snapshots(None)?;
    let refs: u64 = list.iter().map(|s| s.data_chunks).sum();
    let machines = list
        .iter()
        .map(|s| s.machine.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    Ok(StoreUsage {
        chunks: u.chunks,
        chunk_bytes: u.bytes,
        chunk_references: refs,
        dedup_ratio: if u.chunks == 0 {
            0.0
        } else {
            refs as f64 / u.chunks as f64
        },
        snapshots: list.len() as u64,
        machines,
    })
}

/// `POST /migrations`, `appliance migrations create`.
pub fn migration_create(
    store: &Store,
    req: &MigrationCreate,
    now: SystemTime,
) -> Result<MigrationView, ApiError> {
    let m = store
        .create_migration(
            NewMigration {
                machine: req.machine.clone(),
                agent: req.agent.clone(),
                mappings: parse_maps(&req.map)?,
                overwrite: req.overwrite,
                network: req.network.clone(),
            },
            now,
        )
        .map_err(crate::standby::api_error)?;
    Ok(store.migration_view(m, now)?)
}

/// `PATCH /sources/{machine}`, `appliance sources set`: creates the record when the agent has
/// not enrolled yet (configured ahead).
pub fn source_set(
    store: &Store,
    machine: &str,
    change: &ScheduleChange,
    now: SystemTime,
) -> Result<SourceView, StoreError> {
    let rec = store.set_schedule(machine, |s| change.apply(s))?;
    Ok(SourceView::new(&rec, now))
}

/// The operations of the `appliance` CLI that run on the store directory or over the admin
/// API alike. Errors say what to do.
pub trait Admin {
    fn tokens(&self) -> anyhow::Result<Vec<TokenInfo>>;
    fn token_create(&self, req: &TokenCreate) -> anyhow::Result<TokenCreated>;
    fn token_revoke(&self, id: &str) -> anyhow::Result<TokenInfo>;
    fn snapshots(&self, machine: Option<&str>) -> anyhow::Result<Vec<SnapshotSummary>>;
    fn snapshot_delete(&self, id: &str) -> anyhow::Result<SnapshotSummary>;
    fn prune(&self, machine: &str, req: &PruneRequest) -> anyhow::Result<PruneReport>;
    fn agents(&self) -> anyhow::Result<Vec<AgentInfo>>;
    fn agent_approve(&self, id: &str, code: Option<&str>) -> anyhow::Result<AgentInfo>;
    fn agent_remove(&self, id: &str) -> anyhow::Result<()>;
    fn jobs(&self) -> anyhow::Result<Vec<JobRecord>>;
    fn job(&self, id: &str) -> anyhow::Result<JobView>;
    fn job_create(&self, req: &JobCreate) -> anyhow::Result<JobRecord>;
    fn job_cancel(&self, id: &str) -> anyhow::Result<JobRecord>;
    fn sources(&self) -> anyhow::Result<Vec<SourceView>>;
    fn source(&self, machine: &str) -> anyhow::Result<SourceView>;
    fn source_set(&self, machine: &str, change: &ScheduleChange) -> anyhow::Result<SourceView>;
    fn source_sync_now(&self, machine: &str) -> anyhow::Result<SourceView>;
    fn source_pause(&self, machine: &str, paused: bool) -> anyhow::Result<SourceView>;
    fn migrations(&self) -> anyhow::Result<Vec<MigrationView>>;
    fn migration(&self, id: &str) -> anyhow::Result<MigrationView>;
    fn migration_create(&self, req: &MigrationCreate) -> anyhow::Result<MigrationView>;
    fn migration_cutover(&self, id: &str, poweroff_source: bool) -> anyhow::Result<MigrationView>;
    fn migration_cancel(&self, id: &str) -> anyhow::Result<MigrationView>;
    fn store_usage(&self) -> anyhow::Result<StoreUsage>;
    fn gc(&self) -> anyhow::Result<GcReport>;
    fn gc_status(&self) -> anyhow::Result<GcStatus>;
}

impl Admin for Store {
    fn tokens(&self) -> anyhow::Result<Vec<TokenInfo>> {
        Ok(self.list_tokens(SystemTime::now())?)
    }
    fn token_create(&self, req: &TokenCreate) -> anyhow::Result<TokenCreated> {
        Ok(token_create(self, req, SystemTime::now())?)
    }
    fn token_revoke(&self, id: &str) -> anyhow::Result<TokenInfo> {
        let now = SystemTime::now();
        Ok(self.revoke_token(id, now)?.info(now))
    }
    fn snapshots(&self, machine: Option<&str>) -> anyhow::Result<Vec<SnapshotSummary>> {
        Ok(self.list_snapshots(machine)?)
    }
    fn snapshot_delete(&self, id: &str) -> anyhow::Result<SnapshotSummary> {
        Ok(self.delete_snapshot(id)?)
    }
    fn prune(&self, machine: &str, req: &PruneRequest) -> anyhow::Result<PruneReport> {
        Ok(prune(self, machine, req, SystemTime::now())?)
    }
    fn agents(&self) -> anyhow::Result<Vec<AgentInfo>> {
        Ok(self.list_agents()?)
    }
    fn agent_approve(&self, id: &str, code: Option<&str>) -> anyhow::Result<AgentInfo> {
        Ok(self.approve_agent(id, code, SystemTime::now())?)
    }
    fn agent_remove(&self, id: &str) -> anyhow::Result<()> {
        Ok(self.remove_agent(id)?)
    }
    fn jobs(&self) -> anyhow::Result<Vec<JobRecord>> {
        Ok(self.list_jobs()?)
    }
    fn job(&self, id: &str) -> anyhow::Result<JobView> {
        Ok(job_view(self, id)?)
    }
    fn job_create(&self, req: &JobCreate) -> anyhow::Result<JobRecord> {
        Ok(job_create(self, req, SystemTime::now())?)
    }
    fn job_cancel(&self, id: &str) -> anyhow::Result<JobRecord> {
        Ok(self.cancel_job(id, SystemTime::now())?)
    }
    fn sources(&self) -> anyhow::Result<Vec<SourceView>> {
        Ok(self.source_views(SystemTime::now())?)
    }
    fn source(&self, machine: &str) -> anyhow::Result<SourceView> {
        Ok(SourceView::new(
            &Store::source(self, machine)?,
            SystemTime::now(),
        ))
    }
    fn source_set(&self, machine: &str, change: &ScheduleChange) -> anyhow::Result<SourceView> {
        Ok(source_set(self, machine, change, SystemTime::now())?)
    }
    fn source_sync_now(&self, machine: &str) -> anyhow::Result<SourceView> {
        Ok(SourceView::new(&self.sync_now(machine)?, SystemTime::now()))
    }
    fn source_pause(&self, machine: &str, paused: bool) -> anyhow::Result<SourceView> {
        Ok(SourceView::new(
            &self.set_paused(machine, paused)?,
            SystemTime::now(),
        ))
    }
    fn migrations(&self) -> anyhow::Result<Vec<MigrationView>> {
        Ok(self.migration_views(SystemTime::now())?)
    }
    fn migration(&self, id: &str) -> anyhow::Result<MigrationView> {
        Ok(self.migration_view(Store::migration(self, id)?, SystemTime::now())?)
    }
    fn migration_create(&self, req: &MigrationCreate) -> anyhow::Result<MigrationView> {
        Ok(migration_create(self, req, SystemTime::now())?)
    }
    fn migration_cutover(&self, id: &str, poweroff_source: bool) -> anyhow::Result<MigrationView> {
        let now = SystemTime::now();
        let m = self.request_cutover_with(id, poweroff_source, now)?;
        Ok(self.migration_view(m, now)?)
    }
    fn migration_cancel(&self, id: &str) -> anyhow::Result<MigrationView> {
        let now = SystemTime::now();
        let m = self.cancel_migration(id, now)?;
        Ok(self.migration_view(m, now)?)
    }
    fn store_usage(&self) -> anyhow::Result<StoreUsage> {
        Ok(usage(self)?)
    }
    fn gc(&self) -> anyhow::Result<GcReport> {
        Ok(Store::gc(self, SystemTime::now())?)
    }
    fn gc_status(&self) -> anyhow::Result<GcStatus> {
        Ok(Store::gc_status(self)?)
    }
}
