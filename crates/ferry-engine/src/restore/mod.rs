//! Restore (ARCHITECTURE §4) in three parts, so that `--dry-run` shows exactly what runs:
//!
//! 1. [`gather`]: all the reading — the verified manifest and indexes from a
//!    [`SnapshotSource`], and [`crate::target::check`] of every target. Writes nothing.
//! 2. [`plan()`]: pure. Runs the layout planner ([`ferry_layout::plan`]) and turns its mappings
//!    into an ordered list of [`Step`]s. The plan prints itself, every step numbered.
//! 3. [`execute`]: runs exactly the plan's steps, in order, fetching chunks from a
//!    [`ChunkStore`]. An error names the step it stopped in ([`EngineError::Step`]).
//!
//! Per disk the steps are: the seeded sync ([`sync`]: compare the target with the index, fetch
//! only the chunks that differ, verify each against its id *before* it reaches the target,
//! write; everything but the first chunk; then fdatasync), the layout patches outside the first
//! chunk, the boot-critical first chunk last (with the patches inside it), a partition-table
//! re-read (block devices; never fatal) and the filesystem grow the layout plan asks for (its
//! outcome lands in the summary; never fatal). Callers that do more afterwards (the rescue
//! agent's fix-up) number their own step after [`RestorePlan::steps`].
//!
//! Fail closed: a restore that stops half-way leaves a disk that does not boot (the first chunk
//! is wiped, or carries this job's in-progress marker, until the very last write).
//!
//! ## A delta from a known basis (the standby target)
//!
//! When the targets are known to hold snapshot X exactly (this process restored X onto them and
//! nothing has touched them since), a newer snapshot Y is applied without reading them:
//!
//! ```text
//! let inputs = restore::gather_with_basis(&client, &opts, Some("web1-X"))?; // refuses a basis that does not fit
//! let plan = restore::plan(&inputs, &opts)?;      // Step::DeltaFromBasis per disk
//! let summary = restore::execute(&client, &plan, &opts.exec())?;
//! assert_eq!(summary.target_bytes_read, 0);
//! ```
//!
//! `opts` is an ordinary [`RestoreOptions`] for Y (the targets hold data, so `overwrite`, or a
//! job whose marker is on them); `gather_with_basis(.., None)` is [`gather`]. The basis must be of
//! the same machine, with the same chunk size, each restored disk of the same name and size, on
//! targets of exactly that size whose layout plan changes nothing; otherwise
//! [`crate::Refusal::BasisUnusable`] (nothing written; run a full seeded sync instead). The plan
//! computes each disk's [`Delta`] from the two indexes ([`basis`] has the table and the rule for
//! the first chunk and the in-progress marker); execute fetches, verifies and writes only those
//! chunks, first chunk last. [`RestoreSummary::target_bytes_read`] is 0 and
//! [`RestoreSummary::basis`] names X. After a failed delta, or a reboot, the targets no longer
//! hold X: the next apply must be a seeded sync (plain [`gather`]).

use std::path::PathBuf;
use std::sync::Arc;

use ferry_format::{DiskIndex, Manifest};
use ferry_layout::LayoutPlan;
use serde::Serialize;

use crate::pipeline::ChunkStore;
use crate::progress::Progress;
use crate::target::TargetCheck;
use crate::EngineError;

pub mod basis;
mod execute;
mod gather;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
mod plan;
mod source;
pub(crate) mod sync;
#[cfg(test)]
mod tests;

pub use basis::{delta, Basis, BasisDisk, Delta};
pub use execute::execute;
pub use gather::{gather, gather_with_basis, GatheredDisk, Inputs};
pub use plan::{plan, Step};
pub use source::SnapshotSource;

/// Default number of chunk fetches in flight.
pub const DEFAULT_PARALLEL: usize = 4;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub snapshot: String,
    /// (disk name in the snapshot, target path)
    pub targets: Vec<(String, PathBuf)>,
    pub overwrite: bool,
    pub dry_run: bool,
    pub parallel: usize,
    pub quiet: bool,
    /// Grow the last partition, the PV and LV on it, and its filesystem onto a larger target.
    pub grow: bool,
    /// The LV to grow, `VG/LV`; default: the one the planner picks (see ferry-layout).
    pub grow_lv: Option<String>,
    /// An unattended job: each target gets this job's in-progress marker before anything else
    /// changes on it, and a target that carries it may be written without `overwrite`.
    pub job: Option<JobMark>,
}

