//! `tokens.json`: the API tokens, stored only as hashes (docs/store.md).
//!
//! A token is 32 random bytes in lowercase hex (64 characters). The file maps the lowercase
//! hex BLAKE3 of the token's text to its record: role, public id, optional name, the machines it
//! may reach, expiry, last use, revocation. Records written before those fields existed load
//! with the old behaviour: every machine, no expiry, an id derived from the hash.
//!
//! The table is one record of [`meta::Collection::Tokens`]: `tokens.json` in the store's
//! directory, or a row in PostgreSQL. Every read-modify-write holds the collection's lock
//! (`tokens.lock` locally): `token create`/`revoke` run in other processes (and nodes) than
//! `serve`, which records last use.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ferry_format::api::{check_machine_pattern, MachineScope, Role, TokenInfo, TokenState};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{io_err, Result, StoreError};
use crate::fsx;
use crate::meta::{self, Collection, Records, TOKENS_RECORD};
use crate::snapshots::rfc3339;
use crate::Store;

/// Prefix of a token's public id.
pub const TOKEN_ID_PREFIX: &str = "tok-";
/// Longest token name (`--name`).
pub const MAX_TOKEN_NAME: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Public id, `tok-<12 hex>`: random for new tokens; for records without one,
    /// [`legacy_id`] of the hash (filled in on load).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub role: Role,
    /// RFC 3339 UTC.
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Machine patterns (backup and restore tokens); absent: every machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machines: Option<Vec<String>>,
    /// RFC 3339 UTC; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// RFC 3339 UTC, written by `serve` at most once a minute per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
    /// RFC 3339 UTC of `appliance token revoke`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

impl TokenRecord {
    pub fn scope(&self) -> MachineScope {
        match self.role {
            Role::Backup | Role::Restore => MachineScope::from_patterns(self.machines.as_deref()),
            _ => MachineScope::All,
        }
    }

    /// Revoked wins over expired; an expiry that does not parse counts as expired (fail closed).
    pub fn state(&self, now: SystemTime) -> TokenState {
        if self.revoked.is_some() {
            return TokenState::Revoked;
        }
        match &self.expires {
            Some(e) if parse_rfc3339(e).is_none_or(|t| t <= now) => TokenState::Expired,
            _ => TokenState::Active,
        }
    }

    pub fn info(&self, now: SystemTime) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            role: self.role,
            name: self.name.clone(),
            machines: self.machines.clone(),
            created: self.created.clone(),
            expires: self.expires.clone(),
            last_used: self.last_used.clone(),
            revoked: self.revoked.clone(),
            state: self.state(now),
        }
    }
}

/// What `appliance token create` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    pub role: Role,
    /// Machine patterns; `None`: every machine (backup and restore only).
    pub machines: Option<Vec<String>>,
    pub expires: Option<SystemTime>,
    pub name: Option<String>,
}

impl NewToken {
    /// A token of `role` for every machine, without expiry or name.
    pub fn unscoped(role: Role) -> NewToken {
        NewToken {
            role,
            machines: None,
            expires: None,
            name: None,
        }
    }

    fn check(&self, now: SystemTime) -> Result<()> {
        let invalid = |m: String| Err(StoreError::Invalid(m));
        if let Some(machines) = &self.machines {
            if !matches!(self.role, Role::Backup | Role::Restore) {
                return invalid(format!(
                    "a {} token is not limited to machines: leave out --machine",
                    self.role.name()
                ));
            }
            if machines.is_empty() {
                return invalid("name at least one machine (--machine NAME or PATTERN)".into());
            }
            for m in machines {
                check_machine_pattern(m).map_err(StoreError::Invalid)?;
            }
        }
        if self.role == Role::Agent {
            return invalid("agent credentials come from enrollment, not tokens.json".into());
        }
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > MAX_TOKEN_NAME || name.chars().any(char::is_control)
            {
                return invalid(format!(
                    "token name {name:?}: use 1-{MAX_TOKEN_NAME} printable characters"
                ));
            }
        }
        if self.expires.is_some_and(|e| e <= now) {
            return invalid(
                "--expires is in the past: give a later time or a duration like 30d".into(),
            );
        }
        Ok(())
    }
}

/// A token just made: its text (shown once) and its public id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreatedToken {
    pub id: String,
    pub token: String,
}

/// Token hash (hex BLAKE3) -> record.
pub type TokenTable = BTreeMap<String, TokenRecord>;

