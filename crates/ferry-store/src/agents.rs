//! `agents/<id>.json`: enrolled rescue-image agents, their inventory, state, approval and the
//! hash of their credential (docs/store.md, "Agents and jobs"; docs/security.md).
//!
//! Trust: the enroll token is stamped in clear into every image, so an enrollment proves nothing
//! about the machine. A new agent is **unapproved**: it gets a credential that can poll and post
//! events, but no job is handed to it until the operator approves it (`appliance agents
//! approve`, which can check the code the agent shows on its console) or it shows the proof of a
//! running job that it found on its own disks (the in-progress marker, ferry_format::marker). A
//! MAC claim never takes over an approved agent: an agent's id is `agent-` and its lowest MAC
//! while that id is free or held by an unapproved record; when an approved agent holds it, the
//! newcomer gets `agent-<mac>-<4 hex>` and must be approved on its own.
//!
//! Bounds: at most [`MAX_UNAPPROVED`] unapproved records; the oldest is dropped for a new one.

use std::path::PathBuf;
use std::time::SystemTime;

use ferry_format::agent::{
    AgentInfo, AgentState, Approval, ApprovedBy, EnrollReply, EnrollRequest, Inventory, JobKind,
    JobState, MAX_RESUME_CLAIMS,
};
use ferry_format::marker::proof_hash;
use ferry_format::names::{check_name, NameKind};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::fsx;
use crate::meta::{Collection, RecordLock};
use crate::snapshots::rfc3339;
use crate::tokens::hash_token;
use crate::Store;

/// Unapproved agent records kept; enrolling beyond drops the oldest unapproved one.
pub const MAX_UNAPPROVED: usize = 64;

/// The stored record: what `appliance agents` shows, and the credential's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    pub info: AgentInfo,
    /// Lowercase hex BLAKE3 of the credential's text; empty once a newer enrollment of the
    /// same machine took over (by resume proof): the old credential no longer works.
    pub credential_hash: String,
    /// Shown on the agent's console at enrollment; `appliance agents approve --code` checks it.
    #[serde(default)]
    pub code: String,
    /// The standby proof this agent may give (unapproved agents only; used up by the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<crate::migrations::PendingChallenge>,
}

/// `agent-<12 hex>` from the lowest MAC of the inventory, `None` without NICs.
pub fn agent_id_for(inv: &Inventory) -> Option<String> {
    inv.nics
        .iter()
        .map(|n| n.mac.replace(':', ""))
        .filter(|m| {
            m.len() == 12 && m.bytes().all(|b| b.is_ascii_hexdigit()) && m != "000000000000"
        })
        .min()
        .map(|m| format!("agent-{}", m.to_ascii_lowercase()))
}

/// The code an agent shows on its console: 6 hex digits derived from its credential, so the
/// operator can tell two enrollments that claim the same hardware apart.
pub fn enroll_code(credential: &str) -> String {
    let h = blake3::hash(format!("ferry enroll code\0{credential}").as_bytes());
    h.to_hex()[..6].to_ascii_uppercase()
}

impl Store {
    pub fn agents_dir(&self) -> PathBuf {
        self.root().join("agents")
    }

    /// Serialises read-modify-write of agent records between threads, processes and nodes.
    pub(crate) fn lock_agents(&self) -> Result<RecordLock> {
        self.records().lock(Collection::Agents)
    }

