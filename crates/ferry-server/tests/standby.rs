//! A migration's standby over the real HTTPS server: the long-polled next snapshot, the state
//! report, 410 once the migration ended, and the scope of a standby's credential (exactly the
//! snapshot handed to it and its basis; never another snapshot of the same machine).

use std::time::SystemTime;

use ferry_format::agent::{EnrollReply, Job, JobKind, StandbyNext};
use ferry_format::ChunkId;
use ferry_store::migrations::{MigrationRecord, NewMigration};

mod common;
use common::World;

fn next(w: &World, a: &EnrollReply, basis: &str, want: u16) -> Option<StandbyNext> {
    let (status, body) = w.c.call(
        "GET",
        &format!("/agents/{}/standby/next?basis={basis}&wait=0", a.agent),
        &a.credential,
        None,
    );
    assert_eq!(status, want, "{}", String::from_utf8_lossy(&body));
    (status == 200).then(|| serde_json::from_slice(&body).unwrap())
}

fn report(w: &World, a: &EnrollReply, basis: &str, want: u16) -> String {
    let body = format!(
        r#"{{"basis":"{basis}","applied":"2026-01-01T00:00:00Z","bytes_written":4096,"seconds":0.5}}"#
    );
    w.c.want(
        "PUT",
        &format!("/agents/{}/standby/state", a.agent),
        &a.credential,
        body.as_bytes(),
        want,
    )
}

fn reads(w: &World, a: &EnrollReply, snapshot: &str, chunk: &ChunkId) -> (u16, u16, u16) {
    let get = |path: String| w.c.call("GET", &path, &a.credential, None).0;
    (
        get(format!("/snapshots/{snapshot}/manifest")),
        get(format!("/snapshots/{snapshot}/disks/sda/index")),
        get(format!("/chunks/{chunk}")),
    )
}

