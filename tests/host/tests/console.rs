//! The operator console in a real browser (issue: operator console): headless Chromium driven
//! over the W3C WebDriver protocol by chromedriver, against a real `appliance serve`. Sign in,
//! see a machine with its snapshots, see an enrolled agent (a real `restore-agent agent` in host
//! mode on a fake machine), approve it with the code it prints, create a restore job through the
//! form, watch its state reach "succeeded" without reloading, then `cmp` the restored disk.
//! Bad inputs create nothing and show the appliance's message; a POST without the CSRF token
//! gets 403. A screenshot of each page is saved under `$CARGO_TARGET_DIR/console-screenshots/`.
//!
//! The WebDriver client is a few lines of HTTP/1.1 over `std::net::TcpStream` (chromedriver
//! speaks plain HTTP on 127.0.0.1); the CSRF check uses `curl` with the appliance's CA.
//! Fails with the packages to install when chromedriver or chromium is missing (scripts/setup
//! installs them).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::machine::*;
use common::*;

const MIB: u64 = 1 << 20;
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C WebDriver web element identifier key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const MAC: &str = "52:54:00:cc:00:01";
const AGENT: &str = "agent-525400cc0001";

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client for chromedriver (plain HTTP on 127.0.0.1, one request per connection).

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)
        .map_err(|e| format!("read status: {e}"))?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    let mut len: Option<usize> = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("read header: {e}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                len = v.trim().parse().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut buf = Vec::new();
    if chunked {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| format!("chunk: {e}"))?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| format!("chunk size {line:?}: {e}"))?;
            if n == 0 {
                break;
            }
            let mut c = vec![0u8; n + 2];
            r.read_exact(&mut c).map_err(|e| format!("chunk: {e}"))?;
            buf.extend_from_slice(&c[..n]);
        }
    } else if let Some(n) = len {
        buf.resize(n, 0);
        r.read_exact(&mut buf).map_err(|e| format!("body: {e}"))?;
    } else {
        r.read_to_end(&mut buf).map_err(|e| format!("body: {e}"))?;
    }
    let v: Value = if buf.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&buf).map_err(|e| {
            format!(
                "{method} {path}: HTTP {code}, not JSON ({e}): {}",
                String::from_utf8_lossy(&buf)
            )
        })?
    };
    if code >= 400 {
        return Err(format!("{method} {path}: HTTP {code}: {v}"));
    }
    Ok(v)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Standard base64 (the screenshots); no crate for it in this package's dependencies.
fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let Some(v) = val(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// WebDriver: chromedriver + one session; both ended on drop (also when the test panics).

struct Driver {
    port: u16,
    session: Option<String>,
    child: Child,
    shots: PathBuf,
}

#[derive(Clone)]
struct El(String);

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // $CARGO_TARGET_DIR, else the target dir this test binary runs from
        // (target/<profile>/deps/<test>): cargo runs tests in the package dir, not the workspace.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                Some(exe.parent()?.parent()?.parent()?.to_path_buf())
            })
            .unwrap_or_else(|| PathBuf::from("target"));
        let shots = target.join("console-screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        let mut d = Driver {
            port,
            session: None,
            child,
            shots,
        };
        let t = Instant::now();
        loop {
            if let Ok(v) = http(port, "GET", "/status", None) {
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1366,900"]
            }
        }}});
        let v = http(port, "POST", "/session", Some(&caps)).expect("new WebDriver session");
        d.session = Some(
            v["value"]["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
        );
        d
    }

    fn cmd(&self, method: &str, rel: &str, body: Option<Value>) -> Result<Value, String> {
        let path = format!("/session/{}{rel}", self.session.as_ref().unwrap());
        let body = match (method, body) {
            ("POST", None) => Some(json!({})),
            (_, b) => b,
        };
        http(self.port, method, &path, body.as_ref()).map(|v| v["value"].clone())
    }

    fn call(&self, method: &str, rel: &str, body: Option<Value>) -> Value {
        self.cmd(method, rel, body)
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn current_url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn try_find(&self, css: &str) -> Option<El> {
        self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .map_err(|e| {
            if std::env::var_os("FERRY_WD_DEBUG").is_some() {
                log(format!("find {css}: {e}"));
            }
        })
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(|s| El(s.to_string())))
    }

    /// Find `css`, waiting up to 10 s for it to appear.
    fn find(&self, css: &str) -> El {
        let t = Instant::now();
        loop {
            if let Some(e) = self.try_find(css) {
                return e;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no element {css:?} on {}:\n{}",
                self.current_url(),
                self.source_excerpt()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn find_all(&self, css: &str) -> Vec<El> {
        self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|v| El(v[ELEMENT].as_str().unwrap().to_string()))
        .collect()
    }

    fn text(&self, e: &El) -> String {
        self.call("GET", &format!("/element/{}/text", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn attr(&self, e: &El, name: &str) -> Option<String> {
        self.call("GET", &format!("/element/{}/attribute/{name}", e.0), None)
            .as_str()
            .map(str::to_string)
    }

    fn prop(&self, e: &El, name: &str) -> Value {
        self.call("GET", &format!("/element/{}/property/{name}", e.0), None)
    }

    fn clear(&self, e: &El) {
        self.call("POST", &format!("/element/{}/clear", e.0), None);
    }

    fn type_in(&self, e: &El, text: &str) {
        self.call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, e: &El) {
        self.call("POST", &format!("/element/{}/click", e.0), None);
    }

    fn script(&self, js: &str, args: Vec<Value>) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": js, "args": args })),
        )
    }

    fn el_arg(e: &El) -> Value {
        json!({ ELEMENT: e.0 })
    }

    fn cookies(&self) -> Vec<Value> {
        self.call("GET", "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn source_excerpt(&self) -> String {
        let s = self
            .cmd("GET", "/source", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        s.chars().take(4000).collect()
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.call("GET", "/screenshot", None);
        let png = b64decode(v.as_str().expect("screenshot base64"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        let p = self.shots.join(format!("{name}.png"));
        std::fs::write(&p, png).expect("write screenshot");
        println!("screenshot: {}", p.display());
        log(format!("screenshot: {}", p.display()));
        p
    }

    /// Wait (up to `secs`) until `css`'s text satisfies `pred`; returns the last text seen.
    fn wait_text(&self, css: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        let mut last = String::new();
        loop {
            if let Some(e) = self.try_find(css) {
                if let Ok(v) = self.cmd("GET", &format!("/element/{}/text", e.0), None) {
                    last = v.as_str().unwrap_or_default().to_string();
                    if pred(&last) {
                        return last;
                    }
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "{css} never matched on {} (last text {last:?})",
                self.current_url()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = http(self.port, "DELETE", &format!("/session/{s}"), None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The background `restore-agent agent --once`; its stdout collected by a thread.
struct Agent {
    child: Option<Child>,
    out: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    fn start(a: &Appliance, token: &str, root: &Path) -> Self {
        let mut child = a
            .agent_cmd(token, root)
            .arg("--once")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start restore-agent agent");
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let o = out.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut o = o.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        Agent {
            child: Some(child),
            out,
            reader: Some(reader),
        }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// The approval code from "enrolled as agent agent-XXXX (code ABC123)".
    fn wait_code(&self, agent: &str) -> String {
        let t = Instant::now();
        let needle = format!("enrolled as agent {agent} (code ");
        loop {
            let out = self.output();
            if let Some(i) = out.find(&needle) {
                let rest = &out[i + needle.len()..];
                return rest[..rest.find(')').expect("code ends with )")].to_string();
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the agent never printed its approval code:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait for the agent to exit; its success and console output.
    fn wait(&mut self, secs: u64) -> (bool, String) {
        let mut child = self.child.take().unwrap();
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if t.elapsed() > Duration::from_secs(secs) {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status.success(), self.output())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn jobs(a: &Appliance) -> Vec<Value> {
    json(
        a.appliance()
            .args(["jobs", "list", "--json", "--data"])
            .arg(a.data()),
    )
    .as_array()
    .cloned()
    .unwrap_or_else(|| panic!("jobs list --json is not an array"))
}

/// Select `value` in `select#id` (by script, then a change event).
fn select(d: &Driver, css: &str, value: &str) {
    let e = d.find(css);
    let ok = d.script(
        "var s = arguments[0]; s.value = arguments[1]; \
         s.dispatchEvent(new Event('change', {bubbles: true})); return s.value === arguments[1];",
        vec![Driver::el_arg(&e), json!(value)],
    );
    assert_eq!(ok, true, "{css} has no option {value:?}");
}

fn fill_map(d: &Driver, map: &str) {
    let m = d.find("input#map");
    d.clear(&m);
    d.type_in(&m, map);
}

/// Click `e` (a submit button) and wait until the browser shows a new document: a marker set on
/// the old page's `window` is gone (so an element of the old page is never mistaken for the answer).
fn submit_new_page(d: &Driver, e: &El) {
    d.script("window.__ferryOldPage = true;", vec![]);
    d.click(e);
    let t = Instant::now();
    loop {
        let gone = d
            .cmd(
                "POST",
                "/execute/sync",
                Some(json!({"script": "return document.readyState === 'complete' && window.__ferryOldPage !== true;", "args": []})),
            )
            .map(|v| v == json!(true))
            .unwrap_or(false);
        if gone {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no new page after submitting (at {})",
            d.current_url()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Submit the new-job form and expect it back with `p#error`; returns the message.
fn expect_refused(d: &Driver, what: &str) -> String {
    submit_new_page(d, &d.find("button#create"));
    let err = d.wait_text("p#error", 15, |t| !t.trim().is_empty());
    assert_eq!(
        d.attr(&d.find("p#error"), "role").as_deref(),
        Some("alert"),
        "{what}"
    );
    assert!(
        d.try_find("form#new-job").is_some(),
        "{what}: the form is not shown again"
    );
    log(format!("{what}: {err}"));
    err
}

#[test]
fn operator_console_in_a_real_browser() {
    assert!(
        Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists() && have("curl"),
        "this test needs {CHROMEDRIVER}, {CHROMIUM} and curl: run scripts/setup (apt-get install chromium chromium-driver curl)"
    );
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("disk.img");
    make_image(&src, 64 * MIB, 33);
    let snapshot = a.backup("web01", &[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let enroll = a.token("enroll");
    let m = machine(MAC, &[("vda", 64 * MIB)]);
    let mut agent = Agent::start(&a, &enroll, m.path());
    let code = agent.wait_code(AGENT);
    log(format!("agent {AGENT} enrolled with code {code}"));

    let d = Driver::start();
    let ui = format!("{}/ui", a.url());

    // Without a session the dashboard sends the browser to the sign-in page.
    d.go(&ui);
    d.find("form#login");
    assert!(d.current_url().contains("/ui/login"), "{}", d.current_url());

    // A wrong token is refused.
    let t = d.find("input#token");
    assert_eq!(d.attr(&t, "type").as_deref(), Some("password"));
    assert_eq!(d.attr(&t, "name").as_deref(), Some("token"));
    d.type_in(&t, "not-a-token");
    d.click(&d.find("button#sign-in"));
    let err = d.wait_text("p.err", 15, |t| !t.trim().is_empty());
    log(format!("wrong token: {err}"));
    d.screenshot("01-login");

    // The admin token signs in.
    let t = d.find("input#token");
    d.clear(&t);
    d.type_in(&t, &a.admin);
    d.click(&d.find("button#sign-in"));
    d.find("section#machines");
    assert!(d.try_find("form#logout").is_some());

    // Dashboard: the machine, the enrolled agent, no jobs yet.
    let link = d.find("section#machines tr[data-machine=\"web01\"] a.machine");
    assert!(
        d.attr(&link, "href")
            .unwrap_or_default()
            .ends_with("/ui/machines/web01"),
        "machine link"
    );
    let alink = d.find(&format!(
        "section#agents tr[data-agent=\"{AGENT}\"] a.agent"
    ));
    assert!(d
        .attr(&alink, "href")
        .unwrap_or_default()
        .ends_with(&format!("/ui/agents/{AGENT}")));
    assert!(d.find_all("section#jobs tr[data-job]").is_empty());
    assert!(d
        .attr(&d.find("a#new-job"), "href")
        .unwrap_or_default()
        .ends_with("/ui/jobs/new"));
    d.screenshot("02-dashboard");

    // Machine page: its snapshot with a restore link.
    d.click(&link);
    let row = format!("table#snapshots tr[data-snapshot=\"{snapshot}\"]");
    let restore = d.find(&format!("{row} a.restore"));
    assert!(d
        .attr(&restore, "href")
        .unwrap_or_default()
        .ends_with(&format!("/ui/jobs/new?snapshot={snapshot}")));
    assert_eq!(d.find_all("table#snapshots tr[data-snapshot]").len(), 1);
    d.screenshot("03-machine");

    // Agent page: its disk, and the approval form (not approved yet).
    d.go(&format!("{ui}/agents/{AGENT}"));
    d.find("table#disks tr[data-disk=\"vda\"]");
    let c = d.find("form#approve input#code");
    assert_eq!(d.attr(&c, "name").as_deref(), Some("code"));
    d.screenshot("04-agent");
    d.type_in(&c, &code);
    d.click(&d.find("button#approve"));
    // Approved: the form goes away.
    let t0 = Instant::now();
    while d.try_find("form#approve").is_some() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the agent page still offers approval after approving:\n{}",
            d.source_excerpt()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.find("table#disks tr[data-disk=\"vda\"]");
    let agents = json(
        a.appliance()
            .args(["agents", "--json", "--data"])
            .arg(a.data()),
    );
    log(format!("agents after approval: {agents}"));

    // New job form from the machine page's restore link: bad inputs first.
    d.go(&format!("{ui}/jobs/new?snapshot={snapshot}"));
    d.find("form#new-job");
    let snap_sel = d.find("select#snapshot");
    assert_eq!(d.prop(&snap_sel, "value"), json!(snapshot));
    assert_eq!(d.attr(&snap_sel, "name").as_deref(), Some("snapshot"));
    assert_eq!(d.prop(&d.find("input#fixup"), "checked"), json!(true));
    assert!(d.try_find("form#new-job input[name=csrf]").is_some());
    let then_sel = d.find("select#then");
    assert_eq!(d.attr(&then_sel, "name").as_deref(), Some("then"));

    // (a) a target that does not exist on the agent's machine.
    select(&d, "select#agent", AGENT);
    fill_map(&d, "disk=/dev/vdz");
    select(&d, "select#then", "none");
    let err = expect_refused(&d, "missing target");
    assert!(err.contains("/dev/vdz"), "missing target: {err}");
    d.screenshot("05-new-job-error");
    assert!(jobs(&a).is_empty(), "a refused form created a job");

    // (b) an unknown snapshot, smuggled into the select.
    select(&d, "select#agent", AGENT);
    fill_map(&d, "disk=auto");
    select(&d, "select#then", "none");
    let s = d.find("select#snapshot");
    d.script(
        "var o = document.createElement('option'); o.value = 'snap-does-not-exist'; \
         o.text = 'bogus'; arguments[0].appendChild(o); arguments[0].value = o.value;",
        vec![Driver::el_arg(&s)],
    );
    let err = expect_refused(&d, "unknown snapshot");
    assert!(
        err.contains("snap-does-not-exist") || err.to_lowercase().contains("snapshot"),
        "unknown snapshot: {err}"
    );
    assert!(jobs(&a).is_empty(), "a refused form created a job");

    // A POST without the CSRF token: 403, nothing created.
    let cookies = d.cookies();
    let cookie = cookies
        .iter()
        .map(|c| {
            format!(
                "{}={}",
                c["name"].as_str().unwrap(),
                c["value"].as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    assert!(!cookie.is_empty(), "no session cookie");
    let post = |extra: &[&str]| -> String {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(a.ca())
            .args(["-H", &format!("Cookie: {cookie}")]);
        for f in [
            format!("snapshot={snapshot}"),
            format!("agent={AGENT}"),
            "map=disk=auto".to_string(),
            "then=none".to_string(),
            "fixup=on".to_string(),
        ] {
            c.arg("--data-urlencode").arg(f);
        }
        for f in extra {
            c.arg("--data-urlencode").arg(f);
        }
        ok(c.arg(format!("{ui}/jobs"))).trim().to_string()
    };
    // Failures that do not stop the rest of the walk-through; asserted at the end.
    let mut problems: Vec<String> = Vec::new();
    let code = post(&[]);
    if code != "403" {
        problems.push(format!(
            "POST /ui/jobs without a csrf field answered {code}, not 403"
        ));
    }
    assert_eq!(
        post(&["csrf=not-the-session-token"]),
        "403",
        "POST /ui/jobs with a wrong csrf"
    );
    assert!(jobs(&a).is_empty(), "a POST without csrf created a job");

    // The good job: disk=auto onto the approved agent, then none (host mode stays up anyway).
    d.go(&format!("{ui}/jobs/new?snapshot={snapshot}"));
    d.find("form#new-job");
    select(&d, "select#agent", AGENT);
    fill_map(&d, "disk=auto");
    select(&d, "select#then", "none");
    d.click(&d.find("button#create"));
    let t0 = Instant::now();
    let job = loop {
        let u = d.current_url();
        if let Some(i) = u.find("/ui/jobs/") {
            let id = u[i + "/ui/jobs/".len()..].to_string();
            if !id.is_empty() && !id.starts_with("new") {
                break id;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "not redirected to the job page (at {u}):\n{}",
            d.source_excerpt()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    log(format!("job {job} created"));
    let listed = jobs(&a);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"].as_str(), Some(job.as_str()), "{listed:?}");

    // Watch the state go to succeeded without reloading: a marker on `window` survives only
    // if the page is never reloaded.
    d.script("window.__ferryNoReload = 42;", vec![]);
    let first = d.text(&d.find("span#state"));
    log(format!("job page first shows {first:?}"));
    let end = d.wait_text("span#state", 120, |t| {
        t.trim() == "succeeded" || t.trim() == "failed"
    });
    if end.trim() == "failed" {
        let reason = d
            .try_find("p#reason")
            .map(|e| d.text(&e))
            .unwrap_or_default();
        let (_, out) = agent.wait(5);
        panic!("job failed: {reason}\nagent:\n{out}");
    }
    assert_eq!(
        d.script("return window.__ferryNoReload;", vec![]),
        json!(42),
        "the job page reloaded"
    );
    let progress = d.wait_text("span#progress", 10, |t| t.contains("100"));
    log(format!("progress {progress}"));
    let events = d.find_all("ol#events li");
    assert!(!events.is_empty(), "no events on the job page");
    assert!(d.try_find("p#reason").is_none());
    d.screenshot("06-job-succeeded");

    let (success, out) = agent.wait(60);
    log(format!("agent console:\n{out}"));
    assert!(success, "the agent failed:\n{out}");
    assert!(out.contains(&format!("job {job} succeeded")), "{out}");
    cmp_bytes(&src, &m.path().join("dev/vda"));

    let v = show(&a, &job);
    assert_eq!(v["job"]["state"], "succeeded", "{v}");
    assert_eq!(v["job"]["agent"], AGENT, "{v}");

    // The dashboard lists the job with its state.
    d.go(&ui);
    let st = d.find(&format!("section#jobs tr[data-job=\"{job}\"] td.state"));
    assert_eq!(d.text(&st).trim(), "succeeded");
    assert_eq!(jobs(&a).len(), 1, "only the one good job exists");
    // app.js redraws the jobs table from /ui/state (after 2 s): the same row, same state.
    std::thread::sleep(Duration::from_secs(5));
    d.wait_text(
        &format!("section#jobs tr[data-job=\"{job}\"] td.state"),
        10,
        |t| t.trim() == "succeeded",
    );
    d.wait_text(
        &format!("section#jobs tr[data-job=\"{job}\"] td.bytes"),
        10,
        |t| t.contains(" of "),
    );
    d.screenshot("07-dashboard-after");

    // The agents list and the migrations list (none here), reached from the nav.
    d.click(&d.find("header nav a[href=\"/ui/agents\"]"));
    d.find(&format!("table#agent-list tr[data-agent=\"{AGENT}\"]"));
    d.screenshot("08-agents");
    d.click(&d.find("header nav a[href=\"/ui/migrations\"]"));
    d.wait_text("section[aria-label=migrations]", 10, |t| {
        t.contains("No migrations")
    });
    d.screenshot("09-migrations");
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Byte compare in Rust (the file sizes, then 1 MiB blocks).
fn cmp_bytes(a: &Path, b: &Path) {
    let (fa, fb) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(
        fa.len(),
        fb.len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    if let Some(i) = fa.iter().zip(&fb).position(|(x, y)| x != y) {
        panic!("{} and {} differ at byte {i}", a.display(), b.display());
    }
}
