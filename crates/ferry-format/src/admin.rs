//! Request and answer bodies of the admin routes (docs/protocol.md, "Admin API"): what the
//! `appliance` CLI does on `--data`, over HTTPS with an admin token.

use serde::{Deserialize, Serialize};

use crate::agent::{JobOptions, Then};
use crate::api::{Role, TokenInfo};
use crate::consistency::Consistency;

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
