//! The console over the real server (as a browser sends it: forms and cookies, no bearer
//! token): only an active admin token signs in; the cookie's flags; pages need the session;
//! every form needs the session's CSRF token; the dashboard bounds what it lists and says when
//! each machine backs up next; the migration pages and the confirmed cutover, which the store
//! refuses or grants exactly as the admin API's.

use std::time::SystemTime;

use ferry_format::agent::EnrollReply;
use ferry_format::api::Role;
use ferry_store::migrations::NewMigration;
use ferry_store::tokens::create_token_at;

mod common;
use common::World;

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn form_token(t: &str) -> String {
    format!("token={t}")
}

#[test]
fn sign_in_session_csrf_and_sign_out() {
    let w = World::new();
    let ui = w.c.at_root();
    w.snapshot("web01", 3);

    // Without a session every page sends to the sign-in page, which carries the headers.
    let (status, h, _) = ui.page("GET", "/ui", None, None);
    assert_eq!((status, header(&h, "location")), (303, Some("/ui/login")));
    let (status, h, body) = ui.page("GET", "/ui/login", None, None);
    assert_eq!(status, 200);
    assert!(body.contains("name=\"token\""), "{body}");
    let csp = header(&h, "content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(header(&h, "cache-control"), Some("no-store"));

    // Only an active admin token signs in.
    let restore = create_token_at(w._dir.path(), Role::Restore, "2025-01-01T00:00:00Z").unwrap();
    for bad in [restore.as_str(), w.backup.as_str(), "not-a-token"] {
        let (status, h, body) = ui.page("POST", "/ui/login", None, Some(&form_token(bad)));
        assert_eq!(status, 401, "{bad}");
        assert!(header(&h, "set-cookie").is_none());
        assert!(body.contains("not an active admin token"));
    }
    let (status, h, _) = ui.page("POST", "/ui/login", None, Some(&form_token(&w.admin)));
    assert_eq!((status, header(&h, "location")), (303, Some("/ui")));
    let set = header(&h, "set-cookie").unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(flag), "{flag} missing from {set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();

    // The dashboard, with the CSRF token in the sign-out form.
    let (status, _, body) = ui.page("GET", "/ui", Some(&cookie), None);
    assert_eq!(status, 200);
    assert!(body.contains("web01"));
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a CSRF token in the page")
        .to_owned();
    assert_eq!(csrf.len(), 64);

    // The job form: without the CSRF token nothing is created; a refused job shows the store's
    // message and creates nothing; the pages render.
    let (snap, _) = w.snapshot("web02", 5);
    let a = w.enroll("52:54:00:00:00:31", &[("vda", 1 << 20, true)]);
    let job = format!(
        "snapshot={snap}&agent={}&map=sda%3D%2Fdev%2Fvdz&then=reboot",
        a.agent
    );
    let (status, _, _) = ui.page("POST", "/ui/jobs", Some(&cookie), Some(&job));
    assert_eq!(status, 403, "a form without its csrf field");
    let (status, _, body) = ui.page(
        "POST",
        "/ui/jobs",
        Some(&cookie),
        Some(&format!("csrf={}&{job}", "0".repeat(64))),
    );
    assert_eq!(status, 403);
    assert!(body.contains("CSRF"));
    let (status, _, body) = ui.page(
        "POST",
        "/ui/jobs",
        Some(&cookie),
        Some(&format!("csrf={csrf}&{job}")),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("id=\"error\"") && body.contains("/dev/vdz"),
        "{body}"
    );
    assert!(w.store.list_jobs().unwrap().is_empty());
    let good = format!(
        "csrf={csrf}&snapshot={snap}&agent={}&map=sda%3Dauto&fixup=on&then=none",
        a.agent
    );
    let (status, h, _) = ui.page("POST", "/ui/jobs", Some(&cookie), Some(&good));
    assert_eq!(status, 303);
    let jobs = w.store.list_jobs().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        header(&h, "location"),
        Some(format!("/ui/jobs/{}", jobs[0].id).as_str())
    );
    for path in [
        format!("/ui/jobs/{}", jobs[0].id),
        format!("/ui/jobs/{}/state", jobs[0].id),
        format!("/ui/agents/{}", a.agent),
        "/ui/agents".to_string(),
        "/ui/state".to_string(),
        "/ui/migrations".to_string(),
        "/ui/machines/web02".to_string(),
        "/ui/machines/web02?page=9".to_string(),
        format!("/ui/jobs/new?snapshot={snap}"),
        "/ui/app.js".to_string(),
    ] {
        let (status, _, body) = ui.page("GET", &path, Some(&cookie), None);
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(
        ui.page("GET", "/ui/machines/nosuch", Some(&cookie), None).0,
        404
    );

    // Sign-out refuses a missing or wrong CSRF token and leaves the session open.
    for form in ["csrf=", &format!("csrf={}", "0".repeat(64))] {
        let (status, _, body) = ui.page("POST", "/ui/logout", Some(&cookie), Some(form));
        assert_eq!(status, 403, "{form}");
        assert!(body.contains("CSRF"));
    }
    assert_eq!(ui.page("GET", "/ui", Some(&cookie), None).0, 200);
    let (status, h, _) = ui.page(
        "POST",
        "/ui/logout",
        Some(&cookie),
        Some(&format!("csrf={csrf}")),
    );
    assert_eq!((status, header(&h, "location")), (303, Some("/ui/login")));
    assert!(header(&h, "set-cookie").unwrap().contains("Max-Age=0"));
    // The session is gone.
    assert_eq!(ui.page("GET", "/ui", Some(&cookie), None).0, 303);
    // A forged cookie is nobody.
    let forged = format!("ferry_session={}", "a".repeat(64));
    assert_eq!(ui.page("GET", "/ui", Some(&forged), None).0, 303);
}

/// Signs in with the admin token: (cookie, CSRF token).
fn sign_in(w: &World) -> (String, String) {
    let ui = w.c.at_root();
    let (status, h, _) = ui.page("POST", "/ui/login", None, Some(&form_token(&w.admin)));
    assert_eq!(status, 303);
    let cookie = header(&h, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (_, _, body) = ui.page("GET", "/ui", Some(&cookie), None);
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    (cookie, csrf)
}

#[test]
fn dashboard_next_backups_bounded_agents_and_live_jobs() {
    let w = World::new();
    let ui = w.c.at_root();
    let (cookie, _) = sign_in(&w);
    // web01 is a source machine (synced every 15 minutes, never yet: due now), web02 is not.
    w.store
        .set_schedule("web01", |s| {
            s.keep = 7;
            s.interval_seconds = 900;
        })
        .unwrap();
    let (snap, _) = w.snapshot("web02", 3);
    let agents: Vec<EnrollReply> = (0..15)
        .map(|i| {
            w.enroll(
                &format!("52:54:00:00:01:{i:02x}"),
                &[("vda", 1 << 20, true)],
            )
        })
        .collect();
    let job = w.create_job(
        &snap,
        ferry_format::agent::JobFor::Agent(agents[0].agent.clone()),
        "sda=/dev/vda",
    );

    let (status, _, body) = ui.page("GET", "/ui", Some(&cookie), None);
    assert_eq!(status, 200);
    let row = |m: &str| {
        body.split(&format!("data-machine=\"{m}\""))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_else(|| panic!("no row of {m}: {body}"))
            .to_owned()
    };
    assert!(
        row("web01").contains("due now (every 15m)"),
        "{}",
        row("web01")
    );
    assert!(row("web01").contains("never"));
    assert!(row("web02").contains("not scheduled"), "{}", row("web02"));
    // 12 agents listed, the rest behind the link to the full list.
    assert_eq!(body.matches("data-agent=").count(), 12, "{body}");
    assert!(body.contains("href=\"/ui/agents\"") && body.contains("15 awaiting approval"));
    assert!(body.contains(&format!("data-job=\"{}\"", job.id)));
    assert!(body.contains("src=\"/ui/app.js\""));

    // The full list: every agent.
    let (status, _, list) = ui.page("GET", "/ui/agents", Some(&cookie), None);
    assert_eq!(status, 200);
    assert_eq!(list.matches("data-agent=").count(), 15);
    assert!(list.contains("15 enrolled"), "{list}");

    // What app.js polls: the jobs with their progress, the counts.
    let (status, h, state) = ui.page("GET", "/ui/state", Some(&cookie), None);
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").unwrap().contains("json"));
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(v["jobs"][0]["id"], job.id.as_str(), "{v}");
    assert_eq!(v["jobs"][0]["state"], "pending");
    assert_eq!(v["jobs_running"], 1);
    assert_eq!(v["agents_online"], 15);
    // Without a session: the sign-in page, not the data.
    assert_eq!(ui.page("GET", "/ui/state", None, None).0, 303);
    let js = ui.page("GET", "/ui/app.js", None, None).2;
    assert!(js.contains("/ui/state") && js.contains("job-rows"));
}

#[test]
fn machine_page_says_its_retention() {
    let w = World::new();
    let ui = w.c.at_root();
    let (cookie, _) = sign_in(&w);
    w.store.set_schedule("web01", |s| s.keep = 7).unwrap();
    let (s1, _) = w.snapshot("web01", 3);
    w.snapshot("web02", 4);
    let (status, _, body) = ui.page("GET", "/ui/machines/web01", Some(&cookie), None);
    assert_eq!(status, 200);
    assert!(
        body.contains("the newest <strong>7</strong> snapshots"),
        "{body}"
    );
    assert!(body.contains(&format!("/ui/jobs/new?snapshot={s1}")));
    let (_, _, body) = ui.page("GET", "/ui/machines/web02", Some(&cookie), None);
    assert!(
        body.contains("nothing prunes it automatically")
            && body.contains("appliance prune --machine web02"),
        "{body}"
    );
}

fn cutover_post(w: &World, cookie: &str, id: &str, form: &str) -> (u16, String) {
    let (status, _, body) = w.c.at_root().page(
        "POST",
        &format!("/ui/migrations/{id}/cutover"),
        Some(cookie),
        Some(form),
    );
    (status, body)
}

#[test]
fn migration_pages_and_the_confirmed_cutover() {
    let w = World::new();
    let ui = w.c.at_root();
    let (cookie, csrf) = sign_in(&w);
    w.store.set_schedule("web01", |s| s.keep = 7).unwrap();
    let (s1, _) = w.snapshot("web01", 3);
    w.store
        .enroll_source(
            &ferry_format::source::SourceEnrollRequest {
                machine: "web01".into(),
                inventory: None,
                version: "test".into(),
            },
            SystemTime::now(),
        )
        .unwrap();
    let a = w.enroll_approved("52:54:00:00:00:01", &[("vda", 1 << 20, true)]);
    let m = w
        .store
        .create_migration(
            NewMigration {
                machine: "web01".into(),
                agent: a.agent.clone(),
                mappings: vec!["sda=/dev/vda".parse().unwrap()],
                overwrite: false,
                network: Default::default(),
            },
            SystemTime::now(),
        )
        .unwrap();
    let state = |w: &World| w.store.migration(&m.id).unwrap().state.name();

    let (status, _, list) = ui.page("GET", "/ui/migrations", Some(&cookie), None);
    assert_eq!(status, 200);
    assert!(list.contains(&format!("data-migration=\"{}\"", m.id)) && list.contains(&a.agent));
    let (status, _, page) = ui.page(
        "GET",
        &format!("/ui/migrations/{}", m.id),
        Some(&cookie),
        None,
    );
    assert_eq!(status, 200);
    assert!(
        page.contains("id=\"cutover\"") && page.contains("name=\"confirm\""),
        "{page}"
    );
    assert!(page.contains("waiting for its agent"), "{page}");

    // Without the CSRF token, or without the typed name: nothing changes.
    assert_eq!(cutover_post(&w, &cookie, &m.id, "confirm=web01").0, 403);
    let (status, body) = cutover_post(&w, &cookie, &m.id, &format!("csrf={csrf}&confirm=web02"));
    assert_eq!(status, 422);
    assert!(
        body.contains("Type the machine&#39;s name") || body.contains("Type the machine's name"),
        "{body}"
    );
    assert_eq!(state(&w), "syncing");

    // Confirmed, but the standby holds nothing yet: the store's refusal, nothing changes.
    let (status, body) = cutover_post(&w, &cookie, &m.id, &format!("csrf={csrf}&confirm=web01"));
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("cannot cut over yet: its standby holds no snapshot"),
        "{body}"
    );
    assert_eq!(state(&w), "syncing");
    assert!(w.store.migration(&m.id).unwrap().cutover.is_none());

    // The standby takes its job and applies s1: in sync; the cutover is asked, with poweroff.
    w.c.ok(
        "GET",
        &format!("/agents/{}/job?wait=0", a.agent),
        &a.credential,
        None,
        200,
    );
    w.c.ok(
        "GET",
        &format!("/agents/{}/standby/next?basis=&wait=0", a.agent),
        &a.credential,
        None,
        200,
    );
    let report = format!(
        r#"{{"basis":"{s1}","applied":"2026-01-01T00:00:00Z","bytes_written":4096,"seconds":0.5}}"#
    );
    w.c.want(
        "PUT",
        &format!("/agents/{}/standby/state", a.agent),
        &a.credential,
        report.as_bytes(),
        204,
    );
    let (_, _, page) = ui.page(
        "GET",
        &format!("/ui/migrations/{}", m.id),
        Some(&cookie),
        None,
    );
    assert!(
        page.contains(&format!("in sync with snapshot {s1}")),
        "{page}"
    );
    let (status, _, _) = ui.page(
        "POST",
        &format!("/ui/migrations/{}/cutover", m.id),
        Some(&cookie),
        Some(&format!("csrf={csrf}&confirm=web01&poweroff=on")),
    );
    assert_eq!(status, 303);
    let rec = w.store.migration(&m.id).unwrap();
    assert_eq!(rec.state.name(), "cutting-over");
    assert!(rec.cutover.as_ref().unwrap().poweroff_source);
    let (_, _, page) = ui.page(
        "GET",
        &format!("/ui/migrations/{}", m.id),
        Some(&cookie),
        None,
    );
    assert!(
        page.contains("id=\"timeline\"") && page.contains("asked by the operator"),
        "{page}"
    );
    assert!(!page.contains("id=\"cutover\""), "no second cutover form");
    // A second cutover is refused with the store's message.
    let (status, body) = cutover_post(&w, &cookie, &m.id, &format!("csrf={csrf}&confirm=web01"));
    assert_eq!(status, 409);
    assert!(body.contains("cannot become cutting-over"), "{body}");
    assert_eq!(
        ui.page("GET", "/ui/migrations/mig-00000000", Some(&cookie), None)
            .0,
        404
    );
}
