//! Why a migration operation was refused, and the id check every path-forming call makes.

use crate::error::StoreError;

/// Why a migration operation was refused; each names the thing and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("migration {id} is {from} and cannot become {to}")]
    Transition {
        id: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("there is no migration {0}: see `appliance migrations list`")]
    NotFound(String),
    #[error("no approved agent has MAC {mac}: boot the standby from the rescue image, approve it (`appliance agents approve --mac {mac}`), then create the migration")]
    NoAgentWithMac { mac: String },
    #[error("MAC {mac} belongs to several approved agents ({}): name one by its id", agents.join(", "))]
    AmbiguousMac { mac: String, agents: Vec<String> },
    #[error(
        "agent {agent} is not approved: approve it first (`appliance agents approve {agent}`)"
    )]
    NotApproved { agent: String },
    #[error("agent {agent} already {busy}: cancel that first or choose another standby")]
    AgentBusy { agent: String, busy: String },
    #[error("machine {machine} already migrates in {migration}: cancel it first (`appliance migrations cancel {migration}`)")]
    MachineBusy { machine: String, migration: String },
    #[error("machine {machine} has no snapshot yet: wait for its first sync (`appliance sources sync-now {machine}`)")]
    NoSnapshot { machine: String },
    #[error("{0}")]
    Mapping(String),
    #[error("agent {agent} serves no active migration: its standby job has ended")]
    NotStandby { agent: String },
    #[error("agent {agent} reports snapshot {basis}, which it was not handed (it was handed {}): ask GET /agents/{agent}/standby/next first", handed.as_deref().unwrap_or("nothing"))]
    WrongBasis {
        agent: String,
        basis: String,
        handed: Option<String>,
    },
    #[error("migration {id} cannot cut over yet: its standby holds no snapshot; wait until `appliance migrations show {id}` says it is in sync")]
    NotInSync { id: String },
    #[error("migration {id} cannot cut over: the source agent of {machine} has not enrolled (start `backup-agent service` on it)")]
    SourceNotEnrolled { id: String, machine: String },
    #[error("migration {id} is {state}, not cutting over to snapshot {snapshot}: the standby writes nothing")]
    NotCuttingOver {
        id: String,
        state: &'static str,
        snapshot: String,
    },
    #[error("the standby report of agent {agent} is invalid: {why}")]
    BadReport { agent: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<MigrationError> for StoreError {
    fn from(e: MigrationError) -> StoreError {
        use MigrationError::*;
        match e {
            Store(s) => s,
            Transition { .. }
            | AmbiguousMac { .. }
            | AgentBusy { .. }
            | MachineBusy { .. }
            | WrongBasis { .. }
            | NotInSync { .. }
            | SourceNotEnrolled { .. }
            | NotCuttingOver { .. } => StoreError::Conflict(e.to_string()),
            NotFound(_) | NoAgentWithMac { .. } | NoSnapshot { .. } | NotStandby { .. } => {
                StoreError::NotFound(e.to_string())
            }
            NotApproved { .. } | Mapping(_) | BadReport { .. } => {
                StoreError::Invalid(e.to_string())
            }
        }
    }
}

pub(super) type MResult<T> = std::result::Result<T, MigrationError>;

/// `mig-` and 8 lowercase hex digits.
pub(super) fn check_id(id: &str) -> MResult<()> {
    let ok = id
        .strip_prefix("mig-")
        .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(MigrationError::NotFound(id.chars().take(80).collect()))
    }
}
