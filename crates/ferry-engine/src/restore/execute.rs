//! Running a plan: exactly its steps, in order. A dry run compares (the sync steps read the
//! targets and count what they would fetch, skip and zero; a delta step counts from the plan
//! and reads nothing) and runs no other step.

use std::sync::atomic::Ordering;
use std::time::Instant;

use ferry_layout::DiskMapping;

use super::sync::{self, Compare, HeldFirst, Synced};
use super::{DiskPlan, DiskStats, ExecOptions, RestorePlan, RestoreSummary, Step};
use crate::grow::GrowOutcome;
use crate::pipeline::ChunkStore;
use crate::progress::Progress;
use crate::target::{self, Target};
use crate::EngineError;

/// One disk while its steps run: its statistics once synced, and its open target from the sync
/// until the first chunk is written (then closed, before the kernel re-reads its table).
#[derive(Default)]
struct DiskRun {
    stats: Option<DiskStats>,
    open: Option<(Target, Option<HeldFirst>)>,
}

/// Run `plan`'s steps in order, fetching chunks from `store`. An error names the step
/// ([`EngineError::Step`], numbered as the plan prints it); the steps before it are done, the
/// ones after it are not run.
pub fn execute(
    store: &dyn ChunkStore,
    plan: &RestorePlan,
    opts: &ExecOptions,
) -> Result<RestoreSummary, EngineError> {
    let start = Instant::now();
    if let Some(o) = opts.progress {
        o.total
            .store(plan.disks.iter().map(|d| d.size).sum(), Ordering::Relaxed);
    }
    let mut runs: Vec<DiskRun> = plan.disks.iter().map(|_| DiskRun::default()).collect();
    let mut grown = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        run_step(store, plan, step, opts, &mut runs, &mut grown).map_err(|e| {
            EngineError::Step {
                number: i + 1,
                step: plan.step_title(step),
                source: Box::new(e),
            }
        })?;
    }
    let disks: Vec<DiskStats> = runs.into_iter().filter_map(|r| r.stats).collect();
    Ok(summary(plan, opts, disks, grown, start))
}

fn run_step(
    store: &dyn ChunkStore,
    plan: &RestorePlan,
    step: &Step,
    opts: &ExecOptions,
    runs: &mut [DiskRun],
    grown: &mut Vec<GrowOutcome>,
) -> Result<(), EngineError> {
    let (d, run) = match (plan.disks.get(step.disk()), runs.get_mut(step.disk())) {
        (Some(d), Some(run)) => (d, run),
        _ => return Err(bad_plan("names a disk the plan does not have")),
    };
    match step {
        Step::Sync { .. } => sync_step(store, d, Compare::Target, run, opts),
        Step::DeltaFromBasis { delta, .. } => sync_step(store, d, Compare::Basis(delta), run, opts),
        // A dry run writes nothing: the remaining steps are shown by the plan only.
        _ if opts.dry_run => Ok(()),
        Step::LayoutPatches { patches, .. } => {
            let first_len = d.index.range(0).1 as u64;
            let (t, _) = open_target(run)?;
            let n = sync::write_patches(t, first_len, patches)?;
            add_written(run, n);
            Ok(())
        }
        Step::FirstChunkLast { len, patches, .. } => {
            let (t, held) = run
                .open
                .take()
                .ok_or_else(|| bad_plan("writes the first chunk of a disk it has not synced"))?;
            // The target is closed when this returns, written or not.
            let first = sync::write_first_chunk(&t, *len, patches, held)?;
            add_written(run, first.written);
            if let Some(s) = &mut run.stats {
                s.target_bytes_read += first.read;
            }
            Ok(())
        }
        Step::RereadPartitions { device, .. } => {
            reread(device);
            Ok(())
        }
        Step::GrowFilesystem { .. } => {
            let mapping = mapping(plan, step.disk())?;
            if let Some(g) = crate::grow::grow(&d.target.path, mapping) {
                tracing::info!("{}: {}", g.filesystem, g.detail);
                grown.push(g);
            }
            Ok(())
        }
    }
}

