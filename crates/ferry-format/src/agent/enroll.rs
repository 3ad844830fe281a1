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
}

impl fmt::Display for ApprovedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApprovedBy::Operator => f.write_str("the operator"),
            ApprovedBy::ResumeProof { job } => {
                write!(f, "the in-progress marker of job {job} on its disks")
            }
        }
    }
}