impl RestoreOptions {
    /// How to execute a plan made with these options (no progress observer).
    pub fn exec(&self) -> ExecOptions<'static> {
        ExecOptions {
            dry_run: self.dry_run,
            parallel: self.parallel,
            quiet: self.quiet,
            progress: None,
        }
    }
}

/// The job and proof an in-progress marker names ([`ferry_format::marker`]).
#[derive(Debug, Clone)]
pub struct JobMark {
    pub job: String,
    pub proof: String,
}

/// How [`execute`] runs a plan.
#[derive(Clone, Copy, Default)]
pub struct ExecOptions<'a> {
    /// Only compare the targets with the plan (the sync steps read, nothing is written).
    pub dry_run: bool,
    /// Chunk fetches in flight (at least 1).
    pub parallel: usize,
    /// No progress lines on stderr.
    pub quiet: bool,
    /// Counts every byte made right (written or found in place); its `total` is set to the sum
    /// of the plan's disk sizes. A caller reads it from another thread to report progress.
    pub progress: Option<&'a Arc<Progress>>,
}

/// What a restore will do, decided before anything is written.
#[derive(Debug)]
pub struct RestorePlan {
    pub manifest: Manifest,
    pub disks: Vec<DiskPlan>,
    /// Disk mapping and the bytes that change when a target differs from its source.
    pub layout: LayoutPlan,
    /// What [`execute`] runs, in this order (and what the plan prints, numbered from 1).
    pub steps: Vec<Step>,
    /// The snapshot the targets hold exactly when the plan applies deltas
    /// ([`gather_with_basis`]); `None` for a seeded sync.
    pub basis: Option<String>,
}

#[derive(Debug)]
pub struct DiskPlan {
    pub disk: String,
    pub size: u64,
    pub index: DiskIndex,
    /// The target as checked, its size the one the layout plan gives it.
    pub target: TargetCheck,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct DiskStats {
    pub disk: String,
    pub target: PathBuf,
    pub size: u64,
    pub chunks_total: u64,
    /// Data chunks the target already held.
    pub chunks_present: u64,
    pub chunks_fetched: u64,
    /// Zero/unused chunks the target already read as zeros.
    pub chunks_zero_skipped: u64,
    pub chunks_zero_written: u64,
    /// Bytes received from the appliance (compressed).
    pub bytes_fetched: u64,
    /// Bytes written to the target (data and zeros).
    pub bytes_written: u64,
    /// Bytes left alone because the target already held them.
    pub bytes_skipped: u64,
    /// Bytes of the target read to compare it (0 for a delta from a known basis).
    pub target_bytes_read: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    pub snapshot: String,
    pub dry_run: bool,
    pub disks: Vec<DiskStats>,
    pub bytes_fetched: u64,
    pub bytes_written: u64,
    pub bytes_skipped: u64,
    pub chunks_fetched: u64,
    pub chunks_present: u64,
    pub chunks_zero_skipped: u64,
    pub chunks_zero_written: u64,
    /// Bytes of the targets read to compare them with the snapshot: 0 for a delta from a basis.
    pub target_bytes_read: u64,
    /// The snapshot the targets held, when the restore applied deltas from it.
    pub basis: Option<String>,
    pub seconds: f64,
    /// Disk bytes made right per second (written + skipped).
    pub mb_per_s: f64,
    /// Filesystems grown into a larger target (`--grow`).
    pub grown: Vec<crate::grow::GrowOutcome>,
}

/// Gather, plan, execute: the whole restore for callers that show nothing in between.
pub fn restore<S: SnapshotSource + ChunkStore>(
    source: &S,
    opts: &RestoreOptions,
) -> Result<(RestorePlan, RestoreSummary), EngineError> {
    let inputs = gather(source, opts)?;
    let plan = plan(&inputs, opts)?;
    let summary = execute(source, &plan, &opts.exec())?;
    Ok((plan, summary))
}
