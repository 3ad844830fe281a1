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