    /// Record a new enrollment and issue its credential. It is approved only when it proves it
    /// is the machine a running job was writing to (then that job is bound to it); otherwise it
    /// waits for the operator. Never changes an approved agent's record.
    pub fn enroll_agent(&self, req: &EnrollRequest, now: SystemTime) -> Result<EnrollReply> {
        req.inventory
            .check_bounds()
            .map_err(|e| StoreError::Invalid(format!("refuse the enrollment: {e}")))?;
        for d in &req.inventory.disks {
            check_name(NameKind::Disk, &d.name)?;
        }
        if req.resume.len() > MAX_RESUME_CLAIMS {
            return Err(StoreError::Invalid(format!(
                "refuse the enrollment: {} resume claims, at most {MAX_RESUME_CLAIMS}",
                req.resume.len()
            )));
        }
        let credential_secret = fsx::random_hex(32)?;
        let t = rfc3339(now);
        // Lock order: jobs, then agents.
        let _jobs = self.lock_jobs()?;
        let _migrations = self.lock_migrations()?;
        let _agents = self.lock_agents()?;
        let id = self.new_agent_id(&req.inventory)?;
        let credential = format!("{id}.{credential_secret}");
        let resumed = self.proven_job(&req.resume)?;
        let approved = resumed.as_ref().map(|job| Approval {
            time: t.clone(),
            by: ApprovedBy::ResumeProof {
                job: job.id.clone(),
            },
        });
        let code = enroll_code(&credential);
        let challenge = match resumed {
            Some(_) => None,
            None => self.standby_challenge(&req.inventory, now)?,
        };
        let rec = AgentRecord {
            info: AgentInfo {
                agent: id.clone(),
                version: req.version.clone(),
                inventory: req.inventory.clone(),
                enrolled: t.clone(),
                last_seen: t,
                state: if resumed.is_some() {
                    AgentState::Running
                } else {
                    AgentState::Waiting
                },
                job: resumed.as_ref().map(|j| j.id.clone()),
                approved,
            },
            credential_hash: hash_token(&credential),
            code: code.clone(),
            challenge,
        };
        self.write_agent(&rec)?;
        if let Some(mut job) = resumed {
            // The old agent of this machine stops being able to act for the job.
            let old = job.agent.replace(id.clone()).filter(|o| *o != id);
            if let Some(old) = &old {
                if let Ok(mut o) = self.agent_record(old) {
                    o.credential_hash.clear();
                    o.info.state = AgentState::Failed;
                    self.write_agent(&o)?;
                }
            }
            self.write_job(&job)?;
            if job.kind == JobKind::Standby {
                self.standby_rebound(&job.id, old.as_deref(), &id, now)?;
            }
            tracing::info!(
                "agent {id} proved it holds the partial restore of job {}: approved, job bound to it",
                job.id
            );
        } else {
            self.drop_oldest_unapproved()?;
        }
        Ok(EnrollReply {
            approved: rec.info.approved.is_some(),
            challenge: rec.challenge.as_ref().map(|c| c.public()),
            agent: id,
            credential,
            code,
        })
    }

    /// `agent-<lowest mac>` unless an approved agent holds it; then a suffixed id. Random
    /// without NICs. Called with the agents lock held.
    fn new_agent_id(&self, inv: &Inventory) -> Result<String> {
        let Some(base) = agent_id_for(inv) else {
            return Ok(format!("agent-{}", fsx::random_hex(6)?));
        };
        match self.agent_record(&base) {
            Err(e) if e.is_not_found() => return Ok(base),
            Ok(r) if r.info.approved.is_none() => return Ok(base),
            _ => {}
        }
        loop {
            let id = format!("{base}-{}", fsx::random_hex(2)?);
            if self.records().get(Collection::Agents, &id)?.is_none() {
                return Ok(id);
            }
        }
    }

