//! What every handler shares: the store, the signer, the token table, agents' chunk sets.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ferry_format::ChunkId;

use ferry_format::api::Role;
use ferry_store::keys::ManifestSigner;
use ferry_store::tokens::{hash_token, load_tokens, TokenTable};
use ferry_store::{Store, StoreError};

use crate::error::ApiError;

pub type SharedState = Arc<AppState>;

pub struct AppState {
    pub store: Store,
    pub signer: ManifestSigner,
    pub key_id: String,
    pub tokens: TokenCache,
    /// Snapshot id -> every chunk it references: what an agent working on it may read.
    pub chunk_sets: Mutex<HashMap<String, Arc<HashSet<ChunkId>>>>,
}

impl AppState {
    pub fn new(store: Store) -> Result<AppState, StoreError> {
        let signer = store.load_signer()?;
        let key_id = signer.public_key().key_id();
        let tokens = TokenCache::new(store.tokens_path());
        Ok(AppState {
            store,
            signer,
            key_id,
            tokens,
            chunk_sets: Mutex::new(HashMap::new()),
        })
    }
}

/// tokens.json, reloaded when it changes (`appliance token create` runs in another process).
pub struct TokenCache {
    path: PathBuf,
    cache: Mutex<Option<(FileStamp, TokenTable)>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

impl TokenCache {
    pub fn new(path: PathBuf) -> TokenCache {
        TokenCache {
            path,
            cache: Mutex::new(None),
        }
    }

    /// The role of a token, `None` if unknown. Blocking (stats the file).
    pub fn role_of(&self, token: &str) -> Result<Option<Role>, StoreError> {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| FileStamp {
            ino: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            len: m.len(),
        });
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = matches!((&*cache, stamp), (Some((s, _)), Some(now)) if *s == now);
        if !fresh {
            let table = load_tokens(&self.path)?;
            *cache = stamp.map(|s| (s, table.clone()));
            return Ok(table.get(&hash_token(token)).map(|r| r.role));
        }
        Ok(cache
            .as_ref()
            .and_then(|(_, t)| t.get(&hash_token(token)))
            .map(|r| r.role))
    }
}

/// Run blocking store work off the async threads.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a store task failed: {e}")))?
        .map_err(ApiError::from)
}
