//! Unattended restore jobs: what a rescue-image agent tells the appliance about its machine
//! ([`Inventory`]), how it enrolls ([`EnrollRequest`], [`EnrollReply`]), the [`Job`] it is given,
//! the [`Event`]s it streams back, and the pure resolution of a job's disk mappings against an
//! inventory ([`resolve_mappings`]). docs/protocol.md ("Agents and jobs") describes the routes.
//!
//! Invariants:
//! - A job handed to an agent names only devices of that agent's inventory (`auto` is resolved
//!   by the appliance when the agent picks the job up); every target exists, is at least as large
//!   as the snapshot's disk, and is blank unless the job says `overwrite`.
//! - Device names are kernel block device names (`vda`, `nvme0n1`); `/dev/` is accepted on input
//!   and shown on output.
//!
//! One private module per responsibility, everything re-exported here (`ferry_format::agent::X`):
//! `inventory` (what the machine has), `enroll` (enrollment and the appliance's view of agents),
//! `job` (jobs, their states and records), `events`, and `mapping` (targets and their resolution).

pub mod beacon;
mod enroll;
mod events;
mod inventory;
mod job;
mod mapping;
#[cfg(test)]
mod testing;

pub use enroll::{
    challenge_answer, challenge_key, AgentInfo, AgentState, Approval, ApprovedBy, ChallengeRange,
    EnrollReply, EnrollRequest, ResumeClaim, StandbyChallenge, StandbyProof, StandbyProven,
    MAX_CHALLENGE_RANGES, MAX_RESUME_CLAIMS,
};
pub use events::{Event, EventBatch, Level, Phase, MAX_EVENT_BATCH};
pub use inventory::{
    normalize_mac, Cpu, DeviceProblem, Disk, Firmware, Inventory, Nic, MAX_INVENTORY_DISKS,
    MAX_INVENTORY_NICS, MAX_INVENTORY_PROBLEMS, MAX_INVENTORY_TEXT,
};
pub use job::{
    check_backup_disks, resolve_backup_disks, BackupSpec, Job, JobFor, JobKind, JobNetwork,
    JobOptions, JobProgress, JobRecord, JobState, StandbyNext, StandbyReport, Then,
    MAX_BACKUP_DISKS,
};
pub use mapping::{resolve_mappings, DiskNeed, MapTarget, Mapping};
