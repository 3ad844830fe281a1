//! `jobs/<id>.json` and `jobs/<id>.events.jsonl`: restore jobs for agents, their state and their
//! append-only event logs (docs/store.md, "Agents and jobs").
//!
//! Every read-modify-write of a job record holds `jobs/.lock` (flock), so `appliance jobs create`
//! in one process and `serve` in another never lose an update. Lock order: jobs, then agents.
//! A job's mappings are resolved against the agent's inventory when the agent picks it up
//! ([`Store::take_job`]); a mapping that cannot be satisfied fails the job with a reason before
//! the agent writes anything.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::SystemTime;

use ferry_fixup::network::{NetworkRules, TargetNic};
use ferry_format::agent::{
    check_backup_disks, resolve_backup_disks, resolve_mappings, AgentState, BackupSpec, DiskNeed,
    Event, EventBatch, Inventory, Job, JobFor, JobKind, JobNetwork, JobOptions, JobProgress,
    JobRecord, JobState, Level, Mapping, Then, MAX_EVENT_BATCH,
};
use ferry_format::manifest::Manifest;
use ferry_format::marker::proof_hash;
use ferry_format::names::{check_name, NameKind};
use ferry_format::units::human_bytes;
use ferry_format::{ChunkId, DiskIndex, Entry};

use crate::error::{Result, StoreError};
use crate::fsx;
use crate::meta::{Collection, RecordLock};
use crate::snapshots::rfc3339;
use crate::Store;

/// A job's event log stops taking progress events at this size (an agent credential must not
/// be able to fill the appliance's disk)...
pub const MAX_EVENT_LOG: u64 = 8 << 20;
/// ...and everything else past this much more.
const EVENT_LOG_RESERVE: u64 = 1 << 20;

/// Errors and the job's end are kept past the cap.
fn must_keep(e: &Event) -> bool {
    e.level == Level::Error
        || matches!(
            e.phase,
            ferry_format::agent::Phase::Done | ferry_format::agent::Phase::Failed
        )
}

/// What `appliance jobs create` asks for.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub snapshot: String,
    pub for_: JobFor,
    pub mappings: Vec<Mapping>,
    pub then: Then,
    pub overwrite: bool,
    pub options: JobOptions,
}

/// What `appliance jobs create --backup` asks for: a rescue agent backs up its machine's disks.
#[derive(Clone, Debug)]
pub struct NewBackupJob {
    pub for_: JobFor,
    pub machine: String,
    /// `auto`, `all` or kernel names.
    pub disks: Vec<String>,
    pub then: Then,
}

impl Store {
    pub fn jobs_dir(&self) -> PathBuf {
        self.root().join("jobs")
    }

    pub(crate) fn lock_jobs(&self) -> Result<RecordLock> {
        self.records().lock(Collection::Jobs)
    }

    pub(crate) fn write_job(&self, job: &JobRecord) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(job).map_err(|e| StoreError::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        self.records().put(Collection::Jobs, &job.id, &bytes)
    }

