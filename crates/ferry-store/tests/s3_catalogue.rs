//! The S3 backend's chunk catalogue (docs/store.md, "S3"; marker files, or a table in
//! PostgreSQL with `FERRY_TEST_RECORDS=pg`): what GC sees of an object without an entry (a crash
//! between the PUT and the entry) and how its mark rebuilds a lost entry. Runs with
//! `FERRY_TEST_STORAGE=s3` only: the local store has no catalogue.

use std::time::{Duration, SystemTime};

use ferry_store::data::EntryKind;
use ferry_test_support::storage::is_s3;
use ferry_test_support::store::{chunk, disk, new_store, stored_frame};

#[test]
fn unmarked_objects_are_listed_for_gc_and_a_lost_marker_is_rebuilt_by_the_mark() {
    if !is_s3() {
        println!("SKIPPED: needs FERRY_TEST_STORAGE=s3 (docs/development.md, \"Backends\")");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let data = store.data();
    let cat = data.catalogue().expect("an S3 store has a chunk catalogue");
    let (kept, kept_frame) = chunk(1);
    let (lost, lost_frame) = chunk(2);
    store.put_chunk(&kept, &kept_frame).unwrap();
    store.put_chunk(&lost, &lost_frame).unwrap();
    // The entry holds the object's length and a fresh mark.
    let entry = cat.get(&kept).unwrap().unwrap();
    assert_eq!(entry.len, kept_frame.len() as u64);
    assert!(entry.marked > SystemTime::now() - Duration::from_secs(60));
    let usage = store.chunk_usage().unwrap();
    assert_eq!(usage.chunks, 2);
    let session = store
        .start_session("web01", 65536, SystemTime::now())
        .unwrap();
    let (index, req) = disk(&[kept]);
    store
        .put_index(&session, "sda", &index, SystemTime::now())
        .unwrap();
    store
        .commit(&session, &req, &signer, SystemTime::now())
        .unwrap();

    // Both entries lost: known-chunks now calls both missing, the objects are still there.
    cat.remove(&kept).unwrap();
    cat.remove(&lost).unwrap();
    assert_eq!(store.touch_chunks(&[kept, lost]).unwrap(), vec![kept, lost]);
    assert!(stored_frame(&store, &lost).is_some());

    // The agent then uploads one again (as after a node died between a PUT and its entry):
    // the upload catalogues it, or known-chunks would call it missing forever.
    let (again, again_frame) = chunk(3);
    store.put_chunk(&again, &again_frame).unwrap();
    cat.remove(&again).unwrap();
    assert_eq!(store.touch_chunks(&[again]).unwrap(), vec![again]);
    assert_eq!(
        store.put_chunk(&again, &again_frame).unwrap(),
        ferry_store::chunks::PutOutcome::AlreadyPresent
    );
    assert_eq!(store.touch_chunks(&[again]).unwrap(), vec![]);
    assert_eq!(
        cat.get(&again).unwrap().unwrap().len,
        again_frame.len() as u64
    );

    // GC's listing shows them as unmarked objects, marked by their LastModified.
    let entries = data.list_chunk_entries(&lost.store_prefix()).unwrap();
    let e = entries.iter().find(|e| e.chunk == Some(lost)).unwrap();
    assert_eq!(e.kind, EntryKind::Unmarked);
    assert_eq!(e.len, lost_frame.len() as u64);
    let age = SystemTime::now()
        .duration_since(e.marked)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(600), "LastModified {age:?} ago");

    // The mark of a referenced chunk recreates its entry from the object.
    assert!(data.mark_chunk(&kept).unwrap());
    assert!(store.has_chunk(&kept));
    assert_eq!(
        cat.get(&kept).unwrap().unwrap().len,
        kept_frame.len() as u64
    );
    // An unreferenced one is deleted as GC's sweep does: object gone, then nothing to list.
    let _lock = data
        .lock_chunks(ferry_store::data::LockMode::Exclusive)
        .unwrap();
    let again = data.recheck_entry(e).unwrap().unwrap();
    assert!(data.delete_entry(&again).unwrap());
    assert!(stored_frame(&store, &lost).is_none());
    assert!(data.recheck_entry(e).unwrap().is_none());
}
