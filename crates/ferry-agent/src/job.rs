//! Running one job (a `standby` job goes to [`crate::standby`]): announce it, plan (nothing written), check the plan against this machine,
//! apply with progress every [`PROGRESS_EVERY`], report the result. Every step's failure becomes
//! the job's failure reason (the engine's error text says what to do) and is shown on the
//! console; a failure before `apply` has written nothing.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry_client::{Client, ClientError};
use ferry_engine::progress::Progress;
use ferry_engine::restore::{
    self, ExecOptions, JobMark, RestoreOptions, RestorePlan, RestoreSummary,
};
use ferry_format::agent::{
    resolve_mappings, DiskNeed, Inventory, Job, JobKind, JobState, Level, MapTarget, Phase,
};
use ferry_format::marker::RestoreMarker;
use ferry_format::units::human_bytes;

use crate::console::Console;
use crate::events::{Bytes, Events};
use crate::{AgentConfig, AgentError, Outcome, Session};

/// How often progress is shown and sent.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Run `job` to its end and report it. Errors only when the result cannot be reported.
pub(crate) fn run_job(
    s: &Session,
    job: &Job,
    inv: &Inventory,
    root: &Path,
    cfg: &AgentConfig,
    out: &mut Console,
) -> Result<Outcome, AgentError> {
    match job.kind {
        JobKind::Standby => return crate::standby::run_standby(s, job, inv, root, cfg, out),
        JobKind::Backup => return crate::backup::run_backup(s, job, root, cfg, out),
        JobKind::Restore => {}
    }
    let mut events = Events::new(&s.client, &s.agent, &job.id);
    let outcome = |succeeded| Outcome {
        then: job.then,
        succeeded,
        job: Some(job.id.clone()),
    };
    if let JobState::Failed { reason } = &job.state {
        // Failed when the appliance matched it against this machine: nothing to run.
        show_failure(out, job, reason);
        return Ok(outcome(false));
    }
    let mappings: Vec<String> = job
        .mappings
        .iter()
        .map(|m| format!("{} -> {}", m.disk, m.target))
        .collect();
    let then = format!("{:?}", job.then).to_lowercase();
    out.line(&format!(
        "job {}: restore snapshot {} ({}); afterwards: {then}",
        job.id,
        job.snapshot,
        mappings.join(", ")
    ));
    let resume = job.state == JobState::Running;
    match execute(s, job, inv, root, cfg, resume, &mut events, out) {
        Ok(sum) => {
            let msg = format!(
                "job {} succeeded: {} written, {} already in place, {} fetched in {:.1}s",
                job.id,
                human_bytes(sum.bytes_written),
                human_bytes(sum.bytes_skipped),
                human_bytes(sum.bytes_fetched),
                sum.seconds
            );
            let total = sum.disks.iter().map(|d| d.size).sum();
            let rate = (sum.mb_per_s * 1e6) as u64;
            finish(s, job, &mut events, out, Ok((msg, total, rate)))
        }
        Err(Step::Stopped(e)) => Err(AgentError::Report {
            job: job.id.clone(),
            source: e,
        }),
        Err(Step::Failed(reason)) => finish(s, job, &mut events, out, Err(reason)),
    }
}

/// The end of a restore or backup job: its last event (done with `(message, total bytes,
/// rate)`, or the failure's reason), the state reported to the appliance, the failure shown on
/// the console. Errors only when the state cannot be reported.
pub(crate) fn finish(
    s: &Session,
    job: &Job,
    events: &mut Events,
    out: &mut Console,
    result: Result<(String, u64, u64), String>,
) -> Result<Outcome, AgentError> {
    let (state, succeeded) = match &result {
        Ok((msg, total, rate)) => {
            let b = Bytes {
                done: *total,
                total: *total,
                rate: *rate,
                eta: 0,
            };
            events.emit(out, Level::Info, Phase::Done, msg.clone(), Some(b));
            (JobState::Succeeded, true)
        }
        Err(reason) => {
            events.emit(out, Level::Error, Phase::Failed, reason.clone(), None);
            let failed = JobState::Failed {
                reason: reason.clone(),
            };
            (failed, false)
        }
    };
    events.flush();
    s.client
        .set_job_state(&s.agent, &job.id, &state)
        .map_err(|source| AgentError::Report {
            job: job.id.clone(),
            source,
        })?;
    if let Err(reason) = &result {
        show_failure(out, job, reason);
    }
    Ok(Outcome {
        then: job.then,
        succeeded,
        job: Some(job.id.clone()),
    })
}