    /// Check a new job against its snapshot (and its agent, when named) and record it.
    pub fn create_job(&self, new: NewJob, now: SystemTime) -> Result<JobRecord> {
        // Held from the snapshot check to the record: prune removes snapshots under this lock,
        // so a job never names a snapshot a concurrent prune just took away.
        let _lock = self.lock_jobs()?;
        let manifest = self.manifest(&new.snapshot)?;
        let agent = match &new.for_ {
            JobFor::Agent(a) => Some(self.agent_record(a)?),
            JobFor::Mac(m) => {
                ferry_format::agent::normalize_mac(m).map_err(StoreError::Invalid)?;
                None
            }
        };
        if let Some(os) = manifest.os.as_ref().filter(|o| o.hibernated == Some(true)) {
            if !new.options.allow_hibernated {
                return Err(StoreError::Invalid(format!(
                    "snapshot {}: its Windows volume {} held a hibernation image when it was read \
                     (hibernated, or shut down with Fast Startup on{}), so its files are not \
                     consistent: boot the source, turn Fast Startup off (powercfg /h off), shut it \
                     down and back it up again; or restore it as it is with --allow-hibernated \
                     (the Windows fix-up still refuses to edit it: add --no-fixup)",
                    new.snapshot,
                    os.volume.as_deref().unwrap_or("?"),
                    if os.fast_startup == Some(true) {
                        ", which is on"
                    } else {
                        ""
                    }
                )));
            }
        }
        check_network(
            &new.options.network,
            &manifest,
            agent.as_ref().map(|a| &a.info.inventory),
        )?;
        if new.mappings.is_empty() {
            return Err(StoreError::Invalid(
                "a job needs at least one --map DISK=TARGET".into(),
            ));
        }
        if let Some(lv) = &new.options.grow_lv {
            if !new.options.grow {
                return Err(StoreError::Invalid(
                    "--grow-lv only has an effect with --grow: add --grow".into(),
                ));
            }
            let ok = lv.split_once('/').is_some_and(|(vg, l)| {
                let name = |n: &str| {
                    !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
                };
                name(vg) && name(l)
            });
            if !ok {
                return Err(StoreError::Invalid(format!(
                    "--grow-lv {lv:?} is not VG/LV (for example vg0/root)"
                )));
            }
        }
        for (i, m) in new.mappings.iter().enumerate() {
            if manifest.disk(&m.disk).is_none() {
                let names: Vec<&str> = manifest.disks.iter().map(|d| d.name.as_str()).collect();
                return Err(StoreError::Invalid(format!(
                    "snapshot {} has no disk {:?}; its disks are: {}",
                    new.snapshot,
                    m.disk,
                    names.join(", ")
                )));
            }
            if new.mappings[..i].iter().any(|o| o.disk == m.disk) {
                return Err(StoreError::Invalid(format!(
                    "disk {} is mapped twice: give one --map per disk",
                    m.disk
                )));
            }
        }
        // An enrolled agent's disks are known: a mapping that cannot hold is refused now, with
        // the message its pickup would give (the agent checks again against what it sees).
        if let Some(a) = &agent {
            let needs = disk_needs(&manifest);
            resolve_mappings(&new.mappings, &needs, &a.info.inventory, new.overwrite).map_err(
                |why| {
                    StoreError::Invalid(format!(
                        "agent {} (its disks as it enrolled {}): {why}",
                        a.info.agent, a.info.enrolled
                    ))
                },
            )?;
        }
        let id = self.new_job_id()?;
        let seq = self.next_job_seq()?;
        let job = JobRecord {
            snapshot: new.snapshot,
            mappings: new.mappings,
            then: new.then,
            overwrite: new.overwrite,
            options: new.options,
            ..JobRecord::pending(id, new.for_, JobKind::Restore, rfc3339(now), seq)
        };
        self.write_job(&job)?;
        Ok(job)
    }

    /// Check a new backup job (its machine name; its disks against the agent's inventory when
    /// it names an enrolled agent, else when the agent picks it up) and record it.
    pub fn create_backup_job(&self, new: NewBackupJob, now: SystemTime) -> Result<JobRecord> {
        check_name(NameKind::Machine, &new.machine)?;
        let _lock = self.lock_jobs()?;
        match &new.for_ {
            JobFor::Agent(a) => {
                let inv = self.agent_record(a)?.info.inventory;
                resolve_backup_disks(&new.disks, &inv)
                    .map_err(|e| StoreError::Invalid(format!("back up agent {a}'s disks: {e}")))?;
            }
            JobFor::Mac(m) => {
                ferry_format::agent::normalize_mac(m).map_err(StoreError::Invalid)?;
                // Resolved when the agent picks it up; the words must make sense already.
                check_backup_disks(&new.disks).map_err(StoreError::Invalid)?;
            }
        }
        let id = self.new_job_id()?;
        let seq = self.next_job_seq()?;
        let job = JobRecord {
            then: new.then,
            options: JobOptions {
                fixup: false,
                ..JobOptions::default()
            },
            backup: Some(BackupSpec {
                machine: new.machine,
                disks: new.disks,
                snapshot: None,
            }),
            ..JobRecord::pending(id, new.for_, JobKind::Backup, rfc3339(now), seq)
        };
        self.write_job(&job)?;
        Ok(job)
    }

