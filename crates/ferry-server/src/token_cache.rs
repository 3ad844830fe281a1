//! tokens.json as the server sees it: reloaded when the file changes (`appliance token
//! create`/`revoke` run in another process), and last use recorded at most once a minute per
//! token ([`LAST_USE_EVERY`]), not a file write per request.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ferry_store::sessions::unix_secs;
use ferry_store::tokens::{hash_token, load_tokens, parse_rfc3339, TokenRecord, TokenTable};
use ferry_store::StoreError;

/// Last use is written when the recorded one is at least this old (seconds).
pub const LAST_USE_EVERY: u64 = 60;

pub struct TokenCache {
    path: PathBuf,
    cache: Mutex<Option<(FileStamp, Arc<TokenTable>)>>,
    /// Token hash -> unix seconds of the last use this process decided to record.
    recorded: Mutex<HashMap<String, u64>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

/// A token found in tokens.json (whatever its state) and its hash.
#[derive(Clone, Debug)]
pub struct FoundToken {
    pub hash: String,
    pub record: TokenRecord,
}

impl TokenCache {
    pub fn new(path: PathBuf) -> TokenCache {
        TokenCache {
            path,
            cache: Mutex::new(None),
            recorded: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> Result<Arc<TokenTable>, StoreError> {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| FileStamp {
            ino: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            len: m.len(),
        });
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match (&*cache, stamp) {
            (Some((s, t)), Some(now)) if *s == now => Ok(Arc::clone(t)),
            _ => {
                let table = Arc::new(load_tokens(&self.path)?);
                *cache = stamp.map(|s| (s, Arc::clone(&table)));
                Ok(table)
            }
        }
    }

    /// The record of a token, `None` if unknown. Blocking (stats the file).
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
