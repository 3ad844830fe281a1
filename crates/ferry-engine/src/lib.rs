//! The data path shared by backup-agent and restore-agent (host mode and PID 1).
//!
//! - [`backup`]: read a disk source chunk by chunk, hash, skip zeros, ask the appliance which
//!   chunks it lacks, compress and upload only those, then commit a snapshot.
//! - [`restore`]: gather (manifest, indexes, target checks), a pure plan of ordered steps that
//!   prints itself (`--dry-run` shows exactly what runs), execute. Its sync step is a seeded
//!   sync: compare what the target already holds with the snapshot's index, fetch only chunks
//!   that differ, verify each against its id *before* it reaches the target, write with large
//!   aligned writes; the boot-critical first chunk is written last.
//! - [`refusal`]: why a backup or a restore is refused before anything is written, as data.
//! - [`contents`]: the blank check (zeros at both ends, at every usual partition start and
//!   across the disk; named signatures; the protected boot medium; Ferry's in-progress marker).
//! - [`target`]: opening restore targets safely (size, in-use and holds-data checks), and making
//!   the kernel see a restored disk's partitions ([`target::reread_partitions`]).
//! - [`grow`]: growing a restored filesystem (in a partition, a whole disk or an LV) with its own
//!   tool, through `ferry_sys` (loop devices over byte ranges, the tool runner).
//!
//! Memory is bounded by a pool of chunk buffers: at most `parallel + 4` chunks live at once.
//!
//! ## Failure ends a pipeline; it never hangs it
//!
//! A stage that fails or panics ends the whole backup or restore with that stage's error, in
//! bounded time: [`pipeline`] has the rules (stages own their channel ends, run under a guard
//! that turns errors and panics into the first error, and poll one abort flag where no
//! disconnection can wake them) and [`pipeline::ChunkStore`], the seam its fault tests use. Each
//! appliance request is bounded by the client's retry window, counted per outage
//! (`ferry_client`), so an appliance that keeps failing (disk full, stopped) ends a backup or a
//! restore about one window after it started failing, with its error text.
//!
//! Audited (issue 9) — every place one worker's end could block the rest, and what holds now:
//! - backup, upload workers all failed: the dispatcher blocked forever sending to them (their
//!   receiver outlived them). Now the last worker's exit disconnects it, and the dispatcher
//!   stops at the abort flag before each send.
//! - backup, the reader waited forever for a free buffer whose holder had died or whose channel
//!   was dropped. Now buffer-pool waits poll the abort flag.
//! - backup, a failed `known-chunks` query, a source read error, a panicking worker: each ends
//!   the run with its error (a panic as [`EngineError::Worker`] naming the stage), and the
//!   session is abandoned with a 5 s retry window, not another full window.
//! - restore, chunk fetches all failed: the scanner blocked forever sending to the fetch workers
//!   (same shape as the backup hang), so the writer waited on the scanner. Fixed the same way.
//! - restore, a fetch worker waiting for a buffer from a dead writer; a panicking writer or
//!   scanner: guarded; waits poll the abort flag. The writer keeps draining after an error, writes
//!   nothing more, and only chunks already verified against their id were ever handed to it; the
//!   first chunk is written only after everything else succeeded.
//! - the first-error cell dropped the error when its lock was poisoned: now kept.
//! - restore-agent's job thread (`ferry_agent::job::apply`): the progress loop waits on a
//!   channel the restore thread owns, so its end or panic wakes it; the join turns a panic into
//!   an error. Event posts have their own 5 s window and a capped queue. The agent's job poll
//!   waits out a dead appliance by design (it also did for a network failure; now for a failing
//!   appliance too). The job's final state report keeps a whole window of its own.
//! - other threads, checked and unchanged: the progress reporter (stopped and joined by
//!   `Progress::finish` on every path), ferry-init's per-NIC configuration threads (joined,
//!   each bounded by its DHCP/carrier timeouts, a panic becomes that NIC's failure), ferry-fixup's
//!   decompressor feeder thread (a tool that exits early ends it with EPIPE).
//! - not bounded here: a read or write that blocks inside the kernel (a hung source or target
//!   device); a request attempt that starts just before the window ends may still run for the
//!   client's per-read timeout (60 s).

pub mod backup;
mod blockdev;
pub mod contents;
pub mod grow;
pub mod pipeline;
mod pool;
pub mod progress;
pub mod refusal;
pub mod restore;
pub mod source_load;
pub mod target;
pub mod throttle;

