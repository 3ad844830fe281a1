//! A standby that rebooted between applies: recognised by proof of possession, not by its MAC.
//!
//! An idle standby's disks hold the snapshot it last applied and no in-progress marker, so a
//! new boot enrolls as a stranger (its old id is held by its approved record). When the new
//! enrollment shares a MAC with the standby of a syncing migration and shows the mapped disks
//! with the same size, serial, WWN and model, [`Store::standby_challenge`] asks it for the keyed
//! BLAKE3 of up to [`MAX_CHALLENGE_RANGES`] data chunks of that snapshot, picked at random over
//! its disks (at most [`CHALLENGE_PROBES`] index entries read: enrolling is open to anyone
//! holding the site image). The MAC and the disk identities only select whom to ask (both can
//! be copied); the answer needs the data. [`Store::prove_standby`] checks the answers against
//! the stored chunks, once per challenge and within [`CHALLENGE_TTL`]; a good proof approves
//! the agent, binds the standby job to it with a new marker proof, retires the old record's
//! credential and moves the migration (history `rebound`; the basis forgotten until the next
//! apply, a full seeded sync, reports one).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ferry_format::agent::{
    challenge_answer, challenge_key, AgentState, Approval, ApprovedBy, ChallengeRange, Disk,
    Inventory, JobState, MapTarget, StandbyChallenge, StandbyProof, StandbyProven,
    MAX_CHALLENGE_RANGES,
};
use ferry_format::index::{Entry, IndexHeader};
use ferry_format::marker::proof_hash;
use ferry_format::ChunkId;
use serde::{Deserialize, Serialize};

use crate::agents::constant_time_eq;
use crate::chunks::decode_chunk;
use crate::error::{io_err, Result, StoreError};
use crate::fsx;
use crate::snapshots::rfc3339;
use crate::tokens::parse_rfc3339;
use crate::Store;

use super::record::{MigrationRecord, MigrationState};

/// Index entries read at most to pick a challenge's chunks (each 32 bytes at a random
/// place): a disk whose entries are 1 % data still yields about 5 chunks.
pub const CHALLENGE_PROBES: usize = 512;

/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(600);

/// A challenge as the appliance keeps it (in the new agent's record), with the chunk behind
/// each range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingChallenge {
    pub migration: String,
    pub job: String,
    /// The agent the standby job was bound to when the challenge was issued.
    pub from: String,
    pub snapshot: String,
    pub nonce: String,
    /// RFC 3339 UTC.
    pub issued: String,
    /// Every mapped (snapshot disk, device).
    pub disks: Vec<(String, String)>,
    pub ranges: Vec<PendingRange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRange {
    /// The snapshot disk.
    pub disk: String,
    pub device: String,
    pub offset: u64,
    pub len: u64,
    pub chunk: ChunkId,
}

impl PendingChallenge {
    /// What the agent is sent.
    pub fn public(&self) -> StandbyChallenge {
        StandbyChallenge {
            migration: self.migration.clone(),
            nonce: self.nonce.clone(),
            ranges: self
                .ranges
                .iter()
                .map(|r| ChallengeRange {
                    device: r.device.clone(),
                    offset: r.offset,
                    len: r.len,
                })
                .collect(),
        }
    }
}

/// The same physical disk as far as an inventory can tell.
fn same_disk(a: &Disk, b: &Disk) -> bool {
    (a.size, &a.serial, &a.wwn, &a.model) == (b.size, &b.serial, &b.wwn, &b.model)
}

fn shares_mac(a: &Inventory, b: &Inventory) -> bool {
    a.nics.iter().any(|n| {
        n.mac != "00:00:00:00:00:00" && b.nics.iter().any(|m| m.mac.eq_ignore_ascii_case(&n.mac))
    })
}

/// Uniform random numbers from a random key (BLAKE3 in XOF mode: one `getrandom` per
/// challenge, not per index entry).
struct Draw(blake3::OutputReader);

impl Draw {
    fn new() -> Result<Draw> {
        let seed: [u8; 32] = fsx::random_bytes(32)?
            .try_into()
            .map_err(|_| StoreError::Key("the random source gave a short seed".into()))?;
        Ok(Draw(
            blake3::Hasher::new_keyed(&seed)
                .update(b"ferry standby challenge")
                .finalize_xof(),
        ))
    }

    /// In `0..n` (n > 0); the modulo bias is below 2^-40 for any index size.
    fn below(&mut self, n: u64) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b) % n
    }
}

