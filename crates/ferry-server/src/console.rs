//! The operator console under `/ui` on the API's HTTPS port: server-rendered pages (maud, so
//! every value is HTML-escaped), no script from elsewhere, no build step.
//!
//! Sign-in exchanges an admin token for a session: a random id in a cookie that is `HttpOnly`
//! (no script reads it), `Secure`, `SameSite=Strict` (no other site sends it) and scoped to
//! `/ui`, kept in memory for [`SESSION_TTL`] after the last use. Every state change is a POST that
//! must carry the session's CSRF token (a hidden form field). Pages answer with a strict
//! Content-Security-Policy, `no-store` and no referrer. Restarting the appliance signs everyone
//! out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Form, Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_format::agent::{AgentInfo, JobFor, JobOptions, JobRecord, JobState, Mapping, Then};
use ferry_format::api::{Role, TokenState};
use ferry_format::units::human_bytes;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use ferry_store::jobs::NewJob;

use crate::state::{blocking, SharedState};

/// A session ends this long after its last request.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at once; signing in beyond it drops the least recently used.
pub const MAX_SESSIONS: usize = 256;
const COOKIE_NAME: &str = "ferry_session";

struct Session {
    csrf: String,
    token_id: String,
    last: Instant,
}

/// Signed-in sessions, by the BLAKE3 hash of their cookie value.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    // No randomness from the OS: no session (the id would be guessable).
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return String::new();
    }
    hex::encode(b)
}

fn key(id: &str) -> String {
    blake3::hash(id.as_bytes()).to_hex().to_string()
}

impl Sessions {
    /// A new session for the token `token_id`: (cookie value, CSRF token).
    fn open(&self, token_id: &str) -> Option<(String, String)> {
        let (id, csrf) = (random_hex(), random_hex());
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.last.elapsed() < SESSION_TTL);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            key(&id),
            Session {
                csrf: csrf.clone(),
                token_id: token_id.to_owned(),
                last: Instant::now(),
            },
        );
        Some((id, csrf))
    }

    /// The session's (CSRF token, token id), refreshing its expiry; `None` when unknown or
    /// expired.
    fn touch(&self, id: &str) -> Option<(String, String)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(id);
        match map.get_mut(&k) {
            Some(s) if s.last.elapsed() < SESSION_TTL => {
                s.last = Instant::now();
                Some((s.csrf.clone(), s.token_id.clone()))
            }
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    fn close(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key(id));
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_owned())
}

