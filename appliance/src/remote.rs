//! The CLI on a remote appliance (`--appliance URL --ca FILE --token TOKEN`): each operation of
//! [`Admin`] is one request of the admin API (docs/protocol.md, "Admin API"), answered with the
//! same values the store gives on `--data`, so the same code prints them.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_client::{load_trust, Client, ClientConfig};
use ferry_format::admin::{
    AgentApprove, JobCreate, MigrationCreate, PruneReport, PruneRequest, ScheduleChange,
    StoreUsage, TokenCreate, TokenCreated,
};
use ferry_format::agent::{AgentInfo, JobRecord};
use ferry_format::api::{SnapshotSummary, TokenInfo};
use ferry_server::job_commands::JobView;
use ferry_server::ops::Admin;
use ferry_store::gc::{GcReport, GcStatus};
use ferry_store::views::{MigrationView, SourceView};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long a command keeps retrying an unreachable appliance: an operator at a terminal wants
/// an answer, and a create retried after a lost answer could create twice.
const RETRY_WINDOW: Duration = Duration::from_secs(20);

pub struct Remote(Client);

/// No body.
const NONE: Option<&()> = None;

impl Remote {
    pub fn connect(url: &str, ca: Option<&Path>, token: Option<&str>) -> Result<Remote> {
        let ca =
            ca.context("--appliance needs the appliance's ca.pem: give --ca FILE, FERRY_CA or `ca` in ~/.config/ferry/cli.toml")?;
        let token = token.filter(|t| !t.trim().is_empty()).context(
            "--appliance needs an admin token: set FERRY_TOKEN (or give --token; `appliance token create --role admin` on the appliance makes one)",
        )?;
        let client = Client::new(ClientConfig {
            url: url.to_string(),
            trust: load_trust(ca)?,
            token: token.to_string(),
            retry_window: RETRY_WINDOW,
            connections: 2,
        })?;
        Ok(Remote(client))
    }

    fn call<Q: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Q>,
    ) -> Result<T> {
        Ok(self.0.admin(method, path, body)?)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call("GET", path, NONE)
    }
}

/// A path segment from the operator: letters, digits, `.`, `_`, `-` (every id and name the store
/// makes or accepts), so it cannot change the path or the query.
fn seg(v: &str) -> Result<&str> {
    let ok = !v.is_empty()
        && v != "."
        && v != ".."
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    anyhow::ensure!(
        ok,
        "{v:?} is not an id or name of this appliance (letters, digits, '.', '_', '-')"
    );
    Ok(v)
}

impl Admin for Remote {
    fn tokens(&self) -> Result<Vec<TokenInfo>> {
        self.get("/tokens")
    }
    fn token_create(&self, req: &TokenCreate) -> Result<TokenCreated> {
        self.call("POST", "/tokens", Some(req))
    }
    fn token_revoke(&self, id: &str) -> Result<TokenInfo> {
        self.call("DELETE", &format!("/tokens/{}", seg(id)?), NONE)
    }
    fn snapshots(&self, machine: Option<&str>) -> Result<Vec<SnapshotSummary>> {
        match machine {
            Some(m) => self.get(&format!("/snapshots?machine={}", seg(m)?)),
            None => self.get("/snapshots"),
        }
    }
    fn snapshot_delete(&self, id: &str) -> Result<SnapshotSummary> {
        self.call("DELETE", &format!("/snapshots/{}", seg(id)?), NONE)
    }
    fn prune(&self, machine: &str, req: &PruneRequest) -> Result<PruneReport> {
        self.call(
            "POST",
            &format!("/machines/{}/prune", seg(machine)?),
            Some(req),
        )
    }
    fn agents(&self) -> Result<Vec<AgentInfo>> {
        self.get("/agents")
    }
    fn agent_approve(&self, id: &str, code: Option<&str>) -> Result<AgentInfo> {
        let body = AgentApprove {
            code: code.map(str::to_string),
        };
        self.call(
            "POST",
            &format!("/agents/{}/approve", seg(id)?),
            Some(&body),
        )
    }
    fn agent_remove(&self, id: &str) -> Result<()> {
        self.call("DELETE", &format!("/agents/{}", seg(id)?), NONE)
    }
    fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.get("/jobs")
    }
    fn job(&self, id: &str) -> Result<JobView> {
        self.get(&format!("/jobs/{}", seg(id)?))
    }
    fn job_create(&self, req: &JobCreate) -> Result<JobRecord> {
        self.call("POST", "/jobs", Some(req))
    }
    fn job_cancel(&self, id: &str) -> Result<JobRecord> {
        self.call("POST", &format!("/jobs/{}/cancel", seg(id)?), NONE)
    }
    fn sources(&self) -> Result<Vec<SourceView>> {
        self.get("/sources")
    }
    fn source(&self, machine: &str) -> Result<SourceView> {
        self.get(&format!("/sources/{}", seg(machine)?))
    }
    fn source_set(&self, machine: &str, change: &ScheduleChange) -> Result<SourceView> {
        self.call(
            "PATCH",
            &format!("/sources/{}", seg(machine)?),
            Some(change),
        )
    }
    fn source_sync_now(&self, machine: &str) -> Result<SourceView> {
        self.call(
            "POST",
            &format!("/sources/{}/sync-now", seg(machine)?),
            NONE,
        )
    }
    fn source_pause(&self, machine: &str, paused: bool) -> Result<SourceView> {
        let verb = if paused { "pause" } else { "resume" };
        self.call("POST", &format!("/sources/{}/{verb}", seg(machine)?), NONE)
    }
    fn migrations(&self) -> Result<Vec<MigrationView>> {
        self.get("/migrations")
    }
    fn migration(&self, id: &str) -> Result<MigrationView> {
        self.get(&format!("/migrations/{}", seg(id)?))
    }
    fn migration_create(&self, req: &MigrationCreate) -> Result<MigrationView> {
        self.call("POST", "/migrations", Some(req))
    }
    fn migration_cutover(&self, id: &str, poweroff_source: bool) -> Result<MigrationView> {
        let body = ferry_format::source::CutoverRequest { poweroff_source };
        self.call(
            "POST",
            &format!("/migrations/{}/cutover", seg(id)?),
            Some(&body),
        )
    }
    fn migration_cancel(&self, id: &str) -> Result<MigrationView> {
        self.call("POST", &format!("/migrations/{}/cancel", seg(id)?), NONE)
    }
    fn store_usage(&self) -> Result<StoreUsage> {
        self.get("/store")
    }
    fn gc(&self) -> Result<GcReport> {
        self.call("POST", "/gc", NONE)
    }
    fn gc_status(&self) -> Result<GcStatus> {
        self.get("/gc")
    }
}