#[test]
fn a_standby_reads_only_what_it_was_handed_and_stops_when_the_migration_ends() {
    let w = World::new();
    w.store.set_schedule("web01", |s| s.keep = 7).unwrap();
    let (s1, c1) = w.snapshot("web01", 3);
    let a = w.enroll_approved("52:54:00:00:00:01", &[("vda", 1 << 20, true)]);
    let m = w
        .store
        .create_migration(
            NewMigration {
                machine: "web01".into(),
                agent: "52:54:00:00:00:01".into(),
                mappings: vec!["sda=/dev/vda".parse().unwrap()],
                overwrite: false,
                network: Default::default(),
            },
            SystemTime::now(),
        )
        .unwrap();
    let (status, body) = w.c.call(
        "GET",
        &format!("/agents/{}/job?wait=0", a.agent),
        &a.credential,
        None,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let job: Job = serde_json::from_slice(&body).unwrap();
    assert_eq!(job.kind, JobKind::Standby);
    assert_eq!(job.migration.as_deref(), Some(m.id.as_str()));
    // Nothing handed yet: the job's snapshot field does not open anything.
    assert_eq!(reads(&w, &a, &s1, &c1[0]), (403, 403, 403));

    let n = next(&w, &a, "", 200).unwrap();
    assert_eq!(
        (n.snapshot.as_str(), n.migration.as_str()),
        (s1.as_str(), m.id.as_str())
    );
    assert_eq!(reads(&w, &a, &s1, &c1[0]), (200, 200, 200));
    // Another agent's credential is refused on this agent's route; on its own it serves no
    // migration (410).
    let b = w.enroll_approved("52:54:00:00:00:02", &[("vda", 1 << 20, true)]);
    w.c.ok(
        "GET",
        &format!("/agents/{}/standby/next", a.agent),
        &b.credential,
        None,
        403,
    );
    next(&w, &b, "", 410);

    report(&w, &a, &s1, 204);
    assert!(next(&w, &a, &s1, 204).is_none());

    // A newer snapshot of the same machine: unreadable until handed.
    let (s2, c2) = w.snapshot("web01", 5);
    assert_eq!(reads(&w, &a, &s2, &c2[0]), (403, 403, 403));
    let n = next(&w, &a, &s1, 200).unwrap();
    assert_eq!(n.snapshot, s2);
    assert_eq!(reads(&w, &a, &s2, &c2[0]), (200, 200, 200));
    assert_eq!(
        reads(&w, &a, &s1, &c1[0]),
        (200, 200, 200),
        "the basis stays readable"
    );
    // A third one, never handed: still refused, though it is of the same machine.
    let (s3, c3) = w.snapshot("web01", 7);
    assert_eq!(reads(&w, &a, &s3, &c3[0]), (403, 403, 403));
    let e = report(&w, &a, &s3, 409);
    assert!(e.contains("was not handed"), "{e}");
    report(&w, &a, &s2, 204);
    let v = w.store.migration(&m.id).unwrap();
    assert_eq!(v.standby.basis.as_deref(), Some(s2.as_str()));

    w.store.cancel_migration(&m.id, SystemTime::now()).unwrap();
    let (status, body) = w.c.call(
        "GET",
        &format!("/agents/{}/standby/next?basis={s2}&wait=0", a.agent),
        &a.credential,
        None,
    );
    assert_eq!(status, 410, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("no active migration"));
    report(&w, &a, &s2, 410);
}

fn cutover_step(w: &World, a: &EnrollReply, snapshot: &str, step: &str, want: u16) -> String {
    let body = format!(r#"{{"snapshot":"{snapshot}","step":"{step}"}}"#);
    w.c.want(
        "PUT",
        &format!("/agents/{}/standby/cutover", a.agent),
        &a.credential,
        body.as_bytes(),
        want,
    )
}

/// The source agent's side over HTTPS: poll its task, report it running, then `end`.
fn source_task(w: &World, cred: &str, end: &str) -> serde_json::Value {
    let (status, body) = w.c.call("GET", "/sources/web01/task?wait=0", cred, None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let task: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let path = format!(
        "/sources/web01/tasks/{}/state",
        task["id"].as_str().unwrap()
    );
    w.c.want("PUT", &path, cred, br#""running""#, 204);
    w.c.want("PUT", &path, cred, end.as_bytes(), 204);
    task
}

/// web01's source agent enrolled (its credential), and a migration of web01 to a fresh approved
/// standby agent with MAC `mac`.
fn source_and_migration(w: &World, mac: &str) -> (String, EnrollReply, MigrationRecord) {
    let cred = w
        .store
        .enroll_source(
            &ferry_format::source::SourceEnrollRequest {
                machine: "web01".into(),
                inventory: None,
                version: "test".into(),
            },
            SystemTime::now(),
        )
        .unwrap()
        .credential;
    let a = w.enroll_approved(mac, &[("vda", 1 << 20, true)]);
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
    (cred, a, m)
}

#[test]
fn a_cutover_hands_the_final_snapshot_and_takes_the_standby_steps() {
    let w = World::new();
    w.store.set_schedule("web01", |s| s.keep = 7).unwrap();
    let (s1, _) = w.snapshot("web01", 3);
    let (cred, a, m) = source_and_migration(&w, "52:54:00:00:00:01");
    w.c.ok(
        "GET",
        &format!("/agents/{}/job?wait=0", a.agent),
        &a.credential,
        None,
        200,
    );
    next(&w, &a, "", 200);
    report(&w, &a, &s1, 204);

    // The operator's route: admin only; an unknown or malformed id is 404; 202 with the record.
    let route = format!("/migrations/{}/cutover", m.id);
    let e = w.c.want("POST", &route, &w.backup, b"{}", 403);
    assert!(e.contains("needs a admin token"), "{e}");
    w.c.want(
        "POST",
        "/migrations/mig-00000000/cutover",
        &w.admin,
        b"{}",
        404,
    );
    w.c.want("POST", "/migrations/..%2Fx/cutover", &w.admin, b"{}", 404);
    w.c.want("POST", &route, &w.admin, br#"{"poweroff":true}"#, 400);
    let rec: serde_json::Value =
        serde_json::from_str(&w.c.want("POST", &route, &w.admin, b"", 202)).unwrap();
    assert_eq!(rec["state"], "cutting-over", "{rec}");
    let e = w.c.want("POST", &route, &w.admin, b"{}", 409);
    assert!(e.contains("cannot become cutting-over"), "{e}");
    let shown: serde_json::Value = serde_json::from_slice(&w.c.ok(
        "GET",
        &format!("/migrations/{}", m.id),
        &w.admin,
        None,
        200,
    ))
    .unwrap();
    assert_eq!(shown["state"], "cutting-over");
    // Nothing for the standby until the source's final sync; a step now is refused (409).
    assert!(next(&w, &a, &s1, 204).is_none());
    let e = cutover_step(&w, &a, &s1, "applying", 409);
    assert!(e.contains("not cutting over to snapshot"), "{e}");

    // A failed cutover task: back to syncing.
    let task = source_task(
        &w,
        &cred,
        r#"{"failed":{"reason":"cutover aborted: hook pre_cutover failed (exit 1)"}}"#,
    );
    assert_eq!(task["kind"], "cutover");
    assert_eq!(task["consistency"], "point-in-time");
    assert_eq!(w.store.migration(&m.id).unwrap().state.name(), "syncing");

    // Again, and the final sync succeeds: `next` hands it with final: true.
    w.store.request_cutover(&m.id, SystemTime::now()).unwrap();
    let (s2, c2) = w.snapshot("web01", 5);
    let succeeded = |snapshot: &str| {
        format!(
            r#"{{"succeeded":{{"snapshot":"{snapshot}","figures":{{"cpu_seconds":0.5,"peak_rss_bytes":1,"bytes_read":2,"bytes_sent":3,"consistency":"point-in-time","hook_seconds":1.5}}}}}}"#
        )
    };
    source_task(&w, &cred, &succeeded(&s2));
    let (status, body) = w.c.call(
        "GET",
        &format!("/agents/{}/standby/next?basis={s1}&wait=0", a.agent),
        &a.credential,
        None,
    );
    assert_eq!(status, 200);
    let raw: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(raw["final"], true, "{raw}");
    assert_eq!(raw["snapshot"], s2.as_str());
    assert_eq!(reads(&w, &a, &s2, &c2[0]), (200, 200, 200));

    // The standby cannot take it (before applying): back to syncing, and the source, stopped
    // by its final sync, gets a cutover-abort task (it reports done).
    cutover_step(&w, &a, &s2, "failed", 204);
    assert_eq!(w.store.migration(&m.id).unwrap().state.name(), "syncing");
    let abort = source_task(&w, &cred, r#"{"done":{"detail":"post_cutover_abort ran"}}"#);
    assert_eq!(abort["kind"], "cutover-abort");
    let e = cutover_step(&w, &a, &s2, "applying", 409);
    assert!(e.contains("is syncing"), "{e}");

    // Once more, to the end.
    w.store.request_cutover(&m.id, SystemTime::now()).unwrap();
    let (s2, _) = w.snapshot("web01", 9);
    source_task(&w, &cred, &succeeded(&s2));
    let n = next(&w, &a, &s1, 200).unwrap();
    assert!(n.final_ && n.snapshot == s2, "{n:?}");
    for step in ["applying", "applied", "fixed-up", "rebooting"] {
        cutover_step(&w, &a, &s2, step, 204);
    }
    let v = w.store.migration(&m.id).unwrap();
    assert_eq!(v.state.name(), "cut-over");
    assert_eq!(v.cutover.unwrap().hook_seconds, Some(1.5));
    // Over: the standby's routes answer 410; a malformed step is refused first (400).
    cutover_step(&w, &a, &s2, "rebooting", 410);
    cutover_step(&w, &a, &s2, "exploding", 400);
}

#[test]
fn a_standby_reset_mid_apply_comes_back_by_its_marker_and_the_migration_follows() {
    let w = World::new();
    let (s1, _) = w.snapshot("web01", 3);
    let mac = "52:54:00:00:00:07";
    let (_, a, m) = source_and_migration(&w, mac);
    let job = w.poll(&a, 0).expect("the standby job");
    w.c.want(
        "PUT",
        &format!("/agents/{}/jobs/{}/state", a.agent, job.id),
        &a.credential,
        br#""running""#,
        204,
    );
    next(&w, &a, "", 200);
    report(&w, &a, &s1, 204);
    // A newer snapshot is handed; the machine is reset while it writes it. It boots the rescue
    // system again and enrolls with the job's marker from its disk.
    let (s2, _) = w.snapshot("web01", 4);
    next(&w, &a, &s1, 200);
    let back = w.enroll_claiming(
        mac,
        &[("vda", 1 << 20, false)],
        &[ferry_format::agent::ResumeClaim {
            job: job.id.clone(),
            proof: job.proof.clone(),
        }],
    );
    assert!(back.approved && back.agent != a.agent, "{back:?}");
    let rec = w.store.migration(&m.id).unwrap();
    assert_eq!(rec.agent, back.agent, "the migration follows its job");
    assert_eq!(rec.standby.basis, None, "the cut apply left no known basis");
    // No cutover until the standby holds a snapshot again.
    let route = format!("/migrations/{}/cutover", m.id);
    let e = w.c.want("POST", &route, &w.admin, b"{}", 409);
    assert!(e.contains("in sync") || e.contains("holds"), "{e}");
    // The old credential is void; the new agent carries on as the standby.
    w.c.ok("GET", "/hello", &a.credential, None, 401);
    let n = next(&w, &back, "", 200).unwrap();
    assert_eq!(n.snapshot, s2);
    report(&w, &back, &s2, 204);
    assert_eq!(
        w.store.migration(&m.id).unwrap().standby.basis.as_deref(),
        Some(s2.as_str())
    );
    w.c.want("POST", &route, &w.admin, b"{}", 202);
}

/// The bytes of chunk `i` of disk sda of `w.snapshot(_, seed)` (as `World::snapshot` makes them).
fn chunk_plain(seed: u8, i: u64) -> Vec<u8> {
    let cs = ferry_test_support::store::CS;
    (0..cs)
        .map(|j| (j as u8).wrapping_mul(seed).wrapping_add(i as u8))
        .collect()
}

/// The answers to `ch` of a disk that holds `seed`'s snapshot (or not, with another seed).
fn answers(ch: &ferry_format::agent::StandbyChallenge, seed: u8) -> Vec<u8> {
    let key = ferry_format::agent::challenge_key(&ch.nonce).unwrap();
    let cs = u64::from(ferry_test_support::store::CS);
    let answers = ch
        .ranges
        .iter()
        .map(|r| {
            assert_eq!((r.device.as_str(), r.len), ("vda", cs), "{r:?}");
            ferry_format::agent::challenge_answer(&key, &chunk_plain(seed, r.offset / cs))
        })
        .collect();
    serde_json::to_vec(&ferry_format::agent::StandbyProof {
        migration: ch.migration.clone(),
        answers,
    })
    .unwrap()
}

#[test]
fn a_standby_reset_while_idle_proves_its_disks_and_the_migration_follows() {
    let w = World::new();
    let (s1, _) = w.snapshot("web01", 3);
    let mac = "52:54:00:00:00:09";
    let (_, a, m) = source_and_migration(&w, mac);
    let job = w.poll(&a, 0).expect("the standby job");
    let state = format!("/agents/{}/jobs/{}/state", a.agent, job.id);
    w.c.want("PUT", &state, &a.credential, br#""running""#, 204);
    next(&w, &a, "", 200);
    report(&w, &a, &s1, 204);
    // Idle, in sync with s1. Whoever lacks the standby's MAC, or shows other disks, is not
    // asked: it waits for the operator like any new agent.
    let stranger = w.enroll("52:54:00:00:00:0a", &[("vda", 1 << 20, false)]);
    assert!(stranger.challenge.is_none() && !stranger.approved);
    let other_disk = w.enroll(mac, &[("vda", 2 << 20, false)]);
    assert!(other_disk.challenge.is_none() && !other_disk.approved);
    // The machine resets and enrolls again: same MAC, same disk; its disk holds no marker.
    let back = w.enroll(mac, &[("vda", 1 << 20, false)]);
    assert!(!back.approved && back.agent != a.agent, "{back:?}");
    let ch = back.challenge.clone().expect("a challenge");
    assert_eq!(ch.migration, m.id);
    assert_eq!(
        ch.ranges.len(),
        2,
        "both data chunks of s1 (fewer than the maximum)"
    );
    let proof = format!("/agents/{}/standby/proof", back.agent);
    // A disk with other data (a copied MAC and serial are not enough): refused, nothing moves,
    // and the challenge is used up.
    let e =
        w.c.want("POST", &proof, &back.credential, &answers(&ch, 5), 403);
    assert!(e.contains("does not hold disk sda"), "{e}");
    let e =
        w.c.want("POST", &proof, &back.credential, &answers(&ch, 3), 403);
    assert!(e.contains("no standby challenge"), "{e}");
    assert_eq!(w.store.migration(&m.id).unwrap().agent, a.agent);
    assert!(w.poll(&back, 0).is_none(), "an unproven agent gets no job");
    // Another boot, the right data: approved, the job and the migration follow.
    let again = w.enroll(mac, &[("vda", 1 << 20, false)]);
    let ch = again.challenge.clone().expect("a challenge");
    let proof = format!("/agents/{}/standby/proof", again.agent);
    let proven: ferry_format::agent::StandbyProven =
        serde_json::from_str(&w.c.want("POST", &proof, &again.credential, &answers(&ch, 3), 200))
            .unwrap();
    assert_eq!(
        (proven.job.as_str(), proven.snapshot.as_str()),
        (job.id.as_str(), s1.as_str())
    );
    assert_eq!(proven.disks, [("sda".to_string(), "vda".to_string())]);
    assert_eq!(proven.proof.len(), 64);
    let rec = w.store.migration(&m.id).unwrap();
    assert_eq!(rec.agent, again.agent, "the migration follows its standby");
    assert_eq!(
        rec.standby.basis, None,
        "the next apply is a full seeded sync"
    );
    assert!(rec.history.iter().any(|h| serde_json::to_string(&h.what)
        .unwrap()
        .contains(&again.agent)));
    let approval = w
        .store
        .agent_record(&again.agent)
        .unwrap()
        .info
        .approved
        .unwrap();
    assert_eq!(
        approval.by,
        ferry_format::agent::ApprovedBy::StandbyProof {
            migration: m.id.clone()
        }
    );
    // The old boot's credential is void; the new agent resumes the running standby job and
    // the marker proof it writes is the new one.
    w.c.ok("GET", "/hello", &a.credential, None, 401);
    let resumed = w.poll(&again, 0).expect("the standby job, resumed");
    assert_eq!(resumed.id, job.id);
    assert_eq!(resumed.state, ferry_format::agent::JobState::Running);
    assert_eq!(
        w.store.job(&job.id).unwrap().proof_hash,
        Some(ferry_format::marker::proof_hash(&proven.proof))
    );
    let n = next(&w, &again, "", 200).unwrap();
    assert_eq!(n.snapshot, s1);
    // An answer cannot be replayed.
    w.c.want("POST", &proof, &again.credential, &answers(&ch, 3), 403);
}
