//! The standby routes: the active migration of an agent, the next snapshot to apply, and what
//! it applied; and the pins that keep those snapshots.

use std::time::SystemTime;

use ferry_format::agent::{JobState, StandbyNext, StandbyReport};

use crate::error::Result;
use crate::snapshots::rfc3339;
use crate::tokens::parse_rfc3339;
use crate::Store;

use super::error::{MResult, MigrationError};
use super::record::{Happened, MigrationRecord, MigrationState};

impl Store {
    /// A resume proof bound standby job `job` to agent `to` (the standby machine rebooted
    /// mid-apply and enrolled again): the migration follows its job. While syncing its disks
    /// no longer hold the recorded basis (the apply was cut), so the basis is forgotten until
    /// the next apply (a full seeded sync) reports one, and a cutover waits for it. Called
    /// holding the jobs and migrations locks.
    pub(crate) fn standby_rebound(
        &self,
        job: &str,
        from: Option<&str>,
        to: &str,
        now: SystemTime,
    ) -> Result<()> {
        let Some(mut m) = self
            .list_migrations()?
            .into_iter()
            .find(|m| m.job == job && m.state.is_active())
        else {
            return Ok(());
        };
        m.agent = to.to_string();
        if m.state == MigrationState::Syncing {
            m.standby.basis = None;
            m.standby.basis_taken = None;
        }
        m.record(
            now,
            Happened::Rebound {
                from: from.map(str::to_string),
                to: to.to_string(),
            },
        );
        self.write_migration(&m)?;
        tracing::info!(
            "migration {}: standby job {job} moved to agent {to} (was {})",
            m.id,
            from.unwrap_or("none")
        );
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
    pub(super) fn pin_standby(&self, m: &MigrationRecord, newest: &str) -> Result<()> {
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
