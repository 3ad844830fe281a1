//! Blocking client for the appliance API (docs/protocol.md), used by backup-agent and restore-agent.
//!
//! - Trust: only the CA in the pinned trust bundle; the manifest must verify with the bundle's
//!   signing key and each index with the digest in the manifest. Chunks are verified by the engine.
//! - Retries: transport failures and 5xx are retried with exponential backoff until the retry
//!   window runs out; 4xx and certificate failures are final at once. The window is counted per
//!   request *and* per outage: once every request to the appliance (from any thread, through any
//!   clone of the client) has failed for a whole window, each one gives up after its next failed
//!   attempt, so a pipeline of many requests fails within about one window, not one per request.
//!   A request that gives up says what the last attempt met: the network
//!   ([`ClientError::Unreachable`]) or the appliance's own error text
//!   ([`ClientError::ServerFailing`], e.g. "No space left on device").
//! - Several nodes: the URL may list the nodes of one appliance (comma-separated); requests go to
//!   one node and move to the next when it cannot be reached (no connection, a reset, a timeout,
//!   or 502/503/504 from a proxy in front of it), at once while untried nodes remain, then with
//!   backoff. The nodes share one store, so an upload session, a job or a restore carries on
//!   where it was. Every clone of a client follows the same current node.
//! - `Client` is `Sync`: many threads share one connection pool.

#![forbid(unsafe_code)]

pub mod cli;
pub mod exit;
mod sources;
mod standby;

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_format::agent;
use ferry_format::api::{self, API_PREFIX};
use ferry_format::signing::TrustBundle;
use ferry_format::urls::ApplianceUrls;
use ferry_format::{ChunkId, DiskIndex, Manifest};
use serde::de::DeserializeOwned;
use serde::Serialize;
pub use sources::MAX_TASK_WAIT;

/// First retry delay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Default retry window (ARCHITECTURE §4: 15 minutes, as the seeds do).
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Longest JSON answer accepted (snapshot lists of big stores stay far below this).
const MAX_JSON: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the appliance at {url} ({what}): {detail}; gave up after retrying for {waited:?} (check the URL, the network and that `appliance serve` runs)")]
    Unreachable {
        url: String,
        what: String,
        detail: String,
        waited: Duration,
    },
    #[error("the appliance at {url} kept failing {what}: HTTP {status}: {message}; gave up after retrying for {waited:.1?} (the appliance's log has the details: fix the cause there, e.g. free space in its data directory, then run again; what was already stored is not sent again)")]
    ServerFailing {
        url: String,
        what: String,
        status: u16,
        message: String,
        waited: Duration,
    },
    #[error("the appliance at {url} presented a certificate the pinned CA does not vouch for ({detail}): check that --ca is the ca.pem of this appliance")]
    Certificate { url: String, detail: String },
    #[error("the appliance refused {what}: HTTP {status}: {message}")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
    #[error("the appliance's answer to {what} is invalid: {detail}")]
    BadAnswer { what: String, detail: String },
    #[error("snapshot {snapshot}: {source}")]
    Untrusted {
        snapshot: String,
        source: ferry_format::FormatError,
    },
    #[error("index of disk {disk} in snapshot {snapshot} does not match the digest its signed manifest records: the appliance's copy is corrupt")]
    IndexDigest { snapshot: String, disk: String },
}

impl ClientError {
    /// HTTP status when the appliance answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the request failed for the whole retry window (the network or the appliance);
    /// trying again later may succeed, unlike a refusal.
    pub fn gave_up_retrying(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::ServerFailing { .. }
        )
    }
}

/// Where and how to reach the appliance.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://10.0.2.2:8443`, or the URLs of several nodes, comma-separated.
    pub url: String,
    pub trust: TrustBundle,
    pub token: String,
    pub retry_window: Duration,
    /// Connections kept per host: at least the number of requests in flight.
    pub connections: usize,
}