impl Store {
    /// The challenge for an enrollment that may be a rebooted standby (see the module docs),
    /// or `None`. Called holding the jobs, migrations and agents locks.
    pub(crate) fn standby_challenge(
        &self,
        inv: &Inventory,
        now: SystemTime,
    ) -> Result<Option<PendingChallenge>> {
        for m in self.list_migrations()? {
            if m.state != MigrationState::Syncing {
                continue;
            }
            let Some(disks) = self.standby_disks(&m, inv)? else {
                continue;
            };
            let Some(snapshot) = m.standby.basis.clone() else {
                continue;
            };
            let ranges = self.sample_chunks(&snapshot, &disks)?;
            if ranges.is_empty() {
                continue; // an all-zero snapshot proves nothing
            }
            tracing::info!(
                "an enrollment shares a MAC and disks with the standby of migration {}: asked to prove it holds {snapshot}",
                m.id
            );
            return Ok(Some(PendingChallenge {
                migration: m.id.clone(),
                job: m.job.clone(),
                from: m.agent.clone(),
                snapshot,
                nonce: fsx::random_hex(32)?,
                issued: rfc3339(now),
                disks,
                ranges,
            }));
        }
        Ok(None)
    }

    /// (snapshot disk, device) of `m`'s standby when `inv` shares a MAC with its agent and
    /// has each mapped disk, the same as the agent enrolled with.
    fn standby_disks(
        &self,
        m: &MigrationRecord,
        inv: &Inventory,
    ) -> Result<Option<Vec<(String, String)>>> {
        let job = match self.job(&m.job) {
            Ok(j) => j,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        if job.state != JobState::Running || job.agent.as_deref() != Some(m.agent.as_str()) {
            return Ok(None);
        }
        let old = match self.agent_record(&m.agent) {
            Ok(r) => r.info.inventory,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        if !shares_mac(&old, inv) {
            return Ok(None);
        }
        let Some(resolved) = &job.resolved else {
            return Ok(None);
        };
        let mut disks = Vec::new();
        for map in resolved {
            let MapTarget::Device(dev) = &map.target else {
                return Ok(None);
            };
            match (old.disk(dev), inv.disk(dev)) {
                (Some(a), Some(b)) if same_disk(a, b) => {
                    disks.push((map.disk.clone(), dev.clone()))
                }
                _ => return Ok(None),
            }
        }
        Ok((!disks.is_empty()).then_some(disks))
    }

    /// Up to [`MAX_CHALLENGE_RANGES`] distinct data chunks of `snapshot`'s `disks`, uniformly
    /// at random: random entries of the indexes are read until enough are data or
    /// [`CHALLENGE_PROBES`] were read. Bounded work whatever the index size, because anyone
    /// holding the site image can trigger it by enrolling (and it runs under the store's locks).
    fn sample_chunks(
        &self,
        snapshot: &str,
        disks: &[(String, String)],
    ) -> Result<Vec<PendingRange>> {
        let mut indexes = Vec::new();
        let mut total: u64 = 0;
        for (disk, device) in disks {
            let file = self.open_snapshot_index(snapshot, disk)?;
            let path = PathBuf::from(format!("snapshot {snapshot}, index of disk {disk}"));
            let mut head = [0u8; IndexHeader::LEN];
            file.read_exact_at(&mut head, 0)
                .map_err(io_err("read", &path))?;
            let header = IndexHeader::decode(&head)?;
            total += header.count;
            indexes.push((disk, device, file, path, header));
        }
        let mut draw = Draw::new()?;
        let mut picked: Vec<PendingRange> = Vec::new();
        for _ in 0..CHALLENGE_PROBES {
            if picked.len() == MAX_CHALLENGE_RANGES || total == 0 {
                break;
            }
            // An entry of all the disks' entries, uniformly; then which disk holds it.
            let mut i = draw.below(total);
            let Some((disk, device, file, path, header)) = indexes.iter().find(|x| {
                let inside = i < x.4.count;
                if !inside {
                    i -= x.4.count;
                }
                inside
            }) else {
                break;
            };
            let mut raw = [0u8; 32];
            file.read_exact_at(&mut raw, IndexHeader::LEN as u64 + 32 * i)
                .map_err(io_err("read", path))?;
            let Entry::Data(chunk) = Entry::from_raw(raw) else {
                continue;
            };
            let cs = u64::from(header.chunk_size);
            let offset = i * cs;
            if picked
                .iter()
                .any(|r| r.disk == **disk && r.offset == offset)
            {
                continue;
            }
            picked.push(PendingRange {
                disk: (*disk).clone(),
                device: (*device).clone(),
                offset,
                len: (header.disk_size - offset).min(cs),
                chunk,
            });
        }
        Ok(picked)
    }

    /// Check `agent`'s answers to its challenge; bind the standby to it when they are right.
    /// The challenge is used up either way.
    pub fn prove_standby(
        &self,
        agent: &str,
        proof: &StandbyProof,
        now: SystemTime,
    ) -> Result<StandbyProven> {
        let ch = {
            let _agents = self.lock_agents()?;
            let mut rec = self.agent_record(agent)?;
            let ch = rec.challenge.take().ok_or_else(|| {
                StoreError::Refused(format!(
                    "agent {agent} has no standby challenge to answer (each is answered once): restart the rescue system to enroll again"
                ))
            })?;
            self.write_agent(&rec)?;
            ch
        };
        let refuse = |why: String| {
            tracing::warn!(
                "agent {agent}: standby proof for migration {} refused: {why}",
                ch.migration
            );
            StoreError::Refused(format!(
                "the standby proof for migration {} is refused: {why}; nothing changed (the operator can approve this agent and create the migration again)",
                ch.migration
            ))
        };
        if proof.migration != ch.migration {
            return Err(refuse(format!("it names migration {}", proof.migration)));
        }
        let issued = parse_rfc3339(&ch.issued).unwrap_or(SystemTime::UNIX_EPOCH);
        if now.duration_since(issued).unwrap_or_default() > CHALLENGE_TTL {
            return Err(refuse(format!(
                "it came more than {} s after the challenge",
                CHALLENGE_TTL.as_secs()
            )));
        }
        let key = challenge_key(&ch.nonce).ok_or_else(|| refuse("a bad nonce".into()))?;
        if proof.answers.len() != ch.ranges.len() {
            return Err(refuse(format!(
                "{} answers for {} ranges",
                proof.answers.len(),
                ch.ranges.len()
            )));
        }
        for (r, answer) in ch.ranges.iter().zip(&proof.answers) {
            let frame = self.read_chunk(&r.chunk)?;
            let data = decode_chunk(&r.chunk, &frame)
                .map_err(|f| StoreError::BadChunk(format!("chunk {}: {f}", r.chunk)))?;
            let want = challenge_answer(&key, &data);
            if !constant_time_eq(want.as_bytes(), answer.as_bytes()) {
                return Err(refuse(format!(
                    "/dev/{} at offset {} does not hold disk {} of {}",
                    r.device, r.offset, r.disk, ch.snapshot
                )));
            }
        }
        self.bind_proven_standby(agent, &ch, now)
    }

    /// The binding step of [`Store::prove_standby`], when nothing moved since the challenge.
    fn bind_proven_standby(
        &self,
        agent: &str,
        ch: &PendingChallenge,
        now: SystemTime,
    ) -> Result<StandbyProven> {
        let _jobs = self.lock_jobs()?;
        let _migrations = self.lock_migrations()?;
        let _agents = self.lock_agents()?;
        let moved = || {
            StoreError::Conflict(format!(
                "migration {} changed since the challenge (its standby, job or basis): nothing changed; restart the rescue system to enroll again",
                ch.migration
            ))
        };
        let m = self.migration(&ch.migration).map_err(|_| moved())?;
        let mut job = self.job(&ch.job)?;
        let still = m.state == MigrationState::Syncing
            && m.agent == ch.from
            && m.job == ch.job
            && m.standby.basis.as_deref() == Some(ch.snapshot.as_str())
            && job.state == JobState::Running
            && job.agent.as_deref() == Some(ch.from.as_str());
        if !still {
            return Err(moved());
        }
        let proof = fsx::random_hex(32)?;
        job.agent = Some(agent.to_string());
        job.proof_hash = Some(proof_hash(&proof));
        self.write_job(&job)?;
        if let Ok(mut old) = self.agent_record(&ch.from) {
            old.credential_hash.clear();
            old.info.state = AgentState::Failed;
            self.write_agent(&old)?;
        }
        let mut rec = self.agent_record(agent)?;
        rec.info.approved = Some(Approval {
            time: rfc3339(now),
            by: ApprovedBy::StandbyProof {
                migration: ch.migration.clone(),
            },
        });
        rec.info.state = AgentState::Running;
        rec.info.job = Some(job.id.clone());
        self.write_agent(&rec)?;
        self.standby_rebound(&job.id, Some(&ch.from), agent, now)?;
        tracing::info!(
            "agent {agent} proved its disks hold {} of migration {}: approved, standby job {} bound to it",
            ch.snapshot,
            ch.migration,
            job.id
        );
        Ok(StandbyProven {
            job: job.id,
            snapshot: ch.snapshot.clone(),
            proof,
            disks: ch.disks.clone(),
        })
    }
}
