//! Request and answer bodies of the admin routes (docs/protocol.md, "Admin API"): what the
//! `appliance` CLI does on `--data`, over HTTPS with an admin token.

use serde::{Deserialize, Serialize};

use crate::agent::{JobNetwork, JobOptions, Then};
use crate::api::{Role, TokenInfo};
use crate::consistency::Consistency;
use crate::source::Schedule;

/// `POST /tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    pub role: Role,
    /// Machine patterns (backup and restore tokens; `*` matches any characters).
    #[serde(default)]
    pub machines: Vec<String>,
    /// A backup token for every machine (instead of `machines`).
    #[serde(default)]
    pub all_machines: bool,
    /// A duration from now (`30d`, `12h`) or an RFC 3339 time.
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /tokens` answer: the token, shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreated {
    pub token: String,
    pub info: TokenInfo,
}

/// `POST /agents/{id}/approve`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentApprove {
    /// The code the machine's console shows: approves only the enrollment that holds it.
    #[serde(default)]
    pub code: Option<String>,
}

/// `POST /jobs`: `agent` or `mac` names the machine (exactly one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum JobCreate {
    /// Restore a snapshot onto the machine's disks.
    Restore {
        #[serde(default)]
        agent: Option<String>,
        #[serde(default)]
        mac: Option<String>,
        snapshot: String,
        /// `SOURCE=TARGET` as in `--map` (`sda=auto`, `sda=/dev/vdb`, `sda=serial:XYZ`).
        map: Vec<String>,
        then: Then,
        #[serde(default)]
        overwrite: bool,
        #[serde(default)]
        options: JobOptions,
    },
    /// Back the machine's own disks up from the rescue image (an `offline` snapshot).
    Backup {
        #[serde(default)]
        agent: Option<String>,
        #[serde(default)]
        mac: Option<String>,
        machine: String,
        /// `auto`, `all`, kernel names or `serial:SERIAL`.
        disks: Vec<String>,
        then: Then,
    },
}

/// `GET /machines`: one line per machine with snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSummary {
    pub machine: String,
    pub snapshots: u64,
    /// The newest snapshot: id, creation time (RFC 3339), consistency, disks' total size.
    pub newest: String,
    pub newest_created: String,
    pub newest_consistency: Consistency,
    pub newest_size: u64,
}

/// `GET /store`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreUsage {
    pub chunks: u64,
    /// Bytes of chunk files (compressed).
    pub chunk_bytes: u64,
    /// Data chunk references of all snapshots.
    pub chunk_references: u64,
    /// `chunk_references / chunks` (0 for an empty store).
    pub dedup_ratio: f64,
    pub snapshots: u64,
    pub machines: u64,
}

/// `POST /machines/{machine}/prune`: as `appliance prune`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// Newest snapshots kept per credential that wrote the machine (1-10).
    pub keep: u32,
    /// Never remove a snapshot younger than this (`90m`, `12h`, `7d`, `2w`).
    #[serde(default)]
    pub keep_within: Option<String>,
    /// Answer the plan, remove nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer of a prune: every snapshot of the machine, newest first, kept (and why) or
/// removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneReport {
    pub machine: String,
    pub dry_run: bool,
    pub entries: Vec<PruneLine>,
    /// Snapshots removed (0 for a dry run).
    pub removed: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneLine {
    pub snapshot: String,
    pub created: String,
    /// The token id that wrote it (absent for snapshots from before origin records).
    pub writer: Option<String>,
    /// Why it is kept; empty: it is (or, for a dry run, would be) removed.
    pub keep: Vec<String>,
}

impl PruneLine {
    pub fn removed(&self) -> bool {
        self.keep.is_empty()
    }
}

/// `POST /migrations`: as `appliance migrations create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationCreate {
    /// The source machine.
    pub machine: String,
    /// The standby: an approved agent's id or one of its MACs.
    pub agent: String,
    /// `DISK=TARGET` as in `--map`.
    pub map: Vec<String>,
    #[serde(default)]
    pub overwrite: bool,
    #[serde(default)]
    pub network: JobNetwork,
}

/// `PATCH /sources/{machine}`: what `appliance sources set` changes; an absent field stays as
/// it is. `rate_bytes_per_s: null` removes the cap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<crate::source::Consistency>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub rate_bytes_per_s: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_io: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u32>,
}

/// A field that is present (even as `null`) is `Some`; an absent one is `None` (its default).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl ScheduleChange {
    /// Change what this names in `s` (the caller checks the result with `Schedule::check`).
    pub fn apply(&self, s: &mut Schedule) {
        if let Some(v) = self.interval_seconds {
            s.interval_seconds = v;
        }
        if let Some(v) = self.keep {
            s.keep = v;
        }
        if let Some(v) = self.consistency {
            s.consistency = v;
        }
        if let Some(v) = self.rate_bytes_per_s {
            s.limits.rate_bytes_per_s = v;
        }
        if let Some(v) = self.reads_in_flight {
            s.limits.reads_in_flight = v;
        }
        if let Some(v) = self.idle_io {
            s.limits.idle_io = v;
        }
        if let Some(v) = self.chunk_size {
            s.chunk_size = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_change_touches_only_what_it_names_and_null_uncaps() {
        let mut s = Schedule::default();
        let before = s.clone();
        ScheduleChange::default().apply(&mut s);
        assert_eq!(s, before);
        let c: ScheduleChange = serde_json::from_str(
            r#"{"interval_seconds":21600,"rate_bytes_per_s":null,"idle_io":false}"#,
        )
        .unwrap();
        assert_eq!(c.rate_bytes_per_s, Some(None));
        c.apply(&mut s);
        assert_eq!(s.interval_seconds, 21_600);
        assert_eq!(s.limits.rate_bytes_per_s, None);
        assert!(!s.limits.idle_io);
        assert_eq!(s.keep, before.keep);
        let absent: ScheduleChange = serde_json::from_str("{}").unwrap();
        assert_eq!(absent, ScheduleChange::default());
        let capped = ScheduleChange {
            rate_bytes_per_s: Some(Some(5)),
            ..ScheduleChange::default()
        };
        let back: ScheduleChange =
            serde_json::from_str(&serde_json::to_string(&capped).unwrap()).unwrap();
        assert_eq!(back, capped);
        assert!(serde_json::from_str::<ScheduleChange>(r#"{"kepe":3}"#).is_err());
    }
}
