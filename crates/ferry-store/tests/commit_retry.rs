//! A commit whose reply was lost (the appliance was killed after the snapshot's rename) is
//! retried by the agent: it answers with the same snapshot instead of 404/400, and the record
//! that lets it do so pins nothing in GC and goes after an hour; the temporary file of a record
//! write the appliance died in is removed by GC. Found by the host test kill_appliance (SIGKILL
//! right after the snapshot became visible, and during a session record's write).

use std::time::{Duration, SystemTime};

use ferry_format::api::CommitRequest;
use ferry_format::index::Entry;
use ferry_format::DiskIndex;
use ferry_store::gc::COMMITTED_SESSION_KEEP;
use ferry_store::Store;
use ferry_test_support::store::{chunk, commit_request, new_store, CS};

/// A session of machine `m` that uploaded one disk of one chunk filled with `seed`.
fn ready_session(store: &Store, m: &str, seed: u8, now: SystemTime) -> (String, CommitRequest) {
    let (id, frame) = chunk(seed);
    store.put_chunk(&id, &frame).unwrap();
    let mut index = DiskIndex::new_zero(2 * CS as u64, CS).unwrap();
    index.entries[0] = Entry::Data(id);
    let session = store.start_session(m, CS, now).unwrap();
    store
        .put_index(&session, "sda", &index.encode(), now)
        .unwrap();
    let req = commit_request(&index, "raw");
    (session, req)
}

#[test]
fn a_retried_commit_answers_with_the_snapshot_the_first_attempt_made() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let now = SystemTime::now();
    let (session, req) = ready_session(&store, "web01", 1, now);
    let first = store.commit(&session, &req, &signer, now).unwrap();
    // The reply was lost; the agent sends the same commit again, a few seconds later.
    let again = store
        .commit(&session, &req, &signer, now + Duration::from_secs(3))
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(store.snapshot_ids().unwrap(), vec![first.clone()]);
    // A different commit on the finished session is refused, not turned into a snapshot.
    let mut other = req.clone();
    other.disks[0].name = "sdb".into();
    assert!(store.commit(&session, &other, &signer, now).is_err());
    assert_eq!(store.snapshot_ids().unwrap().len(), 1);
}

#[test]
fn a_committed_session_pins_nothing_and_its_record_goes_after_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    let (session, req) = ready_session(&store, "web01", 2, day_ago);
    store.commit(&session, &req, &signer, day_ago).unwrap();
    let report = store.gc(SystemTime::now()).unwrap();
    assert_eq!(report.live_sessions, 0, "a committed session is not live");
    // The cutoff is now - 5 min, not the committed session's start a day ago.
    let cutoff_floor = ferry_store::snapshots::rfc3339(
        SystemTime::now() - ferry_store::gc::GC_MARGIN - Duration::from_secs(60),
    );
    assert!(report.cutoff >= cutoff_floor, "{report:?}");
    // Its last activity was a day ago, more than COMMITTED_SESSION_KEEP: the record is gone.
    assert!(COMMITTED_SESSION_KEEP < Duration::from_secs(86_400));
    assert!(!has_session(&store, &session));
    assert_eq!(store.snapshot_ids().unwrap().len(), 1);

    // A fresh commit keeps its record through a GC, for the retry, and pins nothing even once
    // its snapshot is pruned.
    let (fresh, req) = ready_session(&store, "web02", 3, SystemTime::now());
    let id = store
        .commit(&fresh, &req, &signer, SystemTime::now())
        .unwrap();
    store.gc(SystemTime::now()).unwrap();
    assert_eq!(
        store
            .commit(&fresh, &req, &signer, SystemTime::now())
            .unwrap(),
        id
    );
    store.delete_snapshot(&id).unwrap();
    assert_eq!(store.gc(SystemTime::now()).unwrap().live_sessions, 0);
    assert!(has_session(&store, &fresh));
}

/// Whether the session's record exists (a file, or a row on FERRY_TEST_RECORDS=pg).
fn has_session(store: &ferry_store::Store, id: &str) -> bool {
    store.list_sessions().unwrap().iter().any(|(s, _)| s == id)
}

#[test]
fn gc_removes_stale_temporary_files_of_interrupted_record_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    let old = SystemTime::now() - Duration::from_secs(600);
    let stale = [
        store.sessions_dir().join(".tmp-0123456789abcdef"),
        store.root().join(".tmp-0123456789abcdef"),
    ];
    for p in &stale {
        std::fs::write(p, b"{").unwrap();
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    // A write in progress right now stays.
    let fresh = store.sessions_dir().join(".tmp-fedcba9876543210");
    std::fs::write(&fresh, b"{").unwrap();
    store.gc(SystemTime::now()).unwrap();
    for p in &stale {
        assert!(!p.exists(), "{} survived GC", p.display());
    }
    assert!(fresh.exists());
}