/// Why a job did not succeed: a reason for the operator, or the appliance refused to let it run.
enum Step {
    Failed(String),
    Stopped(ClientError),
}

#[allow(clippy::too_many_arguments)]
fn execute(
    s: &Session,
    job: &Job,
    inv: &Inventory,
    root: &Path,
    cfg: &AgentConfig,
    resume: bool,
    events: &mut Events,
    out: &mut Console,
) -> Result<RestoreSummary, Step> {
    // This machine's own view of its disks now, not the one the appliance matched the job to.
    let fresh = crate::inventory::collect(root);
    let proof = own_check(&s.markers, job, inv, &fresh, resume).map_err(Step::Failed)?;
    if !resume {
        // A job the appliance no longer lets us run (409) must not touch a disk.
        s.client
            .set_job_state(&s.agent, &job.id, &JobState::Running)
            .map_err(Step::Stopped)?;
    } else {
        out.line(&format!(
            "job {} was running when this agent stopped and its disks carry the job's marker: resuming (only what differs is fetched)",
            job.id
        ));
    }
    let opts = restore_options(job, root, cfg, proof).map_err(Step::Failed)?;
    let network = crate::fixup::Network::new(&job.options.network, &fresh).map_err(Step::Failed)?;
    events.emit(
        out,
        Level::Info,
        Phase::Plan,
        format!(
            "plan: fetch and verify the manifest of {} and its indexes, check the targets",
            job.snapshot
        ),
        None,
    );
    let plan = restore::gather(&s.client, &opts)
        .and_then(|inputs| restore::plan(&inputs, &opts))
        .map_err(|e| Step::Failed(e.to_string()))?;
    for line in plan.to_string().lines() {
        out.line(line);
    }
    // Checked against the snapshot before the first write: a rule that does not fit fails
    // the job with nothing written.
    let (net, net_lines) = network.params(&plan.manifest).map_err(Step::Failed)?;
    if job.options.fixup {
        // Not the engine's: numbered after the restore's own steps.
        let n = plan.steps.len() + 1;
        out.line(&format!("  {n}. fix-up: make the restored system boot here (drivers, initramfs, boot loader, fstab, network), then the bootability report"));
        for line in &net_lines {
            out.line(&format!("     {line}"));
        }
    }
    let sum = apply(&s.client, &plan, &opts, events, out).map_err(Step::Failed)?;
    for g in &sum.grown {
        let level = if g.grown { Level::Info } else { Level::Warn };
        events.emit(
            out,
            level,
            Phase::Restore,
            format!("grow {}: {}", g.filesystem, g.detail),
            None,
        );
    }
    if job.options.fixup {
        crate::fixup::run(
            &plan,
            root,
            cfg,
            events,
            out,
            crate::fixup::Restored::Restore,
            net,
        )
        .map_err(Step::Failed)?;
    } else {
        events.emit(
            out,
            Level::Info,
            Phase::Fixup,
            "fix-up skipped (the job says --no-fixup)".into(),
            None,
        );
    }
    Ok(sum)
}

