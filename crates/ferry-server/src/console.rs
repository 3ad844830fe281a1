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

use axum::extract::{Form, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_format::agent::{AgentInfo, JobRecord};
use ferry_format::api::{Role, TokenState};
use ferry_format::units::human_bytes;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

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
                    h1 { "Ferry appliance" }
                    @if let Some(csrf) = csrf {
                        form method="post" action="/ui/logout" {
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
                form method="post" action="/ui/login" {
                    label for="token" { "Admin token (" code { "appliance token create --role admin" } ")" }
                    input #token type="password" name="token" autocomplete="off" required autofocus;
                    p { button type="submit" { "Sign in" } }
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

/// `GET /ui`: machines, agents and jobs at a glance.
pub async fn dashboard(State(st): State<SharedState>, headers: HeaderMap) -> Response {
    let Some((csrf, _)) = cookie_value(&headers).and_then(|id| st.sessions.touch(&id)) else {
        return redirect("/ui/login");
    };
    let s = st.clone();
    let data = blocking(move || {
        Ok((
            crate::admin::usage(&s.store)?,
            s.store.list_snapshots(None)?,
            s.store.list_agents()?,
            s.store.list_jobs()?,
        ))
    })
    .await;
    let (usage, snapshots, agents, jobs) =
        match data {
            Ok(d) => d,
            Err(e) => return secure(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    page(
                        "Error",
                        Some(&csrf),
                        html! { section { p.err { "Reading the store failed: " (e.message) } } },
                    ),
                )
                    .into_response(),
            ),
        };
    let mut machines: std::collections::BTreeMap<&str, (u64, &str, String)> = Default::default();
    for s in &snapshots {
        let e = machines.entry(&s.machine).or_insert((0, "", String::new()));
        e.0 += 1;
        e.1 = &s.created;
        e.2 = s.consistency.to_string();
    }
    let body = html! {
        section aria-label="store" {
            h2 { "Store" }
            p {
                (usage.snapshots) " snapshots of " (usage.machines) " machines · "
                (human_bytes(usage.chunk_bytes)) " in " (usage.chunks) " chunks · deduplication "
                (format!("{:.2}", usage.dedup_ratio)) "×"
            }
        }
        section aria-label="machines" {
            h2 { "Machines" }
            table {
                thead { tr { th { "Machine" } th.num { "Snapshots" } th { "Last backup" } th { "Consistency" } } }
                tbody {
                    @for (m, (n, last, consistency)) in &machines {
                        tr { td { (m) } td.num { (n) } td { (last) } td { (consistency) } }
                    }
                }
            }
        }
        section aria-label="agents" {
            h2 { "Rescue agents" }
            table {
                thead { tr { th { "Agent" } th { "State" } th { "Approved" } th { "Last seen" } th.num { "Disks" } } }
                tbody { @for a in &agents { (agent_row(a)) } }
            }
        }
        section aria-label="jobs" {
            h2 { "Jobs" }
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
        tr {
            td { (a.agent) }
            td { (format!("{:?}", a.state).to_lowercase()) }
            td { @if a.approved.is_some() { "yes" } @else { "no" } }
            td { (a.last_seen) }
            td.num { (a.inventory.disks.len()) }
        }
    }
}

fn job_row(j: &JobRecord) -> Markup {
    let pct = if j.progress.bytes_total > 0 {
        format!(
            "{:.0} %",
            j.progress.bytes_done as f64 * 100.0 / j.progress.bytes_total as f64
        )
    } else {
        "—".to_owned()
    };
    html! {
        tr {
            td { (j.id) }
            td { (format!("{:?}", j.kind).to_lowercase()) }
            td { (j.state.name()) }
            td { (j.agent.as_deref().unwrap_or("—")) }
            td.num { (pct) }
            td { (j.created) }
        }
    }
}
