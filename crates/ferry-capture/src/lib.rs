//! Consistent capture of a running source's disks for the backup agent.
//!
//! [`Capture::begin`] takes a [`CaptureRequest`] (the source disks, a [`Mode`], operator
//! [`Hooks`], a run directory) and returns what to read; [`Capture::end`] undoes everything and
//! reports the [`Consistency`] to record in the snapshot's manifest:
//!
//! 1. lock the run directory (one capture at a time; [`state`]);
//! 2. run the pre hook ([`hooks`]); from then on the post hook runs whatever happens;
//! 3. discover the mounted filesystems on the disks: partitions, and everything stacked on them
//!    (LVM, dm-crypt, md) from sysfs, matched against `/proc/self/mountinfo` ([`topology`],
//!    [`mountinfo`]);
//! 4. `point-in-time`: LVM snapshots where allowed, the VG has room and the LV's extents map to
//!    plain partitions of the disks ([`lvm`], [`extents`]: the reader then reads those byte
//!    ranges from the snapshot), a freeze of every other writable filesystem ([`freeze`]);
//!    `live`: nothing.
//!
//! Invariants:
//! - A frozen filesystem is always thawed: by [`Capture::end`], by Drop, by the thaw-on-signal
//!   thread on SIGTERM/SIGINT/SIGHUP, by a watchdog once the freeze outlasts
//!   [`CaptureRequest::max_freeze`] (the capture then fails), and after a crash by
//!   [`cleanup_stale`] on the next start (from the run directory's state file, written before
//!   each freeze).
//! - Snapshots carry the prefix [`lvm::SNAPSHOT_PREFIX`] and the tag [`lvm::SNAPSHOT_TAG`];
//!   [`cleanup_stale`] removes only LVs with both.
//! - Parsers of /proc and /sys text are pure, bounded and return errors naming the line or file.
//!
//! docs/consistency.md says what each mode guarantees and what the freeze costs.

mod capture;
pub mod extents;
pub mod freeze;
mod guardian;
pub mod hooks;
pub mod lvm;
pub mod mountinfo;
pub mod state;
pub mod topology;

pub use capture::{
    cleanup_stale, Capture, CaptureError, CaptureReport, CaptureRequest, CleanupReport,
    Consistency, LvmPolicy, Method, Mode, NotFrozen, SourceRead, DEFAULT_MAX_FREEZE,
};
pub use hooks::{Hook, HookCommand, HookError, Hooks};
