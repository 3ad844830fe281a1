//! Source machines against a real store: enrollment and credentials, the task cycle with its
//! legal transitions, schedules, and retention after each successful sync (keep N, never a
//! pinned snapshot or one a job uses).

use std::time::{Duration, SystemTime};

use ferry_format::agent::{JobFor, JobOptions, Then};
use ferry_format::index::Entry;
use ferry_format::source::{Consistency, SourceEnrollRequest, SyncFigures, TaskKind, TaskState};
use ferry_format::DiskIndex;
use ferry_store::jobs::NewJob;
use ferry_store::keys::ManifestSigner;
use ferry_store::meta::Collection;
use ferry_store::{Store, StoreError};
use ferry_test_support::store::{chunk, commit_request, new_store, CS};

fn enroll(store: &Store, machine: &str, now: SystemTime) -> String {
    let req = SourceEnrollRequest {
        machine: machine.into(),
        inventory: None,
        version: "0.1.0".into(),
    };
    store.enroll_source(&req, now).unwrap().credential
}

/// A one-chunk snapshot of `machine`, committed at `now`.
fn snapshot(
    store: &Store,
    signer: &ManifestSigner,
    machine: &str,
    seed: u8,
    now: SystemTime,
) -> String {
    let (id, frame) = chunk(seed);
    store.put_chunk(&id, &frame).unwrap();
    let mut index = DiskIndex::new_zero(CS as u64, CS).unwrap();
    index.entries[0] = Entry::Data(id);
    let session = store
        .start_session_for(machine, CS, Some("tok-src"), now)
        .unwrap();
    store
        .put_index(&session, "sda", &index.encode(), now)
        .unwrap();
    store
        .commit(&session, &commit_request(&index, "raw"), signer, now)
        .unwrap()
}

fn figures() -> SyncFigures {
    SyncFigures {
        cpu_seconds: 2.5,
        peak_rss_bytes: 40 << 20,
        bytes_read: 1 << 30,
        bytes_sent: 1 << 20,
        freeze_seconds: Some(1.5),
        hook_seconds: None,
        consistency: Consistency::PointInTime,
    }
}

fn succeeded(snapshot: &str) -> TaskState {
    TaskState::Succeeded {
        snapshot: snapshot.into(),
        figures: figures(),
    }
}

#[test]
fn enrollment_issues_a_credential_and_re_enrollment_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    let now = SystemTime::now();
    let first = enroll(&store, "web1", now);
    assert!(first.starts_with("src-web1."), "{first}");
    assert_eq!(first.len(), "src-web1.".len() + 64);
    let rec = store.source_for_credential(&first).unwrap().unwrap();
    assert_eq!(rec.machine, "web1");
    // Only the hash is stored.
    let stored = store.records().get(Collection::Sources, "web1").unwrap();
    let text = String::from_utf8(stored.unwrap()).unwrap();
    assert!(!text.contains(&first[9..]), "{text}");

    let second = enroll(&store, "web1", now);
    assert_ne!(first, second);
    assert!(store.source_for_credential(&first).unwrap().is_none());
    assert!(store.source_for_credential(&second).unwrap().is_some());
    // A credential naming another machine, or garbage, is nobody's.
    let forged = second.replacen("web1", "web2", 1);
    assert!(store.source_for_credential(&forged).unwrap().is_none());
    assert!(store.source_for_credential("tok").unwrap().is_none());
}

#[test]
fn schedule_set_before_enrollment_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    let rec = store
        .set_schedule("db1", |s| {
            s.interval_seconds = 6 * 3600;
            s.keep = 2;
        })
        .unwrap();
    assert_eq!(rec.credential_hash, "");
    enroll(&store, "db1", SystemTime::now());
    let rec = store.source("db1").unwrap();
    assert_eq!(
        (rec.schedule.interval_seconds, rec.schedule.keep),
        (21_600, 2)
    );
    // A refused change writes nothing.
    let err = store.set_schedule("db1", |s| s.keep = 11).unwrap_err();
    assert!(err.to_string().contains("db1"), "{err}");
    assert_eq!(store.source("db1").unwrap().schedule.keep, 2);
    assert!(store.sync_now("nobody").unwrap_err().is_not_found());
}

