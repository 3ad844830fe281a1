//! Observability: `GET /healthz` (no credential: load balancers and service managers probe it)
//! and `GET /metrics` (Prometheus/OpenMetrics text; an admin or metrics token).
//!
//! Two kinds of figures:
//! - counted as requests pass ([`Metrics::record_http`], [`Metrics::chunk_upload`]): HTTP
//!   requests by route, method and status, their durations and bytes, chunk uploads new or
//!   already stored;
//! - read from the store at scrape time ([`StoreFigures`]): chunks and bytes stored, snapshots per
//!   machine and the newest one's time, jobs by kind and state with the durations of finished
//!   ones, agents by state and when each was last seen. Reading them walks the chunk directory
//!   and every record, so one reading serves every scrape for [`STORE_FIGURES_TTL`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_format::agent::{AgentState, JobKind, JobState};
use ferry_format::api::Role;
use ferry_store::tokens::parse_rfc3339;
use ferry_store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::{blocking, SharedState};

/// How long one reading of the store serves scrapes.
pub const STORE_FIGURES_TTL: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MachineLabels {
    machine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    agent: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_seconds() -> Histogram {
    // 1 ms .. ~65 s: chunk transfers and long polls (which wait up to a minute) both fit.
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

fn job_seconds() -> Histogram {
    // 10 s .. ~45 h.
    Histogram::new(exponential_buckets(10.0, 3.0, 10))
}

/// The counters the server keeps while it runs.
pub struct Metrics {
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: HistogramFamily<RouteLabels>,
    http_bytes_in: Family<RouteLabels, Counter>,
    http_bytes_out: Family<RouteLabels, Counter>,
    chunk_uploads: Family<OutcomeLabels, Counter>,
    chunk_upload_bytes: Family<OutcomeLabels, Counter>,
    store: Mutex<Option<(Instant, Arc<StoreFigures>)>>,
    started: SystemTime,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(request_seconds),
            http_bytes_in: Family::default(),
            http_bytes_out: Family::default(),
            chunk_uploads: Family::default(),
            chunk_upload_bytes: Family::default(),
            store: Mutex::new(None),
            started: SystemTime::now(),
        }
    }
}

impl Metrics {
    /// One finished request. `route` is the route's pattern (`/api/v1/chunks/{id}`), never the
    /// path: ids would make every request its own series.
    pub fn record_http(
        &self,
        route: &str,
        method: &str,
        status: u16,
        seconds: f64,
        bytes_in: u64,
        bytes_out: Option<u64>,
    ) {
        let r = RouteLabels {
            route: route.to_owned(),
        };
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.http_seconds.get_or_create(&r).observe(seconds);
        self.http_bytes_in.get_or_create(&r).inc_by(bytes_in);
        if let Some(n) = bytes_out {
            self.http_bytes_out.get_or_create(&r).inc_by(n);
        }
    }

    /// A chunk upload: `new` (stored now) or `present` (the store had it: deduplicated).
    pub fn chunk_upload(&self, new: bool, bytes: u64) {
        let l = OutcomeLabels {
            outcome: if new { "new" } else { "present" },
        };
        self.chunk_uploads.get_or_create(&l).inc();
        self.chunk_upload_bytes.get_or_create(&l).inc_by(bytes);
    }

