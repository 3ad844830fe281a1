//! The admin API over the real server: tokens made, used and revoked over HTTPS; machines,
//! agents (approval by console code), jobs created with the CLI's checks (nothing created on
//! refusal), store usage and GC.

use ferry_format::admin::{MachineSummary, StoreUsage, TokenCreated};
use ferry_format::agent::{AgentInfo, JobRecord};
use ferry_format::api::{SnapshotSummary, TokenInfo};

mod common;
use common::World;

#[test]
fn tokens_are_created_used_and_revoked_over_the_api() {
    let w = World::new();
    let c = &w.c;
    w.snapshot("web01", 3);
    w.snapshot("db01", 4);
    let made: TokenCreated = serde_json::from_slice(&c.ok(
        "POST",
        "/tokens",
        &w.admin,
        Some(br#"{"role":"restore","machines":["web*"],"name":"laptop","expires":"30d"}"#),
        201,
    ))
    .unwrap();
    assert_eq!(made.token.len(), 64);
    assert_eq!(made.info.name.as_deref(), Some("laptop"));
    assert!(made.info.expires.is_some());
    // It reads what its scope allows.
    let list: Vec<SnapshotSummary> =
        serde_json::from_slice(&c.ok("GET", "/snapshots", &made.token, None, 200)).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].machine, "web01");
    // Listed without its secret.
    let text = String::from_utf8(c.ok("GET", "/tokens", &w.admin, None, 200)).unwrap();
    assert!(!text.contains(&made.token));
    let tokens: Vec<TokenInfo> = serde_json::from_str(&text).unwrap();
    assert!(tokens.iter().any(|t| t.id == made.info.id));
    // Refusals name the fix and create nothing.
    let e = c.want("POST", "/tokens", &w.admin, br#"{"role":"backup"}"#, 400);
    assert!(e.contains("must name the machines"), "{e}");
    let e = c.want("POST", "/tokens", &w.admin, br#"{"role":"agent"}"#, 400);
    assert!(e.contains("made by enrollment"), "{e}");
    let e = c.want(
        "POST",
        "/tokens",
        &w.admin,
        br#"{"role":"restore","expires":"soon"}"#,
        400,
    );
    assert!(e.contains("soon"), "{e}");
    let after: Vec<TokenInfo> =
        serde_json::from_slice(&c.ok("GET", "/tokens", &w.admin, None, 200)).unwrap();
    assert_eq!(after.len(), tokens.len());
    // Revoked: refused at once.
    c.ok(
        "DELETE",
        &format!("/tokens/{}", made.info.id),
        &w.admin,
        None,
        200,
    );
    let (status, body) = c.call("GET", "/snapshots", &made.token, None);
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("revoked"));
    c.ok("DELETE", "/tokens/tok-000000000000", &w.admin, None, 404);
}