    /// The running job one of `claims` proves (its proof's hash is the job's), if any.
    fn proven_job(
        &self,
        claims: &[ferry_format::agent::ResumeClaim],
    ) -> Result<Option<ferry_format::agent::JobRecord>> {
        for c in claims {
            if check_name(NameKind::Job, &c.job).is_err() {
                continue;
            }
            let job = match self.job(&c.job) {
                Ok(j) => j,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            let proven = job
                .proof_hash
                .as_deref()
                .is_some_and(|h| constant_time_eq(h.as_bytes(), proof_hash(&c.proof).as_bytes()));
            if proven && job.state == JobState::Running {
                return Ok(Some(job));
            }
            tracing::warn!(
                "an enrollment claimed job {} with a proof that does not match (or the job is not running): ignored",
                c.job
            );
        }
        Ok(None)
    }

    /// Keep at most [`MAX_UNAPPROVED`] unapproved records (agents lock held).
    fn drop_oldest_unapproved(&self) -> Result<()> {
        let mut unapproved: Vec<AgentInfo> = self
            .list_agents()?
            .into_iter()
            .filter(|a| a.approved.is_none())
            .collect();
        if unapproved.len() <= MAX_UNAPPROVED {
            return Ok(());
        }
        unapproved.sort_by(|a, b| (&a.last_seen, &a.agent).cmp(&(&b.last_seen, &b.agent)));
        for a in &unapproved[..unapproved.len() - MAX_UNAPPROVED] {
            tracing::warn!(
                "dropping unapproved agent {} (last seen {}): more than {MAX_UNAPPROVED} agents wait for approval",
                a.agent,
                a.last_seen
            );
            self.records().delete(Collection::Agents, &a.agent)?;
        }
        Ok(())
    }

    /// The operator trusts agent `id` with jobs. With `code`, the agent must have shown that
    /// code on its console (it tells two enrollments claiming the same hardware apart).
    pub fn approve_agent(
        &self,
        id: &str,
        code: Option<&str>,
        now: SystemTime,
    ) -> Result<AgentInfo> {
        let _lock = self.lock_agents()?;
        let mut rec = self.agent_record(id)?;
        if rec.credential_hash.is_empty() {
            return Err(StoreError::Conflict(format!(
                "agent {id} was replaced by a newer enrollment of the same machine: approve that one (see `appliance agents`)"
            )));
        }
        if let Some(c) = code {
            if !c.eq_ignore_ascii_case(&rec.code) {
                return Err(StoreError::Conflict(format!(
                    "agent {id} showed code {} on its console, not {c}: this enrollment is not the machine you are looking at; do not approve it",
                    rec.code
                )));
            }
        }
        if rec.info.approved.is_none() {
            rec.info.approved = Some(Approval {
                time: rfc3339(now),
                by: ApprovedBy::Operator,
            });
            self.write_agent(&rec)?;
        }
        Ok(rec.info)
    }

    /// Forget an agent (its credential stops working). Refused while it runs a job.
    pub fn remove_agent(&self, id: &str) -> Result<()> {
        let _lock = self.lock_agents()?;
        let rec = self.agent_record(id)?;
        if rec.info.state == AgentState::Running {
            return Err(StoreError::Conflict(format!(
                "agent {id} is running job {}: let it finish or fail first",
                rec.info.job.unwrap_or_default()
            )));
        }
        self.records().delete(Collection::Agents, id)?;
        Ok(())
    }

    pub(crate) fn write_agent(&self, rec: &AgentRecord) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        self.records()
            .put(Collection::Agents, &rec.info.agent, &bytes)
    }

    pub fn agent_record(&self, id: &str) -> Result<AgentRecord> {
        check_name(NameKind::Agent, id)?;
        let bytes = self.records().get(Collection::Agents, id)?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "no agent {id} has enrolled: see `appliance agents`"
            ))
        })?;
        parse_agent(id, &bytes)
    }

    /// The agent a credential belongs to, `None` when it is not a valid credential.
    pub fn agent_for_credential(&self, credential: &str) -> Result<Option<AgentInfo>> {
        let Some((id, _)) = credential.rsplit_once('.') else {
            return Ok(None);
        };
        if check_name(NameKind::Agent, id).is_err() {
            return Ok(None);
        }
        match self.agent_record(id) {
            Ok(rec)
                if !rec.credential_hash.is_empty()
                    && constant_time_eq(
                        rec.credential_hash.as_bytes(),
                        hash_token(credential).as_bytes(),
                    ) =>
            {
                Ok(Some(rec.info))
            }
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Change an agent's record under the lock (state, last seen, job).
    pub fn update_agent(&self, id: &str, f: impl FnOnce(&mut AgentInfo)) -> Result<AgentInfo> {
        let _lock = self.lock_agents()?;
        let mut rec = self.agent_record(id)?;
        f(&mut rec.info);
        self.write_agent(&rec)?;
        Ok(rec.info)
    }

    /// Every enrolled agent, by id.
    pub fn list_agents(&self) -> Result<Vec<AgentInfo>> {
        let mut out = Vec::new();
        for (id, bytes) in self.records().all(Collection::Agents)? {
            match parse_agent(&id, &bytes) {
                Ok(rec) => out.push(rec.info),
                Err(e) => tracing::warn!("skipping agent record {id}: {e}"),
            }
        }
        out.sort_by(|a, b| a.agent.cmp(&b.agent));
        Ok(out)
    }
}

/// Compare two hashes without an early exit (no timing hint about how much matched).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_agent(id: &str, bytes: &[u8]) -> Result<AgentRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Invalid(format!("parse the record of agent {id}: {e}")))
}
