//! `tokens.json`: the API tokens, stored only as hashes.
//!
//! A token is 32 random bytes in lowercase hex (64 characters). The file maps the lowercase
//! hex BLAKE3 of the token's text to its role and creation time.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use ferry_format::api::Role;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, StoreError};
use crate::fsx::{self, FileLock, LockMode};
use crate::Store;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub role: Role,
    /// RFC 3339 UTC.
    pub created: String,
}

/// Token hash (hex BLAKE3) -> record.
pub type TokenTable = BTreeMap<String, TokenRecord>;

pub fn hash_token(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Read a tokens.json file (an absent file is an empty table).
pub fn load_tokens(path: &Path) -> Result<TokenTable> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| StoreError::Invalid(format!("parse {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenTable::new()),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Create a token for `role` in the store rooted at `root`, returning its text (shown once).
pub fn create_token_at(root: &Path, role: Role, created: &str) -> Result<String> {
    // Hex, not base64url: a token must never start with '-' (a command line would take it for
    // an option) and must survive copy-paste from a terminal.
    let token = hex::encode(fsx::random_bytes(32)?);
    let path = root.join("tokens.json");
    let _lock = FileLock::acquire(&root.join("tokens.lock"), LockMode::Exclusive)?;
    let mut table = load_tokens(&path)?;
    table.insert(
        hash_token(&token),
        TokenRecord {
            role,
            created: created.to_string(),
        },
    );
    let bytes =
        serde_json::to_vec_pretty(&table).map_err(|e| StoreError::Invalid(e.to_string()))?;
    fsx::write_atomic(&path, &bytes, 0o600)?;
    Ok(token)
}

impl Store {
    pub fn create_token(&self, role: Role, created: &str) -> Result<String> {
        create_token_at(self.root(), role, created)
    }

    pub fn load_tokens(&self) -> Result<TokenTable> {
        load_tokens(&self.tokens_path())
    }
}
