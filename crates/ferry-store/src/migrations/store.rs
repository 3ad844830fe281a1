//! `migrations/<id>.json` I/O under `migrations/.lock`, creating a migration with its standby
//! job, moving it between states, and ending its standby job.

use std::path::PathBuf;
use std::time::SystemTime;

use ferry_format::agent::{
    normalize_mac, JobFor, JobKind, JobOptions, JobRecord, JobState, Mapping,
};
use ferry_format::api::SnapshotSummary;

use crate::error::{Result, StoreError};
use crate::fsx;
use crate::meta::{Collection, RecordLock};
use crate::snapshots::rfc3339;
use crate::Store;

use super::error::{check_id, MResult, MigrationError};
use super::record::{Happened, MigrationRecord, MigrationState, NewMigration, StandbyStatus};

impl Store {
    pub fn migrations_dir(&self) -> PathBuf {
        self.root().join("migrations")
    }

    pub(crate) fn lock_migrations(&self) -> Result<RecordLock> {
        self.records().lock(Collection::Migrations)
    }

    pub(super) fn write_migration(&self, rec: &MigrationRecord) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        self.records().put(Collection::Migrations, &rec.id, &bytes)
    }

    pub fn migration(&self, id: &str) -> MResult<MigrationRecord> {
        check_id(id)?;
        let bytes = self
            .records()
            .get(Collection::Migrations, id)?
            .ok_or_else(|| MigrationError::NotFound(id.to_string()))?;
        Ok(parse_migration(id, &bytes)?)
    }

    /// Every migration, oldest first (unreadable records are skipped with a warning).
    pub fn list_migrations(&self) -> Result<Vec<MigrationRecord>> {
        let mut out = Vec::new();
        for (id, bytes) in self.records().all(Collection::Migrations)? {
            match parse_migration(&id, &bytes) {
                Ok(m) => out.push(m),
                Err(e) => tracing::warn!("skipping migration record {id}: {e}"),
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
        let standby = self.agent_record(&agent)?;
        let manifest = self.manifest(&newest.snapshot)?;
        crate::jobs::check_network(&new.network, &manifest, Some(&standby.info.inventory))?;
        // The standby's disks as it enrolled: a target it lacks, or one too small for the
        // newest snapshot, is refused now rather than when the standby takes its job.
        ferry_format::agent::resolve_mappings(
            &new.mappings,
            &crate::jobs::disk_needs(&manifest),
            &standby.info.inventory,
            new.overwrite,
        )
        .map_err(|e| MigrationError::Mapping(format!("standby {agent}: {e}")))?;
        let id = loop {
            let id = format!("mig-{}", fsx::random_hex(4)?);
            if self.records().get(Collection::Migrations, &id)?.is_none() {
                break id;
            }
        };
        let job_id = loop {
            let j = format!("job-{}", fsx::random_hex(4)?);
            if self.records().get(Collection::Jobs, &j)?.is_none() {
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
        let seq = self.next_job_seq()?;
        let job = JobRecord {
            snapshot: newest.snapshot.clone(),
            mappings: new.mappings,
            overwrite: new.overwrite,
            // The fix-up belongs to the cutover, not to each apply.
            options: JobOptions {
                fixup: false,
                network: new.network,
                ..JobOptions::default()
            },
            migration: Some(id),
            ..JobRecord::pending(
                job_id,
                JobFor::Agent(agent),
                JobKind::Standby,
                rfc3339(now),
                seq,
            )
        };
        // The migration first: a crash in between leaves a migration without its job (shown,
        // cancellable), never a standby job without its migration.
        self.write_migration(&rec)?;
        self.write_job(&job)?;
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
    pub(super) fn move_migration(
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
        // The source is down and its copy runs elsewhere: no more scheduled syncs of it (a
        // source started again by hand would otherwise sync into the migrated machine's history).
        if rec.state == MigrationState::CutOver {
            match self.retire_source(&rec.machine) {
                Err(e) if e.is_not_found() => {}
                other => {
                    other?;
                }
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

    /// `appliance migrations cancel`: syncing → cancelled.
    pub fn cancel_migration(&self, id: &str, now: SystemTime) -> MResult<MigrationRecord> {
        self.set_migration_state(id, MigrationState::Cancelled, now)
    }

    /// The standby job of a migration that ended: finished, its agent no longer running it.
    /// Called holding the jobs lock.
    pub(super) fn end_standby_job(&self, rec: &MigrationRecord, now: SystemTime) -> Result<()> {
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

fn parse_migration(id: &str, bytes: &[u8]) -> Result<MigrationRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Invalid(format!("parse the record of migration {id}: {e}")))
}
