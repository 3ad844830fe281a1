//! The first-boot beacon (docs/migration.md, "Cutover" step 2): a one-shot program the fix-up
//! installs in the restored system that tells the appliance, once, that the system came up with
//! its network.
//!
//! - [`BeaconConfig`]: `/etc/ferry/beacon.conf` in the restored system (JSON, mode 0600): where
//!   the appliance is, the CA it pins, the job and its one-time credential. Written by the
//!   fix-up, read by the beacon, bounded and checked before use.
//! - The credential is `beacon-<job id>.<64 hex>`; the appliance keeps only its hash. It is good
//!   for `POST /beacon` of that job, once (then 410), and for nothing else.
//! - [`BeaconIssued`]: what the agent's fix-up gets from `POST /agents/{id}/jobs/{job}/beacon`.
//! - [`BeaconReport`] / [`BeaconReply`]: the body and answer of `POST /beacon`;
//!   [`BeaconRecord`]: what the appliance keeps per job (`jobs/<id>.beacon`).

use serde::{Deserialize, Serialize};

use crate::names::{check_name, NameKind};

/// Prefix of a beacon credential.
pub const CREDENTIAL_PREFIX: &str = "beacon-";
/// Largest beacon.conf accepted (a CA bundle is a few KiB).
pub const MAX_CONFIG_BYTES: usize = 64 << 10;
/// Longest appliance URL.
const MAX_URL: usize = 2048;
/// Longest hostname a report may carry (DNS's limit).
pub const MAX_HOSTNAME: usize = 253;

/// The one-time credential of `job`'s beacon, from its 32 random bytes as hex.
pub fn credential(job: &str, secret_hex: &str) -> String {
    format!("{CREDENTIAL_PREFIX}{job}.{secret_hex}")
}

/// The job a well-formed beacon credential names; `None` for anything else (another kind of
/// token, or a malformed one).
pub fn credential_job(credential: &str) -> Option<&str> {
    let rest = credential.strip_prefix(CREDENTIAL_PREFIX)?;
    let (job, secret) = rest.rsplit_once('.')?;
    let hex_ok = secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_ok && check_name(NameKind::Job, job).is_ok()).then_some(job)
}

/// Why a beacon.conf was refused. Each names the field and what to check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BeaconConfigError {
    #[error("beacon.conf is {0} bytes, more than the {MAX_CONFIG_BYTES} accepted: it is not a file the fix-up wrote")]
    TooLarge(usize),
    #[error("parse beacon.conf: {0}: it must be the JSON object the fix-up wrote")]
    Syntax(String),
    #[error("beacon.conf field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
}

/// `/etc/ferry/beacon.conf`: everything the beacon needs, nothing else.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconConfig {
    /// The appliance's base URL, `https://host:port`.
    pub url: String,
    /// The restore job whose boot this reports.
    pub job: String,
    /// `beacon-<job>.<64 hex>`: one use, `POST /beacon` only.
    pub credential: String,
    /// The appliance's ca.pem: its CA certificate(s) and manifest signing key, PEM.
    pub ca_pem: String,
}

/// The credential stays out of logs and `{:?}`.
impl std::fmt::Debug for BeaconConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeaconConfig")
            .field("url", &self.url)
            .field("job", &self.job)
            .field("credential", &"<secret>")
            .finish_non_exhaustive()
    }
}

impl BeaconConfig {
    /// Parse and check a beacon.conf (hostile input: it is read from a disk).
    pub fn parse(text: &str) -> Result<BeaconConfig, BeaconConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(BeaconConfigError::TooLarge(text.len()));
        }
        let c: BeaconConfig =
            serde_json::from_str(text).map_err(|e| BeaconConfigError::Syntax(e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// The file's text (checked first, so a written file always parses).
    pub fn to_text(&self) -> Result<String, BeaconConfigError> {
        self.check()?;
        let mut s = serde_json::to_string_pretty(self)
            .map_err(|e| BeaconConfigError::Syntax(e.to_string()))?;
        s.push('\n');
        if s.len() > MAX_CONFIG_BYTES {
            return Err(BeaconConfigError::TooLarge(s.len()));
        }
        Ok(s)
    }

    fn check(&self) -> Result<(), BeaconConfigError> {
        let bad = |field, problem: &str| {
            Err(BeaconConfigError::Field {
                field,
                problem: problem.to_string(),
            })
        };
        let host = self.url.strip_prefix("https://").unwrap_or("");
        if host.is_empty() || self.url.len() > MAX_URL || self.url.chars().any(char::is_whitespace)
        {
            return bad(
                "url",
                "must be https://HOST[:PORT] (at most 2048 characters, no spaces)",
            );
        }
        if check_name(NameKind::Job, &self.job).is_err() {
            return bad("job", "is not a job id (job-<hex>)");
        }
        if credential_job(&self.credential) != Some(self.job.as_str()) {
            return bad(
                "credential",
                "is not this job's beacon credential (beacon-<job>.<64 hex>)",
            );
        }
        if !self.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return bad(
                "ca_pem",
                "holds no CERTIFICATE block: it must be the appliance's ca.pem",
            );
        }
        Ok(())
    }
}