    /// The store figures, read at most once per [`STORE_FIGURES_TTL`].
    fn store_figures(&self, store: &Store) -> Result<Arc<StoreFigures>, ferry_store::StoreError> {
        let mut cached = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, f)) = cached.as_ref() {
            if at.elapsed() < STORE_FIGURES_TTL {
                return Ok(f.clone());
            }
        }
        let f = Arc::new(StoreFigures::read(store, SystemTime::now())?);
        *cached = Some((Instant::now(), f.clone()));
        Ok(f)
    }

    /// The exposition text: the live counters and the store's figures.
    pub fn encode(&self, store: &StoreFigures) -> Result<String, std::fmt::Error> {
        let mut reg = Registry::default();
        reg.register(
            "ferry_http_requests",
            "HTTP requests by route pattern, method and status",
            self.http_requests.clone(),
        );
        reg.register(
            "ferry_http_request_duration_seconds",
            "HTTP request durations by route pattern (long polls included)",
            self.http_seconds.clone(),
        );
        reg.register(
            "ferry_http_request_bytes",
            "Request body bytes by route pattern (Content-Length)",
            self.http_bytes_in.clone(),
        );
        reg.register(
            "ferry_http_response_bytes",
            "Response body bytes by route pattern, where known before sending",
            self.http_bytes_out.clone(),
        );
        reg.register(
            "ferry_chunk_uploads",
            "Chunk uploads: new (stored) or present (deduplicated)",
            self.chunk_uploads.clone(),
        );
        reg.register(
            "ferry_chunk_upload_bytes",
            "Bytes of chunk uploads (compressed frames): new or present",
            self.chunk_upload_bytes.clone(),
        );
        let started = unix(self.started);
        reg.register(
            "ferry_start_time_seconds",
            "When this appliance process started (Unix time)",
            gauge(started),
        );
        store.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg)?;
        Ok(out)
    }
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn kind_name(k: JobKind) -> &'static str {
    match k {
        JobKind::Restore => "restore",
        JobKind::Standby => "standby",
        JobKind::Backup => "backup",
    }
}

fn agent_state_name(s: AgentState) -> &'static str {
    match s {
        AgentState::Waiting => "waiting",
        AgentState::Running => "running",
        AgentState::Succeeded => "succeeded",
        AgentState::Failed => "failed",
    }
}

/// What the store holds, read in one pass.
#[derive(Debug, Default)]
pub struct StoreFigures {
    pub chunks: u64,
    pub chunk_bytes: u64,
    /// Data chunks the snapshots reference, counted once per reference.
    pub chunk_references: u64,
    /// Machine → (snapshots, newest snapshot's creation, Unix time).
    pub machines: BTreeMap<String, (u64, i64)>,
    pub jobs: BTreeMap<(&'static str, &'static str), u64>,
    /// (kind, seconds from start to end) of every finished job.
    pub job_durations: Vec<(&'static str, f64)>,
    pub agents: BTreeMap<&'static str, u64>,
    pub agent_last_seen: BTreeMap<String, i64>,
}

impl StoreFigures {
    pub fn read(store: &Store, _now: SystemTime) -> Result<Self, ferry_store::StoreError> {
        let mut f = StoreFigures::default();
        let usage = store.chunk_usage()?;
        f.chunks = usage.chunks;
        f.chunk_bytes = usage.bytes;
        for s in store.list_snapshots(None)? {
            f.chunk_references += s.data_chunks;
            let created = parse_rfc3339(&s.created).map_or(0, unix);
            let e = f.machines.entry(s.machine).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(created);
        }
        for j in store.list_jobs()? {
            *f.jobs
                .entry((kind_name(j.kind), j.state.name()))
                .or_default() += 1;
            if matches!(j.state, JobState::Succeeded | JobState::Failed { .. }) {
                let t = |s: &Option<String>| s.as_deref().and_then(parse_rfc3339);
                if let (Some(a), Some(b)) = (t(&j.started), t(&j.finished)) {
                    if let Ok(d) = b.duration_since(a) {
                        f.job_durations.push((kind_name(j.kind), d.as_secs_f64()));
                    }
                }
            }
        }
        for a in store.list_agents()? {
            *f.agents.entry(agent_state_name(a.state)).or_default() += 1;
            f.agent_last_seen
                .insert(a.agent, parse_rfc3339(&a.last_seen).map_or(0, unix));
        }
        Ok(f)
    }