pub struct Client {
    agent: ureq::Agent,
    nodes: Arc<Nodes>,
    auth: String,
    trust: TrustBundle,
    retry_window: Duration,
    /// Since when every request to this appliance has failed (`None` after any success); shared
    /// by every clone so concurrent and consecutive requests see one outage.
    outage: Arc<Mutex<Option<Instant>>>,
}

/// The appliance's nodes and the one requests go to now.
struct Nodes {
    urls: ApplianceUrls,
    current: AtomicUsize,
}

impl Nodes {
    /// The node requests go to now: its index and base URL.
    fn current(&self) -> (usize, &str) {
        let i = self.current.load(Ordering::Relaxed) % self.urls.urls().len();
        (i, &self.urls.urls()[i])
    }

    /// Node `failed` could not be reached: move to the next one, unless another request has
    /// moved on already. False with a single node.
    fn move_past(&self, failed: usize) -> bool {
        let n = self.urls.urls().len();
        if n < 2 {
            return false;
        }
        let next = (failed + 1) % n;
        if self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                "the appliance node {} cannot be reached: moving to {}",
                self.urls.urls()[failed],
                self.urls.urls()[next]
            );
        }
        true
    }
}

/// One attempt's failure: try again, or give up now.
enum Failure {
    Transient(Transient),
    Final(ClientError),
}

/// What a failed attempt met; the last one is reported when the retry window runs out.
enum Transient {
    /// No answer: connection refused or reset, timeout, TLS failure, a body cut off (or a
    /// gateway's 502/503/504: the node behind it is down).
    Network(String),
    /// The appliance answered 5xx with this error text.
    Server { status: u16, message: String },
}

