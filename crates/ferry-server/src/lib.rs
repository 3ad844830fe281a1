//! The appliance's HTTPS API (docs/protocol.md) over a [`ferry_store::Store`], and the
//! appliance's commands ([`commands`]); the `appliance` binary only parses and dispatches.
//!
//! - [`tls`]: the CA and server certificate made at init, the rustls configuration (ALPN h2 and
//!   http/1.1, ring provider).
//! - [`auth`]: bearer token to role; 401 for a missing or unknown token, 403 for the wrong role.
//! - [`handlers`]: one small handler per route; every file system access runs on a blocking
//!   thread ([`state::blocking`]).
//! - [`agents`]: enrollment, the long-polled job, events and job state of unattended restores;
//!   an agent credential reads only its own job's snapshot and chunks.
//! - [`error`]: store errors to statuses with a JSON `{"error": ...}` body (409 `MissingChunks`).
//!
//! Each request is logged at info on one line: method, path, status, bytes in and out, ms.
//! Tokens are never logged (they only travel in the Authorization header).

pub mod agents;
pub mod auth;
pub mod commands;
pub mod error;
pub mod handlers;
pub mod job_commands;
pub mod scope;
pub mod state;
pub mod tls;
pub mod token_cache;
pub mod token_commands;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use axum::body::HttpBody;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use ferry_format::api::API_PREFIX;
use ferry_format::chunk::MAX_CHUNK_SIZE;
use ferry_store::Store;
use tokio::task::JoinHandle;

use crate::state::{AppState, SharedState};

/// Largest chunk upload: a 64 MiB chunk's zstd frame (incompressible data grows by a few KiB).
pub const CHUNK_BODY_LIMIT: usize = MAX_CHUNK_SIZE as usize + (1 << 20);
/// Largest index upload: 512 MiB is 16 M entries (1 TiB at 64 KiB chunks, 64 TiB at 4 MiB).
pub const INDEX_BODY_LIMIT: usize = 512 << 20;
/// Largest JSON body (a commit with detailed layouts).
pub const JSON_BODY_LIMIT: usize = 16 << 20;
/// How long a graceful shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// All routes of docs/protocol.md, under [`API_PREFIX`].
pub fn router(state: SharedState) -> Router {
    use handlers::*;
    let api = Router::new()
        .route("/hello", get(hello))
        .route("/backups", post(start_backup))
        .route("/backups/{session}", delete(abandon))
        .route("/backups/{session}/known-chunks", post(known_chunks))
        .route(
            "/backups/{session}/disks/{disk}/index",
            put(put_index).layer(DefaultBodyLimit::max(INDEX_BODY_LIMIT)),
        )
        .route("/backups/{session}/commit", post(commit))
        .route(
            "/chunks/{id}",
            put(put_chunk)
                .get(get_chunk)
                .layer(DefaultBodyLimit::max(CHUNK_BODY_LIMIT)),
        )
        .route("/snapshots", get(list_snapshots))
        .route("/snapshots/{id}/manifest", get(manifest))
        .route("/snapshots/{id}/disks/{disk}/index", get(snapshot_index))
        .route("/agents/enroll", post(agents::enroll))
        .route("/agents/{id}/job", get(agents::job))
        .route("/agents/{id}/events", post(agents::events))
        .route("/agents/{id}/jobs/{job}/state", put(agents::job_state))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
    Router::new()
        .nest(API_PREFIX, api)
        .fallback(not_found)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let bytes_in = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let res = next.run(req).await;
    let bytes_out = res
        .body()
        .size_hint()
        .exact()
        .map_or("-".to_string(), |n| n.to_string());
    tracing::info!(
        "{method} {path} {} in={bytes_in} out={bytes_out} {}ms",
        res.status().as_u16(),
        start.elapsed().as_millis()
    );
    res
}

/// A server running on the current tokio runtime.
pub struct RunningServer {
    pub addr: SocketAddr,
    handle: Handle,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stop accepting, let requests in flight finish (up to `grace`), and wait.
    pub async fn shutdown(self, grace: Duration) -> Result<()> {
        self.handle.graceful_shutdown(Some(grace));
        self.task
            .await
            .context("join the server task")?
            .context("serve HTTPS")
    }
}

/// Open the store at `data` and serve it over HTTPS on `listen` (port 0 picks a free port).
pub async fn start(data: &Path, listen: SocketAddr) -> Result<RunningServer> {
    tls::install_crypto_provider();
    let store = Store::open(data)?;
    let tls = RustlsConfig::from_config(tls::server_config(&store)?);
    let state = Arc::new(AppState::new(store).context("load the manifest signing key")?);
    let handle = Handle::new();
    let server = axum_server::bind_rustls(listen, tls).handle(handle.clone());
    let task = tokio::spawn(server.serve(router(state).into_make_service()));
    match handle.listening().await {
        Some(addr) => Ok(RunningServer { addr, handle, task }),
        None => {
            let err = match task.await {
                Ok(Err(e)) => anyhow!(e),
                _ => anyhow!("the server stopped before listening"),
            };
            Err(err.context(format!(
                "listen on {listen}: is the address free and local?"
            )))
        }
    }
}