    fn register(&self, reg: &mut Registry) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        reg.register(
            "ferry_store_chunks",
            "Chunk files in the store",
            gauge(clamp(self.chunks)),
        );
        reg.register(
            "ferry_store_chunk_bytes",
            "Bytes of chunk files in the store (compressed)",
            gauge(clamp(self.chunk_bytes)),
        );
        reg.register(
            "ferry_store_chunk_references",
            "Data chunk references of all snapshots (a chunk counted once per snapshot disk \
             that uses it); divided by ferry_store_chunks: the deduplication ratio",
            gauge(clamp(self.chunk_references)),
        );
        let snaps = Family::<MachineLabels, Gauge>::default();
        let newest = Family::<MachineLabels, Gauge>::default();
        for (m, (n, t)) in &self.machines {
            let l = MachineLabels { machine: m.clone() };
            snaps.get_or_create(&l).set(clamp(*n));
            newest.get_or_create(&l).set(*t);
        }
        reg.register("ferry_snapshots", "Snapshots per machine", snaps);
        reg.register(
            "ferry_snapshot_newest_created_seconds",
            "When each machine's newest snapshot was taken (Unix time): alert when it gets old",
            newest,
        );
        let jobs = Family::<JobLabels, Gauge>::default();
        for ((kind, state), n) in &self.jobs {
            jobs.get_or_create(&JobLabels { kind, state })
                .set(clamp(*n));
        }
        reg.register("ferry_jobs", "Jobs by kind and state", jobs);
        let durations: HistogramFamily<JobLabels> = Family::new_with_constructor(job_seconds);
        for (kind, secs) in &self.job_durations {
            durations
                .get_or_create(&JobLabels {
                    kind,
                    state: "finished",
                })
                .observe(*secs);
        }
        reg.register(
            "ferry_job_duration_seconds",
            "Durations of finished jobs (start to success or failure) by kind",
            durations,
        );
        let agents = Family::<StateLabels, Gauge>::default();
        for (state, n) in &self.agents {
            agents.get_or_create(&StateLabels { state }).set(clamp(*n));
        }
        reg.register("ferry_agents", "Enrolled rescue agents by state", agents);
        let seen = Family::<AgentLabels, Gauge>::default();
        for (a, t) in &self.agent_last_seen {
            seen.get_or_create(&AgentLabels { agent: a.clone() })
                .set(*t);
        }
        reg.register(
            "ferry_agent_last_seen_seconds",
            "When each agent last talked to the appliance (Unix time)",
            seen,
        );
    }
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<SharedState>, caller: Caller) -> ApiResult<Response> {
    if caller.role != Role::Metrics {
        caller.need(Role::Admin)?;
    }
    let st2 = st.clone();
    let figures = blocking(move || st2.metrics.store_figures(&st2.store)).await?;
    let text = st.metrics.encode(&figures).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encode the metrics failed",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
}

/// `GET /healthz`: 200 when the store's directory and its records answer, 503 otherwise. No credential and
/// nothing about the store's contents. (On S3 a request per probe would make the health check
/// an S3 load test: the bucket's failures show as 503s of the requests that need it.)
pub async fn healthz(State(st): State<SharedState>) -> Response {
    // The records too: a PostgreSQL that is down makes nearly every request fail.
    let ok = blocking(move || {
        Ok(std::fs::metadata(st.store.sessions_dir()).is_ok() && st.store.tokens_stamp().is_ok())
    })
    .await
    .unwrap_or(false);
    let (code, status) = if ok {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
    };
    (
        code,
        Json(Health {
            status,
            version: env!("CARGO_PKG_VERSION"),
        }),
    )
        .into_response()
}

/// Middleware: counts every request under its route pattern.
pub async fn count_request(State(st): State<SharedState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let bytes_in = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let res = next.run(req).await;
    let bytes_out = http_body::Body::size_hint(res.body()).exact();
    st.metrics.record_http(
        &route,
        &method,
        res.status().as_u16(),
        start.elapsed().as_secs_f64(),
        bytes_in,
        bytes_out,
    );
    res
}
