//! Unattended restores over the real HTTPS server: enrollment with an enroll token, what an
//! agent credential may read, the job long poll, and jobs created for a MAC before the machine
//! enrolls. Jobs are created through the store, as `appliance jobs create` does from another
//! process.

use std::time::{Duration, Instant, SystemTime};

use ferry_format::agent::{
    Disk, EnrollRequest, Inventory, JobFor, JobState, MapTarget, Mapping, ResumeClaim, Then,
};
use ferry_format::api::{Hello, Role};
use ferry_store::jobs::NewJob;
use ferry_store::meta::Collection;
use ferry_store::Store;

mod common;
use common::World;

#[test]
fn enroll_token_only_enrolls_and_a_credential_reads_only_its_jobs_snapshot() {
    let w = World::new();
    let (snap_a, chunks_a) = w.snapshot("web01", 3);
    let (snap_b, chunks_b) = w.snapshot("db01", 5);
    let c = &w.c;

    // The enroll token enrolls and does nothing else.
    c.ok("GET", "/snapshots", &w.enroll, None, 403);
    c.ok(
        "GET",
        &format!("/snapshots/{snap_a}/manifest"),
        &w.enroll,
        None,
        403,
    );
    c.ok(
        "POST",
        "/backups",
        &w.enroll,
        Some(br#"{"machine":"x","chunk_size":65536}"#),
        403,
    );
    c.ok("POST", "/agents/enroll", &w.backup, Some(b"{}"), 403);
    let a = w.enroll_approved("52:54:00:00:00:01", &[("vda", 1 << 20, true)]);
    assert_eq!(a.agent, "agent-525400000001");
    c.ok(
        "GET",
        &format!("/agents/{}/job", a.agent),
        &w.enroll,
        None,
        403,
    );
    let hello: Hello =
        serde_json::from_slice(&c.ok("GET", "/hello", &a.credential, None, 200)).unwrap();
    assert_eq!(hello.role, Role::Agent);
    // The agent is listed with its inventory; the credential's hash, not the credential, is stored.
    let listed = w.store.list_agents().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].inventory.disks[0].serial.as_deref(),
        Some("SER-vda")
    );
    // The stored record (a file, or a row on FERRY_TEST_RECORDS=pg).
    let stored = w.store.records().get(Collection::Agents, &a.agent).unwrap();
    let raw = String::from_utf8(stored.unwrap()).unwrap();
    assert!(!raw.contains(a.credential.split('.').nth(1).unwrap()));

    // Without a job, the credential reads no snapshot at all.
    c.ok("GET", "/snapshots", &a.credential, None, 403);
    c.ok(
        "GET",
        &format!("/snapshots/{snap_a}/manifest"),
        &a.credential,
        None,
        403,
    );
    c.ok(
        "GET",
        &format!("/chunks/{}", chunks_a[0]),
        &a.credential,
        None,
        403,
    );

    let job = w.create_job(&snap_a, JobFor::Agent(a.agent.clone()), "sda=auto");
    let got = w.poll(&a, 0).expect("the job");
    assert_eq!(
        (got.id.as_str(), &got.state),
        (job.id.as_str(), &JobState::Pending)
    );
    assert_eq!(
        got.mappings,
        vec![Mapping {
            disk: "sda".into(),
            target: MapTarget::Device("vda".into())
        }]
    );

    // Its job's snapshot and chunks, and nothing else.
    c.ok(
        "GET",
        &format!("/snapshots/{snap_a}/manifest"),
        &a.credential,
        None,
        200,
    );
    c.ok(
        "GET",
        &format!("/snapshots/{snap_a}/disks/sda/index"),
        &a.credential,
        None,
        200,
    );
    c.ok(
        "GET",
        &format!("/chunks/{}", chunks_a[1]),
        &a.credential,
        None,
        200,
    );
    c.ok(
        "GET",
        &format!("/snapshots/{snap_b}/manifest"),
        &a.credential,
        None,
        403,
    );
    c.ok(
        "GET",
        &format!("/snapshots/{snap_b}/disks/sda/index"),
        &a.credential,
        None,
        403,
    );
    c.ok(
        "GET",
        &format!("/chunks/{}", chunks_b[0]),
        &a.credential,
        None,
        403,
    );

    // Another agent cannot act for this one.
    let b = w.enroll("52:54:00:00:00:02", &[("vda", 1 << 20, true)]);
    c.ok(
        "GET",
        &format!("/agents/{}/job", a.agent),
        &b.credential,
        None,
        403,
    );
    c.ok(
        "PUT",
        &format!("/agents/{}/jobs/{}/state", b.agent, job.id),
        &b.credential,
        Some(br#""running""#),
        404,
    );

    // Run it: running, events, succeeded; then the snapshot is closed to the agent again.
    let state = |s: &str, want| {
        c.ok(
            "PUT",
            &format!("/agents/{}/jobs/{}/state", a.agent, job.id),
            &a.credential,
            Some(s.as_bytes()),
            want,
        )
    };
    state(r#""succeeded""#, 409);
    state(r#""running""#, 204);
    let ev = format!(
        r#"{{"job":"{}","events":[{{"time":"2025-01-01T00:00:00Z","level":"info","phase":"restore","message":"half","bytes_done":98304,"bytes_total":196608,"rate":1000,"eta":98}}]}}"#,
        job.id
    );
    c.ok(
        "POST",
        &format!("/agents/{}/events", a.agent),
        &a.credential,
        Some(ev.as_bytes()),
        204,
    );
    state(r#""succeeded""#, 204);
    state(r#""running""#, 409);
    let rec = w.store.job(&job.id).unwrap();
    assert_eq!(
        (rec.state, rec.progress.bytes_done, rec.agent.as_deref()),
        (JobState::Succeeded, 98304, Some(a.agent.as_str()))
    );
    assert_eq!(w.store.job_events(&job.id).unwrap()[0].message, "half");
    c.ok(
        "GET",
        &format!("/snapshots/{snap_a}/manifest"),
        &a.credential,
        None,
        403,
    );
    assert!(w.poll(&a, 0).is_none());

    // Enrolling again with the same MAC never takes over an approved agent: a new, unapproved
    // agent beside it, and the first credential keeps working.
    let again = w.enroll("52:54:00:00:00:01", &[("vda", 1 << 20, true)]);
    assert!(
        again.agent.starts_with("agent-525400000001-") && !again.approved,
        "{again:?}"
    );
    c.ok("GET", "/hello", &a.credential, None, 200);
    c.ok("GET", "/hello", &again.credential, None, 200);
    // The admin token may do what an agent does.
    c.ok(
        "GET",
        &format!("/agents/{}/job?wait=0", a.agent),
        &w.admin,
        None,
        204,
    );
}

#[test]
fn long_poll_returns_a_job_created_after_it_started() {
    let w = World::new();
    let (snap, _) = w.snapshot("web01", 7);
    let a = w.enroll_approved("52:54:00:00:00:0a", &[("vda", 1 << 20, true)]);
    let t0 = Instant::now();
    let (job, got) = std::thread::scope(|s| {
        let poller = s.spawn(|| w.poll(&a, 20));
        std::thread::sleep(Duration::from_millis(1500));
        // Another process would do exactly this: write the job into the store.
        let other = Store::open(w.store.root()).unwrap();
        let new = NewJob {
            snapshot: snap.clone(),
            for_: JobFor::Agent(a.agent.clone()),
            mappings: vec!["sda=/dev/vda".parse().unwrap()],
            then: Then::Poweroff,
            overwrite: false,
            options: Default::default(),
        };
        let job = other.create_job(new, SystemTime::now()).unwrap();
        (job, poller.join().unwrap())
    });
    let got = got.expect("the long poll returns the new job");
    assert_eq!(got.id, job.id);
    assert_eq!(got.then, Then::Poweroff);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "answered after {waited:?}"
    );
    // Nothing new: a short poll answers 204 after its wait.
    let b = w.enroll("52:54:00:00:00:0b", &[]);
    let t1 = Instant::now();
    assert!(w.poll(&b, 1).is_none());
    assert!(t1.elapsed() >= Duration::from_millis(900));
}

#[test]
fn job_created_for_a_mac_is_picked_up_when_that_machine_enrolls() {
    let w = World::new();
    let (snap, _) = w.snapshot("web01", 9);
    let mac = "52:54:00:12:34:56";
    let job = w.create_job(&snap, JobFor::Mac(mac.into()), "sda=auto");
    let ambiguous = w.create_job(&snap, JobFor::Mac("52:54:00:99:99:99".into()), "sda=auto");
    assert_eq!(w.store.job(&job.id).unwrap().agent, None);

    // Another machine does not get it.
    let other = w.enroll("52:54:00:00:00:77", &[("vda", 1 << 20, true)]);
    assert!(w.poll(&other, 0).is_none());

    let a = w.enroll(mac, &[("sda", 1 << 30, false), ("vdb", 1 << 20, true)]);
    assert!(
        w.poll(&a, 0).is_none(),
        "no job before the operator approves"
    );
    assert_eq!(
        w.store.job(&job.id).unwrap().agent,
        None,
        "not bound by a MAC claim"
    );
    w.store
        .approve_agent(&a.agent, Some(&a.code), SystemTime::now())
        .unwrap();
    let got = w.poll(&a, 0).expect("the MAC's job");
    assert_eq!(
        w.store.job(&job.id).unwrap().agent.as_deref(),
        Some(a.agent.as_str()),
        "bound when the approved agent takes it"
    );
    assert_eq!(got.proof.len(), 64, "a proof for the in-progress markers");
    assert_eq!(got.id, job.id);
    assert_eq!(
        got.mappings[0].target,
        MapTarget::Device("vdb".into()),
        "auto takes the blank disk"
    );
    assert_eq!(
        w.store
            .list_agents()
            .unwrap()
            .iter()
            .find(|i| i.agent == a.agent)
            .unwrap()
            .job
            .as_deref(),
        Some(job.id.as_str())
    );

    // `auto` with two blank disks: the job fails with the reason, handed out once, nothing else.
    let b = w.enroll_approved(
        "52:54:00:99:99:99",
        &[("vda", 1 << 20, true), ("vdb", 1 << 20, true)],
    );
    let failed = w.poll(&b, 0).expect("the failed job, once");
    assert_eq!(failed.id, ambiguous.id);
    let JobState::Failed { reason } = &failed.state else {
        panic!("{failed:?}")
    };
    assert!(
        reason.contains("ambiguous") && reason.contains("/dev/vda, /dev/vdb"),
        "{reason}"
    );
    assert!(w.poll(&b, 0).is_none());
    let rec = w.store.job(&ambiguous.id).unwrap();
    assert!(matches!(rec.state, JobState::Failed { .. }));
    assert!(w.store.job_events(&ambiguous.id).unwrap()[0]
        .message
        .contains("ambiguous"));
}

#[test]
fn an_impostor_enrolling_with_the_victims_mac_gets_no_job_and_no_data() {
    let w = World::new();
    let (snap, chunks) = w.snapshot("web01", 11);
    let c = &w.c;
    let mac = "52:54:00:de:ad:01";
    let job = w.create_job(&snap, JobFor::Mac(mac.into()), "sda=auto");
    // The attacker has the site enroll token (it is stamped into every image) and claims the
    // victim's MAC and disks before the victim boots.
    let evil = w.enroll(mac, &[("vda", 1 << 20, true)]);
    assert!(!evil.approved);
    assert!(w.poll(&evil, 0).is_none(), "no job for an unapproved agent");
    assert_eq!(w.store.job(&job.id).unwrap().agent, None);
    for path in [
        format!("/snapshots/{snap}/manifest"),
        format!("/snapshots/{snap}/disks/sda/index"),
        format!("/chunks/{}", chunks[0]),
    ] {
        c.ok("GET", &path, &evil.credential, None, 403);
    }
    c.ok(
        "PUT",
        &format!("/agents/{}/jobs/{}/state", evil.agent, job.id),
        &evil.credential,
        Some(br#""succeeded""#),
        404,
    );
    // The victim boots and enrolls: an unapproved record carries no trust, so the newer
    // enrollment takes the id over and the impostor's credential dies.
    let victim = w.enroll(mac, &[("vda", 1 << 20, true)]);
    assert_eq!(victim.agent, evil.agent);
    c.ok("GET", "/hello", &evil.credential, None, 401);
    // The impostor races back in; the operator approves by the code on the victim's console,
    // which the impostor's enrollment does not have: refused, nothing approved.
    let evil = w.enroll(mac, &[("vda", 1 << 20, true)]);
    assert_ne!(victim.code, evil.code);
    let e = w
        .store
        .approve_agent(&evil.agent, Some(&victim.code), SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not approve"), "{e}");
    assert!(w.poll(&evil, 0).is_none());
    // The victim enrolls again (its credential was replaced) and is approved by its code.
    let victim = w.enroll(mac, &[("vda", 1 << 20, true)]);
    w.store
        .approve_agent(&victim.agent, Some(&victim.code), SystemTime::now())
        .unwrap();
    let got = w.poll(&victim, 0).expect("the victim's job");
    assert_eq!(got.id, job.id);
    c.ok(
        "PUT",
        &format!("/agents/{}/jobs/{}/state", victim.agent, job.id),
        &victim.credential,
        Some(br#""running""#),
        204,
    );
    // Once it runs, a new enrollment with the same MAC (approved or not) never gets it...
    let evil2 = w.enroll(mac, &[("vda", 1 << 20, true)]);
    assert!(evil2.agent != victim.agent && !evil2.approved);
    w.store
        .approve_agent(&evil2.agent, None, SystemTime::now())
        .unwrap();
    assert!(
        w.poll(&evil2, 0).is_none(),
        "a running job stays with its agent"
    );
    // ...and a resume claim without the proof written on the victim's disks gets nothing.
    let forged = w.enroll_claiming(
        mac,
        &[("vda", 1 << 20, false)],
        &[ResumeClaim {
            job: job.id.clone(),
            proof: "00".repeat(32),
        }],
    );
    assert!(!forged.approved);
    assert!(w.poll(&forged, 0).is_none());
    assert_eq!(
        w.store.job(&job.id).unwrap().agent.as_deref(),
        Some(victim.agent.as_str())
    );
}

#[test]
fn a_rebooted_machine_gets_its_running_job_back_by_the_marker_on_its_disk() {
    let w = World::new();
    let (snap, _) = w.snapshot("web01", 13);
    let c = &w.c;
    let a = w.enroll_approved("52:54:00:be:ef:01", &[("vda", 1 << 20, true)]);
    let job = w.create_job(&snap, JobFor::Agent(a.agent.clone()), "sda=/dev/vda");
    let got = w.poll(&a, 0).unwrap();
    c.ok(
        "PUT",
        &format!("/agents/{}/jobs/{}/state", a.agent, job.id),
        &a.credential,
        Some(br#""running""#),
        204,
    );
    // The machine reboots mid-restore; its disk carries the marker with the proof.
    let back = w.enroll_claiming(
        "52:54:00:be:ef:01",
        &[("vda", 1 << 20, false)],
        &[ResumeClaim {
            job: job.id.clone(),
            proof: got.proof.clone(),
        }],
    );
    assert!(back.approved, "{back:?}");
    let again = w.poll(&back, 0).expect("its running job");
    assert_eq!(
        (again.id.as_str(), &again.state),
        (job.id.as_str(), &JobState::Running)
    );
    assert!(
        again.proof.is_empty(),
        "the proof is never sent twice: the agent has it on disk"
    );
    // The old enrollment's credential stopped working; the snapshot is readable to the new one.
    c.ok("GET", "/hello", &a.credential, None, 401);
    c.ok(
        "GET",
        &format!("/snapshots/{snap}/manifest"),
        &back.credential,
        None,
        200,
    );
}

#[test]
fn enrollments_are_bounded() {
    let w = World::new();
    for i in 0..(ferry_store::agents::MAX_UNAPPROVED + 6) {
        w.enroll(&format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256), &[]);
    }
    let list = w.store.list_agents().unwrap();
    assert_eq!(list.len(), ferry_store::agents::MAX_UNAPPROVED);
    // An inventory larger than any machine's is refused.
    let disks: Vec<(String, u64, bool)> = (0..200)
        .map(|i| (format!("vd{i}"), 1u64 << 20, true))
        .collect();
    let inventory = Inventory {
        disks: disks
            .iter()
            .map(|(n, s, b)| Disk {
                name: n.clone(),
                size: *s,
                model: None,
                serial: None,
                wwn: None,
                logical_sector_size: 512,
                physical_sector_size: 512,
                blank: *b,
                removable: false,
                holds: None,
                protected: None,
            })
            .collect(),
        ..Default::default()
    };
    let req = serde_json::to_vec(&EnrollRequest {
        inventory,
        version: "x".into(),
        resume: vec![],
    })
    .unwrap();
    let body = w.c.ok("POST", "/agents/enroll", &w.enroll, Some(&req), 400);
    assert!(String::from_utf8_lossy(&body).contains("at most 128 disks"));
}

#[test]
fn an_agents_event_log_is_bounded_and_keeps_the_jobs_end() {
    let w = World::new();
    let (snap, _) = w.snapshot("web01", 17);
    let a = w.enroll_approved("52:54:00:e0:00:01", &[("vda", 1 << 20, true)]);
    let job = w.create_job(&snap, JobFor::Agent(a.agent.clone()), "sda=/dev/vda");
    w.poll(&a, 0).unwrap();
    let post = |level: &str, phase: &str, n: usize| {
        let one = format!(
            r#"{{"time":"2025-01-01T00:00:00Z","level":"{level}","phase":"{phase}","message":"{}","bytes_done":1,"bytes_total":2}}"#,
            "x".repeat(150)
        );
        let body = format!(
            r#"{{"job":"{}","events":[{}]}}"#,
            job.id,
            vec![one; n].join(",")
        );
        w.c.ok(
            "POST",
            &format!("/agents/{}/events", a.agent),
            &a.credential,
            Some(body.as_bytes()),
            204,
        );
    };
    // 60 batches of 1000 progress events: ~13 MiB offered.
    for _ in 0..60 {
        post("info", "restore", 1000);
    }
    post("error", "failed", 1);
    let size = w
        .store
        .records()
        .log_size(Collection::Jobs, &job.id)
        .unwrap();
    let max = ferry_store::jobs::MAX_EVENT_LOG;
    assert!(
        (max..max + (2 << 20)).contains(&size),
        "event log of {size} bytes"
    );
    let events = w.store.job_events(&job.id).unwrap();
    assert!(events.iter().any(|e| e.message.contains("reached 8 MiB")));
    assert_eq!(
        events.last().unwrap().phase,
        ferry_format::agent::Phase::Failed
    );
}

/// A backup job makes its agent's credential a backup credential for the job's one machine,
/// for the job's life only, and for uploads only (no source enrollment, no reads).
#[test]
fn a_backup_job_grants_its_agent_one_machines_uploads_while_it_lasts() {
    let w = World::new();
    let c = &w.c;
    let a = w.enroll_approved("52:54:00:00:0b:01", &[("vda", 1 << 20, false)]);
    let start = |machine: &str, want| {
        let body = format!(r#"{{"machine":"{machine}","chunk_size":{}}}"#, 1 << 20);
        c.ok(
            "POST",
            "/backups",
            &a.credential,
            Some(body.as_bytes()),
            want,
        )
    };
    // No backup job: an agent credential uploads nothing.
    start("oldbox", 403);

    let new = ferry_store::jobs::NewBackupJob {
        for_: JobFor::Agent(a.agent.clone()),
        machine: "oldbox".into(),
        disks: vec!["auto".into()],
        then: ferry_format::agent::Then::None,
    };
    let job = w.store.create_backup_job(new, SystemTime::now()).unwrap();
    let handed = w.poll(&a, 0).expect("the backup job");
    assert_eq!(handed.id, job.id);
    assert_eq!(handed.backup.as_ref().unwrap().disks, ["vda"]);

    start("oldbox", 200);
    start("web01", 403);
    let source = br#"{"machine":"oldbox","version":"0.1.0"}"#;
    let body = c.ok("POST", "/sources/enroll", &a.credential, Some(source), 403);
    assert!(
        String::from_utf8_lossy(&body).contains("may only upload the backup of its job"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    c.ok("GET", "/snapshots", &a.credential, None, 403);

    // The job ends: so does the grant.
    let state = format!("/agents/{}/jobs/{}/state", a.agent, job.id);
    c.ok("PUT", &state, &a.credential, Some(br#""running""#), 204);
    c.ok("PUT", &state, &a.credential, Some(br#""succeeded""#), 204);
    start("oldbox", 403);
}
