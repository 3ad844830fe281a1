//! The in-progress marker: what an unattended restore writes at offset 0 of each target before it
//! changes any other byte of it, and what the snapshot's own first chunk replaces last of all.
//!
//! It is the proof that a disk holds *this job's* partial restore: a job that resumes after a
//! reboot or a network cut writes only onto a disk that is blank or carries the marker of that
//! job, never because the appliance says the job was running. The agent also shows the proof to
//! the appliance when it enrolls again (the appliance keeps only its hash), which is how a
//! rebooted machine gets its running job back without an operator and an impostor does not.
//!
//! Byte layout (frozen, docs/format.md "In-progress marker"), [`MARKER_LEN`] bytes at offset 0:
//! ```text
//! 0   32  magic "FERRY RESTORE IN PROGRESS\0\0\0\0\0\0\0"
//! 32  4   little-endian u32: length N of the JSON that follows (N <= MARKER_LEN - 36)
//! 36  N   JSON {"version":1,"job":...,"snapshot":...,"disk":...,"proof":...}
//! ...     zeros
//! ```
//! 4096 bytes cover the first sector of 512- and 4096-byte-sector disks: the marker destroys any
//! old MBR, protective MBR and primary GPT header, so a half-restored disk never boots.

use serde::{Deserialize, Serialize};

use crate::names::{check_name, NameKind};

/// Bytes the marker occupies at offset 0.
pub const MARKER_LEN: usize = 4096;
/// The first 32 bytes of a marker.
pub const MARKER_MAGIC: &[u8; 32] = b"FERRY RESTORE IN PROGRESS\0\0\0\0\0\0\0";
const HEADER: usize = 36;
const VERSION: u32 = 1;

/// One target's marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreMarker {
    pub version: u32,
    /// The job restoring onto this disk.
    pub job: String,
    pub snapshot: String,
    /// The snapshot disk being restored here.
    pub disk: String,
    /// 64 hex digits the appliance issued for this job; it keeps only their hash.
    pub proof: String,
}

impl RestoreMarker {
    pub fn new(job: &str, snapshot: &str, disk: &str, proof: &str) -> RestoreMarker {
        RestoreMarker {
            version: VERSION,
            job: job.into(),
            snapshot: snapshot.into(),
            disk: disk.into(),
            proof: proof.into(),
        }
    }

    /// The marker's [`MARKER_LEN`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Strings and a u32 always serialize; were it ever to fail, an empty JSON makes a marker
        // that does not decode, which every reader treats as data (fail closed, never a panic:
        // this runs in the rescue image's PID 1).
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = vec![0u8; MARKER_LEN];
        out[..32].copy_from_slice(MARKER_MAGIC);
        // Names are bounded (check_name: 64) and the proof is 64 hex: far below the limit.
        let n = json.len().min(MARKER_LEN - HEADER);
        out[32..36].copy_from_slice(&(n as u32).to_le_bytes());
        out[HEADER..HEADER + n].copy_from_slice(&json[..n]);
        out
    }

    /// `Ok(None)` when `head` (a disk's first bytes) does not start with the magic; an error when
    /// it does but the rest is not a marker this version writes.
    pub fn decode(head: &[u8]) -> Result<Option<RestoreMarker>, String> {
        if head.len() < HEADER || &head[..32] != MARKER_MAGIC {
            return Ok(None);
        }
        let n = u32::from_le_bytes([head[32], head[33], head[34], head[35]]) as usize;
        if n > MARKER_LEN - HEADER || head.len() < HEADER + n {
            return Err(format!("its JSON length {n} is out of range"));
        }
        let m: RestoreMarker = serde_json::from_slice(&head[HEADER..HEADER + n])
            .map_err(|e| format!("its JSON does not parse: {e}"))?;
        if m.version != VERSION {
            return Err(format!("version {} is not {VERSION}", m.version));
        }
        check_name(NameKind::Job, &m.job).map_err(|e| e.to_string())?;
        check_name(NameKind::Disk, &m.disk).map_err(|e| e.to_string())?;
        if m.proof.len() != 64 || !m.proof.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("its proof is not 64 hex digits".into());
        }
        Ok(Some(m))
    }

    /// Same job, disk and proof (the snapshot follows from the job).
    pub fn same_restore(&self, other: &RestoreMarker) -> bool {
        self.job == other.job && self.disk == other.disk && self.proof == other.proof
    }
}

/// Lowercase hex BLAKE3 of a proof: what the appliance stores.
pub fn proof_hash(proof: &str) -> String {
    blake3::hash(proof.as_bytes()).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> RestoreMarker {
        RestoreMarker::new(
            "job-0a1b2c3d",
            "web01-20261204T101010Z",
            "sda",
            &"ab".repeat(32),
        )
    }

    #[test]
    fn round_trips_and_fills_exactly_one_block() {
        let b = m().encode();
        assert_eq!(b.len(), MARKER_LEN);
        assert_eq!(RestoreMarker::decode(&b).unwrap(), Some(m()));
        assert!(m().same_restore(&RestoreMarker::decode(&b).unwrap().unwrap()));
    }

    #[test]
    fn other_bytes_are_not_a_marker_and_damaged_markers_are_errors() {
        assert_eq!(RestoreMarker::decode(&[0u8; 4096]).unwrap(), None);
        assert_eq!(RestoreMarker::decode(b"short").unwrap(), None);
        let mut b = m().encode();
        b[32] = 0xff;
        b[33] = 0xff;
        assert!(RestoreMarker::decode(&b).is_err());
        let mut b = m().encode();
        b[40] = b'!';
        assert!(RestoreMarker::decode(&b).is_err());
        let mut bad = m();
        bad.job = "../x".into();
        assert!(RestoreMarker::decode(&bad.encode()).is_err());
        bad = m();
        bad.proof = "zz".into();
        assert!(RestoreMarker::decode(&bad.encode()).is_err());
    }

    #[test]
    fn another_job_or_proof_is_not_the_same_restore() {
        let mut o = m();
        o.proof = "cd".repeat(32);
        assert!(!m().same_restore(&o));
        let mut o = m();
        o.job = "job-ffffffff".into();
        assert!(!m().same_restore(&o));
    }
}
