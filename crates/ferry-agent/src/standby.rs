//! The standby target of a migration (docs/migration.md, "Standby target"): a `standby` job
//! restores the newest snapshot of the source machine, then stays and applies each newer one as
//! it lands, reporting "in sync with snapshot X, taken T", until the migration ends (the
//! appliance answers 410).
//!
//! The loop is a short list of named steps, each failure an event and a retry with backoff
//! (PID 1 never panics and never gives up on a standby):
//! 1. **check** the job's targets against this machine's own view (as a restore job: nothing is
//!    written before), mark the job running;
//! 2. **next**: long-poll `GET /agents/{id}/standby/next?basis=X` for the newest snapshot that
//!    is not the basis X;
//! 3. **apply** it: a delta from the known basis X when there is one (`ferry_engine::restore`
//!    with a basis: the indexes of X and the new snapshot are compared, only differing entries
//!    fetched, verified and written, the disks not read), else the seeded sync (read, hash,
//!    compare); the job's in-progress marker guards the first chunk either way;
//! 4. **report** `PUT /agents/{id}/standby/state` and the event "in sync with snapshot X, taken
//!    T"; X is the basis from now on.
//!
//! 5. **cutover**: a snapshot handed with `final: true` is the cutover's. The standby reports
//!    `applying` first (the point of no return: a 409 means the cutover was aborted and nothing
//!    is written), applies it as a delta like any other, reports `applied`, runs the fix-up as a
//!    restore job does (`crate::fixup`, first-boot beacon included), reports `fixed-up`, then
//!    `rebooting`, and the job ends with `then: reboot`. A failure before `applying` is reported
//!    (the appliance aborts the cutover); after it, reported as the migration's failure.
//!
//! The basis is only ever a snapshot this agent applied and verified in this boot; after a
//! reboot (or a failed apply) it is unknown and the next apply is a full seeded sync.

use std::path::Path;
use std::time::Duration;

use ferry_client::ClientError;
use ferry_engine::restore::RestorePlan;
use ferry_engine::restore::{self, RestoreOptions, RestoreSummary};
use ferry_engine::{EngineError, Refusal};
use ferry_format::agent::{
    Inventory, Job, JobState, Level, Phase, StandbyNext, StandbyReport, Then,
};
use ferry_format::source::{CutoverStep, StandbyCutover};
use ferry_format::units::human_bytes;

use crate::console::{now_rfc3339, Console};
use crate::events::{Bytes, Events};
use crate::job::{apply, own_check, restore_options, show_failure};
use crate::{AgentConfig, AgentError, Outcome, Session, POLL_WAIT};

/// First pause after a failed step; doubles up to [`MAX_BACKOFF`], back to this after a success.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What the standby's disks hold, as far as this boot knows.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Basis {
    snapshot: String,
    created: String,
}

/// How the loop ended.
enum End {
    /// The appliance says the migration is over (410), with its words.
    MigrationEnded(String),
    /// The credential no longer works (401): the caller enrolls again.
    Unauthorized,
    /// The cutover is done: reboot into the migrated system.
    CutOver,
}

/// Run a standby job until its migration ends. Errors only when the job's failure cannot be
/// reported.
pub(crate) fn run_standby(
    s: &Session,
    job: &Job,
    inv: &Inventory,
    root: &Path,
    cfg: &AgentConfig,
    out: &mut Console,
) -> Result<Outcome, AgentError> {
    let mut events = Events::new(&s.client, &s.agent, &job.id);
    let outcome = Outcome {
        then: job.then,
        succeeded: false,
        job: Some(job.id.clone()),
    };
    let migration = job.migration.as_deref().unwrap_or("?");
    if let JobState::Failed { reason } = &job.state {
        show_failure(out, job, reason);
        return Ok(outcome);
    }
    let maps: Vec<String> = job
        .mappings
        .iter()
        .map(|m| format!("{} -> {}", m.disk, m.target))
        .collect();
    out.line(&format!(
        "job {}: standby target of migration {migration} ({}): apply each new snapshot of the machine until the migration ends",
        job.id,
        maps.join(", ")
    ));
    let checked = check(s, job, inv, root, cfg, out).and_then(|opts| {
        let fresh = crate::inventory::collect(root);
        crate::fixup::Network::new(&job.options.network, &fresh)
            .map(|net| (opts, net))
            .map_err(Checked::Failed)
    });
    let (opts, net) = match checked {
        Ok(x) => x,
        Err(Checked::Stopped(e)) => {
            return Err(AgentError::Report {
                job: job.id.clone(),
                source: e,
            })
        }
        Err(Checked::Failed(reason)) => {
            events.emit(out, Level::Error, Phase::Failed, reason.clone(), None);
            events.flush();
            s.client
                .set_job_state(
                    &s.agent,
                    &job.id,
                    &JobState::Failed {
                        reason: reason.clone(),
                    },
                )
                .map_err(|source| AgentError::Report {
                    job: job.id.clone(),
                    source,
                })?;
            show_failure(out, job, &reason);
            return Ok(outcome);
        }
    };
    match sync_loop(s, opts, &net, root, cfg, &mut events, out) {
        End::CutOver => {
            events.flush();
            out.line(&format!(
                "job {}: migration {migration} cut over: the disks hold the migrated server; rebooting into it",
                job.id
            ));
            return Ok(Outcome {
                then: Then::Reboot,
                succeeded: true,
                ..outcome
            });
        }
        End::MigrationEnded(why) => {
            events.flush();
            out.line(&format!(
                "job {}: the standby of migration {migration} ended: {why}",
                job.id
            ));
        }
        End::Unauthorized => out.line(&format!(
            "job {}: the appliance no longer accepts this agent's credential: the standby stops here",
            job.id
        )),
    }
    Ok(outcome)
}

