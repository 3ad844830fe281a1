//! The token table as the server sees it: reloaded when its record changes (`appliance token
//! create`/`revoke` run in another process, or on another node), and last use recorded at most
//! once a minute per token ([`LAST_USE_EVERY`]), not a write per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ferry_store::sessions::unix_secs;
use ferry_store::tokens::{hash_token, parse_rfc3339, TokenRecord, TokenTable};
use ferry_store::{Store, StoreError};

/// Last use is written when the recorded one is at least this old (seconds).
pub const LAST_USE_EVERY: u64 = 60;

pub struct TokenCache {
    store: Store,
    /// The table and the stamp of the record it was read from ([`Store::tokens_stamp`]).
    cache: Mutex<Option<(String, Arc<TokenTable>)>>,
    /// Token hash -> unix seconds of the last use this process decided to record.
    recorded: Mutex<HashMap<String, u64>>,
}

/// A token found in tokens.json (whatever its state) and its hash.
#[derive(Clone, Debug)]
pub struct FoundToken {
    pub hash: String,
    pub record: TokenRecord,
}

impl TokenCache {
    pub fn new(store: Store) -> TokenCache {
        TokenCache {
            store,
            cache: Mutex::new(None),
            recorded: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> Result<Arc<TokenTable>, StoreError> {
        let stamp = self.store.tokens_stamp()?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match (&*cache, stamp) {
            (Some((s, t)), Some(now)) if *s == now => Ok(Arc::clone(t)),
            (_, stamp) => {
                let table = Arc::new(self.store.load_tokens()?);
                *cache = stamp.map(|s| (s, Arc::clone(&table)));
                Ok(table)
            }
        }
    }

    /// The record of a token, `None` if unknown. Blocking (stats the file, or asks PostgreSQL
    /// for the record's stamp).
    pub fn lookup(&self, token: &str) -> Result<Option<FoundToken>, StoreError> {
        let hash = hash_token(token);
        Ok(self.table()?.get(&hash).map(|r| FoundToken {
            hash,
            record: r.clone(),
        }))
    }

    /// Whether this use should be written to tokens.json: the recorded last use (in the file
    /// or decided by this process) is [`LAST_USE_EVERY`] old or more. Claims the write.
    pub fn claim_use(&self, found: &FoundToken, now: SystemTime) -> bool {
        let now = unix_secs(now);
        let in_file = found
            .record
            .last_used
            .as_deref()
            .and_then(parse_rfc3339)
            .map_or(0, unix_secs);
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        let last = recorded.get(&found.hash).copied().unwrap_or(0).max(in_file);
        if now.saturating_sub(last) < LAST_USE_EVERY {
            return false;
        }
        recorded.insert(found.hash.clone(), now);
        true
    }
}
