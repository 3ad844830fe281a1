//! The OpenAPI 3 document of every route, served at `GET /api/v1/openapi.json` (no credential:
//! it describes shapes, never data). Generated from [`OPERATIONS`]; `tests/openapi.rs` checks
//! that table against the routes `lib.rs` registers (a route missing from it, or listed and
//! not served, fails) and calls every operation.

use axum::Json;
use serde_json::{json, Map, Value};

/// One operation: method, full path (axum's `{param}` syntax is OpenAPI's), who may call it,
/// what it does.
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    /// `admin`, `backup`, `restore`, `enroll`, `metrics`, `agent`, `beacon`, `source`,
    /// `any` (any token), `session` (the console's cookie) or `none` (no credential).
    pub role: &'static str,
    pub summary: &'static str,
}

const fn op(
    method: &'static str,
    path: &'static str,
    role: &'static str,
    summary: &'static str,
) -> Op {
    Op {
        method,
        path,
        role,
        summary,
    }
}

/// Every route the appliance serves.
pub const OPERATIONS: &[Op] = &[
    op(
        "GET",
        "/healthz",
        "none",
        "Health: 200 while the store answers, 503 otherwise",
    ),
    op(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus/OpenMetrics text (admin or metrics token)",
    ),
    op("GET", "/api/v1/openapi.json", "none", "This document"),
    op(
        "GET",
        "/ui",
        "session",
        "Console: dashboard (HTML; signs in first)",
    ),
    op(
        "GET",
        "/ui/login",
        "none",
        "Console: the sign-in page (HTML)",
    ),
    op(
        "POST",
        "/ui/login",
        "none",
        "Console: exchange an admin token for a session cookie (form)",
    ),
    op(
        "POST",
        "/ui/logout",
        "session",
        "Console: end the session (form with its CSRF token)",
    ),
    op(
        "GET",
        "/ui/app.js",
        "none",
        "Console: the dashboard's and job page's script",
    ),
    op(
        "GET",
        "/ui/state",
        "session",
        "Console: the dashboard's jobs and counts as JSON (the dashboard polls it)",
    ),
    op(
        "GET",
        "/ui/machines/{name}",
        "session",
        "Console: a machine's retention and snapshots (paged: ?page=N)",
    ),
    op(
        "GET",
        "/ui/agents",
        "session",
        "Console: every agent, online and unapproved first (paged: ?page=N)",
    ),
    op(
        "GET",
        "/ui/migrations",
        "session",
        "Console: every migration with its standby and lag",
    ),
    op(
        "GET",
        "/ui/migrations/{id}",
        "session",
        "Console: a migration's standby, lag, history, cutover timeline and cutover form",
    ),
    op(
        "POST",
        "/ui/migrations/{id}/cutover",
        "session",
        "Console: cut a migration over, confirmed by the machine's name (form)",
    ),
    op(
        "GET",
        "/ui/agents/{id}",
        "session",
        "Console: an agent's state and inventory",
    ),
    op(
        "POST",
        "/ui/agents/{id}/approve",
        "session",
        "Console: approve an agent by its console code (form)",
    ),
    op(
        "POST",
        "/ui/jobs",
        "session",
        "Console: create a restore job (form)",
    ),
    op(
        "GET",
        "/ui/jobs/new",
        "session",
        "Console: the new restore job form",
    ),
    op(
        "GET",
        "/ui/jobs/{id}",
        "session",
        "Console: a job's state, progress and events",
    ),
    op(
        "GET",
        "/ui/jobs/{id}/state",
        "session",
        "Console: a job's state as JSON (the job page polls it)",
    ),
    op(
        "GET",
        "/api/v1/hello",
        "any",
        "Appliance name, version, API version and the caller's role",
    ),
    op(
        "POST",
        "/api/v1/backups",
        "backup",
        "Start a backup session for a machine",
    ),
    op(
        "DELETE",
        "/api/v1/backups/{session}",
        "backup",
        "Abandon a backup session",
    ),
    op(
        "POST",
        "/api/v1/backups/{session}/known-chunks",
        "backup",
        "Which of these chunk ids the store lacks",
    ),
    op(
        "PUT",
        "/api/v1/backups/{session}/disks/{disk}/index",
        "backup",
        "Upload a disk index",
    ),
    op(
        "POST",
        "/api/v1/backups/{session}/commit",
        "backup",
        "Commit the session as a signed snapshot",
    ),
    op(
        "PUT",
        "/api/v1/chunks/{id}",
        "backup",
        "Upload a chunk (one zstd frame, verified against its id)",
    ),
    op("GET", "/api/v1/chunks/{id}", "restore", "Download a chunk"),
    op(
        "GET",
        "/api/v1/snapshots",
        "restore",
        "Snapshots in the token's scope, oldest first",
    ),
    op(
        "GET",
        "/api/v1/snapshots/{id}/manifest",
        "restore",
        "A snapshot's signed manifest",
    ),
    op(
        "GET",
        "/api/v1/snapshots/{id}/disks/{disk}/index",
        "restore",
        "A snapshot disk's index",
    ),
    op(
        "POST",
        "/api/v1/agents/enroll",
        "enroll",
        "Enroll a rescue agent with its inventory",
    ),
    op(
        "GET",
        "/api/v1/agents/{id}/job",
        "agent",
        "Long-poll the agent's job",
    ),
    op(
        "POST",
        "/api/v1/agents/{id}/events",
        "agent",
        "Post job events",
    ),
    op(
        "POST",
        "/api/v1/agents/{id}/jobs/{job}/beacon",
        "agent",
        "Issue the first-boot beacon credential",
    ),
    op(
        "PUT",
        "/api/v1/agents/{id}/jobs/{job}/state",
        "agent",
        "Report the job's state",
    ),
    op(
        "GET",
        "/api/v1/agents/{id}/standby/next",
        "agent",
        "Long-poll a standby's next snapshot",
    ),
    op(
        "PUT",
        "/api/v1/agents/{id}/standby/state",
        "agent",
        "Report a standby's state",
    ),
    op(
        "PUT",
        "/api/v1/agents/{id}/standby/cutover",
        "agent",
        "Report a cutover step",
    ),
    op(
        "POST",
        "/api/v1/agents/{id}/standby/proof",
        "agent",
        "Answer the standby possession challenge",
    ),
    op(
        "POST",
        "/api/v1/beacon",
        "beacon",
        "The restored system's first-boot report",
    ),
    op(
        "POST",
        "/api/v1/sources/enroll",
        "backup",
        "Enroll a live source agent",
    ),
    op(
        "GET",
        "/api/v1/sources/{machine}/task",
        "source",
        "Long-poll a source's sync task",
    ),
    op(
        "PUT",
        "/api/v1/sources/{machine}/tasks/{id}/state",
        "source",
        "Report a sync task's state",
    ),
    op("GET", "/api/v1/migrations", "admin", "Every migration"),
    op(
        "GET",
        "/api/v1/migrations/{id}",
        "admin",
        "A migration: state, standby, cutover timeline",
    ),
    op(
        "POST",
        "/api/v1/migrations/{id}/cutover",
        "admin",
        "Cut a migration over",
    ),
    op(
        "GET",
        "/api/v1/tokens",
        "admin",
        "Tokens without their secrets",
    ),
    op(
        "POST",
        "/api/v1/tokens",
        "admin",
        "Create a token (shown once)",
    ),
    op("DELETE", "/api/v1/tokens/{id}", "admin", "Revoke a token"),
    op(
        "GET",
        "/api/v1/machines",
        "admin",
        "Machines with snapshots, each with its newest",
    ),
    op("GET", "/api/v1/agents", "admin", "Enrolled rescue agents"),
    op(
        "GET",
        "/api/v1/agents/{id}",
        "admin",
        "An agent: state, approval, inventory",
    ),
    op(
        "POST",
        "/api/v1/agents/{id}/approve",
        "admin",
        "Approve an agent (optionally by its console code)",
    ),
    op("GET", "/api/v1/jobs", "admin", "Every job, oldest first"),
    op(
        "POST",
        "/api/v1/jobs",
        "admin",
        "Create a restore or backup job",
    ),
    op(
        "GET",
        "/api/v1/jobs/{id}",
        "admin",
        "A job with its beacon and events",
    ),
    op(
        "GET",
        "/api/v1/store",
        "admin",
        "Store usage and deduplication",
    ),
    op(
        "POST",
        "/api/v1/gc",
        "admin",
        "Run a garbage collection now",
    ),
    op(
        "GET",
        "/api/v1/gc",
        "admin",
        "Whether a garbage collection runs and the last run's outcome",
    ),
    op(
        "POST",
        "/api/v1/machines/{machine}/prune",
        "admin",
        "Prune a machine's snapshots (or plan it: dry_run)",
    ),
    op(
        "DELETE",
        "/api/v1/snapshots/{id}",
        "admin",
        "Delete one snapshot (refused while a job uses it or a migration pins it)",
    ),
    op(
        "DELETE",
        "/api/v1/agents/{id}",
        "admin",
        "Forget an agent (refused while it runs a job)",
    ),
    op(
        "POST",
        "/api/v1/jobs/{id}/cancel",
        "admin",
        "Cancel a job no agent has started",
    ),
    op(
        "GET",
        "/api/v1/sources",
        "admin",
        "Source machines: schedule, last and next sync",
    ),
    op(
        "GET",
        "/api/v1/sources/{machine}",
        "admin",
        "A source machine with its history",
    ),
    op(
        "PATCH",
        "/api/v1/sources/{machine}",
        "admin",
        "Change a source machine's schedule and limits",
    ),
    op(
        "POST",
        "/api/v1/sources/{machine}/sync-now",
        "admin",
        "Start a sync at the source agent's next poll",
    ),
    op(
        "POST",
        "/api/v1/sources/{machine}/pause",
        "admin",
        "Start no scheduled sync",
    ),
    op(
        "POST",
        "/api/v1/sources/{machine}/resume",
        "admin",
        "Schedule syncs again",
    ),
    op(
        "POST",
        "/api/v1/migrations",
        "admin",
        "Bind a source machine to a standby target",
    ),
    op(
        "POST",
        "/api/v1/migrations/{id}/cancel",
        "admin",
        "Stop a migration: its standby stops, its snapshots are released",
    ),
];

/// The document.
pub fn build() -> Value {
    let mut paths = Map::new();
    for o in OPERATIONS {
        let params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": o.summary,
            "operationId": format!("{} {}", o.method, o.path),
            "description": format!("Caller: {}.", o.role),
            "x-ferry-role": o.role,
            "responses": {
                "default": {
                    "description": "the answer; errors are JSON {\"error\": \"...\"} with a status (400 bad request, 401 no or unknown token, 403 wrong role or scope, 404, 409 conflict)"
                }
            }
        });
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if o.role == "none" {
            operation["security"] = json!([]);
        }
        let entry = paths.entry(o.path.to_string()).or_insert_with(|| json!({}));
        entry[o.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Ferry appliance API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "docs/protocol.md describes every route; bodies are the types of crates/ferry-format (api, admin, agent, source)."
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": Value::Object(paths),
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<Value> {
    Json(build())
}