impl Transient {
    /// The node itself is out of reach (or a gateway in front of it says so): another node may
    /// answer.
    fn node_down(&self) -> bool {
        match self {
            Transient::Network(_) => true,
            Transient::Server { status, .. } => matches!(status, 502..=504),
        }
    }
}

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transient::Network(d) => f.write_str(d),
            Transient::Server { status, message } => write!(f, "HTTP {status}: {message}"),
        }
    }
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        let urls = ApplianceUrls::parse(&cfg.url).map_err(|e| ClientError::BadAnswer {
            what: "the appliance URL".into(),
            detail: format!(
                "{:?}: {e} (give https://HOST:PORT, or the nodes' URLs separated by commas; the \
                 appliance speaks HTTPS only)",
                cfg.url
            ),
        })?;
        let roots: Vec<ureq::tls::Certificate<'static>> = cfg
            .trust
            .ca_certs
            .iter()
            .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .https_only(true)
            .http_status_as_error(false)
            .max_idle_connections_per_host(cfg.connections.max(2))
            .max_idle_connections(cfg.connections.max(2) * 2)
            .timeout_connect(Some(Duration::from_secs(10)))
            // A stalled transfer is a network failure: retried, never waited on forever.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            .user_agent(format!("ferry/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client {
            agent,
            nodes: Arc::new(Nodes {
                urls,
                current: AtomicUsize::new(0),
            }),
            auth: format!("Bearer {}", cfg.token.trim()),
            trust: cfg.trust,
            retry_window: cfg.retry_window,
            outage: Arc::default(),
        })
    }

    /// The base URL of the node requests go to now.
    pub fn url(&self) -> &str {
        self.nodes.current().1
    }

    /// Every node's URL, as configured.
    pub fn urls(&self) -> &ApplianceUrls {
        &self.nodes.urls
    }

    /// The same appliance, connection pool and trust with another bearer token (an agent's
    /// credential after enrolling).
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            agent: self.agent.clone(),
            nodes: Arc::clone(&self.nodes),
            auth: format!("Bearer {}", token.trim()),
            trust: self.trust.clone(),
            retry_window: self.retry_window,
            outage: Arc::clone(&self.outage),
        }
    }

    /// The same client with another retry window (short for best-effort calls).
    pub fn with_retry_window(&self, window: Duration) -> Client {
        let mut c = self.with_token("");
        c.auth = self.auth.clone();
        c.retry_window = window;
        c
    }

    pub fn trust(&self) -> &TrustBundle {
        &self.trust
    }

    /// Run `attempt` until it succeeds, fails finally, or the retry window is spent: counted
    /// from this request's first failure or from the start of the appliance's outage (every
    /// request failing), whichever is earlier.
    /// `attempt` gets the base URL of the node to use. A node that cannot be reached is left
    /// for the next one at once while this round has untried nodes, then after the backoff.
    fn retry<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut(&str) -> Result<T, Failure>,
    ) -> Result<T, ClientError> {
        let mut first_failure: Option<Instant> = None;
        let mut delay = FIRST_BACKOFF;
        // Nodes that failed since the last sleep.
        let mut failed_in_round = 0;
        loop {
            let (node, base) = self.nodes.current();
            match attempt(base) {
                Ok(v) => {
                    *self.outage.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    if let Some(t) = first_failure {
                        tracing::info!(
                            "{what}: succeeded after {:.1}s of retries",
                            t.elapsed().as_secs_f64()
                        );
                    }
                    return Ok(v);
                }
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient(cause)) => {
                    let mine = *first_failure.get_or_insert_with(Instant::now);
                    let outage = *self
                        .outage
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(mine);
                    let waited = mine.elapsed().max(outage.elapsed());
                    if waited >= self.retry_window {
                        return Err(self.gave_up(base, what, cause, waited));
                    }
                    if cause.node_down() && self.nodes.move_past(node) {
                        failed_in_round += 1;
                        if failed_in_round < self.nodes.urls.urls().len() {
                            tracing::warn!("{what}: {base}: {cause}; trying the next node");
                            continue;
                        }
                    }
                    failed_in_round = 0;
                    tracing::warn!("{what}: {cause}; retrying in {:.1}s", delay.as_secs_f64());
                    std::thread::sleep(delay.min(self.retry_window.saturating_sub(waited)));
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn gave_up(&self, base: &str, what: &str, cause: Transient, waited: Duration) -> ClientError {
        let url = if self.nodes.urls.urls().len() > 1 {
            format!("{base} (and every other node of {})", self.nodes.urls)
        } else {
            base.to_string()
        };
        let what = what.to_string();
        match cause {
            Transient::Network(detail) => ClientError::Unreachable {
                url,
                what,
                detail,
                waited,
            },
            Transient::Server { status, message } => ClientError::ServerFailing {
                url,
                what,
                status,
                message,
                waited,
            },
        }
    }

    fn classify(base: &str, e: ureq::Error) -> Failure {
        // Final even when other nodes remain: a node the pinned CA does not vouch for is an
        // impostor or a misconfiguration, and neither is worked around.
        if let Some(detail) = certificate_problem(&e) {
            return Failure::Final(ClientError::Certificate {
                url: base.to_string(),
                detail,
            });
        }
        Failure::Transient(Transient::Network(e.to_string()))
    }

    /// Send one request; 2xx bodies go to `read`. `body` is sent as-is.
    fn call<T>(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        accept_status: &[u16],
        mut read: impl FnMut(u16, &mut ureq::Body) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        self.retry(&what, |base| {
            let url = format!("{base}{API_PREFIX}{path}");
            let req = ureq::http::Request::builder()
                .method(method)
                .uri(&url)
                .header("authorization", &self.auth);
            let result = match body {
                Some((ctype, bytes)) => {
                    let req = req
                        .header("content-type", ctype)
                        .body(bytes)
                        .map_err(|e| http_err(&what, e))?;
                    self.agent.run(req)
                }
                None => {
                    let req = req.body(()).map_err(|e| http_err(&what, e))?;
                    self.agent.run(req)
                }
            };
            let mut resp = result.map_err(|e| Self::classify(base, e))?;
            let status = resp.status().as_u16();
            if (200..300).contains(&status) || accept_status.contains(&status) {
                return read(status, resp.body_mut()).map_err(|e| match e {
                    // A body cut off mid-transfer is a network failure.
                    ClientError::BadAnswer { detail, .. } if detail.starts_with("io:") => {
                        Failure::Transient(Transient::Network(detail))
                    }
                    e => Failure::Final(e),
                });
            }
            let message = resp
                .body_mut()
                .with_config()
                .limit(64 << 10)
                .read_to_vec()
                .ok()
                .and_then(|b| serde_json::from_slice::<api::ErrorBody>(&b).ok())
                .map(|b| b.error)
                .ok_or(())
                .unwrap_or_else(|_| "no explanation given".into());
            if status >= 500 {
                Err(Failure::Transient(Transient::Server { status, message }))
            } else {
                Err(Failure::Final(ClientError::Refused {
                    what: what.clone(),
                    status,
                    message,
                }))
            }
        })
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None, &[], |_, body| read_json(path, body))
    }

    fn send_json<Q: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        q: &Q,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(q).map_err(|e| ClientError::BadAnswer {
            what: path.to_string(),
            detail: e.to_string(),
        })?;
        self.call(
            method,
            path,
            Some(("application/json", &bytes)),
            &[],
            |_, body| read_json(path, body),
        )
    }

    /// One JSON request of the admin API (`appliance --appliance`): `body` is sent as JSON,
    /// the answer read as `T` (an empty 204 answer reads as JSON `null`). Retried like every
    /// request: the caller gives a short retry window, since a create retried after a lost
    /// answer may create twice.
    pub fn admin<Q: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Q>,
    ) -> Result<T, ClientError> {
        let bytes =
            body.map(serde_json::to_vec)
                .transpose()
                .map_err(|e| ClientError::BadAnswer {
                    what: path.to_string(),
                    detail: e.to_string(),
                })?;
        let body = bytes.as_deref().map(|b| ("application/json", b));
        self.call(method, path, body, &[], |status, reply| match status {
            204 => serde_json::from_slice(b"null").map_err(|e| ClientError::BadAnswer {
                what: path.to_string(),
                detail: e.to_string(),
            }),
            _ => read_json(path, reply),
        })
    }

    pub fn hello(&self) -> Result<api::Hello, ClientError> {
        self.get_json("/hello")
    }

    // ---- backup side ----

    pub fn start_backup(&self, machine: &str, chunk_size: u32) -> Result<String, ClientError> {
        let q = api::BackupStart {
            machine: machine.to_string(),
            chunk_size,
        };
        let r: api::BackupSession = self.send_json("POST", "/backups", &q)?;
        Ok(r.session)
    }

    /// Which of `ids` the appliance lacks (present ones are marked in use by the session).
    pub fn missing_chunks(
        &self,
        session: &str,
        ids: &[ChunkId],
    ) -> Result<Vec<ChunkId>, ClientError> {
        let mut missing = Vec::new();
        for part in ids.chunks(api::MAX_KNOWN_QUERY) {
            let q = api::KnownChunksQuery { ids: part.to_vec() };
            let r: api::KnownChunksReply =
                self.send_json("POST", &format!("/backups/{session}/known-chunks"), &q)?;
            missing.extend(r.missing);
        }
        Ok(missing)
    }

    /// Upload one chunk as a zstd frame. True when it was new to the appliance.
    pub fn put_chunk(&self, id: &ChunkId, zstd_frame: &[u8]) -> Result<bool, ClientError> {
        let path = format!("/chunks/{id}");
        self.call(
            "PUT",
            &path,
            Some(("application/octet-stream", zstd_frame)),
            &[],
            |status, _| Ok(status == 201),
        )
    }

    /// Upload a disk's index. `Ok(missing)`: empty when accepted, else the chunks to upload first.
    pub fn put_index(
        &self,
        session: &str,
        disk: &str,
        index: &[u8],
    ) -> Result<Vec<ChunkId>, ClientError> {
        let path = format!("/backups/{session}/disks/{disk}/index");
        self.call(
            "PUT",
            &path,
            Some(("application/octet-stream", index)),
            &[409],
            |status, body| {
                if status == 409 {
                    let m: api::MissingChunks = read_json(&path, body)?;
                    Ok(m.missing)
                } else {
                    Ok(Vec::new())
                }
            },
        )
    }

    pub fn commit(&self, session: &str, req: &api::CommitRequest) -> Result<String, ClientError> {
        let r: api::CommitReply =
            self.send_json("POST", &format!("/backups/{session}/commit"), req)?;
        Ok(r.snapshot)
    }

    pub fn abandon(&self, session: &str) -> Result<(), ClientError> {
        self.call(
            "DELETE",
            &format!("/backups/{session}"),
            None,
            &[],
            |_, _| Ok(()),
        )
    }

    // ---- restore side ----

    pub fn snapshots(
        &self,
        machine: Option<&str>,
    ) -> Result<Vec<api::SnapshotSummary>, ClientError> {
        match machine {
            Some(m) => self.get_json(&format!("/snapshots?machine={m}")),
            None => self.get_json("/snapshots"),
        }
    }

    /// The snapshot's manifest, after its signature verified with the pinned key.
    pub fn manifest(&self, snapshot: &str) -> Result<Manifest, ClientError> {
        let signed: api::SignedManifest =
            self.get_json(&format!("/snapshots/{snapshot}/manifest"))?;
        let untrusted = |source| ClientError::Untrusted {
            snapshot: snapshot.to_string(),
            source,
        };
        self.trust
            .signing_key
            .verify(signed.manifest.as_bytes(), &signed.signature)
            .map_err(untrusted)?;
        let manifest: Manifest = serde_json::from_str(&signed.manifest)
            .map_err(|e| untrusted(ferry_format::FormatError::Manifest(e.to_string())))?;
        manifest.check().map_err(untrusted)?;
        if manifest.snapshot != snapshot {
            return Err(untrusted(ferry_format::FormatError::Manifest(format!(
                "the appliance answered with the manifest of snapshot {}",
                manifest.snapshot
            ))));
        }
        Ok(manifest)
    }

    /// A disk's index, checked against the digest in the (verified) manifest.
    pub fn index(&self, manifest: &Manifest, disk: &str) -> Result<DiskIndex, ClientError> {
        let snapshot = &manifest.snapshot;
        let path = format!("/snapshots/{snapshot}/disks/{disk}/index");
        let bytes = self.call("GET", &path, None, &[], |_, body| {
            read_vec(&path, body, 1 << 40)
        })?;
        let d = manifest.disk(disk).ok_or_else(|| ClientError::BadAnswer {
            what: path.clone(),
            detail: format!("snapshot {snapshot} has no disk {disk}"),
        })?;
        if ChunkId::of(&bytes) != d.index_digest {
            return Err(ClientError::IndexDigest {
                snapshot: snapshot.clone(),
                disk: disk.to_string(),
            });
        }
        DiskIndex::decode(&bytes).map_err(|source| ClientError::Untrusted {
            snapshot: snapshot.clone(),
            source,
        })
    }

    /// Fetch a chunk's stored zstd frame into `out` (cleared first). The caller verifies it.
    pub fn get_chunk(
        &self,
        id: &ChunkId,
        out: &mut Vec<u8>,
        limit: u64,
    ) -> Result<(), ClientError> {
        let path = format!("/chunks/{id}");
        self.call("GET", &path, None, &[], |_, body| {
            out.clear();
            body.as_reader()
                .take(limit + 1)
                .read_to_end(out)
                .map_err(|e| ClientError::BadAnswer {
                    what: path.clone(),
                    detail: format!("io: {e}"),
                })?;
            if out.len() as u64 > limit {
                return Err(ClientError::BadAnswer {
                    what: path.clone(),
                    detail: format!("chunk larger than {limit} bytes"),
                });
            }
            Ok(())
        })
    }
}

