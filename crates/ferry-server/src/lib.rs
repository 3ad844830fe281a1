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
//! - [`scope`]: what a token may reach beyond its role; [`scope_cache`]: the chunks a machine
//!   scope may read, cached.
//! - [`standby`]: a migration's standby target: the long-polled next snapshot and its state
//!   report; a standby's credential reads only the snapshot handed to it and its basis.
//! - [`beacon`]: the first-boot beacon's one-time credential and its single report
//!   (`POST /beacon`), refused everywhere else.
//! - [`sources`]: source machines' enrollment, long-polled sync task and task state; a source
//!   credential is a backup credential for its one machine.
//! - [`error`]: store errors to statuses with a JSON `{"error": ...}` body (409 `MissingChunks`);
//!   the `ApiResult` and `parse_json` every module with handlers shares.
//!
//! - [`limits`]: connection cap, TLS/header/idle timeouts, per-route concurrency limits (503 with
//!   Retry-After when a route stays full); [`upload`]: index uploads streamed to disk.
//!
//! - [`admin`]: the admin API (tokens, machines, agents, jobs, migrations, store, GC) and
//!   [`openapi`]: its OpenAPI 3 document at `/api/v1/openapi.json`.
//! - [`console`]: the operator console under `/ui` (sign-in with an admin token, session
//!   cookie, CSRF-checked forms, server-rendered pages).
//! - [`metrics`]: `GET /healthz` (no credential) and `GET /metrics` (Prometheus text; an admin
//!   or metrics token), with per-route request counters.
//!
//! - [`webhook`]: signed event deliveries (job states, commits, migration steps) to the
//!   operator's URL, off the request path.
//!
//! Each request is logged at info on one line: method, path, status, bytes in and out, ms.
//! Tokens are never logged (they only travel in the Authorization header).

#![forbid(unsafe_code)]

