//! What every handler shares: the store, the signer, the token table, agents' chunk sets.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ferry_format::ChunkId;

use ferry_store::keys::ManifestSigner;
use ferry_store::{Store, StoreError};

use crate::error::ApiError;
use crate::scope_cache::ScopeCache;
pub use crate::token_cache::TokenCache;

pub type SharedState = Arc<AppState>;

pub struct AppState {
    pub store: Store,
    pub signer: ManifestSigner,
    pub key_id: String,
    pub tokens: TokenCache,
    /// Snapshot id -> every chunk it references: what an agent working on it may read.
    pub chunk_sets: Mutex<HashMap<String, Arc<HashSet<ChunkId>>>>,
    /// What scoped restore tokens may read.
    pub scopes: ScopeCache,
    /// Counters for `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Signed-in console sessions ([`crate::console`]).
    pub sessions: crate::console::Sessions,
    /// Event deliveries to the configured webhook ([`crate::webhook`]).
    pub webhooks: crate::webhook::Webhooks,
}

impl AppState {
    pub fn new(store: Store) -> Result<AppState, StoreError> {
        let signer = store.load_signer()?;
        let key_id = signer.public_key().key_id();
        let tokens = TokenCache::new(store.clone());
        Ok(AppState {
            signer,
            key_id,
            tokens,
            chunk_sets: Mutex::new(HashMap::new()),
            scopes: ScopeCache::default(),
            metrics: crate::metrics::Metrics::default(),
            sessions: crate::console::Sessions::default(),
            webhooks: crate::webhook::Webhooks::start(store.clone(), store.config().name.clone()),
            store,
        })
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

/// [`blocking`] for work that already answers API errors (the operations of [`crate::ops`]).
pub async fn blocking_api<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a store task failed: {e}")))?
}