enum Checked {
    Failed(String),
    Stopped(ClientError),
}

/// Step 1: the targets checked against this machine's own view, the job marked running; the
/// restore options every apply starts from.
fn check(
    s: &Session,
    job: &Job,
    inv: &Inventory,
    root: &Path,
    cfg: &AgentConfig,
    out: &mut Console,
) -> Result<RestoreOptions, Checked> {
    let fresh = crate::inventory::collect(root);
    let resume = job.state == JobState::Running;
    let proof = own_check(&s.markers, job, inv, &fresh, resume).map_err(Checked::Failed)?;
    if resume {
        out.line(&format!(
            "job {} was running when this agent stopped and its disks carry the job's marker: the first apply is a full seeded sync",
            job.id
        ));
    } else {
        s.client
            .set_job_state(&s.agent, &job.id, &JobState::Running)
            .map_err(Checked::Stopped)?;
    }
    let mut opts = restore_options(job, root, cfg, proof).map_err(Checked::Failed)?;
    if s.proven_standby.as_deref() == Some(job.id.as_str()) {
        // The appliance checked that these disks hold the snapshot this standby last applied
        // (the markerless disks of an idle standby that rebooted): they are this job's.
        opts.overwrite = true;
    }
    Ok(opts)
}

/// Steps 2–5 until the migration ends.
fn sync_loop(
    s: &Session,
    base: RestoreOptions,
    net: &crate::fixup::Network,
    root: &Path,
    cfg: &AgentConfig,
    events: &mut Events,
    out: &mut Console,
) -> End {
    let mut basis: Option<Basis> = None;
    // Once this boot has written the targets, they hold this migration's data: later applies
    // may write them although they are not blank.
    let mut written = false;
    let mut backoff = Backoff(FIRST_BACKOFF);
    loop {
        let wanted = basis.as_ref().map(|b| b.snapshot.as_str());
        let next = match s.client.standby_next(&s.agent, wanted, POLL_WAIT) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => match ended(&e) {
                Some(end) => return end,
                None => {
                    backoff.pause(events, out, format!("ask for the next snapshot: {e}"));
                    continue;
                }
            },
        };
        let mut opts = base.clone();
        opts.snapshot = next.snapshot.clone();
        opts.overwrite = base.overwrite || written;
        if next.final_ {
            match cutover(s, &opts, net, &next, basis.as_ref(), root, cfg, events, out) {
                Cut::Done => return End::CutOver,
                Cut::Ended(end) => return end,
                Cut::Aborted(why) => {
                    backoff.pause(events, out, why);
                    continue;
                }
            }
        }
        events.emit(
            out,
            Level::Info,
            Phase::Plan,
            match &basis {
                Some(b) => format!(
                    "apply snapshot {} (taken {}) over snapshot {}",
                    next.snapshot, next.created, b.snapshot
                ),
                None => format!(
                    "apply snapshot {} (taken {}): a full seeded sync (what the disks hold is not known in this boot)",
                    next.snapshot, next.created
                ),
            },
            None,
        );
        // The disks are about to change: until this apply is verified nothing is known.
        let known = basis.take();
        let applied = apply_one(s, &opts, known.as_ref(), events, out);
        written = true;
        let sum = match applied {
            Ok((_, sum)) => sum,
            Err(e) => {
                backoff.pause(
                    events,
                    out,
                    format!("apply snapshot {}: {e}", next.snapshot),
                );
                continue;
            }
        };
        match report(s, &next, &sum) {
            Ok(()) => {}
            Err(e) => {
                if let Some(end) = ended(&e) {
                    return end;
                }
                // The disks hold `next` all the same; the next report carries it again.
                events.emit(
                    out,
                    Level::Warn,
                    Phase::Restore,
                    format!("report snapshot {} to the appliance: {e}", next.snapshot),
                    None,
                );
            }
        }
        let total = sum.disks.iter().map(|d| d.size).sum();
        events.emit(
            out,
            Level::Info,
            Phase::Done,
            format!(
                "in sync with snapshot {}, taken {}: {} written, {} fetched, {} read from the disks in {:.1}s",
                next.snapshot,
                next.created,
                human_bytes(sum.bytes_written),
                human_bytes(sum.bytes_fetched),
                human_bytes(sum.target_bytes_read),
                sum.seconds
            ),
            Some(Bytes {
                done: total,
                total,
                rate: (sum.mb_per_s * 1e6) as u64,
                eta: 0,
            }),
        );
        basis = Some(Basis {
            snapshot: next.snapshot,
            created: next.created,
        });
        backoff = Backoff(FIRST_BACKOFF);
    }
}