pub mod admin;
pub mod agents;
pub mod auth;
pub mod beacon;
pub mod commands;
pub mod console;
pub mod download;
pub mod error;
pub mod gc_schedule;
pub mod handlers;
pub mod job_commands;
pub mod limits;
pub mod metrics;
pub mod migrations;
pub mod openapi;
pub mod ops;
pub mod scope;
pub mod scope_cache;
pub mod sources;
pub mod standby;
pub mod state;
pub mod tls;
pub mod token_cache;
pub mod token_commands;
pub mod upload;
pub mod webhook;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use axum::body::HttpBody;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::{self, from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;
use ferry_format::api::API_PREFIX;
use ferry_format::chunk::MAX_CHUNK_SIZE;
use ferry_store::Store;
use tokio::task::JoinHandle;

use crate::limits::{limit_body_idle, limit_route, ConnectionGuard, RouteLimit, ServerLimits};
use crate::state::{AppState, SharedState};

/// Largest chunk upload: a 64 MiB chunk's zstd frame (incompressible data grows by a few KiB).
pub const CHUNK_BODY_LIMIT: usize = MAX_CHUNK_SIZE as usize + (1 << 20);
/// Largest index upload: 512 MiB is 16 M entries (1 TiB at 64 KiB chunks, 64 TiB at 4 MiB).
/// Streamed to disk, never held in memory ([`upload`]).
pub const INDEX_BODY_LIMIT: usize = ferry_store::sessions::MAX_INDEX_BYTES as usize;
/// Largest JSON body (a commit with detailed layouts); commits are few at a time.
pub const JSON_BODY_LIMIT: usize = 16 << 20;
/// Largest body of the other JSON routes (a 4096-id known-chunks query is ~280 KiB, an enroll
/// with 128 disks ~300 KiB): they run many at a time, so each is kept small.
pub const SMALL_BODY_LIMIT: usize = 1 << 20;
/// Largest event batch (1000 events with long messages).
pub const EVENTS_BODY_LIMIT: usize = 8 << 20;
/// How long a graceful shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// All routes of docs/protocol.md, under [`API_PREFIX`], with the route limits of `limits`.
pub fn router(state: SharedState, limits: &ServerLimits) -> Router {
    use handlers::*;
    let bound = |name: &'static str, permits: usize| {
        from_fn_with_state(
            RouteLimit::new(name, permits, limits.queue_wait),
            limit_route,
        )
    };
    // One pool of slots for every small JSON route: with HTTP/2 a connection may carry many
    // bodies at once, so the connection cap alone does not bound their memory.
    let small = from_fn_with_state(
        RouteLimit::new("requests", limits.small_requests, limits.queue_wait),
        limit_route,
    );
    let api = Router::new()
        .route("/hello", get(hello))
        .route("/backups", post(start_backup).layer(small.clone()))
        .route("/backups/{session}", delete(abandon))
        .route(
            "/backups/{session}/known-chunks",
            post(known_chunks).layer(small.clone()),
        )
        .route(
            "/backups/{session}/disks/{disk}/index",
            put(put_index).layer(bound("index uploads", limits.index_uploads)),
        )
        .route(
            "/backups/{session}/commit",
            post(commit)
                .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
                .layer(bound("commits", limits.commits)),
        )
        .route(
            "/chunks/{id}",
            put(put_chunk)
                .layer(DefaultBodyLimit::max(CHUNK_BODY_LIMIT))
                .layer(bound("chunk uploads", limits.chunk_puts))
                .merge(get(get_chunk).layer(bound("chunk downloads", limits.chunk_gets))),
        )
        .route("/snapshots", get(list_snapshots))
        .route("/snapshots/{id}/manifest", get(manifest))
        .route(
            "/snapshots/{id}/disks/{disk}/index",
            get(snapshot_index).layer(bound("index downloads", limits.index_reads)),
        )
        .route("/agents/enroll", post(agents::enroll).layer(small.clone()))
        .route("/agents/{id}/job", get(agents::job))
        .route(
            "/agents/{id}/events",
            post(agents::events)
                .layer(DefaultBodyLimit::max(EVENTS_BODY_LIMIT))
                .layer(bound("event posts", limits.event_posts)),
        )
        .route(
            "/agents/{id}/jobs/{job}/beacon",
            post(beacon::issue).layer(small.clone()),
        )
        .route("/beacon", post(beacon::report).layer(small.clone()))
        .route(
            "/agents/{id}/jobs/{job}/state",
            put(agents::job_state).layer(small.clone()),
        )
        .route("/agents/{id}/standby/next", get(standby::next))
        .route(
            "/agents/{id}/standby/state",
            put(standby::state).layer(small.clone()),
        )
        .route(
            "/agents/{id}/standby/cutover",
            put(standby::cutover).layer(small.clone()),
        )
        .route(
            "/agents/{id}/standby/proof",
            post(standby::proof).layer(small.clone()),
        )
        .route(
            "/sources/enroll",
            post(sources::enroll).layer(small.clone()),
        )
        .route("/migrations/{id}", get(migrations::show))
        .route(
            "/migrations/{id}/cutover",
            post(migrations::cutover).layer(small.clone()),
        )
        .route("/tokens", get(admin::tokens).post(admin::token_create))
        .route("/tokens/{id}", delete(admin::token_revoke))
        .route("/machines", get(admin::machines))
        .route("/machines/{machine}/prune", post(admin::prune))
        .route("/snapshots/{id}", delete(admin::snapshot_delete))
        .route("/agents", get(admin::agents))
        .route(
            "/agents/{id}",
            get(admin::agent).delete(admin::agent_remove),
        )
        .route("/agents/{id}/approve", post(admin::agent_approve))
        .route("/jobs", get(admin::jobs).post(admin::job_create))
        .route("/jobs/{id}", get(admin::job))
        .route("/jobs/{id}/cancel", post(admin::job_cancel))
        .route("/sources", get(admin::sources))
        .route(
            "/sources/{machine}",
            get(admin::source).patch(admin::source_set),
        )
        .route("/sources/{machine}/sync-now", post(admin::source_sync_now))
        .route("/sources/{machine}/pause", post(admin::source_pause))
        .route("/sources/{machine}/resume", post(admin::source_resume))
        .route(
            "/migrations",
            get(admin::migrations).post(admin::migration_create),
        )
        .route("/migrations/{id}/cancel", post(admin::migration_cancel))
        .route("/store", get(admin::store_usage))
        .route(
            "/gc",
            post(admin::gc)
                .layer(bound("gc runs", 1))
                .merge(get(admin::gc_status)),
        )
        .route("/openapi.json", get(openapi::document))
        .route("/sources/{machine}/task", get(sources::task))
        .route(
            "/sources/{machine}/tasks/{id}/state",
            put(sources::task_state).layer(small),
        )
        .layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT));
    let counted = from_fn_with_state(state.clone(), metrics::count_request);
    Router::new()
        .nest(API_PREFIX, api.route_layer(counted.clone()))
        .route("/healthz", get(metrics::healthz))
        .route("/ui", get(console::dashboard))
        .route("/ui/login", get(console::login_form).post(console::login))
        .route("/ui/logout", post(console::logout))
        .route("/ui/app.js", get(console::app_js))
        .route("/ui/state", get(console::dashboard_state))
        .route("/ui/machines/{name}", get(console::machine))
        .route("/ui/agents", get(console::agents))
        .route("/ui/agents/{id}", get(console::agent))
        .route("/ui/migrations", get(console::migrations))
        .route("/ui/migrations/{id}", get(console::migration))
        .route("/ui/migrations/{id}/cutover", post(console::cutover))
        .route("/ui/agents/{id}/approve", post(console::approve))
        .route("/ui/jobs", post(console::create_job))
        .route("/ui/jobs/new", get(console::new_job))
        .route("/ui/jobs/{id}", get(console::job))
        .route("/ui/jobs/{id}/state", get(console::job_state))
        .route("/metrics", get(metrics::metrics))
        .route_layer(counted)
        .fallback(not_found)
        .layer(from_fn_with_state(limits.idle_timeout, limit_body_idle))
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

