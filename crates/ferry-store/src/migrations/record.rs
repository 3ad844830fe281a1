//! The stored record of a migration: its state and legal transitions, the standby's status,
//! its history, and what `migrations create` asks for.

use std::time::SystemTime;

use ferry_format::agent::Mapping;
use serde::{Deserialize, Serialize};

use crate::snapshots::rfc3339;
use crate::tokens::parse_rfc3339;

use super::timeline::CutoverTimeline;

/// History entries a record keeps (the oldest goes first).
pub const MAX_MIGRATION_HISTORY: usize = 50;

/// A migration's life (JSON: `"syncing"`, `"cutting-over"`, `"cut-over"`, `"cancelled"` or
/// `{"failed": {"reason": "..."}}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum MigrationState {
    /// The standby applies each new snapshot.
    Syncing,
    /// The final sync, its apply, the fix-up and the reboot are under way.
    CuttingOver,
    /// Done: the standby's disks are the migrated server's.
    CutOver,
    Failed {
        reason: String,
    },
    Cancelled,
}

impl MigrationState {
    pub fn name(&self) -> &'static str {
        match self {
            MigrationState::Syncing => "syncing",
            MigrationState::CuttingOver => "cutting-over",
            MigrationState::CutOver => "cut-over",
            MigrationState::Failed { .. } => "failed",
            MigrationState::Cancelled => "cancelled",
        }
    }

    /// Its standby is working and its snapshots are pinned.
    pub fn is_active(&self) -> bool {
        matches!(self, MigrationState::Syncing | MigrationState::CuttingOver)
    }

    /// The legal moves (see the module docs).
    pub fn may_become(&self, next: &MigrationState) -> bool {
        use MigrationState::*;
        matches!(
            (self, next),
            (Syncing, CuttingOver | Cancelled | Failed { .. })
                | (CuttingOver, CutOver | Syncing | Failed { .. })
        )
    }
}

/// What the standby last reported, and what it was last handed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyStatus {
    /// The snapshot the standby routes last handed the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_at: Option<String>,
    /// The snapshot the standby's disks hold, written and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    /// When the basis was taken (its manifest's `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis_taken: Option<String>,
    /// When the agent finished applying it (the agent's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// Bytes the last apply wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<u64>,
    /// Seconds the last apply took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

impl StandbyStatus {
    /// `in sync with snapshot X, taken T`, or what it waits for.
    pub fn describe(&self) -> String {
        match (&self.basis, &self.basis_taken, &self.handed) {
            (Some(b), Some(t), _) => format!("in sync with snapshot {b}, taken {t}"),
            (Some(b), None, _) => format!("in sync with snapshot {b}"),
            (None, _, Some(h)) => format!("applying its first snapshot {h}"),
            (None, _, None) => "waiting for its agent to take the standby job".into(),
        }
    }
}

/// One entry of a migration's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Happened {
    Created {
        snapshot: String,
    },
    /// The standby applied a snapshot.
    Applied {
        snapshot: String,
        taken: String,
        bytes_written: u64,
        seconds: f64,
    },
    /// The standby machine rebooted mid-apply and enrolled again: its resume proof bound the
    /// standby job to the new agent `to` (was `from`).
    Rebound {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        to: String,
    },
    /// The migration changed state (cutover, abort, cancel, failure).
    State {
        from: String,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// RFC 3339 UTC (the appliance's clock).
    pub time: String,
    pub what: Happened,
}

/// The stored record of a migration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationRecord {
    /// `mig-<8 hex>`.
    pub id: String,
    /// The source machine.
    pub machine: String,
    /// The standby agent.
    pub agent: String,
    /// Its standby job (`jobs/<job>.json`, kind `standby`).
    pub job: String,
    /// Snapshot disk onto the standby's disk, as a restore job's.
    pub mappings: Vec<Mapping>,
    pub overwrite: bool,
    pub created: String,
    pub state: MigrationState,
    #[serde(default)]
    pub standby: StandbyStatus,
    /// Oldest first, at most [`MAX_MIGRATION_HISTORY`].
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// The latest cutover's timeline (none before the first cutover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<CutoverTimeline>,
}

impl MigrationRecord {
    /// Who the migration's pins in the source record are by.
    pub fn pin_holder(&self) -> String {
        format!("migration {}", self.id)
    }

    pub(super) fn record(&mut self, now: SystemTime, what: Happened) {
        self.history.push(HistoryEntry {
            time: rfc3339(now),
            what,
        });
        let extra = self.history.len().saturating_sub(MAX_MIGRATION_HISTORY);
        self.history.drain(..extra);
    }
}

/// Seconds between the basis being taken and the newest snapshot being taken: how far behind
/// the standby is. `None` when a time does not parse.
pub fn lag_seconds(basis_taken: &str, newest_taken: &str) -> Option<u64> {
    let (b, n) = (parse_rfc3339(basis_taken)?, parse_rfc3339(newest_taken)?);
    Some(n.duration_since(b).map_or(0, |d| d.as_secs()))
}

/// What `appliance migrations create` asks for.
#[derive(Clone, Debug)]
pub struct NewMigration {
    pub machine: String,
    /// An agent id, or a MAC of an approved agent.
    pub agent: String,
    pub mappings: Vec<Mapping>,
    pub overwrite: bool,
    /// The network rules the cutover's fix-up applies (`--nic`, `--reip`, `--ip`).
    pub network: ferry_format::agent::JobNetwork,
}
