//! Enrollment ([`EnrollRequest`], [`EnrollReply`]) and the appliance's view of an enrolled agent
//! ([`AgentInfo`]): who trusted it with jobs, and what it is doing.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Inventory;

/// `POST /agents/enroll` (enroll token): who I am.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub inventory: Inventory,
    /// restore-agent version.
    pub version: String,
    /// In-progress markers found on this machine's disks: the proof that it is the machine a
    /// running job was writing to (see [`crate::marker`]). At most [`MAX_RESUME_CLAIMS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resume: Vec<ResumeClaim>,
}

/// A job this agent's disks carry the in-progress marker of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeClaim {
    pub job: String,
    /// The marker's proof (64 hex digits).
    pub proof: String,
}

/// Most resume claims one enrollment may carry.
pub const MAX_RESUME_CLAIMS: usize = 16;

/// The agent's id and its credential: a bearer token valid only for this agent's routes and the
/// snapshot of its current job. Shown once; the appliance keeps its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollReply {
    pub agent: String,
    pub credential: String,
    /// Whether the agent may be given jobs now: approved by the operator (`appliance agents
    /// approve`), or by the proof of a running job found on its disks. An agent that is not
    /// keeps polling and is given nothing until it is.
    #[serde(default)]
    pub approved: bool,
    /// Shown on the agent's console: `appliance agents approve ID --code CODE` checks that the
    /// operator approves this enrollment and not another one claiming the same hardware.
    #[serde(default)]
    pub code: String,
    /// For an unapproved agent whose hardware matches an idle migration standby's (a MAC and
    /// the mapped disks): prove the disks hold that standby's applied snapshot
    /// (`POST /agents/{id}/standby/proof`) and be approved without the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<StandbyChallenge>,
}

/// Most byte ranges one [`StandbyChallenge`] asks for.
pub const MAX_CHALLENGE_RANGES: usize = 8;

/// Proof of possession: the keyed BLAKE3 (key: `nonce`) of each range of the agent's disks.
/// The ranges are data chunks of the snapshot the standby last applied, picked at random by
/// the appliance, which computes the same from its stored chunks. Only a machine whose disks
/// hold that snapshot can answer; an impostor with a copied MAC cannot. The standby's idle
/// disks carry no in-progress marker (the last apply finished), so this is how a standby that
/// rebooted between applies is recognised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyChallenge {
    pub migration: String,
    /// 64 hex digits: the BLAKE3 key.
    pub nonce: String,
    pub ranges: Vec<ChallengeRange>,
}

/// `len` bytes at `offset` of the agent's disk `/dev/<device>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRange {
    pub device: String,
    pub offset: u64,
    pub len: u64,
}

/// `POST /agents/{id}/standby/proof`: the answers, in the order of the challenge's ranges
/// (64 hex digits each).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyProof {
    pub migration: String,
    pub answers: Vec<String>,
}

/// The reply to a good [`StandbyProof`]: the agent is approved and the standby job is bound
/// to it; `proof` is the job's new in-progress-marker proof (the old one died with the
/// previous boot). `disks` names the snapshot disk each proven device holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyProven {
    pub job: String,
    pub snapshot: String,
    pub proof: String,
    /// (snapshot disk, device).
    pub disks: Vec<(String, String)>,
}

/// The answer to one [`ChallengeRange`]: keyed BLAKE3 of its bytes, as hex.
pub fn challenge_answer(nonce: &[u8; 32], data: &[u8]) -> String {
    blake3::keyed_hash(nonce, data).to_hex().to_string()
}

/// The 32-byte key of a challenge's hex nonce.
pub fn challenge_key(nonce: &str) -> Option<[u8; 32]> {
    if nonce.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(nonce.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// What an agent is doing, as the appliance last heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Enrolled, asking for a job.
    Waiting,
    /// Running its job.
    Running,
    Succeeded,
    Failed,
}

/// An enrolled agent (`appliance agents --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    pub agent: String,
    pub version: String,
    pub inventory: Inventory,
    /// RFC 3339 UTC of the last enrollment.
    pub enrolled: String,
    /// RFC 3339 UTC of the last request.
    pub last_seen: String,
    pub state: AgentState,
    /// The job it runs or ran last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Who trusted this agent with jobs, and when; `None`: not approved, given no job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Approval>,
}

/// Why an agent may be given jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// RFC 3339 UTC.
    pub time: String,
    pub by: ApprovedBy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ApprovedBy {
    /// `appliance agents approve` (or the admin API).
    Operator,
    /// It enrolled showing the in-progress marker of this running job, found on its disks.
    ResumeProof { job: String },
    /// It proved its disks hold the snapshot this migration's standby last applied.
    StandbyProof { migration: String },
}

impl fmt::Display for ApprovedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApprovedBy::Operator => f.write_str("the operator"),
            ApprovedBy::ResumeProof { job } => {
                write!(f, "the in-progress marker of job {job} on its disks")
            }
            ApprovedBy::StandbyProof { migration } => {
                write!(
                    f,
                    "its disks holding the standby snapshot of migration {migration}"
                )
            }
        }
    }
}