/// Unattended restores: enrollment, the job long poll, events, job state (docs/protocol.md,
/// "Agents and jobs").
impl Client {
    /// Enroll with an enroll token; the reply's credential is this agent's token from now on.
    pub fn enroll(&self, req: &agent::EnrollRequest) -> Result<agent::EnrollReply, ClientError> {
        self.send_json("POST", "/agents/enroll", req)
    }

    /// Wait up to `wait` (at most 55 s) for this agent's job; `None` when there is none yet.
    pub fn poll_job(
        &self,
        agent_id: &str,
        wait: Duration,
    ) -> Result<Option<agent::Job>, ClientError> {
        let path = format!("/agents/{agent_id}/job?wait={}", wait.as_secs());
        self.call("GET", &path, None, &[], |status, body| match status {
            204 => Ok(None),
            _ => read_json(&path, body).map(Some),
        })
    }

    pub fn post_events(
        &self,
        agent_id: &str,
        batch: &agent::EventBatch,
    ) -> Result<(), ClientError> {
        let path = format!("/agents/{agent_id}/events");
        let bytes = serde_json::to_vec(batch).map_err(|e| ClientError::BadAnswer {
            what: path.clone(),
            detail: e.to_string(),
        })?;
        self.call(
            "POST",
            &path,
            Some(("application/json", &bytes)),
            &[],
            |_, _| Ok(()),
        )
    }