/// How a cutover step ended.
enum Cut {
    /// Rebooting into the migrated system.
    Done,
    /// Nothing was written (the appliance aborted the cutover, or it could not be told):
    /// the standby goes on as before.
    Aborted(String),
    /// The migration ended (410, 401, or failed past the point of no return).
    Ended(End),
}

/// Report one cutover step; 410/401 end the standby.
fn step(
    s: &Session,
    next: &StandbyNext,
    step: CutoverStep,
    detail: Option<String>,
    applied: Option<&RestoreSummary>,
) -> Result<(), Cut> {
    let report = StandbyCutover {
        snapshot: next.snapshot.clone(),
        step,
        detail,
        bytes_written: applied.map(|a| a.bytes_written),
        seconds: applied.map(|a| a.seconds),
    };
    s.client
        .standby_cutover(&s.agent, &report)
        .map_err(|e| match ended(&e) {
            Some(end) => Cut::Ended(end),
            None => Cut::Aborted(format!(
                "report cutover step {} for snapshot {}: {e}",
                step.name(),
                next.snapshot
            )),
        })
}

/// Step 5: the final snapshot, the fix-up, the reboot.
#[allow(clippy::too_many_arguments)]
fn cutover(
    s: &Session,
    opts: &RestoreOptions,
    net: &crate::fixup::Network,
    next: &StandbyNext,
    basis: Option<&Basis>,
    root: &Path,
    cfg: &AgentConfig,
    events: &mut Events,
    out: &mut Console,
) -> Cut {
    events.emit(
        out,
        Level::Info,
        Phase::Plan,
        format!(
            "cutover: applying final delta {} (taken {}) over {}: the point of no return",
            next.snapshot,
            next.created,
            basis.map_or("unknown disks (a full seeded sync)", |b| b
                .snapshot
                .as_str())
        ),
        None,
    );
    // Planned (manifest, indexes, the basis checked) before the point of no return: a final
    // snapshot this standby cannot take aborts the cutover, and the source serves again.
    let planned = prepare(s, opts, basis, events, out)
        .map_err(|e| e.to_string())
        .and_then(|plan| net.params(&plan.manifest).map(|n| (plan, n)));
    let (plan, (net_params, net_lines)) = match planned {
        Ok(x) => x,
        Err(e) => {
            let why = format!("plan snapshot {}: {e}", next.snapshot);
            events.emit(
                out,
                Level::Error,
                Phase::Plan,
                format!("cutover: {why}"),
                None,
            );
            return match step(s, next, CutoverStep::Failed, Some(why.clone()), None) {
                Err(Cut::Ended(end)) => Cut::Ended(end),
                _ => Cut::Aborted(format!("the cutover was aborted: {why}")),
            };
        }
    };
    for line in &net_lines {
        out.line(line);
    }
    if let Err(cut) = step(s, next, CutoverStep::Applying, None, None) {
        return cut;
    }
    // From here on the migration fails rather than aborts: the source stays down.
    let fail = |events: &mut Events, out: &mut Console, why: String| {
        events.emit(
            out,
            Level::Error,
            Phase::Failed,
            format!("cutover: {why}"),
            None,
        );
        events.flush();
        match step(s, next, CutoverStep::Failed, Some(why.clone()), None) {
            Err(Cut::Ended(end)) => Cut::Ended(end),
            _ => Cut::Ended(End::MigrationEnded(format!("the cutover failed: {why}"))),
        }
    };
    let sum = match apply(&s.client, &plan, opts, events, out) {
        Ok(sum) => sum,
        Err(e) => {
            return fail(
                events,
                out,
                format!("apply snapshot {}: {e}", next.snapshot),
            )
        }
    };
    events.emit(
        out,
        Level::Info,
        Phase::Restore,
        format!(
            "cutover: final snapshot {} applied: {} written, {} fetched, {} read from the disks in {:.1}s",
            next.snapshot,
            human_bytes(sum.bytes_written),
            human_bytes(sum.bytes_fetched),
            human_bytes(sum.target_bytes_read),
            sum.seconds
        ),
        None,
    );
    if let Err(cut) = step(s, next, CutoverStep::Applied, None, Some(&sum)) {
        return cut;
    }
    if let Err(why) = crate::fixup::run(
        &plan,
        root,
        cfg,
        events,
        out,
        crate::fixup::Restored::MigratedSource,
        net_params,
    ) {
        return fail(events, out, why);
    }
    if let Err(cut) = step(s, next, CutoverStep::FixedUp, None, None) {
        return cut;
    }
    if let Err(cut) = step(s, next, CutoverStep::Rebooting, None, None) {
        return cut;
    }
    events.emit(
        out,
        Level::Info,
        Phase::Done,
        format!(
            "cutover done: the disks hold snapshot {}; rebooting",
            next.snapshot
        ),
        None,
    );
    Cut::Done
}