use std::path::PathBuf;

pub use refusal::Refusal;

/// Everything that can stop a backup or a restore, with the thing it concerns.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Client(#[from] ferry_client::ClientError),
    #[error(transparent)]
    Image(#[from] ferry_image::ImageError),
    #[error("{path}: {op} at offset {offset}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        source: std::io::Error,
    },
    /// Refused before anything was written.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The layout planner found no safe way to lay the snapshot's disks onto the targets.
    #[error(transparent)]
    Layout(#[from] ferry_layout::PlanError),
    /// A step of a restore plan failed: which one (numbered as the plan prints it), then why.
    #[error("step {number} ({step}) failed: {source}")]
    Step {
        number: usize,
        step: String,
        source: Box<EngineError>,
    },
    #[error("chunk {id} (disk {disk}, offset {offset}) from the appliance does not match its id: the appliance's copy is corrupt ({detail}). Nothing of it was written. Back up the source again to re-upload it, or restore another snapshot; a rerun resumes where this one stopped")]
    CorruptChunk {
        id: ferry_format::ChunkId,
        disk: String,
        offset: u64,
        detail: String,
    },
    #[error("a worker thread failed: {0}")]
    Worker(String),
    /// The sources could not be held still as asked, or released cleanly (backup).
    #[error(transparent)]
    Consistency(#[from] backup::ConsistencyError),
}

impl EngineError {
    /// What the process exits with (docs/configuration.md, "Exit codes"): a refusal or a
    /// layout with no safe plan happen before any write; a chunk that does not match its id
    /// is a failed verification; the client's errors map by their kind.
    pub fn exit_status(&self) -> ferry_client::exit::ExitStatus {
        use ferry_client::exit::ExitStatus;
        match self.cause() {
            EngineError::Client(c) => c.exit_status(),
            EngineError::Refused(_) | EngineError::Layout(_) => ExitStatus::Refused,
            EngineError::CorruptChunk { .. } => ExitStatus::Verification,
            _ => ExitStatus::Failure,
        }
    }

    /// The error itself, or for [`EngineError::Step`] the failure inside the step.
    pub fn cause(&self) -> &EngineError {
        match self {
            EngineError::Step { source, .. } => source.cause(),
            e => e,
        }
    }
}

pub(crate) fn io_err<'a>(
    path: &'a std::path::Path,
    op: &'static str,
    offset: u64,
) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        op,
        offset,
        source,
    }
}

#[cfg(test)]
mod exit_tests {
    use ferry_client::exit::ExitStatus;
    use ferry_client::ClientError;

    use super::{EngineError, Refusal};

    fn step(e: EngineError) -> EngineError {
        EngineError::Step {
            number: 3,
            step: "write the data".into(),
            source: Box::new(e),
        }
    }

    #[test]
    fn each_kind_of_failure_has_its_exit_status() {
        let corrupt = || EngineError::CorruptChunk {
            id: ferry_format::ChunkId::of(b"x"),
            disk: "sda".into(),
            offset: 0,
            detail: "hash".into(),
        };
        let cases = [
            (
                EngineError::Refused(Refusal::NoTargets),
                ExitStatus::Refused,
            ),
            (
                EngineError::Layout(ferry_layout::PlanError::TargetTooSmall {
                    disk: "sda".into(),
                    target: "/dev/vdb".into(),
                    needed: 2,
                    have: 1,
                    hint: String::new(),
                }),
                ExitStatus::Refused,
            ),
            (corrupt(), ExitStatus::Verification),
            (step(corrupt()), ExitStatus::Verification),
            (
                step(EngineError::Client(ClientError::Unreachable {
                    url: "u".into(),
                    what: "w".into(),
                    detail: "d".into(),
                    waited: std::time::Duration::ZERO,
                })),
                ExitStatus::GaveUp,
            ),
            (
                EngineError::Io {
                    path: "/dev/vdb".into(),
                    op: "write",
                    offset: 0,
                    source: std::io::ErrorKind::Other.into(),
                },
                ExitStatus::Failure,
            ),
            (EngineError::Worker("panic".into()), ExitStatus::Failure),
        ];
        for (e, want) in cases {
            assert_eq!(e.exit_status(), want, "{e}");
        }
    }
}