    /// Report a job's state. It must arrive: it gets a whole retry window of its own even when
    /// an outage has already ended the job's other requests.
    pub fn set_job_state(
        &self,
        agent_id: &str,
        job: &str,
        state: &agent::JobState,
    ) -> Result<(), ClientError> {
        self.put_own_window(&format!("/agents/{agent_id}/jobs/{job}/state"), state)
    }

    /// PUT a JSON body with a whole retry window of its own (its own outage clock, this
    /// client's credentials), even when an outage has already ended the caller's other requests.
    pub(crate) fn put_own_window<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::BadAnswer {
            what: path.to_string(),
            detail: e.to_string(),
        })?;
        let mut own = self.with_token("");
        own.auth = self.auth.clone();
        own.outage = Arc::default();
        own.call(
            "PUT",
            path,
            Some(("application/json", &bytes)),
            &[],
            |_, _| Ok(()),
        )
    }

    // ---- first-boot beacon (docs/protocol.md, "First-boot beacon") ----

    /// A new one-time credential for the beacon of this agent's running job.
    pub fn issue_beacon(
        &self,
        agent_id: &str,
        job: &str,
    ) -> Result<agent::beacon::BeaconIssued, ClientError> {
        self.send_json(
            "POST",
            &format!("/agents/{agent_id}/jobs/{job}/beacon"),
            &(),
        )
    }

    /// Report the restored system's first boot with the beacon's credential (this client's
    /// token). 410 (already used) and 401 (unknown) come back as [`ClientError::Refused`].
    pub fn report_beacon(
        &self,
        report: &agent::beacon::BeaconReport,
    ) -> Result<agent::beacon::BeaconReply, ClientError> {
        self.send_json("POST", "/beacon", report)
    }
}

