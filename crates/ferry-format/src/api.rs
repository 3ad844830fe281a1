//! Messages of the appliance's HTTPS API, version 1 (see docs/protocol.md).
//!
//! Every request carries `Authorization: Bearer TOKEN`. Errors come back as [`ErrorBody`] with an
//! HTTP status; binary bodies (chunks, indexes) are `application/octet-stream`.

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkId;
use crate::manifest::{DiskManifest, OsFacts};

/// Path prefix of every API route; bumped only with an incompatible change.
pub const API_PREFIX: &str = "/api/v1";
/// Most chunk ids one `known-chunks` call may ask about.
pub const MAX_KNOWN_QUERY: usize = 4096;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Upload chunks and commit snapshots.
    Backup,
    /// Read snapshots and chunks.
    Restore,
    /// Everything, including managing agents and jobs.
    Admin,
    /// Only `POST /agents/enroll`: the token stamped into rescue images.
    Enroll,
    /// A per-agent credential (never in tokens.json): its own agent routes and the snapshot and
    /// chunks of its current job.
    Agent,
}

impl Role {
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Backup => "backup",
            Role::Restore => "restore",
            Role::Admin => "admin",
            Role::Enroll => "enroll",
            Role::Agent => "agent",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "backup" => Ok(Role::Backup),
            "restore" => Ok(Role::Restore),
            "admin" => Ok(Role::Admin),
            "enroll" => Ok(Role::Enroll),
            _ => Err(format!(
                "unknown role {s:?}: use backup, restore, admin or enroll"
            )),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub appliance: String,
    pub version: String,
    pub api: u32,
    pub role: Role,
}

/// `POST /backups`: open a backup session.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupStart {
    pub machine: String,
    pub chunk_size: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSession {
    pub session: String,
}

/// `POST /backups/{session}/known-chunks`: which of these does the appliance lack?
/// Present ones are marked in use by the session (garbage collection keeps them).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownChunksQuery {
    pub ids: Vec<ChunkId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownChunksReply {
    pub missing: Vec<ChunkId>,
}

/// `PUT /backups/{session}/disks/{disk}/index` answers 409 with this when chunks are missing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingChunks {
    pub error: String,
    pub missing: Vec<ChunkId>,
}

/// `POST /backups/{session}/commit`: the manifest's agent-side fields. The appliance fills in
/// snapshot id, creation time and chunk size, checks each disk's index digest, then signs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    pub disks: Vec<DiskManifest>,
    #[serde(default)]
    pub os: Option<OsFacts>,
    pub agent: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitReply {
    pub snapshot: String,
}

/// `GET /snapshots/{id}/manifest`: the stored manifest bytes (as a string) and their signature.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    pub manifest: String,
    /// Base64 Ed25519 signature over `SIGNING_CONTEXT || manifest`.
    pub signature: String,
    pub key_id: String,
}

/// One row of `GET /snapshots`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSummary {
    pub snapshot: String,
    pub machine: String,
    pub created: String,
    pub disks: Vec<String>,
    /// Sum of disk sizes.
    pub size: u64,
    /// Data chunks referenced (not deduplicated).
    pub data_chunks: u64,
}
