//! The operator console under `/ui` on the API's HTTPS port: server-rendered pages (maud, so
//! every value is HTML-escaped), no script from elsewhere, no build step.
//!
//! Sign-in exchanges an admin token for a session: a random id in a cookie that is `HttpOnly`
//! (no script reads it), `Secure`, `SameSite=Strict` (no other site sends it) and scoped to
//! `/ui`, kept in memory for [`SESSION_TTL`] after the last use. Every state change is a POST that
//! must carry the session's CSRF token (a hidden form field). Pages answer with a strict
//! Content-Security-Policy, `no-store` and no referrer. Restarting the appliance signs everyone
//! out.
//!
//! Pages ([`dashboard`], [`machines`], [`agents`], [`jobs`], [`migrations`]) read the store in
//! one blocking task each and bound what they render, so they stay fast with thousands of
//! snapshots and hundreds of agents (`bench/console-load` measures them). The one script,
//! `app.js` (embedded), updates the dashboard's jobs and the job page in place from their JSON
//! state routes.

mod agents;
mod dashboard;
mod jobs;
mod machines;
mod migrations;

pub use agents::{agent, agents, approve, ApproveForm, ListQuery};
pub use dashboard::{dashboard, dashboard_state};
pub use jobs::{create_job, job, job_state, new_job, JobPost, NewJobQuery};
pub use machines::{machine, MachineQuery};
pub use migrations::{cutover, migration, migrations, CutoverForm};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Form, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_format::api::{Role, TokenState};
use ferry_store::chunks::ChunkUsage;
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

/// Signed-in sessions, by the BLAKE3 hash of their cookie value; and the console's one cache,
/// the chunk store's usage (walking every chunk file on each dashboard load would make the
/// dashboard as slow as the store is large).
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    usage: Mutex<Option<(Instant, ChunkUsage)>>,
}

/// How long the dashboard shows a chunk usage before walking the chunk store again.
const USAGE_TTL: Duration = Duration::from_secs(60);

impl Sessions {
    /// The chunk store's usage, at most [`USAGE_TTL`] old.
    fn chunk_usage(
        &self,
        store: &ferry_store::Store,
    ) -> Result<ChunkUsage, ferry_store::StoreError> {
        let mut cached = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, u)) = *cached {
            if at.elapsed() < USAGE_TTL {
                return Ok(u);
            }
        }
        let u = store.chunk_usage()?;
        *cached = Some((Instant::now(), u));
        Ok(u)
    }
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
header button{background:#fff;color:#16324f}a{color:#0b5cad}header a{color:#fff}header nav{display:flex;gap:1rem}\
input[type=text],select{padding:.3rem;max-width:36rem;width:100%;border:1px solid #6b7785;border-radius:4px}\
:focus-visible{outline:3px solid #c25400;outline-offset:2px}header :focus-visible{outline-color:#ffb366}\
.muted{color:#4a5561}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{color:#4a5561}dd{margin:0}\
nav.pages{display:flex;gap:1rem;margin-top:.6rem}td.wrap{word-break:break-all}";

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
                    h1 { a href="/ui" style="text-decoration:none" { "Ferry appliance" } }
                    @if let Some(csrf) = csrf {
                        nav aria-label="main" {
                            a href="/ui" { "Dashboard" }
                            a href="/ui/agents" { "Agents" }
                            a href="/ui/migrations" { "Migrations" }
                            a href="/ui/jobs/new" { "New restore job" }
                        }
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

/// One page of `list` (`page` is 1-based; out of range: the last) and the links to the others:
/// `base` ends in `?` or `&` and gets `page=N`.
fn paged<'a, T>(list: &'a [T], page: Option<usize>, per: usize, base: &str) -> (&'a [T], Markup) {
    let pages = list.len().div_ceil(per).max(1);
    let n = page.unwrap_or(1).clamp(1, pages);
    let rows = &list[(n - 1) * per..(n * per).min(list.len())];
    let nav = html! {
        @if pages > 1 {
            nav.pages aria-label="pages" {
                @if n > 1 { a rel="prev" href=(format!("{base}page={}", n - 1)) { "← Previous" } }
                span { "Page " (n) " of " (pages) " (" (list.len()) " in all)" }
                @if n < pages { a rel="next" href=(format!("{base}page={}", n + 1)) { "Next →" } }
            }
        }
    };
    (rows, nav)
}

/// `GET /ui/app.js`.
pub async fn app_js() -> Response {
    secure(
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            )],
            include_str!("app.js"),
        )
            .into_response(),
    )
}