/// The pause before a failed step is tried again.
struct Backoff(Duration);

impl Backoff {
    /// Say what failed and when it is tried again (an event), wait, double the next pause.
    fn pause(&mut self, events: &mut Events, out: &mut Console, what: String) {
        events.emit(
            out,
            Level::Warn,
            Phase::Restore,
            format!("{what}; trying again in {}s", self.0.as_secs()),
            None,
        );
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}

/// Step 3: one apply, progress shown and sent meanwhile. With a basis (the snapshot this agent
/// applied and verified in this boot) it is a delta: the two indexes are compared and only the
/// entries that differ are fetched and written, the disks are not read. A basis the engine finds
/// unusable (another disk size, layout or chunk size) falls back to the seeded sync, which reads
/// and hashes the targets and is correct whatever they hold.
fn apply_one(
    s: &Session,
    opts: &RestoreOptions,
    basis: Option<&Basis>,
    events: &mut Events,
    out: &mut Console,
) -> Result<(RestorePlan, RestoreSummary), String> {
    let plan = prepare(s, opts, basis, events, out)?;
    let sum = apply(&s.client, &plan, opts, events, out)?;
    Ok((plan, sum))
}

/// The plan of one apply: a delta from the basis, or the seeded sync when the engine finds the
/// basis unusable. Nothing is written.
fn prepare(
    s: &Session,
    opts: &RestoreOptions,
    basis: Option<&Basis>,
    events: &mut Events,
    out: &mut Console,
) -> Result<RestorePlan, String> {
    let known = basis.map(|b| b.snapshot.as_str());
    let inputs = match restore::gather_with_basis(&s.client, opts, known) {
        Err(EngineError::Refused(r @ Refusal::BasisUnusable { .. })) => {
            events.emit(
                out,
                Level::Warn,
                Phase::Plan,
                format!("{r}: a full seeded sync instead"),
                None,
            );
            restore::gather(&s.client, opts)
        }
        other => other,
    }
    .map_err(|e| e.to_string())?;
    restore::plan(&inputs, opts).map_err(|e| e.to_string())
}

/// Step 4: the report that the disks hold `next`, verified.
fn report(s: &Session, next: &StandbyNext, sum: &RestoreSummary) -> Result<(), ClientError> {
    s.client.standby_report(
        &s.agent,
        &StandbyReport {
            basis: next.snapshot.clone(),
            applied: now_rfc3339(),
            bytes_written: sum.bytes_written,
            seconds: sum.seconds,
        },
    )
}

/// A refusal that ends the standby: 410 (the migration is over) or 401 (credential replaced).
fn ended(e: &ClientError) -> Option<End> {
    match e {
        ClientError::Refused {
            status: 410,
            message,
            ..
        } => Some(End::MigrationEnded(message.clone())),
        ClientError::Refused { status: 401, .. } => Some(End::Unauthorized),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gone_and_unauthorized_end_the_standby() {
        let refused = |status| ClientError::Refused {
            what: "GET /agents/a/standby/next".into(),
            status,
            message: "migration mig-00000001 is cancelled".into(),
        };
        assert!(matches!(
            ended(&refused(410)),
            Some(End::MigrationEnded(m)) if m.contains("cancelled")
        ));
        assert!(matches!(ended(&refused(401)), Some(End::Unauthorized)));
        for status in [400, 403, 404, 409] {
            assert!(ended(&refused(status)).is_none(), "{status}");
        }
        let down = ClientError::Unreachable {
            url: "https://x".into(),
            what: "GET".into(),
            detail: "refused".into(),
            waited: Duration::from_secs(1),
        };
        assert!(ended(&down).is_none());
    }
}
