//! The snapshot summary cache of an S3 store (docs/store.md, "S3"): listing reads summaries
//! from the records instead of GETting every manifest, adds what is missing, ignores an entry
//! that is not a summary of its id, and drops entries of snapshots that are gone. Runs with
//! `FERRY_TEST_STORAGE=s3` only: a local store reads its manifests.

use std::time::SystemTime;

use ferry_format::api::SnapshotSummary;
use ferry_store::meta::Collection;
use ferry_test_support::storage::is_s3;
use ferry_test_support::store::{chunk, disk, new_store};

#[test]
fn listing_uses_the_summary_cache_and_keeps_it_true_to_the_bucket() {
    if !is_s3() {
        println!("SKIPPED: needs FERRY_TEST_STORAGE=s3 (docs/development.md, \"Backends\")");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let mut ids = Vec::new();
    for (machine, seed) in [("web01", 1), ("db01", 2)] {
        let (id, frame) = chunk(seed);
        store.put_chunk(&id, &frame).unwrap();
        let session = store
            .start_session(machine, 65536, SystemTime::now())
            .unwrap();
        let (index, req) = disk(&[id]);
        store
            .put_index(&session, "sda", &index, SystemTime::now())
            .unwrap();
        ids.push(
            store
                .commit(&session, &req, &signer, SystemTime::now())
                .unwrap(),
        );
    }
    let records = store.records();
    let cached = |id: &str| records.get(Collection::SnapshotSummaries, id).unwrap();
    assert!(cached(&ids[0]).is_none());

    // The first listing reads the manifests and fills the cache.
    let listed = store.list_snapshots(None).unwrap();
    assert_eq!(listed.len(), 2);
    let entry: SnapshotSummary = serde_json::from_slice(&cached(&ids[0]).unwrap()).unwrap();
    assert_eq!(listed.iter().find(|s| s.snapshot == ids[0]), Some(&entry));

    // Later listings answer from the cache (an entry altered here shows through)...
    let mut altered = entry.clone();
    altered.size += 1;
    records
        .put(
            Collection::SnapshotSummaries,
            &ids[0],
            &serde_json::to_vec(&altered).unwrap(),
        )
        .unwrap();
    let again = store.list_snapshots(Some("web01")).unwrap();
    assert_eq!(again, vec![altered]);

    // ...but an entry that is not a summary of its id is made again from the manifest, and an
    // entry of a snapshot the bucket does not hold is neither listed nor kept.
    let mut wrong = entry.clone();
    wrong.snapshot = ids[1].clone();
    records
        .put(
            Collection::SnapshotSummaries,
            &ids[0],
            &serde_json::to_vec(&wrong).unwrap(),
        )
        .unwrap();
    let mut ghost = entry.clone();
    ghost.snapshot = "ghost-20260101T000000Z".into();
    records
        .put(
            Collection::SnapshotSummaries,
            &ghost.snapshot,
            &serde_json::to_vec(&ghost).unwrap(),
        )
        .unwrap();
    let listed = store.list_snapshots(None).unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed.iter().find(|s| s.snapshot == ids[0]), Some(&entry));
    assert!(cached(&ghost.snapshot).is_none());
    let fixed: SnapshotSummary = serde_json::from_slice(&cached(&ids[0]).unwrap()).unwrap();
    assert_eq!(fixed, entry);

    // One machine's listing reads the entries of ids with its prefix only, and a machine whose
    // name extends another's (web01-b) is told apart.
    let (id, frame) = chunk(3);
    store.put_chunk(&id, &frame).unwrap();
    let session = store
        .start_session("web01-b", 65536, SystemTime::now())
        .unwrap();
    let (index, req) = disk(&[id]);
    store
        .put_index(&session, "sda", &index, SystemTime::now())
        .unwrap();
    let longer = store
        .commit(&session, &req, &signer, SystemTime::now())
        .unwrap();
    let names = |machine| -> Vec<String> {
        let listed = store.list_snapshots(Some(machine)).unwrap();
        listed.into_iter().map(|s| s.snapshot).collect()
    };
    assert_eq!(names("web01"), vec![ids[0].clone()]);
    assert_eq!(names("web01-b"), vec![longer.clone()]);
    assert_eq!(names("db01"), vec![ids[1].clone()]);
    assert!(names("nobody").is_empty());
    let with_prefix: Vec<String> = records
        .all_with_prefix(Collection::SnapshotSummaries, "web01-")
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut want = vec![ids[0].clone(), longer];
    want.sort();
    assert_eq!(with_prefix, want);
}
