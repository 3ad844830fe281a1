//! The console's sign-in and session over the real server (as a browser sends them: forms and
//! cookies, no bearer token): only an active admin token signs in; the cookie's flags; pages
//! need the session; sign-out needs the session's CSRF token.

use ferry_format::api::Role;
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
        "/ui/machines/web02".to_string(),
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