pub fn hash_token(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// The id of a record written before tokens had ids: the first 12 hex digits of its hash (a
/// hash of 32 random bytes: revealing part of it reveals nothing of the token).
pub fn legacy_id(hash: &str) -> String {
    format!("{TOKEN_ID_PREFIX}{}", &hash[..hash.len().min(12)])
}

pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// `--expires`: a duration from now (`30d`, `12h`) or an RFC 3339 time.
pub fn parse_expiry(text: &str, now: SystemTime) -> Result<SystemTime> {
    if let Some(t) = parse_rfc3339(text) {
        return Ok(t);
    }
    let secs = ferry_format::api::parse_duration_secs(text).map_err(|e| {
        StoreError::Invalid(format!(
            "--expires {e}, or an RFC 3339 time (2027-01-31T00:00:00Z)"
        ))
    })?;
    Ok(now + Duration::from_secs(secs))
}

/// Read a tokens.json file (an absent file is an empty table). Records without an id get
/// [`legacy_id`].
pub fn load_tokens(path: &Path) -> Result<TokenTable> {
    match fs::read(path) {
        Ok(b) => parse_tokens(&b, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenTable::new()),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// The token table from its JSON (`what` names where it came from, for the error).
fn parse_tokens(bytes: &[u8], what: &str) -> Result<TokenTable> {
    let mut table: TokenTable = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Invalid(format!("parse {what}: {e}")))?;
    for (hash, rec) in table.iter_mut() {
        if rec.id.is_empty() {
            rec.id = legacy_id(hash);
        }
    }
    Ok(table)
}

/// The token table in `records` (empty if there is none).
pub fn read_tokens(records: &dyn Records) -> Result<TokenTable> {
    match records.get(Collection::Tokens, TOKENS_RECORD)? {
        Some(b) => parse_tokens(&b, &format!("the token table in {}", records.describe())),
        None => Ok(TokenTable::new()),
    }
}

/// Read-modify-write the token table under its lock; `f`'s error leaves it as it was.
fn update_tokens<T>(
    records: &dyn Records,
    f: impl FnOnce(&mut TokenTable) -> Result<T>,
) -> Result<T> {
    let _lock = records.lock(Collection::Tokens)?;
    let mut table = read_tokens(records)?;
    let out = f(&mut table)?;
    let bytes =
        serde_json::to_vec_pretty(&table).map_err(|e| StoreError::Invalid(e.to_string()))?;
    records.put(Collection::Tokens, TOKENS_RECORD, &bytes)?;
    Ok(out)
}

/// The records of the store rooted at `root` (its directory while it has no config.json yet).
fn records_at(root: &Path) -> Result<std::sync::Arc<dyn Records>> {
    if !root.join(crate::config::CONFIG_FILE).exists() {
        return Ok(std::sync::Arc::new(meta::LocalRecords::new(root)));
    }
    let cfg = crate::config::StoreConfig::load(root)?;
    meta::open_records(root, &cfg.records)
}

/// Create a token in the store rooted at `root`; its text is returned once and never stored.
pub fn create_token_with(root: &Path, new: &NewToken, now: SystemTime) -> Result<CreatedToken> {
    create_token_in(records_at(root)?.as_ref(), new, now)
}

/// [`create_token_with`] on a records backend already open (`init`, before config.json exists).
pub fn create_token_in(
    records: &dyn Records,
    new: &NewToken,
    now: SystemTime,
) -> Result<CreatedToken> {
    new.check(now)?;
    // Hex, not base64url: a token must never start with '-' (a command line would take it for
    // an option) and must survive copy-paste from a terminal.
    let token = hex::encode(fsx::random_bytes(32)?);
    update_tokens(records, |table| {
        let id = loop {
            let id = format!("{TOKEN_ID_PREFIX}{}", fsx::random_hex(6)?);
            if !table.values().any(|r| r.id == id) {
                break id;
            }
        };
        table.insert(
            hash_token(&token),
            TokenRecord {
                id: id.clone(),
                role: new.role,
                created: rfc3339(now),
                name: new.name.clone(),
                machines: new.machines.clone(),
                expires: new.expires.map(rfc3339),
                last_used: None,
                revoked: None,
            },
        );
        Ok(CreatedToken { id, token })
    })
}

/// Create an unscoped token for `role` (init's admin token, tests), returning its text.
pub fn create_token_at(root: &Path, role: Role, created: &str) -> Result<String> {
    let now = parse_rfc3339(created).unwrap_or_else(SystemTime::now);
    Ok(create_token_with(root, &NewToken::unscoped(role), now)?.token)
}

/// Mark the token with public id `id` revoked: from now on it gets 401.
pub fn revoke_token_at(root: &Path, id: &str, now: SystemTime) -> Result<TokenRecord> {
    revoke_token_in(records_at(root)?.as_ref(), id, now)
}

fn revoke_token_in(records: &dyn Records, id: &str, now: SystemTime) -> Result<TokenRecord> {
    update_tokens(records, |table| {
        let Some(rec) = table.values_mut().find(|r| r.id == id) else {
            return Err(StoreError::NotFound(format!(
                "there is no token {id}: see `appliance token list`"
            )));
        };
        if let Some(when) = &rec.revoked {
            return Err(StoreError::Conflict(format!(
                "token {id} was already revoked at {when}"
            )));
        }
        rec.revoked = Some(rfc3339(now));
        Ok(rec.clone())
    })
}

/// Record that the token with hash `hash` was used at `now` (the server calls this at most once
/// a minute per token). A token removed meanwhile is left alone.
pub fn record_token_use_at(root: &Path, hash: &str, now: SystemTime) -> Result<()> {
    record_token_use_in(records_at(root)?.as_ref(), hash, now)
}

fn record_token_use_in(records: &dyn Records, hash: &str, now: SystemTime) -> Result<()> {
    update_tokens(records, |table| {
        if let Some(rec) = table.get_mut(hash) {
            rec.last_used = Some(rfc3339(now));
        }
        Ok(())
    })
}

impl Store {
    pub fn create_token(&self, new: &NewToken, now: SystemTime) -> Result<CreatedToken> {
        create_token_in(self.records(), new, now)
    }

    pub fn revoke_token(&self, id: &str, now: SystemTime) -> Result<TokenRecord> {
        revoke_token_in(self.records(), id, now)
    }

    pub fn record_token_use(&self, hash: &str, now: SystemTime) -> Result<()> {
        record_token_use_in(self.records(), hash, now)
    }

    pub fn load_tokens(&self) -> Result<TokenTable> {
        read_tokens(self.records())
    }

    /// Changes whenever the token table is written (`None`: no table yet), so the server
    /// re-reads it only then.
    pub fn tokens_stamp(&self) -> Result<Option<String>> {
        self.records().stamp(Collection::Tokens, TOKENS_RECORD)
    }

    /// Every token for `token list`, oldest first.
    pub fn list_tokens(&self, now: SystemTime) -> Result<Vec<TokenInfo>> {
        let mut out: Vec<TokenInfo> = self.load_tokens()?.values().map(|r| r.info(now)).collect();
        out.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn old_records_load_as_unscoped_tokens_with_a_derived_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let hash = hash_token("old");
        fs::write(
            &path,
            format!(r#"{{"{hash}": {{"role": "backup", "created": "2025-01-01T00:00:00Z"}}}}"#),
        )
        .unwrap();
        let table = load_tokens(&path).unwrap();
        let rec = &table[&hash];
        assert_eq!(rec.id, legacy_id(&hash));
        assert_eq!(rec.scope(), MachineScope::All);
        assert_eq!(rec.state(SystemTime::now()), TokenState::Active);
    }

    #[test]
    fn states_follow_expiry_and_revocation() {
        let mut rec = TokenRecord {
            id: "tok-1".into(),
            role: Role::Restore,
            created: rfc3339(at(0)),
            name: None,
            machines: Some(vec!["web*".into()]),
            expires: Some(rfc3339(at(100))),
            last_used: None,
            revoked: None,
        };
        assert_eq!(rec.state(at(99)), TokenState::Active);
        assert_eq!(rec.state(at(100)), TokenState::Expired);
        rec.expires = Some("next tuesday".into());
        assert_eq!(rec.state(at(0)), TokenState::Expired);
        rec.expires = None;
        rec.revoked = Some(rfc3339(at(5)));
        assert_eq!(rec.state(at(0)), TokenState::Revoked);
        assert!(rec.scope().allows("web2") && !rec.scope().allows("db1"));
        rec.role = Role::Admin;
        assert!(rec.scope().is_all());
    }

    #[test]
    fn new_tokens_are_checked() {
        let now = at(1000);
        let mut t = NewToken::unscoped(Role::Admin);
        t.machines = Some(vec!["web01".into()]);
        assert!(t.check(now).is_err(), "admin tokens have no scope");
        t.role = Role::Backup;
        assert!(t.check(now).is_ok());
        t.machines = Some(vec![]);
        assert!(t.check(now).is_err());
        t.machines = Some(vec!["a/b".into()]);
        assert!(t.check(now).is_err());
        t.machines = None;
        t.expires = Some(at(999));
        assert!(t.check(now).is_err(), "already expired");
        t.expires = None;
        t.name = Some("x\ny".into());
        assert!(t.check(now).is_err());
    }

    #[test]
    fn expiry_takes_durations_and_times() {
        let now = at(1_700_000_000);
        assert_eq!(
            parse_expiry("30d", now).unwrap(),
            now + Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            parse_expiry("2023-11-14T22:13:21Z", now).unwrap(),
            now + Duration::from_secs(1)
        );
        assert!(parse_expiry("soon", now).is_err());
    }

    #[test]
    fn create_revoke_and_use_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let new = NewToken {
            role: Role::Backup,
            machines: Some(vec!["web*".into()]),
            expires: None,
            name: Some("web fleet".into()),
        };
        let made = create_token_with(dir.path(), &new, now).unwrap();
        assert!(made.id.starts_with(TOKEN_ID_PREFIX) && made.id.len() == 16);
        assert!(!made.token.contains(&made.id[4..]));
        let hash = hash_token(&made.token);
        record_token_use_at(dir.path(), &hash, now).unwrap();
        let rec = revoke_token_at(dir.path(), &made.id, now).unwrap();
        assert_eq!(rec.last_used, Some(rfc3339(now)));
        assert_eq!(rec.state(now), TokenState::Revoked);
        assert!(matches!(
            revoke_token_at(dir.path(), &made.id, now),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            revoke_token_at(dir.path(), "tok-nope", now),
            Err(StoreError::NotFound(_))
        ));
        let table = load_tokens(&dir.path().join("tokens.json")).unwrap();
        assert_eq!(table[&hash].name.as_deref(), Some("web fleet"));
    }
}