#[test]
fn tasks_follow_the_schedule_and_only_legal_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let t0 = SystemTime::now();
    enroll(&store, "web1", t0);
    store
        .set_schedule("web1", |s| s.interval_seconds = 3600)
        .unwrap();

    // Never synced: a sync at once; asked again (a restarted agent), the same task.
    let task = store.take_task("web1", t0).unwrap().unwrap();
    assert_eq!(task.kind, TaskKind::Sync);
    assert_eq!(task.consistency, Consistency::PointInTime);
    assert_eq!(store.take_task("web1", t0).unwrap(), Some(task.clone()));

    store
        .set_task_state("web1", &task.id, TaskState::Running, t0)
        .unwrap();
    let snap = snapshot(&store, &signer, "web1", 1, t0);
    let done = t0 + Duration::from_secs(120);
    let rec = store
        .set_task_state("web1", &task.id, succeeded(&snap), done)
        .unwrap();
    assert!(rec.task.is_none());
    assert_eq!(rec.last_sync().unwrap().id, task.id);

    // A finished task cannot change again.
    for state in [TaskState::Running, TaskState::Failed { reason: "x".into() }] {
        match store.set_task_state("web1", &task.id, state, done) {
            Err(StoreError::Conflict(m)) => assert!(m.contains("succeeded"), "{m}"),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert!(store
        .set_task_state("web1", "task-00000000", TaskState::Running, done)
        .unwrap_err()
        .is_not_found());

    // Not due until an hour after the finish; sync-now overrides; pause stops the schedule.
    assert_eq!(
        store
            .take_task("web1", done + Duration::from_secs(3599))
            .unwrap(),
        None
    );
    store.set_paused("web1", true).unwrap();
    assert_eq!(
        store
            .take_task("web1", done + Duration::from_secs(7200))
            .unwrap(),
        None
    );
    store.sync_now("web1").unwrap();
    let next = store
        .take_task("web1", done + Duration::from_secs(60))
        .unwrap()
        .unwrap();
    assert_ne!(next.id, task.id);
    assert!(!store.source("web1").unwrap().sync_now);

    // A succeeded report must name a snapshot of this machine.
    let other = snapshot(&store, &signer, "db1", 2, done);
    let err = store
        .set_task_state("web1", &next.id, succeeded(&other), done)
        .unwrap_err();
    assert!(err.to_string().contains("machine db1"), "{err}");
    let failed = TaskState::Failed {
        reason: "network cut".into(),
    };
    store
        .set_task_state("web1", &next.id, failed, done)
        .unwrap();
    assert_eq!(store.source("web1").unwrap().history.len(), 2);
}

#[test]
fn retention_keeps_the_newest_and_pinned_and_job_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let t0 = SystemTime::now() - Duration::from_secs(10 * 3600);
    enroll(&store, "web1", t0);
    store
        .set_schedule("web1", |s| {
            s.interval_seconds = 60;
            s.keep = 2;
        })
        .unwrap();
    let mut snaps = Vec::new();
    for i in 0..5u8 {
        let now = t0 + Duration::from_secs(u64::from(i) * 3600);
        let task = store.take_task("web1", now).unwrap().unwrap();
        let snap = snapshot(&store, &signer, "web1", 10 + i, now);
        match i {
            0 => store
                .pin_source_snapshot("web1", &snap, "standby agent-525400123456")
                .unwrap(),
            1 => {
                let job = NewJob {
                    snapshot: snap.clone(),
                    for_: JobFor::Mac("52:54:00:12:34:56".into()),
                    mappings: vec!["sda=auto".parse().unwrap()],
                    then: Then::None,
                    overwrite: false,
                    options: JobOptions::default(),
                };
                store.create_job(job, now).unwrap();
            }
            _ => {}
        }
        store
            .set_task_state(
                "web1",
                &task.id,
                succeeded(&snap),
                now + Duration::from_secs(60),
            )
            .unwrap();
        snaps.push(snap);
    }
    let left: Vec<String> = store
        .list_snapshots(Some("web1"))
        .unwrap()
        .into_iter()
        .map(|s| s.snapshot)
        .collect();
    let want = vec![
        snaps[0].clone(),
        snaps[1].clone(),
        snaps[3].clone(),
        snaps[4].clone(),
    ];
    assert_eq!(left, want);

    // Unpinned, the next prune removes it.
    store
        .unpin_source_snapshots("web1", "standby agent-525400123456")
        .unwrap();
    let plan = store.retain_source("web1", SystemTime::now()).unwrap();
    let removed: Vec<&str> = plan
        .removals()
        .map(|e| e.summary.snapshot.as_str())
        .collect();
    assert_eq!(removed, [snaps[0].as_str()]);
}