#[test]
fn machines_agents_jobs_store_and_gc() {
    let w = World::new();
    let c = &w.c;
    let (snap, _) = w.snapshot("web01", 3);
    let (newest, _) = w.snapshot("web01", 4);
    w.snapshot("db01", 5);
    let machines: Vec<MachineSummary> =
        serde_json::from_slice(&c.ok("GET", "/machines", &w.admin, None, 200)).unwrap();
    assert_eq!(machines.len(), 2);
    let web = machines.iter().find(|m| m.machine == "web01").unwrap();
    assert_eq!(web.snapshots, 2);
    assert_eq!(web.newest, newest);

    // An agent enrolls; it is listed, shown, and approved only with its console code.
    let a = w.enroll("52:54:00:00:00:21", &[("vda", 1 << 20, true)]);
    let agents: Vec<AgentInfo> =
        serde_json::from_slice(&c.ok("GET", "/agents", &w.admin, None, 200)).unwrap();
    assert_eq!(agents.len(), 1);
    let one: AgentInfo =
        serde_json::from_slice(&c.ok("GET", &format!("/agents/{}", a.agent), &w.admin, None, 200))
            .unwrap();
    assert_eq!(one.inventory.disks[0].name, "vda");
    c.ok("GET", "/agents/agent-000000000000", &w.admin, None, 404);
    let approve = format!("/agents/{}/approve", a.agent);
    let (status, _) = c.call("POST", &approve, &w.admin, Some(br#"{"code":"000000"}"#));
    assert!(status >= 400, "approved with a wrong code: {status}");
    let body = format!(r#"{{"code":"{}"}}"#, a.code);
    let approved: AgentInfo =
        serde_json::from_slice(&c.ok("POST", &approve, &w.admin, Some(body.as_bytes()), 200))
            .unwrap();
    assert!(approved.approved.is_some());

    // Jobs: refused ones create nothing; a good one is created and shown.
    let job_body = |snapshot: &str, map: &str| {
        format!(
            r#"{{"kind":"restore","agent":"{}","snapshot":"{snapshot}","map":["{map}"],"then":"reboot"}}"#,
            a.agent
        )
    };
    let e = c.want(
        "POST",
        "/jobs",
        &w.admin,
        job_body("web01-19700101T000000Z", "sda=auto").as_bytes(),
        404,
    );
    assert!(e.contains("web01-19700101T000000Z"), "{e}");
    let e = c.want(
        "POST",
        "/jobs",
        &w.admin,
        job_body(&snap, "sda=nonsense=").as_bytes(),
        400,
    );
    assert!(!e.is_empty());
    let e = c.want(
        "POST",
        "/jobs",
        &w.admin,
        br#"{"kind":"restore","snapshot":"x","map":["sda=auto"],"then":"reboot"}"#,
        400,
    );
    assert!(e.contains("--agent") && e.contains("--mac"), "{e}");
    // An enrolled agent whose only disk is smaller than the snapshot's.
    let small = w.enroll("52:54:00:00:00:22", &[("vda", 4096, true)]);
    let body = format!(
        r#"{{"kind":"restore","agent":"{}","snapshot":"{snap}","map":["sda=auto"],"then":"reboot"}}"#,
        small.agent
    );
    let (status, e) = c.call("POST", "/jobs", &w.admin, Some(body.as_bytes()));
    let e = String::from_utf8_lossy(&e);
    assert!(status == 400 || status == 409, "{status} {e}");
    assert!(e.contains("no blank disk of at least 196608 bytes"), "{e}");
    let none: Vec<JobRecord> =
        serde_json::from_slice(&c.ok("GET", "/jobs", &w.admin, None, 200)).unwrap();
    assert!(none.is_empty(), "a refused request created {none:?}");
    let job: JobRecord = serde_json::from_slice(&c.ok(
        "POST",
        "/jobs",
        &w.admin,
        Some(job_body(&snap, "sda=auto").as_bytes()),
        201,
    ))
    .unwrap();
    let shown: serde_json::Value =
        serde_json::from_slice(&c.ok("GET", &format!("/jobs/{}", job.id), &w.admin, None, 200))
            .unwrap();
    assert_eq!(shown["job"]["id"], job.id.as_str());
    assert_eq!(shown["job"]["state"], "pending");
    assert!(shown["events"].as_array().unwrap().is_empty());
    let backup: JobRecord = serde_json::from_slice(&c.ok(
        "POST",
        "/jobs",
        &w.admin,
        Some(br#"{"kind":"backup","mac":"52:54:00:00:00:99","machine":"oldbox","disks":["auto"],"then":"poweroff"}"#),
        201,
    ))
    .unwrap();
    assert_eq!(backup.backup.unwrap().machine, "oldbox");
    let all: Vec<JobRecord> =
        serde_json::from_slice(&c.ok("GET", "/jobs", &w.admin, None, 200)).unwrap();
    assert_eq!(all.len(), 2);

    // Store usage and GC.
    let u: StoreUsage =
        serde_json::from_slice(&c.ok("GET", "/store", &w.admin, None, 200)).unwrap();
    assert_eq!((u.snapshots, u.machines), (3, 2));
    assert!(
        u.chunks > 0 && u.chunk_bytes > 0 && u.dedup_ratio > 0.0,
        "{u:?}"
    );
    let gc: serde_json::Value =
        serde_json::from_slice(&c.ok("POST", "/gc", &w.admin, None, 200)).unwrap();
    assert_eq!(gc["missing_chunks"], 0);
    assert_eq!(gc["snapshots"], 3);
    let migrations: Vec<serde_json::Value> =
        serde_json::from_slice(&c.ok("GET", "/migrations", &w.admin, None, 200)).unwrap();
    assert!(migrations.is_empty());
}

#[test]
fn snapshots_jobs_sources_and_migrations_change_over_the_api() {
    let w = World::new();
    let c = &w.c;
    let (old, _) = w.snapshot("web01", 3);
    let (newest, _) = w.snapshot("web01", 4);
    let a = w.enroll_approved("52:54:00:00:00:31", &[("vda", 1 << 20, true)]);
    let job_body = format!(
        r#"{{"kind":"restore","agent":"{}","snapshot":"{old}","map":["sda=auto"],"then":"reboot"}}"#,
        a.agent
    );
    let job: JobRecord =
        serde_json::from_slice(&c.ok("POST", "/jobs", &w.admin, Some(job_body.as_bytes()), 201))
            .unwrap();

    // A snapshot a pending job restores is not deleted; the job names it.
    let e = c.want("DELETE", &format!("/snapshots/{old}"), &w.admin, b"", 409);
    assert!(e.contains(&job.id), "{e}");
    // A pending job is cancelled (once); then the snapshot goes.
    let cancelled: JobRecord = serde_json::from_slice(&c.ok(
        "POST",
        &format!("/jobs/{}/cancel", job.id),
        &w.admin,
        None,
        200,
    ))
    .unwrap();
    let state = serde_json::to_value(&cancelled.state).unwrap();
    assert!(
        state.to_string().contains("cancelled by the operator"),
        "{state}"
    );
    c.want(
        "POST",
        &format!("/jobs/{}/cancel", job.id),
        &w.admin,
        b"",
        409,
    );
    c.want("POST", "/jobs/job-00000000/cancel", &w.admin, b"", 404);
    let gone: SnapshotSummary =
        serde_json::from_slice(&c.ok("DELETE", &format!("/snapshots/{old}"), &w.admin, None, 200))
            .unwrap();
    assert_eq!(gone.snapshot, old);
    c.want("DELETE", &format!("/snapshots/{old}"), &w.admin, b"", 404);

    // A job handed to its agent but not yet started is still cancelled: the agent's "running"
    // report then gets 409, and the agent never touches a disk without that report.
    let body = job_body.replace(&old, &newest);
    let handed: JobRecord =
        serde_json::from_slice(&c.ok("POST", "/jobs", &w.admin, Some(body.as_bytes()), 201))
            .unwrap();
    assert!(w.poll(&a, 5).is_some(), "the agent got no job");
    c.ok(
        "POST",
        &format!("/jobs/{}/cancel", handed.id),
        &w.admin,
        None,
        200,
    );
    let state = |job: &str| format!("/agents/{}/jobs/{job}/state", a.agent);
    c.ok(
        "PUT",
        &state(&handed.id),
        &a.credential,
        Some(br#""running""#),
        409,
    );
    // A running one may be writing a disk: not cancelled, and the message says why.
    let running: JobRecord =
        serde_json::from_slice(&c.ok("POST", "/jobs", &w.admin, Some(body.as_bytes()), 201))
            .unwrap();
    assert!(w.poll(&a, 5).is_some(), "the agent got no job");
    c.ok(
        "PUT",
        &state(&running.id),
        &a.credential,
        Some(br#""running""#),
        204,
    );
    let e = c.want(
        "POST",
        &format!("/jobs/{}/cancel", running.id),
        &w.admin,
        b"",
        409,
    );
    assert!(
        e.contains("running") && e.contains("power that machine off"),
        "{e}"
    );

    // Prune: the plan removes nothing; keep 0 is refused.
    w.snapshot("db01", 5);
    w.snapshot("db01", 6);
    let plan: serde_json::Value = serde_json::from_slice(&c.ok(
        "POST",
        "/machines/db01/prune",
        &w.admin,
        Some(br#"{"keep":1,"dry_run":true}"#),
        200,
    ))
    .unwrap();
    assert_eq!(plan["entries"].as_array().unwrap().len(), 2, "{plan}");
    assert_eq!(plan["removed"], 0, "{plan}");
    let e = c.want(
        "POST",
        "/machines/db01/prune",
        &w.admin,
        br#"{"keep":0}"#,
        400,
    );
    assert!(!e.is_empty());
    let left: Vec<SnapshotSummary> =
        serde_json::from_slice(&c.ok("GET", "/snapshots?machine=db01", &w.admin, None, 200))
            .unwrap();
    assert_eq!(left.len(), 2);

    // GC status: nothing before the first run, then that run's report.
    let status: serde_json::Value =
        serde_json::from_slice(&c.ok("GET", "/gc", &w.admin, None, 200)).unwrap();
    assert!(status["last"].is_null(), "{status}");
    let report: serde_json::Value =
        serde_json::from_slice(&c.ok("POST", "/gc", &w.admin, None, 200)).unwrap();
    let status: serde_json::Value =
        serde_json::from_slice(&c.ok("GET", "/gc", &w.admin, None, 200)).unwrap();
    assert_eq!(status["last"]["report"], report, "{status}");

    // Sources: a machine's schedule changed field by field, refused out of range.
    c.ok(
        "POST",
        "/sources/enroll",
        &w.backup,
        Some(br#"{"machine":"web01","version":"test"}"#),
        200,
    );
    let sources: Vec<serde_json::Value> =
        serde_json::from_slice(&c.ok("GET", "/sources", &w.admin, None, 200)).unwrap();
    assert_eq!(sources.len(), 1);
    let keep_before = sources[0]["schedule"]["keep"].clone();
    let v: serde_json::Value = serde_json::from_slice(&c.ok(
        "PATCH",
        "/sources/web01",
        &w.admin,
        Some(br#"{"interval_seconds":3600,"rate_bytes_per_s":null}"#),
        200,
    ))
    .unwrap();
    assert_eq!(v["schedule"]["interval_seconds"], 3600);
    assert!(v["schedule"]["limits"]["rate_bytes_per_s"].is_null(), "{v}");
    assert_eq!(v["schedule"]["keep"], keep_before);
    c.want("PATCH", "/sources/web01", &w.admin, br#"{"keep":0}"#, 400);
    c.want("PATCH", "/sources/web01", &w.admin, br#"{"bogus":1}"#, 400);
    // A machine whose agent has not enrolled yet gets its schedule ahead of time.
    let early: serde_json::Value = serde_json::from_slice(&c.ok(
        "PATCH",
        "/sources/db02",
        &w.admin,
        Some(br#"{"keep":5}"#),
        200,
    ))
    .unwrap();
    assert_eq!(early["state"], "not enrolled", "{early}");
    assert_eq!(early["schedule"]["keep"], 5);
    c.want("PATCH", "/sources/..", &w.admin, br#"{"keep":2}"#, 400);
    let v: serde_json::Value =
        serde_json::from_slice(&c.ok("POST", "/sources/web01/pause", &w.admin, None, 200)).unwrap();
    assert_eq!(v["schedule"]["paused"], true);
    let v: serde_json::Value =
        serde_json::from_slice(&c.ok("POST", "/sources/web01/resume", &w.admin, None, 200))
            .unwrap();
    assert_eq!(v["schedule"]["paused"], false);
    let v: serde_json::Value =
        serde_json::from_slice(&c.ok("POST", "/sources/web01/sync-now", &w.admin, None, 200))
            .unwrap();
    assert_eq!(v["sync_now"], true);

    // Migrations: refused onto a disk the standby lacks (nothing created), created, cancelled.
    let sb = w.enroll_approved("52:54:00:00:00:32", &[("vda", 1 << 20, true)]);
    let mig = |map: &str| {
        format!(
            r#"{{"machine":"web01","agent":"{}","map":["{map}"],"overwrite":false,"network":{{"nic":[],"reip":[],"ip":[]}}}}"#,
            sb.agent
        )
    };
    let (status, e) = c.call(
        "POST",
        "/migrations",
        &w.admin,
        Some(mig("sda=/dev/vdz").as_bytes()),
    );
    assert!((400..500).contains(&status), "{status}");
    assert!(String::from_utf8_lossy(&e).contains("vdz"));
    let none: Vec<serde_json::Value> =
        serde_json::from_slice(&c.ok("GET", "/migrations", &w.admin, None, 200)).unwrap();
    assert!(none.is_empty());
    let m: serde_json::Value = serde_json::from_slice(&c.ok(
        "POST",
        "/migrations",
        &w.admin,
        Some(mig("sda=/dev/vda").as_bytes()),
        201,
    ))
    .unwrap();
    assert_eq!(m["state"], "syncing", "{m}");
    let id = m["id"].as_str().unwrap();
    let m: serde_json::Value = serde_json::from_slice(&c.ok(
        "POST",
        &format!("/migrations/{id}/cancel"),
        &w.admin,
        None,
        200,
    ))
    .unwrap();
    assert_eq!(m["state"], "cancelled", "{m}");

    // An agent with a job running is not removed; a free one is.
    c.want(
        "DELETE",
        &format!("/agents/{}", a.agent),
        &w.admin,
        b"",
        409,
    );
    let free = w.enroll("52:54:00:00:00:33", &[("vda", 1 << 20, true)]);
    c.ok(
        "DELETE",
        &format!("/agents/{}", free.agent),
        &w.admin,
        None,
        204,
    );
    c.ok(
        "GET",
        &format!("/agents/{}", free.agent),
        &w.admin,
        None,
        404,
    );
}