/// The sync or the delta of one disk (or, in a dry run, the comparison), with its progress line.
fn sync_step(
    store: &dyn ChunkStore,
    d: &DiskPlan,
    compare: Compare,
    run: &mut DiskRun,
    opts: &ExecOptions,
) -> Result<(), EngineError> {
    let progress = opts
        .progress
        .map_or_else(Progress::new, Progress::with_parent);
    progress.total.store(d.size, Ordering::Relaxed);
    let verb = if opts.dry_run { "compare" } else { "restore" };
    let reporter = progress.report(
        format!("{verb} {} -> {}", d.disk, d.target.path.display()),
        opts.quiet,
    );
    let result = match (opts.dry_run, compare) {
        (true, Compare::Target) => sync::dry_scan(d).map(|stats| (stats, None)),
        (true, Compare::Basis(delta)) => Ok((sync::dry_delta(d, delta), None)),
        (false, _) => target::open(&d.target).and_then(|t| {
            let parallel = opts.parallel.max(1);
            let Synced { stats, held_first } =
                sync::sync_data(store, &d.disk, &d.index, compare, &t, parallel, &progress)?;
            Ok((stats, Some((t, held_first))))
        }),
    };
    progress.finish(reporter);
    let (stats, open) = result?;
    run.stats = Some(stats);
    run.open = open;
    Ok(())
}

fn open_target(run: &mut DiskRun) -> Result<&mut (Target, Option<HeldFirst>), EngineError> {
    run.open
        .as_mut()
        .ok_or_else(|| bad_plan("writes layout patches to a disk it has not synced"))
}

fn add_written(run: &mut DiskRun, bytes: u64) {
    if let Some(s) = &mut run.stats {
        s.bytes_written += bytes;
    }
}

fn mapping(plan: &RestorePlan, disk: usize) -> Result<&DiskMapping, EngineError> {
    plan.layout
        .mappings
        .get(disk)
        .ok_or_else(|| bad_plan("grows a disk the layout plan does not map"))
}

/// A plan whose steps are out of order or name what it lacks: not one [`super::plan()`] makes.
fn bad_plan(what: &str) -> EngineError {
    EngineError::Worker(format!("the restore plan {what}: this is a bug"))
}

/// The data is durable; the kernel must see the new table before grow and fix-up look for
/// partitions. Never a reason to fail the restore.
fn reread(device: &std::path::Path) {
    match target::reread_partitions(device) {
        Ok(r) => {
            if let Some(w) = &r.warning {
                tracing::warn!("{}: {w}", device.display());
            }
            let nodes: Vec<String> = r
                .partitions
                .iter()
                .map(|p| p.node.display().to_string())
                .collect();
            tracing::info!(
                "{}: partition table re-read ({}): {}",
                device.display(),
                r.method,
                if nodes.is_empty() {
                    "no partitions".into()
                } else {
                    nodes.join(" ")
                }
            );
        }
        Err(e) => tracing::warn!(
            "{}: the kernel did not re-read the partition table: {e}",
            device.display()
        ),
    }
}

fn summary(
    plan: &RestorePlan,
    opts: &ExecOptions,
    disks: Vec<DiskStats>,
    grown: Vec<GrowOutcome>,
    start: Instant,
) -> RestoreSummary {
    let seconds = start.elapsed().as_secs_f64();
    let sum = |f: fn(&DiskStats) -> u64| disks.iter().map(f).sum::<u64>();
    let (bytes_written, bytes_skipped) = (sum(|d| d.bytes_written), sum(|d| d.bytes_skipped));
    RestoreSummary {
        snapshot: plan.manifest.snapshot.clone(),
        dry_run: opts.dry_run,
        bytes_fetched: sum(|d| d.bytes_fetched),
        bytes_written,
        bytes_skipped,
        chunks_fetched: sum(|d| d.chunks_fetched),
        chunks_present: sum(|d| d.chunks_present),
        chunks_zero_skipped: sum(|d| d.chunks_zero_skipped),
        chunks_zero_written: sum(|d| d.chunks_zero_written),
        target_bytes_read: sum(|d| d.target_bytes_read),
        basis: plan.basis.clone(),
        mb_per_s: (bytes_written + bytes_skipped) as f64 / 1e6 / seconds.max(1e-6),
        seconds,
        disks,
        grown,
    }
}