fn http_err(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Final(ClientError::BadAnswer {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

fn read_vec(what: &str, body: &mut ureq::Body, limit: u64) -> Result<Vec<u8>, ClientError> {
    body.with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| ClientError::BadAnswer {
            what: what.to_string(),
            detail: format!("io: {e}"),
        })
}

fn read_json<T: DeserializeOwned>(what: &str, body: &mut ureq::Body) -> Result<T, ClientError> {
    let bytes = read_vec(what, body, MAX_JSON)?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

/// A TLS failure that no retry will fix: the peer's certificate is not one we trust.
fn certificate_problem(e: &ureq::Error) -> Option<String> {
    let rustls_err = match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    }?;
    match rustls_err {
        rustls::Error::InvalidCertificate(c) => Some(format!("{c:?}")),
        rustls::Error::NoCertificatesPresented => Some("no certificate presented".into()),
        _ => None,
    }
}

/// Read the trust bundle (`ca.pem` from `appliance init`) an agent pins.
pub fn load_trust(path: &std::path::Path) -> Result<TrustBundle, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::BadAnswer {
        what: format!("the CA file {}", path.display()),
        detail: format!("cannot read it: {e}"),
    })?;
    TrustBundle::from_pem(&text).map_err(|e| ClientError::BadAnswer {
        what: format!("the CA file {}", path.display()),
        detail: e.to_string(),
    })
}

