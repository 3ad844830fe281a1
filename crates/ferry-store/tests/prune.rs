//! Prune against a real store: retention per writing credential, snapshots of live jobs kept,
//! and a job created between plan and execution stops the execution (nothing removed).

use std::time::{Duration, SystemTime};

use ferry_format::agent::{JobFor, JobOptions, Then};
use ferry_format::index::Entry;
use ferry_format::DiskIndex;
use ferry_store::jobs::NewJob;
use ferry_store::keys::ManifestSigner;
use ferry_store::prune::{KeepReason, PrunePolicy};
use ferry_store::{Store, StoreError};
use ferry_test_support::store::{chunk, commit_request, new_store, CS};

/// A one-chunk backup of `machine` by token `writer` (None: a session from before tokens had
/// ids), committed `secs_ago` seconds ago.
fn backup(
    store: &Store,
    signer: &ManifestSigner,
    writer: Option<&str>,
    seed: u8,
    secs_ago: u64,
) -> String {
    let now = SystemTime::now() - Duration::from_secs(secs_ago);
    let (id, frame) = chunk(seed);
    store.put_chunk(&id, &frame).unwrap();
    let mut index = DiskIndex::new_zero(CS as u64, CS).unwrap();
    index.entries[0] = Entry::Data(id);
    let req = commit_request(&index, "raw");
    let session = store.start_session_for("m01", CS, writer, now).unwrap();
    store
        .put_index(&session, "sda", &index.encode(), now)
        .unwrap();
    store.commit(&session, &req, signer, now).unwrap()
}

fn job_on(store: &Store, snapshot: &str) -> String {
    let new = NewJob {
        snapshot: snapshot.to_string(),
        for_: JobFor::Mac("52:54:00:12:34:56".into()),
        mappings: vec!["sda=auto".parse().unwrap()],
        then: Then::None,
        overwrite: false,
        options: JobOptions::default(),
    };
    store.create_job(new, SystemTime::now()).unwrap().id
}

fn policy(keep: usize) -> PrunePolicy {
    PrunePolicy {
        keep,
        keep_within: None,
    }
}

#[test]
fn prune_keeps_each_writers_newest_and_live_jobs_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let a: Vec<String> = (0..4)
        .map(|i| backup(&store, &signer, Some("tok-a"), i, 4000 - i as u64 * 100))
        .collect();
    let b = backup(&store, &signer, Some("tok-b"), 10, 9000);
    let old = backup(&store, &signer, None, 11, 9500);
    let job = job_on(&store, &a[0]);

    let plan = store
        .plan_prune("m01", &policy(1), SystemTime::now())
        .unwrap();
    let reasons = |id: &str| {
        plan.entries
            .iter()
            .find(|e| e.summary.snapshot == id)
            .unwrap()
            .keep
            .clone()
    };
    assert_eq!(reasons(&a[0]), [KeepReason::Job(job)]);
    assert_eq!(reasons(&b), [KeepReason::Newest { rank: 1, of: 1 }]);
    assert_eq!(reasons(&old), [KeepReason::Newest { rank: 1, of: 1 }]);
    store.apply_prune(&plan).unwrap();
    let mut left: Vec<String> = store
        .list_snapshots(Some("m01"))
        .unwrap()
        .into_iter()
        .map(|s| s.snapshot)
        .collect();
    left.sort();
    let mut want = vec![a[0].clone(), a[3].clone(), b, old];
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn a_job_created_after_the_plan_stops_its_execution() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let older = backup(&store, &signer, Some("tok-a"), 1, 200);
    backup(&store, &signer, Some("tok-a"), 2, 100);
    let plan = store
        .plan_prune("m01", &policy(1), SystemTime::now())
        .unwrap();
    assert_eq!(plan.removals().count(), 1);
    let job = job_on(&store, &older);
    match store.apply_prune(&plan) {
        Err(StoreError::Conflict(m)) => assert!(m.contains(&job) && m.contains(&older), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.list_snapshots(Some("m01")).unwrap().len(), 2);
}