    /// One more than the highest `seq` of the jobs on record (call under `jobs/.lock`).
    pub(crate) fn next_job_seq(&self) -> Result<u64> {
        Ok(self.list_jobs()?.iter().map(|j| j.seq).max().unwrap_or(0) + 1)
    }

    fn new_job_id(&self) -> Result<String> {
        loop {
            let id = format!("job-{}", fsx::random_hex(4)?);
            if self.records().get(Collection::Jobs, &id)?.is_none() {
                return Ok(id);
            }
        }
    }

    /// The backup job `agent` is running or about to run, and the machine it backs up: what
    /// lets the agent's credential upload for that one machine (ferry-server `auth`).
    /// `info` is the agent's record as its credential was just checked: nothing is read twice,
    /// and an agent without a current job costs no read at all.
    pub fn agent_backup_job(
        &self,
        info: &ferry_format::agent::AgentInfo,
    ) -> Result<Option<(String, String)>> {
        let Some(id) = &info.job else { return Ok(None) };
        let job = self.job(id)?;
        let live = matches!(job.state, JobState::Pending | JobState::Running)
            && job.agent.as_deref() == Some(info.agent.as_str())
            && job.kind == JobKind::Backup;
        Ok(job.backup.filter(|_| live).map(|b| (job.id, b.machine)))
    }

    /// Record the snapshot a backup job committed (the appliance's own record of the commit,
    /// not the agent's word).
    pub fn record_backup_snapshot(&self, id: &str, snapshot: &str) -> Result<()> {
        let _lock = self.lock_jobs()?;
        let mut job = self.job(id)?;
        if let Some(b) = &mut job.backup {
            b.snapshot = Some(snapshot.to_owned());
            job.snapshot = snapshot.to_owned();
            self.write_job(&job)?;
        }
        Ok(())
    }

    pub fn job(&self, id: &str) -> Result<JobRecord> {
        check_name(NameKind::Job, id)?;
        let bytes = self.records().get(Collection::Jobs, id)?.ok_or_else(|| {
            StoreError::NotFound(format!("there is no job {id}: see `appliance jobs list`"))
        })?;
        parse_job(id, &bytes)
    }

    /// Every job, oldest first.
    pub fn list_jobs(&self) -> Result<Vec<JobRecord>> {
        let mut out = Vec::new();
        for (id, bytes) in self.records().all(Collection::Jobs)? {
            match parse_job(&id, &bytes) {
                Ok(j) => out.push(j),
                Err(e) => tracing::warn!("skipping job record {id}: {e}"),
            }
        }
        out.sort_by(|a, b| (&a.created, a.seq, &a.id).cmp(&(&b.created, b.seq, &b.id)));
        Ok(out)
    }

