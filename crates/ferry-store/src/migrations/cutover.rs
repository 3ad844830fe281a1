//! Cutover: the request, the source's `cutover` task ending, and the standby's steps.

use std::time::SystemTime;

use ferry_format::source::{CutoverStep, StandbyCutover, TaskState};

use crate::snapshots::rfc3339;
use crate::Store;

use super::error::{MResult, MigrationError};
use super::record::{Happened, MigrationRecord, MigrationState};
use super::timeline::CutoverTimeline;

impl Store {
    /// `appliance migrations cutover`: syncing → cutting-over, and the source agent is asked
    /// for its `cutover` task (handed at its next poll, before any scheduled sync; after a sync
    /// in flight ends). Refused while the standby holds nothing yet or the source agent has not
    /// enrolled, and for a migration that is not syncing (a second cutover while one runs).
    pub fn request_cutover(&self, id: &str, now: SystemTime) -> MResult<MigrationRecord> {
        self.request_cutover_with(id, false, now)
    }

    /// [`Store::request_cutover`]; with `poweroff_source`, the source agent is asked to power
    /// the source off once the standby starts writing the final snapshot (the point of no
    /// return: before it, an abort needs the source serving again).
    pub fn request_cutover_with(
        &self,
        id: &str,
        poweroff_source: bool,
        now: SystemTime,
    ) -> MResult<MigrationRecord> {
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
            poweroff_source,
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
                c.apply_started.get_or_insert(t.clone());
                let poweroff = c.poweroff_source && c.poweroff_asked.is_none();
                if poweroff {
                    c.poweroff_asked = Some(t);
                }
                self.write_migration(&m)?;
                if poweroff {
                    self.set_source_poweroff(&m.machine, &m.id)?;
                }
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
}
