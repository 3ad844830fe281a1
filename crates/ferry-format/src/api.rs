//! Messages of the appliance's HTTPS API, version 1 (see docs/protocol.md).
//!
//! Every request carries `Authorization: Bearer TOKEN`. Errors come back as [`ErrorBody`] with an
//! HTTP status; binary bodies (chunks, indexes) are `application/octet-stream`.

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkId;
use crate::consistency::Consistency;
use crate::manifest::{DiskManifest, OsFacts};
use crate::network::NetworkConfig;

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
    /// Only `GET /metrics`: what a monitoring system scrapes with.
    Metrics,
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
            Role::Metrics => "metrics",
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
            "metrics" => Ok(Role::Metrics),
            _ => Err(format!(
                "unknown role {s:?}: use backup, restore, admin, enroll or metrics"
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
    /// How the disks were read; an agent that does not say is recorded as `unknown`.
    #[serde(default)]
    pub consistency: Consistency,
    /// The source's network configuration, copied into the manifest (checked there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
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
    /// The manifest's record of how the disks were read (`unknown` for older snapshots).
    #[serde(default)]
    pub consistency: Consistency,
}

/// Which machines a backup or restore token may write or read.
///
/// A pattern is a machine name in which `*` stands for any run of characters (`web*`,
/// `*.example.com`); there are no other wildcards. A token without a list (older tokens.json
/// records, `--all-machines`, admin tokens) reaches every machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MachineScope {
    All,
    /// At least one pattern, each checked by [`check_machine_pattern`].
    Only(Vec<String>),
}

impl MachineScope {
    /// The scope of a record's `machines` field: absent means every machine.
    pub fn from_patterns(machines: Option<&[String]>) -> MachineScope {
        match machines {
            None => MachineScope::All,
            Some(p) => MachineScope::Only(p.to_vec()),
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, MachineScope::All)
    }

    pub fn allows(&self, machine: &str) -> bool {
        match self {
            MachineScope::All => true,
            MachineScope::Only(patterns) => patterns.iter().any(|p| glob_match(p, machine)),
        }
    }
}

impl std::fmt::Display for MachineScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MachineScope::All => f.write_str("all machines"),
            MachineScope::Only(p) => f.write_str(&p.join(",")),
        }
    }
}

/// A machine pattern: a machine name (docs/format.md) where `*` may stand for any characters.
pub fn check_machine_pattern(pattern: &str) -> Result<(), String> {
    let ok = !pattern.is_empty()
        && pattern.len() <= 64
        && pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b))
        && !pattern.starts_with(['.', '-', '_']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "machine pattern {pattern:?} is not a machine name or a pattern: use 1-64 letters, \
             digits, '.', '_', '-' and '*' (any characters), e.g. web01 or web*"
        ))
    }
}

/// `*` matches any run of characters (also none); every other byte matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was and how much of `name` it has swallowed so far (backtracking
    // to it is enough for patterns with only `*`: linear in practice, never exponential).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether a token is accepted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

/// One row of `appliance token list --json`. Never carries the token or its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInfo {
    /// Public id (`tok-<12 hex>`) for listing and revoking; not derivable into the token.
    pub id: String,
    pub role: Role,
    #[serde(default)]
    pub name: Option<String>,
    /// Machine patterns the token may write (backup) or read (restore); `null`: every machine.
    #[serde(default)]
    pub machines: Option<Vec<String>>,
    /// RFC 3339 UTC.
    pub created: String,
    #[serde(default)]
    pub expires: Option<String>,
    /// RFC 3339 UTC, recorded at most once a minute.
    #[serde(default)]
    pub last_used: Option<String>,
    #[serde(default)]
    pub revoked: Option<String>,
    pub state: TokenState,
}

/// A duration as operators write it: `90s`, `15m`, `12h`, `30d`, `2w` (a bare number is
/// seconds). Returns seconds.
pub fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        Some((i, 'w')) => (&s[..i], 7 * 86_400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{text:?} is not a duration: use e.g. 90s, 15m, 12h, 30d or 2w"))
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell_star() {
        let cases = [
            ("web01", "web01", true),
            ("web01", "web011", false),
            ("web*", "web01", true),
            ("web*", "web", true),
            ("web*", "db01", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "example.com", false),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*01", "web01", true),
            ("*01", "web02", false),
            ("w*b*", "wbb", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn scopes_allow_only_their_machines() {
        let s = MachineScope::Only(vec!["web*".into(), "db01".into()]);
        assert!(s.allows("web7") && s.allows("db01"));
        assert!(!s.allows("db02") && !s.allows("mail"));
        assert!(MachineScope::All.allows("db02"));
        assert_eq!(s.to_string(), "web*,db01");
    }

    #[test]
    fn patterns_are_names_with_stars() {
        for good in ["web01", "web*", "*", "*.example.com", "a-b_c*"] {
            assert!(check_machine_pattern(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "web?", "-x", ".x", "a b", &"x".repeat(65)] {
            assert!(check_machine_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_units_up_to_weeks() {
        assert_eq!(parse_duration_secs("90"), Ok(90));
        assert_eq!(parse_duration_secs("15m"), Ok(900));
        assert_eq!(parse_duration_secs("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration_secs("2w"), Ok(14 * 86_400));
        assert!(parse_duration_secs("1y").is_err());
        assert!(parse_duration_secs("d").is_err());
        assert!(parse_duration_secs("99999999999999999999w").is_err());
    }
}
