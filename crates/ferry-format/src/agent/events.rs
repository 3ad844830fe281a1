//! The structured [`Event`]s an agent streams back to the appliance during a job.

use serde::{Deserialize, Serialize};

/// Severity of an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Info,
    Warn,
    Error,
}

/// Where in a job an event was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Fetching the manifest and indexes, checking the targets. Nothing written.
    Plan,
    /// Comparing, fetching and writing data.
    Restore,
    /// A backup job reading this machine's disks and sending what the appliance lacks.
    Backup,
    /// Adapting the restored OS to this machine, and the bootability report.
    Fixup,
    /// Finished successfully.
    Done,
    /// Stopped by an error.
    Failed,
}

/// One structured event of a job, as posted by the agent and stored append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// RFC 3339 UTC, the agent's clock.
    pub time: String,
    pub level: Level,
    pub phase: Phase,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Bytes per second since the phase began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Seconds left at that rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<u64>,
}

/// Most events one `POST /agents/{id}/events` may carry.
pub const MAX_EVENT_BATCH: usize = 1000;

/// `POST /agents/{id}/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub job: String,
    pub events: Vec<Event>,
}
