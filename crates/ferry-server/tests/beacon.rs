//! The first-boot beacon over the real HTTPS server: an agent gets a one-time credential for
//! its running job; the beacon reports once (200, then 410); an unknown or replaced credential
//! is 401; and a beacon credential is refused on every other route.

use ferry_format::agent::beacon::{BeaconIssued, BeaconReply};
use ferry_format::agent::{EnrollReply, Job, JobFor};
use ferry_format::ChunkId;
use ferry_store::meta::Collection;

mod common;
use common::World;

/// A job picked up and running on an approved agent; returns the agent and the job.
fn running_job(w: &World) -> (EnrollReply, Job) {
    let (snap, _) = w.snapshot("web01", 3);
    let a = w.enroll_approved("52:54:00:00:00:01", &[("vda", 1 << 20, true)]);
    w.create_job(&snap, JobFor::Agent(a.agent.clone()), "sda=vda");
    let job = w.poll(&a, 0).expect("the job is handed out");
    w.c.ok(
        "PUT",
        &format!("/agents/{}/jobs/{}/state", a.agent, job.id),
        &a.credential,
        Some(br#""running""#),
        204,
    );
    (a, job)
}

#[test]
fn a_beacon_reports_once_and_its_credential_opens_nothing_else() {
    let w = World::new();
    let (a, job) = running_job(&w);
    let c = &w.c;
    let issue_path = format!("/agents/{}/jobs/{}/beacon", a.agent, job.id);
    // Only the agent's own credential gets one.
    c.ok("POST", &issue_path, &w.backup, None, 403);
    c.ok("POST", &issue_path, &w.enroll, None, 403);
    let first: BeaconIssued =
        serde_json::from_slice(&c.ok("POST", &issue_path, &a.credential, None, 200)).unwrap();
    // Asking again replaces it: only the credential installed last is good.
    let issued: BeaconIssued =
        serde_json::from_slice(&c.ok("POST", &issue_path, &a.credential, None, 200)).unwrap();
    assert_eq!(issued.job, job.id);
    assert_ne!(issued.credential, first.credential);
    // The stored record (a file, or a row on FERRY_TEST_RECORDS=pg).
    let stored = w.store.records().get(Collection::Beacons, &job.id).unwrap();
    let raw = String::from_utf8(stored.unwrap()).unwrap();
    assert!(!raw.contains(issued.credential.rsplit('.').next().unwrap()));

    // Refused on every other route, before and after use.
    let cred = issued.credential.as_str();
    let others: &[(&str, String, Option<&[u8]>)] = &[
        ("GET", "/snapshots".into(), None),
        ("GET", format!("/snapshots/{}/manifest", job.snapshot), None),
        (
            "POST",
            "/backups".into(),
            Some(br#"{"machine":"web01","chunk_size":65536}"#),
        ),
        ("GET", format!("/agents/{}/job", a.agent), None),
        (
            "PUT",
            format!("/agents/{}/jobs/{}/state", a.agent, job.id),
            Some(br#""failed""#),
        ),
        ("POST", issue_path.clone(), None),
        ("POST", format!("/agents/{}/events", a.agent), Some(b"{}")),
        ("POST", "/agents/enroll".into(), Some(b"{}")),
        ("GET", "/sources/web01/task".into(), None),
        ("GET", format!("/chunks/{}", ChunkId::of(b"x")), None),
    ];
    for (m, p, body) in others {
        c.ok(m, p, cred, *body, 401);
    }

    let report = |token: &str, job: &str| {
        c.call(
            "POST",
            "/beacon",
            token,
            Some(format!(r#"{{"job":"{job}","hostname":"web01\n"}}"#).as_bytes()),
        )
    };
    assert_eq!(
        report(&first.credential, &job.id).0,
        401,
        "a replaced credential"
    );
    assert_eq!(
        report(&w.admin, &job.id).0,
        401,
        "an admin token is no beacon credential"
    );
    assert_eq!(
        report(cred, "job-ffffffff").0,
        400,
        "the report names another job"
    );
    let (status, body) = report(cred, &job.id);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let reply: BeaconReply = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply.job, job.id);
    let rec = w.store.beacon(&job.id).unwrap().unwrap();
    assert_eq!(rec.booted.as_deref(), Some(reply.booted.as_str()));
    assert_eq!(rec.hostname.as_deref(), Some("web01"));
    assert!(
        rec.address
            .as_deref()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{rec:?}"
    );
    // Once: the second report is gone, and the record keeps the first.
    let (status, body) = report(cred, &job.id);
    assert_eq!(status, 410, "{}", String::from_utf8_lossy(&body));
    assert_eq!(w.store.beacon(&job.id).unwrap().unwrap(), rec);
    // After the report no new credential is issued for the job.
    c.ok("POST", &issue_path, &a.credential, None, 409);
    for (m, p, body) in others {
        c.ok(m, p, cred, *body, 401);
    }
}

#[test]
fn a_beacon_credential_is_issued_only_for_the_agents_running_job() {
    let w = World::new();
    let (snap, _) = w.snapshot("web01", 3);
    let a = w.enroll_approved("52:54:00:00:00:01", &[("vda", 1 << 20, true)]);
    let b = w.enroll_approved("52:54:00:00:00:02", &[("vda", 1 << 20, true)]);
    w.create_job(&snap, JobFor::Agent(a.agent.clone()), "sda=vda");
    let job = w.poll(&a, 0).unwrap();
    // Handed out but not running yet: no credential.
    let path = format!("/agents/{}/jobs/{}/beacon", a.agent, job.id);
    w.c.ok("POST", &path, &a.credential, None, 409);
    // Another agent's job is not found to it, and its credential is not a's.
    w.c.ok(
        "POST",
        &format!("/agents/{}/jobs/{}/beacon", b.agent, job.id),
        &b.credential,
        None,
        404,
    );
    w.c.ok("POST", &path, &b.credential, None, 403);
}
