//! A backup job: this machine's own disks, read from the rescue image while its OS is not
//! running, stored as an `offline` snapshot of the job's machine (docs/agent.md, "Backup
//! jobs"). The disks are resolved again against this machine's fresh inventory (never the
//! medium the image booted from, never a disk that has vanished); the engine refuses to read
//! a disk with a filesystem mounted read-write. Nothing on this machine is written.

use std::path::Path;

use ferry_engine::backup::{self, BackupOptions, BackupSummary, ConsistencyRequest, DiskSpec};
use ferry_engine::progress::Progress;
use ferry_format::agent::{resolve_backup_disks, Job, JobState, Level, Phase};
use ferry_format::manifest::OsFacts;
use ferry_format::units::human_bytes;

use crate::console::Console;
use crate::events::{Bytes, Events};
use crate::job::{finish, progress_text, show_failure, with_progress};
use crate::{AgentConfig, AgentError, Outcome, Session};

/// Run backup job `job` to its end and report it. Errors only when the result cannot be
/// reported.
pub(crate) fn run_backup(
    s: &Session,
    job: &Job,
    root: &Path,
    cfg: &AgentConfig,
    out: &mut Console,
) -> Result<Outcome, AgentError> {
    let mut events = Events::new(&s.client, &s.agent, &job.id);
    if let JobState::Failed { reason } = &job.state {
        show_failure(out, job, reason);
        return Ok(Outcome {
            then: job.then,
            succeeded: false,
            job: Some(job.id.clone()),
        });
    }
    let opts = match options(job, root, cfg) {
        Ok(o) => o,
        Err(reason) => return finish(s, job, &mut events, out, Err(reason)),
    };
    let disks: Vec<String> = opts
        .disks
        .iter()
        .map(|d| format!("/dev/{}", d.name))
        .collect();
    out.line(&format!(
        "job {}: back up {} as machine {} (offline: this machine's OS is not running); afterwards: {}",
        job.id,
        disks.join(", "),
        opts.machine,
        format!("{:?}", job.then).to_lowercase()
    ));
    if job.state != JobState::Running {
        s.client
            .set_job_state(&s.agent, &job.id, &JobState::Running)
            .map_err(|source| AgentError::Report {
                job: job.id.clone(),
                source,
            })?;
    }
    let mut opts = opts;
    opts.os = windows_facts(root, &opts.disks, &mut events, out);
    events.emit(
        out,
        Level::Info,
        Phase::Plan,
        format!(
            "plan: read {} (used blocks only), send the chunks the appliance lacks, commit an offline snapshot of {}; nothing on this machine is written",
            disks.join(", "),
            opts.machine
        ),
        None,
    );
    let result = execute(&s.client, &opts, &mut events, out).map(|sum| {
        let msg = format!(
            "job {} succeeded: snapshot {} ({}): read {} in {:.1}s, sent {} ({} new chunks, {} already stored)",
            job.id,
            sum.snapshot,
            sum.consistency,
            human_bytes(sum.bytes_read),
            sum.seconds,
            human_bytes(sum.bytes_sent),
            sum.chunks_new,
            sum.chunks_present
        );
        let total = opts
            .progress
            .as_ref()
            .map_or(0, |p| p.total.load(std::sync::atomic::Ordering::Relaxed));
        let rate = (sum.bytes_read as f64 / sum.seconds.max(0.001)) as u64;
        (msg, total, rate)
    });
    finish(s, job, &mut events, out, result)
}

/// What the snapshot records of a Windows system on the disks: each NTFS partition (a block
/// device: the rescue image, not a host test's image files) mounted read-only for a moment
/// before the read; the first Windows volume's facts are kept. A hibernated volume (or Fast
/// Startup) is a warning now and a refusal when a restore job names the snapshot.
fn windows_facts(
    root: &Path,
    disks: &[DiskSpec],
    events: &mut Events,
    out: &mut Console,
) -> Option<OsFacts> {
    use std::os::unix::fs::FileTypeExt;
    let mut parts = Vec::new();
    for d in disks {
        let sys = root.join("sys/block").join(&d.name);
        let Ok(entries) = std::fs::read_dir(&sys) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("partition").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for n in names {
            let dev = root.join("dev").join(&n);
            if std::fs::metadata(&dev).is_ok_and(|m| m.file_type().is_block_device()) {
                parts.push((n, dev));
            }
        }
    }
    if parts.is_empty() {
        return None;
    }
    let (found, warnings) =
        ferry_fixup::system::windows_facts(&parts, &root.join("run/ferry-facts"));
    for w in warnings {
        events.emit(
            out,
            Level::Warn,
            Phase::Plan,
            format!("windows facts: {w}"),
            None,
        );
    }
    let first = found.into_iter().next()?;
    let yes = |b: Option<bool>| if b == Some(true) { "on" } else { "off" };
    events.emit(
        out,
        Level::Info,
        Phase::Plan,
        format!(
            "windows on {}: {}; boot {}; fast startup {}; hibernated: {}",
            first.volume.as_deref().unwrap_or("?"),
            first.version.as_deref().unwrap_or("version unknown"),
            first.boot_mode.as_deref().unwrap_or("unknown"),
            yes(first.fast_startup),
            if first.hibernated == Some(true) {
                "yes"
            } else {
                "no"
            }
        ),
        None,
    );
    if first.hibernated == Some(true) {
        events.emit(
            out,
            Level::Warn,
            Phase::Plan,
            format!(
                "the Windows volume {} holds a hibernation image (hibernated, or shut down with Fast Startup on): its files are not consistent and a restore of this snapshot will be refused; boot Windows, turn Fast Startup off (powercfg /h off), shut it down and back it up again",
                first.volume.as_deref().unwrap_or("?")
            ),
            None,
        );
    }
    Some(first)
}

/// The engine's options for `job`, its disks checked against this machine's own view now.
fn options(job: &Job, root: &Path, cfg: &AgentConfig) -> Result<BackupOptions, String> {
    let Some(spec) = &job.backup else {
        return Err(
            "the appliance sent a backup job without its disks: update the appliance".into(),
        );
    };
    let fresh = crate::inventory::collect(root);
    let names = resolve_backup_disks(&spec.disks, &fresh)?;
    let run_dir = root.join(
        backup::DEFAULT_RUN_DIR
            .strip_prefix('/')
            .unwrap_or(backup::DEFAULT_RUN_DIR),
    );
    Ok(BackupOptions {
        machine: spec.machine.clone(),
        disks: names
            .into_iter()
            .map(|name| DiskSpec {
                path: root.join("dev").join(&name),
                name,
            })
            .collect(),
        parallel: cfg.parallel.max(1),
        quiet: true,
        consistency: ConsistencyRequest::Offline,
        run_dir,
        progress: Some(Progress::new()),
        ..BackupOptions::default()
    })
}

/// `backup::backup` on a worker thread; this thread shows and sends progress meanwhile.
fn execute(
    client: &ferry_client::Client,
    opts: &BackupOptions,
    events: &mut Events,
    out: &mut Console,
) -> Result<BackupSummary, String> {
    let overall = opts.progress.clone().unwrap_or_default();
    let label = |b: &Bytes| format!("backup: {}", progress_text(b));
    with_progress(
        &overall,
        Phase::Backup,
        label,
        events,
        out,
        "backup",
        || backup::backup(client, opts),
    )
}