/// The page headers every console answer carries.
fn secure(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

fn redirect(to: &'static str) -> Response {
    secure((StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response())
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}\
header{background:#16324f;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1rem;align-items:center}\
header h1{font-size:1.1rem;margin:0;flex:1}header form{margin:0}\
main{padding:1rem 1.2rem;max-width:80rem}section{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:.8rem 1rem;margin-bottom:1rem}\
h2{font-size:1rem;margin:.2rem 0 .6rem}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e6e9ed}th{color:#4a5561;font-weight:600}\
.num{text-align:right;font-variant-numeric:tabular-nums}.err{color:#8a1c1c;background:#fdecec;padding:.5rem;border-radius:4px}\
label{display:block;margin:.4rem 0}input[type=password]{width:100%;max-width:36rem;padding:.4rem}\
button{padding:.35rem .9rem;border:1px solid #16324f;background:#16324f;color:#fff;border-radius:4px;cursor:pointer}\
header button{background:#fff;color:#16324f}a{color:#0b5cad}";

fn page(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Ferry" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { a href="/ui" style="color:#fff;text-decoration:none" { "Ferry appliance" } }
                    @if let Some(csrf) = csrf {
                        a href="/ui/jobs/new" style="color:#fff" { "New restore job" }
                        form #logout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn login_page(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            section {
                h2 { "Sign in" }
                @if let Some(e) = error { p.err role="alert" { (e) } }
                form #login method="post" action="/ui/login" {
                    label for="token" { "Admin token (" code { "appliance token create --role admin" } ")" }
                    input #token type="password" name="token" autocomplete="off" required autofocus;
                    p { button #sign-in type="submit" { "Sign in" } }
                }
            }
        },
    )
}

/// `GET /ui/login`.
pub async fn login_form() -> Response {
    secure(login_page(None).into_response())
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /ui/login`: an active admin token opens a session; anything else is refused with the
/// same page and no hint which part was wrong.
pub async fn login(State(st): State<SharedState>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim().to_owned();
    let s = st.clone();
    let found = blocking(move || s.tokens.lookup(&token))
        .await
        .ok()
        .flatten();
    let admin = found.filter(|t| {
        t.record.role == Role::Admin && t.record.state(SystemTime::now()) == TokenState::Active
    });
    let Some(t) = admin else {
        tracing::info!("console: a sign-in was refused");
        return secure(
            (
                StatusCode::UNAUTHORIZED,
                login_page(Some("That is not an active admin token.")),
            )
                .into_response(),
        );
    };
    let Some((id, _)) = st.sessions.open(&t.record.id) else {
        return secure(StatusCode::SERVICE_UNAVAILABLE.into_response());
    };
    tracing::info!("console: signed in with token {}", t.record.id);
    let mut res = redirect("/ui");
    let cookie = format!(
        "{COOKIE_NAME}={id}; Path=/ui; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(SET_COOKIE, v);
    }
    res
}

#[derive(Deserialize)]
pub struct CsrfForm {
    /// Missing: refused as a wrong token is (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
}

/// Constant-time: blake3's `Hash` compares without early exit.
fn csrf_matches(a: &str, b: &str) -> bool {
    blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

/// `POST /ui/logout`: needs the session's CSRF token.
pub async fn logout(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Some(id) = cookie_value(&headers) else {
        return redirect("/ui/login");
    };
    match st.sessions.touch(&id) {
        Some((csrf, _)) if csrf_matches(&csrf, &f.csrf) => {
            st.sessions.close(&id);
            let mut res = redirect("/ui/login");
            res.headers_mut().insert(
                SET_COOKIE,
                HeaderValue::from_static(
                    "ferry_session=; Path=/ui; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
                ),
            );
            res
        }
        Some(_) => forbidden(),
        None => redirect("/ui/login"),
    }
}

fn forbidden() -> Response {
    secure(
        (
            StatusCode::FORBIDDEN,
            page(
                "Refused",
                None,
                html! { section { p.err { "This form was not sent from your signed-in console page (no or wrong CSRF token): reload the page and try again." } } },
            ),
        )
            .into_response(),
    )
}

/// The signed-in session's CSRF token, or the redirect to the sign-in page. (A `Response`
/// error is what every caller returns as is: boxing it would only add an allocation.)
#[allow(clippy::result_large_err)]
fn signed_in(st: &SharedState, headers: &HeaderMap) -> Result<String, Response> {
    cookie_value(headers)
        .and_then(|id| st.sessions.touch(&id))
        .map(|(csrf, _)| csrf)
        .ok_or_else(|| redirect("/ui/login"))
}

/// A form POST: the session and its CSRF token, or the answer to send instead.
#[allow(clippy::result_large_err)]
fn checked_post(st: &SharedState, headers: &HeaderMap, sent: &str) -> Result<String, Response> {
    let csrf = signed_in(st, headers)?;
    if csrf_matches(&csrf, sent) {
        Ok(csrf)
    } else {
        Err(forbidden())
    }
}

fn error_page(csrf: &str, status: StatusCode, message: &str) -> Response {
    secure(
        (
            status,
            page("Error", Some(csrf), html! { section { p.err role="alert" { (message) } p { a href="/ui" { "Back to the dashboard" } } } }),
        )
            .into_response(),
    )
}

/// Runs store reads off the async threads; an error becomes an error page.
async fn read<T: Send + 'static>(
    csrf: &str,
    f: impl FnOnce() -> Result<T, ferry_store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    blocking(f)
        .await
        .map_err(|e| error_page(csrf, e.status, &e.message))
}

fn pct(done: u64, total: u64) -> String {
    if total == 0 {
        "—".to_owned()
    } else {
        format!("{:.0} %", done as f64 * 100.0 / total as f64)
    }
}

/// `GET /ui`: store usage, machines, agents and jobs at a glance.
pub async fn dashboard(State(st): State<SharedState>, headers: HeaderMap) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = st.clone();
    let data = read(&csrf, move || {
        Ok((
            crate::admin::usage(&s.store)?,
            s.store.list_snapshots(None)?,
            s.store.list_agents()?,
            s.store.list_jobs()?,
        ))
    })
    .await;
    let (usage, snapshots, agents, jobs) = match data {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut machines: std::collections::BTreeMap<&str, (u64, &str, String)> = Default::default();
    for s in &snapshots {
        let e = machines.entry(&s.machine).or_insert((0, "", String::new()));
        e.0 += 1;
        e.1 = &s.created;
        e.2 = s.consistency.to_string();
    }
    let running = jobs.iter().filter(|j| !j.state.is_final()).count();
    let body = html! {
        section #store aria-label="store" {
            h2 { "Store" }
            p {
                (usage.snapshots) " snapshots of " (usage.machines) " machines · "
                (human_bytes(usage.chunk_bytes)) " in " (usage.chunks) " chunks · deduplication "
                (format!("{:.2}", usage.dedup_ratio)) "× · " (agents.len()) " agents · "
                (running) " jobs not finished"
            }
        }
        section #machines aria-label="machines" {
            h2 { "Machines" }
            table {
                thead { tr { th { "Machine" } th.num { "Snapshots" } th { "Last backup" } th { "Consistency" } } }
                tbody {
                    @for (m, (n, last, consistency)) in &machines {
                        tr data-machine=(m) {
                            td { a.machine href=(format!("/ui/machines/{m}")) { (m) } }
                            td.num { (n) } td { (last) } td { (consistency) }
                        }
                    }
                }
            }
        }
        section #agents aria-label="agents" {
            h2 { "Rescue agents" }
            table {
                thead { tr { th { "Agent" } th { "State" } th { "Approved" } th { "Last seen" } th.num { "Disks" } } }
                tbody { @for a in &agents { (agent_row(a)) } }
            }
        }
        section #jobs aria-label="jobs" {
            h2 { "Jobs " a #new-job href="/ui/jobs/new" { "(new restore job)" } }
            table {
                thead { tr { th { "Job" } th { "Kind" } th { "State" } th { "Agent" } th.num { "Progress" } th { "Created" } } }
                tbody { @for j in jobs.iter().rev() { (job_row(j)) } }
            }
        }
    };
    secure(page("Dashboard", Some(&csrf), body).into_response())
}

fn agent_row(a: &AgentInfo) -> Markup {
    html! {
        tr data-agent=(a.agent) {
            td { a.agent href=(format!("/ui/agents/{}", a.agent)) { (a.agent) } }
            td { (format!("{:?}", a.state).to_lowercase()) }
            td { @if a.approved.is_some() { "yes" } @else { "no" } }
            td { (a.last_seen) }
            td.num { (a.inventory.disks.len()) }
        }
    }
}

fn job_row(j: &JobRecord) -> Markup {
    html! {
        tr data-job=(j.id) {
            td { a.job href=(format!("/ui/jobs/{}", j.id)) { (j.id) } }
            td { (format!("{:?}", j.kind).to_lowercase()) }
            td.state { (j.state.name()) }
            td { (j.agent.as_deref().unwrap_or("—")) }
            td.num { (pct(j.progress.bytes_done, j.progress.bytes_total)) }
            td { (j.created) }
        }
    }
}

/// `GET /ui/machines/{name}`: its snapshots, newest first, each with "restore from here".
pub async fn machine(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (s, m) = (st.clone(), name.clone());
    let list = match read(&csrf, move || s.store.list_snapshots(Some(&m))).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    if list.is_empty() {
        return error_page(
            &csrf,
            StatusCode::NOT_FOUND,
            &format!("No snapshots of machine {name}."),
        );
    }
    let body = html! {
        section {
            h2 { "Machine " (name) }
            table #snapshots {
                thead { tr { th { "Snapshot" } th { "Taken" } th { "Consistency" } th { "Disks" } th.num { "Size" } th.num { "Chunks" } th {} } }
                tbody {
                    @for s in list.iter().rev() {
                        tr data-snapshot=(s.snapshot) {
                            td { (s.snapshot) } td { (s.created) } td { (s.consistency.to_string()) }
                            td { (s.disks.join(", ")) } td.num { (human_bytes(s.size)) } td.num { (s.data_chunks) }
                            td { a.restore href=(format!("/ui/jobs/new?snapshot={}", s.snapshot)) { "Restore from here" } }
                        }
                    }
                }
            }
        }
    };
    secure(page(&format!("Machine {name}"), Some(&csrf), body).into_response())
}

/// `GET /ui/agents/{id}`: state, inventory, problems; the approval form while unapproved.
pub async fn agent(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = st.clone();
    let list = match read(&csrf, move || s.store.list_agents()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Some(a) = list.into_iter().find(|a| a.agent == id) else {
        return error_page(&csrf, StatusCode::NOT_FOUND, &format!("No agent {id}."));
    };
    let inv = &a.inventory;
    let body = html! {
        section {
            h2 { "Agent " (a.agent) }
            dl #agent {
                dt { "State" } dd #agent-state { (format!("{:?}", a.state).to_lowercase()) }
                dt { "Approved" } dd { @match &a.approved { Some(ap) => (format!("{} by {}", ap.time, ap.by)), None => "no: it is given no job" } }
                dt { "Enrolled" } dd { (a.enrolled) } dt { "Last seen" } dd { (a.last_seen) }
                dt { "Firmware" } dd { (format!("{:?}", inv.firmware).to_lowercase()) }
                dt { "Memory" } dd { (human_bytes(inv.memory_bytes)) }
                dt { "Version" } dd { (a.version) }
            }
            @if a.approved.is_none() {
                form #approve method="post" action=(format!("/ui/agents/{}/approve", a.agent)) {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="code" { "The code this machine's console shows" }
                    input #code type="text" name="code" required autocomplete="off";
                    p { button #approve type="submit" { "Approve" } }
                }
            }
        }
        section {
            h2 { "Disks" }
            table #disks {
                thead { tr { th { "Disk" } th.num { "Size" } th { "Model" } th { "Serial" } th { "Blank" } } }
                tbody {
                    @for d in &inv.disks {
                        tr data-disk=(d.name) {
                            td { (d.name) } td.num { (human_bytes(d.size)) }
                            td { (d.model.as_deref().unwrap_or("—")) } td { (d.serial.as_deref().unwrap_or("—")) }
                            td { @if d.blank { "yes" } @else { "no" } }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Network" }
            table #nics {
                thead { tr { th { "NIC" } th { "MAC" } th { "Driver" } th { "Link" } } }
                tbody {
                    @for n in &inv.nics {
                        tr { td { (n.name) } td { (n.mac) } td { (n.driver.as_deref().unwrap_or("—")) }
                             td { @match n.carrier { Some(true) => "up", Some(false) => "down", None => "—" } } }
                    }
                }
            }
            @if !inv.problems.is_empty() {
                h2 { "Problems" }
                ul #problems { @for p in &inv.problems { li { (p.to_string()) } } }
            }
        }
    };
    secure(page(&format!("Agent {id}"), Some(&csrf), body).into_response())
}

#[derive(Deserialize)]
pub struct ApproveForm {
    /// Missing: refused as a wrong token is (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
    code: String,
}

/// `POST /ui/agents/{id}/approve`.
pub async fn approve(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ApproveForm>,
) -> Response {
    let csrf = match checked_post(&st, &headers, &f.csrf) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (s, a, code) = (st.clone(), id.clone(), f.code.trim().to_owned());
    match read(&csrf, move || {
        s.store.approve_agent(&a, Some(&code), SystemTime::now())
    })
    .await
    {
        Ok(info) => {
            tracing::info!("console: agent {} approved", info.agent);
            secure(
                (
                    StatusCode::SEE_OTHER,
                    [(LOCATION, format!("/ui/agents/{id}"))],
                )
                    .into_response(),
            )
        }
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
pub struct NewJobQuery {
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    agent: Option<String>,
}

/// What the new-job form shows: choices and the values to keep after a refusal.
struct JobForm {
    snapshot: String,
    agent: String,
    map: String,
    grow: bool,
    fixup: bool,
    then: String,
}

async fn job_form_page(st: &SharedState, csrf: &str, f: &JobForm, error: Option<&str>) -> Response {
    let s = st.clone();
    let data = read(csrf, move || {
        Ok((s.store.list_snapshots(None)?, s.store.list_agents()?))
    })
    .await;
    let (snapshots, agents) = match data {
        Ok(d) => d,
        Err(r) => return r,
    };
    let body = html! {
        section {
            h2 { "New restore job" }
            @if let Some(e) = error { p #error .err role="alert" { (e) } }
            form #new-job method="post" action="/ui/jobs" {
                input type="hidden" name="csrf" value=(csrf);
                label for="snapshot" { "Snapshot" }
                select #snapshot name="snapshot" required {
                    @for s in snapshots.iter().rev() {
                        option value=(s.snapshot) selected[s.snapshot == f.snapshot] {
                            (s.snapshot) " — " (s.disks.join(", ")) ", " (human_bytes(s.size))
                        }
                    }
                }
                label for="agent" { "Agent (the machine to restore onto)" }
                select #agent name="agent" required {
                    @for a in &agents {
                        option value=(a.agent) selected[a.agent == f.agent] {
                            (a.agent) " — " (a.inventory.disks.iter().map(|d| format!("{} {}", d.name, human_bytes(d.size))).collect::<Vec<_>>().join(", "))
                            @if a.approved.is_none() { " (not approved)" }
                        }
                    }
                }
                label for="map" { "Disk mapping: SOURCE=TARGET, several separated by spaces (" code { "sda=auto" } ", " code { "sda=/dev/vdb" } ", " code { "sda=serial:XYZ" } ")" }
                input #map type="text" name="map" value=(f.map) required;
                label { input #grow type="checkbox" name="grow" value="on" checked[f.grow]; " Grow the last partition and its filesystem into a larger disk" }
                label { input #fixup type="checkbox" name="fixup" value="on" checked[f.fixup]; " Adapt the restored system to this machine (drivers, boot)" }
                label for="then" { "Then" }
                select #then name="then" {
                    @for t in ["reboot", "poweroff", "none"] { option value=(t) selected[t == f.then] { (t) } }
                }
                p { button #create type="submit" { "Create the job" } }
            }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    secure((status, page("New restore job", Some(csrf), body)).into_response())
}

/// `GET /ui/jobs/new[?snapshot=ID&agent=ID]`.
pub async fn new_job(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<NewJobQuery>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = JobForm {
        snapshot: q.snapshot.unwrap_or_default(),
        agent: q.agent.unwrap_or_default(),
        map: "disk=auto".into(),
        grow: false,
        fixup: true,
        then: "reboot".into(),
    };
    job_form_page(&st, &csrf, &f, None).await
}

#[derive(Deserialize)]
pub struct JobPost {
    /// Missing: refused as a wrong token is (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
    snapshot: String,
    agent: String,
    map: String,
    #[serde(default)]
    grow: Option<String>,
    #[serde(default)]
    fixup: Option<String>,
    then: String,
}

/// `POST /ui/jobs`: the same checks as `appliance jobs create` (the store's), before anything
/// exists; a refusal shows the form again with the message.
pub async fn create_job(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Form(p): Form<JobPost>,
) -> Response {
    let csrf = match checked_post(&st, &headers, &p.csrf) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = JobForm {
        snapshot: p.snapshot.clone(),
        agent: p.agent.clone(),
        map: p.map.clone(),
        grow: p.grow.is_some(),
        fixup: p.fixup.is_some(),
        then: p.then.clone(),
    };
    let mappings: Result<Vec<Mapping>, String> = p
        .map
        .split_whitespace()
        .map(str::parse::<Mapping>)
        .collect();
    let then = match p.then.as_str() {
        "reboot" => Ok(Then::Reboot),
        "poweroff" => Ok(Then::Poweroff),
        "none" => Ok(Then::None),
        other => Err(format!(
            "unknown then-action {other:?}: reboot, poweroff or none"
        )),
    };
    let (mappings, then) = match (mappings, then) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(e), _) | (_, Err(e)) => return job_form_page(&st, &csrf, &f, Some(&e)).await,
    };
    let new = NewJob {
        snapshot: p.snapshot,
        for_: JobFor::Agent(p.agent),
        mappings,
        then,
        overwrite: false,
        options: JobOptions {
            grow: f.grow,
            fixup: f.fixup,
            ..JobOptions::default()
        },
    };
    let s = st.clone();
    match blocking(move || s.store.create_job(new, SystemTime::now())).await {
        Ok(job) => {
            tracing::info!("console: job {} created", job.id);
            secure(
                (
                    StatusCode::SEE_OTHER,
                    [(LOCATION, format!("/ui/jobs/{}", job.id))],
                )
                    .into_response(),
            )
        }
        Err(e) => job_form_page(&st, &csrf, &f, Some(&e.message)).await,
    }
}

/// `GET /ui/jobs/{id}`: state, progress and events, updated in place by /ui/app.js.
pub async fn job(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (s, i) = (st.clone(), id.clone());
    let v = match read(&csrf, move || crate::job_commands::job_view(&s.store, &i)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let j = &v.job;
    let body = html! {
        section #job data-job=(j.id) data-final=(j.state.is_final()) {
            h2 { "Job " (j.id) }
            p {
                "State: " strong { span #state { (j.state.name()) } } " · progress "
                span #progress { (pct(j.progress.bytes_done, j.progress.bytes_total)) }
                " · " span #rate { (human_bytes(j.progress.rate)) "/s" } " · ETA " span #eta { (j.progress.eta) " s" }
            }
            progress #bar max=(j.progress.bytes_total.max(1)) value=(j.progress.bytes_done) {}
            @if let JobState::Failed { reason } = &j.state { p #reason .err role="alert" { (reason) } }
            p { "Snapshot " (j.snapshot) " onto " (match &j.for_ { JobFor::Agent(a) => format!("agent {a}"), JobFor::Mac(m) => format!("the machine with MAC {m}") }) " · created " (j.created) }
        }
        section {
            h2 { "Events" }
            ol #events { @for e in &v.events { li { (e.time) " " (format!("{:?}", e.level).to_lowercase()) " " (e.message) } } }
        }
        script src="/ui/app.js" {}
    };
    secure(page(&format!("Job {id}"), Some(&csrf), body).into_response())
}

/// `GET /ui/jobs/{id}/state`: what the job page polls (JSON).
pub async fn job_state(
    State(st): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let csrf = match signed_in(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = st.clone();
    match read(&csrf, move || crate::job_commands::job_view(&s.store, &id)).await {
        Ok(v) => {
            let j = &v.job;
            let reason = match &j.state {
                JobState::Failed { reason } => Some(reason.clone()),
                _ => None,
            };
            let events: Vec<String> = v
                .events
                .iter()
                .map(|e| {
                    format!(
                        "{} {} {}",
                        e.time,
                        format!("{:?}", e.level).to_lowercase(),
                        e.message
                    )
                })
                .collect();
            secure(
                axum::Json(serde_json::json!({
                    "state": j.state.name(),
                    "final": j.state.is_final(),
                    "progress": pct(j.progress.bytes_done, j.progress.bytes_total),
                    "bytes_done": j.progress.bytes_done,
                    "bytes_total": j.progress.bytes_total,
                    "rate": format!("{}/s", human_bytes(j.progress.rate)),
                    "eta": format!("{} s", j.progress.eta),
                    "reason": reason,
                    "events": events,
                }))
                .into_response(),
            )
        }
        Err(r) => r,
    }
}

/// The job page's script: polls the state every second until the job is final. Served from
/// the appliance (the CSP allows scripts from 'self' only).
const APP_JS: &str = r#""use strict";
(function () {
  var job = document.getElementById("job");
  if (!job) return;
  var id = job.getAttribute("data-job");
  function set(elId, text) { var e = document.getElementById(elId); if (e) e.textContent = text; }
  function tick() {
    fetch("/ui/jobs/" + encodeURIComponent(id) + "/state", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) { setTimeout(tick, 3000); return; }
        set("state", s.state); set("progress", s.progress); set("rate", s.rate); set("eta", s.eta);
        var bar = document.getElementById("bar");
        if (bar) { bar.max = Math.max(1, s.bytes_total); bar.value = s.bytes_done; }
        var ol = document.getElementById("events");
        if (ol && ol.children.length !== s.events.length) {
          ol.textContent = "";
          s.events.forEach(function (t) { var li = document.createElement("li"); li.textContent = t; ol.appendChild(li); });
        }
        if (s.reason && !document.getElementById("reason")) {
          var p = document.createElement("p"); p.id = "reason"; p.className = "err"; p.setAttribute("role", "alert");
          p.textContent = s.reason; job.appendChild(p);
        }
        if (!s.final) setTimeout(tick, 1000);
      })
      .catch(function () { setTimeout(tick, 3000); });
  }
  if (job.getAttribute("data-final") !== "true") setTimeout(tick, 1000);
})();
"#;

/// `GET /ui/app.js`.
pub async fn app_js() -> Response {
    secure(
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            )],
            APP_JS,
        )
            .into_response(),
    )
}
