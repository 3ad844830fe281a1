//! `agents/<id>.json`: enrolled rescue-image agents, their inventory, state and the hash of their
//! credential (docs/store.md, "Agents and jobs").
//!
//! An agent's id comes from its hardware: `agent-` and the lowest MAC's 12 hex digits, so a
//! machine that reboots into the rescue image again gets its id (and its running job) back; a
//! machine without a NIC gets a random id. Enrolling again replaces the credential. A credential
//! is `<agent id>.<64 hex>`: the id says which record holds its hash.

use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use ferry_format::agent::{AgentInfo, AgentState, EnrollReply, EnrollRequest, Inventory};
use ferry_format::names::{check_name, NameKind};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, StoreError};
use crate::fsx::{self, FileLock, LockMode};
use crate::snapshots::rfc3339;
use crate::tokens::hash_token;
use crate::Store;

/// The stored record: what `appliance agents` shows, and the credential's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    pub info: AgentInfo,
    /// Lowercase hex BLAKE3 of the credential's text.
    pub credential_hash: String,
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

impl Store {
    pub fn agents_dir(&self) -> PathBuf {
        self.root().join("agents")
    }

    fn agent_path(&self, id: &str) -> PathBuf {
        self.agents_dir().join(format!("{id}.json"))
    }

    /// Serialises read-modify-write of agent records between threads and processes.
    pub(crate) fn lock_agents(&self) -> Result<FileLock> {
        fsx::create_dir_all(&self.agents_dir())?;
        FileLock::acquire(&self.agents_dir().join(".lock"), LockMode::Exclusive)
    }

    /// Record (or refresh) an agent and issue it a new credential; binds waiting jobs created for
    /// one of its MACs to it.
    pub fn enroll_agent(&self, req: &EnrollRequest, now: SystemTime) -> Result<EnrollReply> {
        for d in &req.inventory.disks {
            check_name(NameKind::Disk, &d.name)?;
        }
        let id = match agent_id_for(&req.inventory) {
            Some(id) => id,
            None => format!("agent-{}", fsx::random_hex(6)?),
        };
        let credential = format!("{id}.{}", fsx::random_hex(32)?);
        {
            let _lock = self.lock_agents()?;
            let old = self.agent_record(&id).ok();
            let t = rfc3339(now);
            let rec = AgentRecord {
                info: AgentInfo {
                    agent: id.clone(),
                    version: req.version.clone(),
                    inventory: req.inventory.clone(),
                    enrolled: t.clone(),
                    last_seen: t,
                    state: AgentState::Waiting,
                    job: old.and_then(|o| o.info.job),
                },
                credential_hash: hash_token(&credential),
            };
            self.write_agent(&rec)?;
        }
        self.bind_mac_jobs(&id, &req.inventory.macs())?;
        Ok(EnrollReply {
            agent: id,
            credential,
        })
    }

    fn write_agent(&self, rec: &AgentRecord) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        fsx::write_atomic(&self.agent_path(&rec.info.agent), &bytes, 0o600)
    }

    pub fn agent_record(&self, id: &str) -> Result<AgentRecord> {
        check_name(NameKind::Agent, id)?;
        let path = self.agent_path(id);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(format!(
                    "no agent {id} has enrolled: see `appliance agents`"
                ))
            } else {
                io_err("read", &path)(e)
            }
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Invalid(format!("parse {}: {e}", path.display())))
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
            Ok(rec) if rec.credential_hash == hash_token(credential) => Ok(Some(rec.info)),
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
        for id in fsx::json_record_ids(&self.agents_dir())? {
            let id = id.as_str();
            let name = format!("{id}.json");
            match self.agent_record(id) {
                Ok(rec) => out.push(rec.info),
                Err(e) => tracing::warn!("skipping agent record {name}: {e}"),
            }
        }
        out.sort_by(|a, b| a.agent.cmp(&b.agent));
        Ok(out)
    }
}