/// `POST /beacon` body: who is reporting. The job comes from the credential; the appliance
/// records the address it sees the request from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconReport {
    /// Must be the credential's job.
    pub job: String,
    /// The restored system's hostname (at most [`MAX_HOSTNAME`] characters).
    pub hostname: String,
}

/// `POST /agents/{id}/jobs/{job}/beacon` answer: a new one-time credential for the job's beacon
/// (the previous one, if any, stops working).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconIssued {
    pub job: String,
    pub credential: String,
}

impl std::fmt::Debug for BeaconIssued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeaconIssued")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// `POST /beacon` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconReply {
    pub job: String,
    /// When the appliance received the report, RFC 3339 UTC.
    pub booted: String,
}

/// The appliance's record of a job's beacon (`jobs/<id>.beacon`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconRecord {
    /// Hash of the credential handed out last; only that one is good.
    pub credential_hash: String,
    /// When the credential was issued, RFC 3339 UTC.
    pub issued: String,
    /// When the beacon reported, RFC 3339 UTC; set once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted: Option<String>,
    /// The address the report came from (`ip:port` as the appliance saw it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The hostname the restored system reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// A reported hostname made safe to store and print: printable ASCII without spaces, bounded.
pub fn clean_hostname(h: &str) -> String {
    h.trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(MAX_HOSTNAME)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "job-0011aabb";

    fn config() -> BeaconConfig {
        BeaconConfig {
            url: "https://10.0.2.2:8443".into(),
            job: JOB.into(),
            credential: credential(JOB, &"ab".repeat(32)),
            ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        }
    }

    #[test]
    fn config_round_trips_and_hides_its_secret() {
        let c = config();
        let text = c.to_text().unwrap();
        assert_eq!(BeaconConfig::parse(&text).unwrap(), c);
        assert!(!format!("{c:?}").contains(&"ab".repeat(32)));
    }

    #[test]
    fn config_refuses_what_it_cannot_use() {
        let field = |f: fn(&mut BeaconConfig)| {
            let mut c = config();
            f(&mut c);
            let text = serde_json::to_string(&c).unwrap();
            match BeaconConfig::parse(&text) {
                Err(BeaconConfigError::Field { field, .. }) => field,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(field(|c| c.url = "http://x:1".into()), "url");
        assert_eq!(field(|c| c.url = "https://".into()), "url");
        assert_eq!(field(|c| c.url = "https://a b".into()), "url");
        assert_eq!(
            field(|c| c.url = format!("https://{}", "a".repeat(3000))),
            "url"
        );
        assert_eq!(field(|c| c.job = "../etc".into()), "job");
        assert_eq!(
            field(|c| c.credential = credential("job-ffffffff", &"ab".repeat(32))),
            "credential"
        );
        assert_eq!(
            field(|c| c.credential = credential(JOB, "abcd")),
            "credential"
        );
        assert_eq!(field(|c| c.ca_pem = "nothing".into()), "ca_pem");
        assert!(matches!(
            BeaconConfig::parse("{"),
            Err(BeaconConfigError::Syntax(_))
        ));
        let extra = config().to_text().unwrap().replacen('{', "{\"x\":1,", 1);
        assert!(matches!(
            BeaconConfig::parse(&extra),
            Err(BeaconConfigError::Syntax(_))
        ));
        let huge = " ".repeat(MAX_CONFIG_BYTES + 1);
        assert_eq!(
            BeaconConfig::parse(&huge),
            Err(BeaconConfigError::TooLarge(MAX_CONFIG_BYTES + 1))
        );
    }

    #[test]
    fn credential_names_its_job_or_nothing() {
        let secret = "0f".repeat(32);
        assert_eq!(credential_job(&credential(JOB, &secret)), Some(JOB));
        for bad in [
            "",
            "beacon-",
            "agent-525400123456.abcd",
            &format!("beacon-{JOB}.{}", "zz".repeat(32)),
            &format!("beacon-{JOB}.{}", "0f".repeat(31)),
            &format!("beacon-../x.{secret}"),
            &format!("src-web1.{secret}"),
        ] {
            assert_eq!(credential_job(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostnames_are_bounded_and_printable() {
        assert_eq!(clean_hostname(" web1\n"), "web1");
        assert_eq!(clean_hostname("a\u{1b}[31mb c"), "a[31mbc");
        assert_eq!(clean_hostname(&"x".repeat(1000)).len(), MAX_HOSTNAME);
    }
}