    /// A job's events, in the order they were received.
    pub fn job_events(&self, id: &str) -> Result<Vec<Event>> {
        check_name(NameKind::Job, id)?;
        let log = self.records().read_log(Collection::Jobs, id)?;
        // A line cut short by a crash mid-append is skipped, not fatal.
        Ok(String::from_utf8_lossy(&log)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    fn append_event_lines(&self, id: &str, events: &[Event]) -> Result<()> {
        let size = self.records().log_size(Collection::Jobs, id)?;
        let full = size >= MAX_EVENT_LOG;
        let mut buf = Vec::new();
        if full && size < MAX_EVENT_LOG + EVENT_LOG_RESERVE {
            // Past the cap only what ends or breaks a job is kept, within a reserve.
            let kept: Vec<&Event> = events.iter().filter(|e| must_keep(e)).collect();
            if kept.is_empty() {
                return Ok(());
            }
            for e in kept {
                serde_json::to_writer(&mut buf, e)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                buf.push(b'\n');
            }
            return self
                .records()
                .append_log(Collection::Jobs, id, &buf)
                .map(|_| ());
        } else if full {
            return Ok(());
        }
        for e in events {
            serde_json::to_writer(&mut buf, e).map_err(|e| StoreError::Invalid(e.to_string()))?;
            buf.push(b'\n');
        }
        if size + buf.len() as u64 >= MAX_EVENT_LOG {
            let note = Event {
                time: events.last().map(|e| e.time.clone()).unwrap_or_default(),
                level: Level::Warn,
                phase: events.last().map_or(ferry_format::agent::Phase::Restore, |e| e.phase),
                message: format!(
                    "the event log of job {id} reached {}: from now on only errors and the job's end are kept",
                    human_bytes(MAX_EVENT_LOG)
                ),
                bytes_done: None,
                bytes_total: None,
                rate: None,
                eta: None,
            };
            serde_json::to_writer(&mut buf, &note)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            buf.push(b'\n');
        }
        self.records()
            .append_log(Collection::Jobs, id, &buf)
            .map(|_| ())
    }

    /// The job `agent` is to run now, if any: its oldest pending or running job (bound to it, or
    /// created for it or one of its MACs). Only an approved agent is given a job; a running job
    /// only to the agent it is bound to (a rebooted machine gets it back by proving it holds the
    /// partial restore, at enrollment). A pending job's mappings are resolved against the
    /// agent's inventory here and a new proof is issued for its in-progress markers; when the
    /// mappings cannot be resolved the job fails with the reason and is returned this once, so
    /// the agent can show why.
    pub fn take_job(&self, agent: &str, now: SystemTime) -> Result<Option<Job>> {
        let _lock = self.lock_jobs()?;
        let info = self.agent_record(agent)?.info;
        if info.approved.is_none() {
            return Ok(None);
        }
        let macs = info.inventory.macs();
        let mine = |j: &JobRecord| match &j.agent {
            Some(a) => a == agent,
            None => match &j.for_ {
                JobFor::Agent(a) => a == agent,
                JobFor::Mac(m) => macs.contains(m),
            },
        };
        let Some(mut job) = self
            .list_jobs()?
            .into_iter()
            .find(|j| matches!(j.state, JobState::Pending | JobState::Running) && mine(j))
        else {
            return Ok(None);
        };
        let mut proof = String::new();
        if job.state == JobState::Pending {
            job.agent = Some(agent.to_string());
            let resolved = match &job.backup {
                Some(b) if job.kind == JobKind::Backup => {
                    resolve_backup_disks(&b.disks, &info.inventory).map(|disks| {
                        job.backup_resolved = Some(disks);
                    })
                }
                _ => self
                    .resolve_job(&job, &info.inventory)
                    .map(|r| job.resolved = Some(r)),
            };
            match resolved {
                Ok(()) if job.kind == JobKind::Backup => {}
                Ok(()) => {
                    proof = fsx::random_hex(32)?;
                    job.proof_hash = Some(proof_hash(&proof));
                }
                Err(reason) => {
                    job.state = JobState::Failed {
                        reason: reason.clone(),
                    };
                    job.finished = Some(rfc3339(now));
                    let ev = Event {
                        time: rfc3339(now),
                        level: ferry_format::agent::Level::Error,
                        phase: ferry_format::agent::Phase::Failed,
                        message: reason,
                        bytes_done: None,
                        bytes_total: None,
                        rate: None,
                        eta: None,
                    };
                    self.append_event_lines(&job.id, &[ev])?;
                }
            }
            self.write_job(&job)?;
        }
        let state = match &job.state {
            JobState::Failed { .. } => AgentState::Failed,
            JobState::Running => AgentState::Running,
            _ => AgentState::Waiting,
        };
        let id = job.id.clone();
        self.update_agent(agent, |a| {
            a.job = Some(id);
            a.state = state;
            a.last_seen = rfc3339(now);
        })?;
        let mut wire = job.to_job();
        wire.proof = proof;
        Ok(Some(wire))
    }

    fn resolve_job(
        &self,
        job: &JobRecord,
        inv: &ferry_format::agent::Inventory,
    ) -> std::result::Result<Vec<Mapping>, String> {
        let manifest = self.manifest(&job.snapshot).map_err(|e| {
            format!(
                "cannot read snapshot {} ({e}): create the job again with an existing snapshot",
                job.snapshot
            )
        })?;
        resolve_mappings(&job.mappings, &disk_needs(&manifest), inv, job.overwrite)
    }

    /// The agent reports its job's state (running, succeeded, failed).
    pub fn set_job_state(
        &self,
        agent: &str,
        id: &str,
        state: JobState,
        now: SystemTime,
    ) -> Result<JobRecord> {
        let _lock = self.lock_jobs()?;
        let mut job = self.agent_job(agent, id)?;
        if !job.state.may_become(&state) {
            return Err(StoreError::Conflict(format!(
                "job {id} is {} and cannot become {}",
                job.state.name(),
                state.name()
            )));
        }
        let t = rfc3339(now);
        if state == JobState::Running && job.started.is_none() {
            job.started = Some(t.clone());
        }
        if state.is_final() {
            job.finished = Some(t.clone());
        }
        let agent_state = match &state {
            JobState::Succeeded => AgentState::Succeeded,
            JobState::Failed { .. } => AgentState::Failed,
            _ => AgentState::Running,
        };
        job.state = state;
        self.write_job(&job)?;
        self.update_agent(agent, |a| {
            a.state = agent_state;
            a.job = Some(id.to_string());
            a.last_seen = t;
        })?;
        Ok(job)
    }

    /// Cancel a job no agent has started (`appliance jobs cancel`, `POST /jobs/{id}/cancel`): it
    /// becomes failed with the operator's reason and never runs (an agent that already took it
    /// is refused when it asks to start, before it writes anything). A running job is refused:
    /// its agent is writing; a standby job belongs to its migration.
    pub fn cancel_job(&self, id: &str, now: SystemTime) -> Result<JobRecord> {
        let _lock = self.lock_jobs()?;
        let mut job = self.job(id)?;
        if let Some(m) = &job.migration {
            return Err(StoreError::Conflict(format!(
                "job {id} is the standby job of migration {m}: cancel the migration instead (appliance migrations cancel {m})"
            )));
        }
        match &job.state {
            JobState::Pending => {}
            JobState::Running => {
                return Err(StoreError::Conflict(format!(
                    "job {id} is running on agent {}: it is writing and cannot be stopped from the appliance; power that machine off to stop it (a later job starts its disks over)",
                    job.agent.as_deref().unwrap_or("?")
                )))
            }
            ended => {
                return Err(StoreError::Conflict(format!(
                    "job {id} has already ended ({}): nothing to cancel",
                    ended.name()
                )))
            }
        }
        let t = rfc3339(now);
        job.state = JobState::Failed {
            reason: format!("cancelled by the operator at {t}, before it started"),
        };
        job.finished = Some(t);
        self.write_job(&job)?;
        Ok(job)
    }

    /// Append an agent's events to its job's log; the last one with byte counts becomes the job's
    /// progress.
    pub fn append_events(&self, agent: &str, batch: &EventBatch, now: SystemTime) -> Result<()> {
        if batch.events.len() > MAX_EVENT_BATCH {
            return Err(StoreError::Invalid(format!(
                "{} events in one batch: send at most {MAX_EVENT_BATCH}",
                batch.events.len()
            )));
        }
        let _lock = self.lock_jobs()?;
        let mut job = self.agent_job(agent, &batch.job)?;
        self.append_event_lines(&job.id, &batch.events)?;
        if let Some(e) = batch.events.iter().rev().find(|e| e.bytes_total.is_some()) {
            job.progress = JobProgress {
                phase: Some(e.phase),
                bytes_done: e.bytes_done.unwrap_or(0),
                bytes_total: e.bytes_total.unwrap_or(0),
                rate: e.rate.unwrap_or(0),
                eta: e.eta.unwrap_or(0),
            };
            self.write_job(&job)?;
        }
        let t = rfc3339(now);
        self.update_agent(agent, |a| a.last_seen = t)?;
        Ok(())
    }

    /// A job bound to `agent`; another agent's job is "not found" to it.
    fn agent_job(&self, agent: &str, id: &str) -> Result<JobRecord> {
        let job = self.job(id)?;
        if job.agent.as_deref() != Some(agent) {
            return Err(StoreError::NotFound(format!(
                "agent {agent} has no job {id}"
            )));
        }
        Ok(job)
    }

    /// The snapshot an agent may read now: that of its job, while the job is pending (handed
    /// out) or running.
    pub fn agent_snapshot(&self, agent: &str) -> Result<Option<String>> {
        let info = self.agent_record(agent)?.info;
        let Some(id) = info.job else { return Ok(None) };
        let job = self.job(&id)?;
        let live = matches!(job.state, JobState::Pending | JobState::Running)
            && job.agent.as_deref() == Some(agent)
            && job.kind != JobKind::Backup;
        Ok(live.then_some(job.snapshot))
    }

    /// Every data chunk any disk of a snapshot references.
    pub fn snapshot_chunk_ids(&self, snapshot: &str) -> Result<HashSet<ChunkId>> {
        let manifest = self.manifest(snapshot)?;
        let mut ids = HashSet::new();
        for d in &manifest.disks {
            let index = DiskIndex::decode(&self.snapshot_index(snapshot, &d.name)?)?;
            ids.extend(index.entries.iter().filter_map(|e| match e {
                Entry::Data(id) => Some(*id),
                _ => None,
            }));
        }
        Ok(ids)
    }
}

/// A job's network rules (`--nic`, `--reip`, `--ip`), checked against what the snapshot
/// recorded of its network and, when the job names its agent, that agent's NICs: a mapping
/// onto a NIC the target lacks, or a rule that gives an unusable address, is refused here,
/// long before the agent writes anything (it checks again).
pub(crate) fn check_network(
    net: &JobNetwork,
    manifest: &Manifest,
    target: Option<&Inventory>,
) -> Result<()> {
    if net.is_empty() {
        return Ok(());
    }
    let rules = NetworkRules::parse(net)?;
    let targets: Option<Vec<TargetNic>> =
        target.map(|i| i.nics.iter().map(TargetNic::from).collect());
    match (&manifest.network, targets) {
        (Some(cfg), Some(t)) => {
            rules.check(cfg, &t)?;
        }
        (Some(cfg), None) => rules.check_addresses(cfg, None)?,
        (None, Some(t)) => rules.check_targets(&t)?,
        (None, None) => {}
    }
    Ok(())
}

/// What each snapshot disk needs of a target: its size.
pub(crate) fn disk_needs(manifest: &Manifest) -> Vec<DiskNeed> {
    manifest
        .disks
        .iter()
        .map(|d| DiskNeed {
            disk: d.name.clone(),
            size: d.size,
        })
        .collect()
}

fn parse_job(id: &str, bytes: &[u8]) -> Result<JobRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Invalid(format!("parse the record of job {id}: {e}")))
}