/// Parse a duration: `900`, `90s`, `15m`, `2h`, `1d` (ferry_format::api::parse_duration_secs).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    ferry_format::api::parse_duration_secs(s).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_port_url() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        format!("https://127.0.0.1:{port}")
    }

    /// A client of an address where nothing listens: every attempt is refused at once.
    fn client_of_closed_port(window: Duration) -> Client {
        client_of(&closed_port_url(), window)
    }

    fn client_of(url: &str, window: Duration) -> Client {
        Client::new(ClientConfig {
            url: url.to_string(),
            trust: TrustBundle {
                ca_certs: Vec::new(),
                signing_key: ferry_format::signing::SigningKey([0; 32]),
            },
            token: "t".into(),
            retry_window: window,
            connections: 2,
        })
        .expect("client")
    }

    #[test]
    fn a_request_gives_up_when_its_window_is_spent_and_names_the_network() {
        let c = client_of_closed_port(Duration::from_secs(2));
        let t = Instant::now();
        let e = c.hello().expect_err("nothing listens");
        let took = t.elapsed();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        assert!(e.gave_up_retrying());
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(5),
            "gave up after {took:?}"
        );
        assert!(e.to_string().contains("GET /hello"), "{e}");
    }

    #[test]
    fn an_outage_costs_one_window_not_one_per_request() {
        let c = client_of_closed_port(Duration::from_secs(2));
        c.hello().expect_err("nothing listens");
        // The appliance has failed every request for a whole window: later requests, through
        // this client or a clone, give up after one more failed attempt.
        for c in [
            &c,
            &c.with_token("other"),
            &c.with_retry_window(Duration::from_secs(2)),
        ] {
            let t = Instant::now();
            let e = c.snapshots(None).expect_err("nothing listens");
            assert!(e.gave_up_retrying(), "{e}");
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "took {:?}",
                t.elapsed()
            );
        }
        // A job's final state still gets a whole window.
        let t = Instant::now();
        let state = agent::JobState::Failed {
            reason: "test".into(),
        };
        let e = c
            .set_job_state("a", "j", &state)
            .expect_err("nothing listens");
        assert!(e.gave_up_retrying(), "{e}");
        assert!(
            t.elapsed() >= Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_dead_node_is_left_for_the_next_and_every_clone_follows() {
        let (a, b) = (closed_port_url(), closed_port_url());
        let c = client_of(&format!("{a},{b}"), Duration::from_secs(2));
        assert_eq!(c.url(), a);
        let t = Instant::now();
        let e = c.hello().expect_err("nothing listens");
        // Both nodes were tried in each round; the error names them.
        assert!(e.gave_up_retrying(), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("every other node of {a},{b}")),
            "{e}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        // A clone shares the current node.
        let clone = c.with_token("other");
        assert_eq!(clone.url(), c.url());
        // Moving past a node another request has already left does not move again.
        let (now, _) = c.nodes.current();
        assert!(c.nodes.move_past(now));
        let moved = c.url().to_string();
        assert!(c.nodes.move_past(now));
        assert_eq!(c.url(), moved);
        assert_eq!(clone.url(), moved);
    }

    #[test]
    fn one_node_never_moves_and_bad_lists_are_refused() {
        let c = client_of(&closed_port_url(), Duration::from_secs(1));
        assert!(!c.nodes.move_past(0));
        for bad in ["https://a,http://b", "https://a,https://a", ","] {
            let e = Client::new(ClientConfig {
                url: bad.into(),
                trust: TrustBundle {
                    ca_certs: Vec::new(),
                    signing_key: ferry_format::signing::SigningKey([0; 32]),
                },
                token: "t".into(),
                retry_window: Duration::from_secs(1),
                connections: 2,
            })
            .err()
            .expect("refused");
            assert!(e.to_string().contains("the appliance URL"), "{e}");
        }
    }
}
