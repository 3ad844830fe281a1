//! `jobs/<id>.beacon`: a restore job's first-boot beacon (docs/store.md, "Agents and jobs";
//! docs/migration.md, "Cutover").
//!
//! The agent's fix-up asks for a one-time credential for its running job when it installs the
//! beacon in the restored system ([`Store::issue_beacon`]); the record keeps only its BLAKE3 hash
//! (like agent and source credentials). Asking again replaces it: only the credential installed
//! last is good. The beacon reports once ([`Store::record_beacon`]): the record gains `booted`,
//! the reporter's address and hostname, and the credential is spent (a second report is
//! [`BeaconUse::AlreadyUsed`]). Every read-modify-write holds the jobs lock. A record of
//! [`Collection::Beacons`], keyed by the job: that file, or a row in PostgreSQL.

use std::time::SystemTime;

use ferry_format::agent::beacon::{self, BeaconRecord, BeaconReport};
use ferry_format::agent::JobState;
use ferry_format::names::{check_name, NameKind};

use crate::agents::constant_time_eq;
use crate::error::{Result, StoreError};
use crate::fsx;
use crate::meta::Collection;
use crate::snapshots::rfc3339;
use crate::tokens::hash_token;
use crate::Store;

/// What a beacon's report came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeaconUse {
    /// The first report: the record as now stored.
    Recorded(BeaconRecord),
    /// The credential was good but has been used: the record as stored.
    AlreadyUsed(BeaconRecord),
    /// Not the credential of any job's beacon (unknown, malformed or replaced).
    Unknown,
}

impl Store {
    /// A job's beacon record, if a credential was ever issued for it.
    pub fn beacon(&self, job: &str) -> Result<Option<BeaconRecord>> {
        check_name(NameKind::Job, job)?;
        let Some(bytes) = self.records().get(Collection::Beacons, job)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Invalid(format!("parse the beacon record of job {job}: {e}")))
    }

    fn write_beacon(&self, job: &str, rec: &BeaconRecord) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        self.records().put(Collection::Beacons, job, &bytes)
    }

    /// A new one-time beacon credential for `agent`'s running job `job`; the previous one, if
    /// any, stops working. Refused once the job's beacon has reported.
    pub fn issue_beacon(&self, agent: &str, job: &str, now: SystemTime) -> Result<String> {
        let _lock = self.lock_jobs()?;
        let rec = self.job(job)?;
        if rec.agent.as_deref() != Some(agent) {
            return Err(StoreError::NotFound(format!(
                "agent {agent} has no job {job}"
            )));
        }
        if rec.state != JobState::Running {
            return Err(StoreError::Conflict(format!(
                "job {job} is {}: a beacon credential is issued only while the job runs",
                rec.state.name()
            )));
        }
        if let Some(b) = self.beacon(job)?.filter(|b| b.booted.is_some()) {
            return Err(StoreError::Conflict(format!(
                "the beacon of job {job} already reported at {}: create a new job to restore again",
                b.booted.as_deref().unwrap_or("?")
            )));
        }
        let credential = beacon::credential(job, &fsx::random_hex(32)?);
        self.write_beacon(
            job,
            &BeaconRecord {
                credential_hash: hash_token(&credential),
                issued: rfc3339(now),
                booted: None,
                address: None,
                hostname: None,
            },
        )?;
        Ok(credential)
    }

    /// Record a beacon's report: once per credential. `address` is where the request came from.
    pub fn record_beacon(
        &self,
        credential: &str,
        report: &BeaconReport,
        address: &str,
        now: SystemTime,
    ) -> Result<BeaconUse> {
        let Some(job) = beacon::credential_job(credential) else {
            return Ok(BeaconUse::Unknown);
        };
        let _lock = self.lock_jobs()?;
        let Some(mut rec) = self.beacon(job)? else {
            return Ok(BeaconUse::Unknown);
        };
        if !constant_time_eq(
            rec.credential_hash.as_bytes(),
            hash_token(credential).as_bytes(),
        ) {
            return Ok(BeaconUse::Unknown);
        }
        if report.job != job {
            return Err(StoreError::Invalid(format!(
                "the report names job {:?} but the credential is job {job}'s",
                report.job
            )));
        }
        if rec.booted.is_some() {
            return Ok(BeaconUse::AlreadyUsed(rec));
        }
        rec.booted = Some(rfc3339(now));
        rec.address = Some(address.to_string());
        rec.hostname = Some(beacon::clean_hostname(&report.hostname));
        self.write_beacon(job, &rec)?;
        Ok(BeaconUse::Recorded(rec))
    }
}