/// Before anything is written: the job's targets, checked against this machine's own fresh
/// view of its disks. Returns the proof to write in the in-progress markers.
///
/// - every target is the disk the appliance matched (same name, size, serial, WWN, model as in
///   the inventory this agent enrolled with): disks that changed since are refused;
/// - a new job's mappings, resolved here again from what the operator asked (`auto`, serial,
///   device), give the same targets, and those are blank unless the job says `--overwrite`;
/// - a resumed job writes only onto a disk that is blank or carries this job's marker (with the
///   proof found at start), never because the appliance says the job was running;
/// - the boot medium is never a target ([`resolve_mappings`] refuses protected disks).
pub(crate) fn own_check(
    markers: &[(String, RestoreMarker)],
    job: &Job,
    enrolled: &Inventory,
    fresh: &Inventory,
    resume: bool,
) -> Result<String, String> {
    let mut targets = Vec::new();
    for m in &job.mappings {
        let MapTarget::Device(dev) = &m.target else {
            return Err(format!(
                "the appliance sent disk {} unresolved ({}): update the appliance",
                m.disk, m.target
            ));
        };
        let now = fresh.disk(dev).ok_or_else(|| {
            format!("target /dev/{dev} for disk {} is gone from this machine: nothing written; check the disks and create the job again", m.disk)
        })?;
        if let Some(then) = enrolled.disk(dev) {
            let id = |d: &ferry_format::agent::Disk| {
                (d.size, d.serial.clone(), d.wwn.clone(), d.model.clone())
            };
            if id(then) != id(now) {
                return Err(format!(
                    "target /dev/{dev} for disk {} is not the disk this agent enrolled with (size, serial, WWN or model changed): nothing written; restart the rescue system so it enrolls with its current disks",
                    m.disk
                ));
            }
        }
        if let Some(why) = &now.protected {
            return Err(format!("target /dev/{dev} is never written: {why}"));
        }
        targets.push((m.disk.clone(), dev.clone(), now));
    }
    if !resume {
        if job.proof.len() != 64 {
            return Err("the appliance sent the job without a proof for its in-progress markers: update the appliance".into());
        }
        if !job.requested.is_empty() {
            let needs: Vec<DiskNeed> = enrolled_needs(job, enrolled);
            let mine = resolve_mappings(&job.requested, &needs, fresh, job.overwrite)?;
            if mine != job.mappings {
                let show = |ms: &[ferry_format::agent::Mapping]| {
                    ms.iter()
                        .map(|m| format!("{}->{}", m.disk, m.target))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(format!(
                    "the appliance chose {} but this machine's own view of its disks gives {}: nothing written; create the job again naming the targets",
                    show(&job.mappings),
                    show(&mine)
                ));
            }
        }
        return Ok(job.proof.clone());
    }
    let proof = markers
        .iter()
        .find(|(_, m)| m.job == job.id)
        .map(|(_, m)| m.proof.clone());
    for (disk, dev, now) in &targets {
        let marked = markers
            .iter()
            .any(|(d, m)| d == dev && m.job == job.id && &m.disk == disk);
        if !(marked || now.blank || job.overwrite) {
            return Err(format!(
                "job {} is marked running, but /dev/{dev} carries neither its in-progress marker nor nothing ({}): refusing to write it; if this is the right disk, create a new job with --overwrite",
                job.id,
                now.holds.as_deref().unwrap_or("data")
            ));
        }
    }
    // Blank targets only (nothing was written yet): a proof from any of the job's markers, or
    // none at all when the agent restarted before writing.
    proof.ok_or_else(|| {
        format!(
            "job {} is marked running, but no disk of this machine carries its in-progress marker: the restore cannot resume here; create the job again",
            job.id
        )
    })
}

/// Sizes of the snapshot's disks are not known before the manifest is fetched; for the
/// re-resolution only "large enough" matters and the appliance checked it against the same
/// disks, so each mapped disk needs at most its resolved target's size.
fn enrolled_needs(job: &Job, enrolled: &Inventory) -> Vec<DiskNeed> {
    job.mappings
        .iter()
        .map(|m| DiskNeed {
            disk: m.disk.clone(),
            size: match &m.target {
                MapTarget::Device(d) => enrolled.disk(d).map_or(0, |d| d.size),
                _ => 0,
            },
        })
        .collect()
}

/// The engine's options: each mapping's device under `root`, and the job's marker.
pub(crate) fn restore_options(
    job: &Job,
    root: &Path,
    cfg: &AgentConfig,
    proof: String,
) -> Result<RestoreOptions, String> {
    let mut targets = Vec::new();
    for m in &job.mappings {
        match &m.target {
            MapTarget::Device(dev) => targets.push((m.disk.clone(), root.join("dev").join(dev))),
            other @ (MapTarget::Auto | MapTarget::Serial(_)) => {
                return Err(format!(
                    "the appliance sent disk {} unresolved ({other}): update the appliance",
                    m.disk
                ))
            }
        }
    }
    Ok(RestoreOptions {
        snapshot: job.snapshot.clone(),
        targets,
        // Never widened for a resumed job: its targets pass as carrying its own marker.
        overwrite: job.overwrite,
        dry_run: false,
        parallel: cfg.parallel,
        quiet: true,
        grow: job.options.grow,
        grow_lv: job.options.grow_lv.clone(),
        job: Some(JobMark {
            job: job.id.clone(),
            proof,
        }),
    })
}

/// `restore::execute` on a worker thread; this thread shows and sends progress meanwhile.
pub(crate) fn apply(
    client: &Client,
    plan: &RestorePlan,
    opts: &RestoreOptions,
    events: &mut Events,
    out: &mut Console,
) -> Result<RestoreSummary, String> {
    let overall = Progress::new();
    let sizes: Vec<(String, String, u64)> = plan
        .disks
        .iter()
        .map(|d| (d.disk.clone(), d.target.path.display().to_string(), d.size))
        .collect();
    let label = |b: &Bytes| {
        format!(
            "restore {}: {}",
            current_disk(&sizes, b.done),
            progress_text(b)
        )
    };
    with_progress(
        &overall,
        Phase::Restore,
        label,
        events,
        out,
        "restore",
        || {
            let exec = ExecOptions {
                progress: Some(&overall),
                ..opts.exec()
            };
            restore::execute(client, plan, &exec)
        },
    )
}

/// `work` on a worker thread while this one sends a `phase` progress event every
/// [`PROGRESS_EVERY`] from `overall` (its message from `label`); the engine's error as text.
pub(crate) fn with_progress<T: Send>(
    overall: &Progress,
    phase: Phase,
    label: impl Fn(&Bytes) -> String,
    events: &mut Events,
    out: &mut Console,
    what: &str,
    work: impl FnOnce() -> Result<T, ferry_engine::EngineError> + Send,
) -> Result<T, String> {
    std::thread::scope(|sc| {
        let (tx, rx) = mpsc::channel::<()>();
        let worker = sc.spawn(move || {
            let r = work();
            drop(tx);
            r
        });
        let start = Instant::now();
        while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(PROGRESS_EVERY) {
            let b = sample(overall, start);
            events.emit(out, Level::Info, phase, label(&b), Some(b));
        }
        worker.join().unwrap_or_else(|_| {
            Err(ferry_engine::EngineError::Worker(format!(
                "the {what} thread panicked"
            )))
        })
    })
    .map_err(|e| e.to_string())
}

/// `41.0% 1.2 GiB of 3.0 GiB at 50 MiB/s, ETA 36s`
pub(crate) fn progress_text(b: &Bytes) -> String {
    format!(
        "{:.1}% {} of {} at {}/s, ETA {}s",
        b.done as f64 * 100.0 / b.total.max(1) as f64,
        human_bytes(b.done),
        human_bytes(b.total),
        human_bytes(b.rate),
        b.eta
    )
}

pub(crate) fn sample(p: &Progress, start: Instant) -> Bytes {
    use std::sync::atomic::Ordering;
    let total = p.total.load(Ordering::Relaxed);
    let done = p.done.load(Ordering::Relaxed).min(total);
    let rate = (done as f64 / start.elapsed().as_secs_f64().max(0.001)) as u64;
    let eta = (total - done).checked_div(rate).unwrap_or(0);
    Bytes {
        done,
        total,
        rate,
        eta,
    }
}

/// `disk -> target` of the disk `done` bytes into the restore (disks go in plan order).
fn current_disk(sizes: &[(String, String, u64)], done: u64) -> String {
    let mut end = 0;
    for (disk, target, size) in sizes {
        end += size;
        if done < end {
            return format!("{disk} -> {target}");
        }
    }
    sizes
        .last()
        .map(|(d, t, _)| format!("{d} -> {t}"))
        .unwrap_or_default()
}

pub(crate) fn show_failure(out: &mut Console, job: &Job, reason: &str) {
    out.line(&format!("job {} FAILED: {reason}", job.id));
    out.line("Nothing more will be written. Fix the cause above, then create a new job with `appliance jobs create`.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_format::agent::{Disk, JobOptions, Mapping, Then};

    const GIB: u64 = 1 << 30;

    fn disk(name: &str, size: u64, blank: bool) -> Disk {
        Disk {
            name: name.into(),
            size,
            model: None,
            serial: Some(format!("S-{name}")),
            wwn: None,
            logical_sector_size: 512,
            physical_sector_size: 512,
            blank,
            removable: false,
            holds: (!blank).then(|| "an XFS filesystem at offset 1 MiB".into()),
            protected: None,
        }
    }

    fn inv(disks: Vec<Disk>) -> Inventory {
        Inventory {
            disks,
            ..Default::default()
        }
    }

    fn job(requested: &str, resolved: &str, state: JobState) -> Job {
        let m = |s: &str| vec![s.parse::<Mapping>().unwrap()];
        Job {
            id: "job-00000001".into(),
            snapshot: "web01-x".into(),
            mappings: m(resolved),
            requested: m(requested),
            proof: if state == JobState::Pending {
                "ab".repeat(32)
            } else {
                String::new()
            },
            then: Then::None,
            overwrite: false,
            options: JobOptions::default(),
            state,
            kind: ferry_format::agent::JobKind::Restore,
            migration: None,
            backup: None,
        }
    }

    #[test]
    fn the_agent_refuses_what_its_own_view_contradicts() {
        let enrolled = inv(vec![
            disk("vda", 10 * GIB, false),
            disk("vdb", 10 * GIB, true),
        ]);
        let pending = job("sda=auto", "sda=/dev/vdb", JobState::Pending);
        assert_eq!(
            own_check(&[], &pending, &enrolled, &enrolled, false).unwrap(),
            "ab".repeat(32)
        );
        // (what changed in the fresh view, fragment of the refusal)
        let mut swapped = enrolled.clone();
        swapped.disks[1].serial = Some("OTHER".into());
        let mut gone = enrolled.clone();
        gone.disks.pop();
        let mut written = enrolled.clone();
        written.disks[1].blank = false;
        let mut iso = enrolled.clone();
        iso.disks[1].protected = Some("it holds an ISO 9660 filesystem".into());
        let cases = [
            (swapped, "not the disk this agent enrolled with"),
            (gone, "is gone from this machine"),
            (written, "no blank disk"),
            (iso, "never written"),
        ];
        for (fresh, want) in cases {
            let e = own_check(&[], &pending, &enrolled, &fresh, false).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        // The appliance resolved auto onto the data disk (e.g. against another inventory).
        let wrong = job("sda=auto", "sda=/dev/vda", JobState::Pending);
        let e = own_check(&[], &wrong, &enrolled, &enrolled, false).unwrap_err();
        assert!(e.contains("own view"), "{e}");
    }

    #[test]
    fn a_running_job_resumes_only_onto_its_own_marker() {
        let enrolled = inv(vec![disk("vda", 10 * GIB, false)]);
        let running = job("sda=/dev/vda", "sda=/dev/vda", JobState::Running);
        let mine = RestoreMarker::new("job-00000001", "web01-x", "sda", &"cd".repeat(32));
        let markers = vec![("vda".to_string(), mine.clone())];
        assert_eq!(
            own_check(&markers, &running, &enrolled, &enrolled, true).unwrap(),
            "cd".repeat(32)
        );
        let e = own_check(&[], &running, &enrolled, &enrolled, true).unwrap_err();
        assert!(e.contains("neither its in-progress marker"), "{e}");
        let mut other = mine;
        other.job = "job-00000002".into();
        let e = own_check(
            &[("vda".into(), other)],
            &running,
            &enrolled,
            &enrolled,
            true,
        )
        .unwrap_err();
        assert!(e.contains("neither its in-progress marker"), "{e}");
    }

    #[test]
    fn progress_names_the_disk_being_restored() {
        let sizes = vec![
            ("sda".to_string(), "/dev/vda".to_string(), 100),
            ("sdb".to_string(), "/dev/vdb".to_string(), 50),
        ];
        assert_eq!(current_disk(&sizes, 0), "sda -> /dev/vda");
        assert_eq!(current_disk(&sizes, 99), "sda -> /dev/vda");
        assert_eq!(current_disk(&sizes, 100), "sdb -> /dev/vdb");
        assert_eq!(current_disk(&sizes, 150), "sdb -> /dev/vdb");
        assert_eq!(current_disk(&[], 0), "");
        let p = Progress::new();
        p.total.store(1000, std::sync::atomic::Ordering::Relaxed);
        p.add(2000);
        let b = sample(&p, Instant::now() - Duration::from_secs(1));
        assert_eq!((b.done, b.total, b.eta), (1000, 1000, 0));
        assert!(b.rate > 0);
    }
}