/// hyper's own limits: without a timer it enforces no header timeout at all.
fn configure_http(
    b: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    limits: &ServerLimits,
) {
    use hyper_util::rt::TokioTimer;
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(HTTP1_MAX_BUF);
    // No HTTP/2 keep-alive pings: they would move bytes on an idle connection and keep the
    // idle timeout (limits.rs) from ever closing it.
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_STREAMS);
}

/// Largest HTTP/1 read buffer (request head plus read-ahead); hyper's default is ~400 KiB.
const HTTP1_MAX_BUF: usize = 64 << 10;
/// Requests one HTTP/2 connection may run at once (route limits bound the expensive ones).
const HTTP2_MAX_STREAMS: u32 = 32;

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

/// Open the store at `data` and serve it over HTTPS on `listen` (port 0 picks a free port)
/// with the default [`ServerLimits`].
pub async fn start(data: &Path, listen: SocketAddr) -> Result<RunningServer> {
    start_with(data, listen, ServerLimits::default()).await
}

/// [`start`] with the given limits.
pub async fn start_with(
    data: &Path,
    listen: SocketAddr,
    limits: ServerLimits,
) -> Result<RunningServer> {
    tls::install_crypto_provider();
    let store = Store::open(data)?;
    if ferry_store::config::make_root_private(data)? {
        tracing::warn!(
            "{} was readable by other users; made it 0700 (files older stores created 0644 are \
             now reachable only by this user)",
            data.display()
        );
    }
    let tls = RustlsConfig::from_config(tls::server_config(&store)?);
    let state = Arc::new(AppState::new(store).context("load the manifest signing key")?);
    let handle = Handle::new();
    let acceptor = RustlsAcceptor::new(tls)
        .handshake_timeout(limits.tls_handshake_timeout)
        .acceptor(ConnectionGuard::new(
            limits.max_connections,
            limits.idle_timeout,
        ));
    let mut server = axum_server::bind(listen)
        .acceptor(acceptor)
        .handle(handle.clone());
    configure_http(server.http_builder(), &limits);
    let task = tokio::spawn(
        server.serve(router(state, &limits).into_make_service_with_connect_info::<SocketAddr>()),
    );
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
