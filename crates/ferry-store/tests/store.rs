//! Host tests of the store: chunk verification, atomic commits, pruning and garbage collection
//! (including GC racing a backup session through the chunk lock).

use std::fs;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime};

use ferry_format::ChunkId;
use ferry_store::chunks::PutOutcome;
use ferry_store::keys::ManifestSigner;
use ferry_store::{Store, StoreError};
use ferry_test_support::store::{ago, chunk, disk, new_store, set_mark, stored_frame, CS};

/// A full backup of `ids` committed at `now`.
fn backup(
    store: &Store,
    signer: &ManifestSigner,
    machine: &str,
    seeds: &[u8],
    now: SystemTime,
) -> String {
    let session = store.start_session(machine, CS, now).unwrap();
    let ids: Vec<_> = seeds
        .iter()
        .map(|&s| {
            let (id, frame) = chunk(s);
            store.put_chunk(&id, &frame).unwrap();
            id
        })
        .collect();
    let (index, req) = disk(&ids);
    store.put_index(&session, "sda", &index, now).unwrap();
    store.commit(&session, &req, signer, now).unwrap()
}

#[test]
fn put_chunk_verifies_before_storing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    let (id, frame) = chunk(1);
    assert_eq!(store.put_chunk(&id, &frame).unwrap(), PutOutcome::Stored);
    assert_eq!(stored_frame(&store, &id).unwrap(), frame);
    assert!(store
        .chunk_path(&id)
        .parent()
        .unwrap()
        .ends_with(&id.to_hex()[..4]));
    assert_eq!(
        store.put_chunk(&id, &frame).unwrap(),
        PutOutcome::AlreadyPresent
    );

    let (other, _) = chunk(2);
    assert!(matches!(
        store.put_chunk(&other, &frame),
        Err(StoreError::BadChunk(_))
    ));
    assert!(matches!(
        store.put_chunk(&other, b"not zstd"),
        Err(StoreError::Invalid(_))
    ));
    assert!(!store.has_chunk(&other));
    // A zstd bomb beyond 64 MiB is refused without storing.
    let big = vec![0u8; (64 << 20) + 1];
    let bomb = zstd::bulk::compress(&big, 1).unwrap();
    let big_id = ChunkId::of(&big);
    assert!(matches!(
        store.put_chunk(&big_id, &bomb),
        Err(StoreError::Invalid(_))
    ));
    assert!(!store.has_chunk(&big_id));
}

#[test]
fn index_upload_reports_missing_chunks_then_commit_signs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let now = SystemTime::now();
    let session = store.start_session("web01", CS, now).unwrap();
    let (a, fa) = chunk(1);
    let (b, fb) = chunk(2);
    store.put_chunk(&a, &fa).unwrap();
    let (index, req) = disk(&[a, b]);
    match store.put_index(&session, "sda", &index, now) {
        Err(StoreError::MissingChunks(m)) => assert_eq!(m, vec![b]),
        other => panic!("expected missing chunks, got {other:?}"),
    }
    store.put_chunk(&b, &fb).unwrap();
    store.put_index(&session, "sda", &index, now).unwrap();

    let mut wrong = req.clone();
    wrong.disks[0].chunks.data = 7;
    assert!(matches!(
        store.commit(&session, &wrong, &signer, now),
        Err(StoreError::Invalid(_))
    ));

    let id = store.commit(&session, &req, &signer, now).unwrap();
    assert!(id.starts_with("web01-") && id.ends_with('Z'), "{id}");
    let list = store.list_snapshots(None).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].data_chunks, list[0].size), (2, 3 * CS as u64));
    let signed = store
        .signed_manifest(&id, &signer.public_key().key_id())
        .unwrap();
    signer
        .public_key()
        .verify(signed.manifest.as_bytes(), &signed.signature)
        .unwrap();
    assert_eq!(store.snapshot_index(&id, "sda").unwrap(), index);
    // The session is over: the same commit again (a retry whose reply was lost) answers with
    // the same snapshot, another one is refused.
    assert_eq!(store.commit(&session, &req, &signer, now).unwrap(), id);
    assert!(store.commit(&session, &wrong, &signer, now).is_err());
    assert_eq!(store.list_snapshots(None).unwrap().len(), 1);
    // Same second again: a suffixed id.
    let second = backup(&store, &signer, "web01", &[1], now);
    assert_eq!(second, format!("{id}-2"));
}

#[test]
fn interrupted_commit_is_invisible_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    // A session that died mid-backup, 25 hours ago, after uploading an index.
    let old = ago(25 * 3600);
    let session = store.start_session("web01", CS, old).unwrap();
    let (a, fa) = chunk(1);
    store.put_chunk(&a, &fa).unwrap();
    let (index, _) = disk(&[a]);
    store.put_index(&session, "sda", &index, old).unwrap();
    // A crash while building a commit: a tmp dir with a manifest but no session.
    let orphan = store.tmp_dir().join("0123456789abcdef0123456789abcdef");
    fs::create_dir_all(&orphan).unwrap();
    fs::write(orphan.join("manifest.json"), b"{}").unwrap();

    assert!(store.list_snapshots(None).unwrap().is_empty());
    let report = store.gc(SystemTime::now()).unwrap();
    assert_eq!(report.dead_sessions_removed, 1);
    assert!(!store.session_tmp_dir(&session).exists());
    assert!(!orphan.exists());
    assert!(store.list_sessions().unwrap().is_empty());
    assert!(store.list_snapshots(None).unwrap().is_empty());
}

#[test]
fn prune_keeps_the_newest_n() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let ids: Vec<_> = (0..4)
        .map(|i| backup(&store, &signer, "web01", &[i], ago(3600 - i as u64 * 60)))
        .collect();
    let other = backup(&store, &signer, "db01", &[9], ago(10));
    let policy = |keep| ferry_store::prune::PrunePolicy {
        keep,
        keep_within: None,
    };
    let now = SystemTime::now();
    assert!(store.plan_prune("web01", &policy(0), now).is_err());
    assert!(store.plan_prune("web01", &policy(11), now).is_err());
    let plan = store.plan_prune("web01", &policy(2), now).unwrap();
    let names = |v: &[ferry_format::api::SnapshotSummary]| {
        v.iter().map(|s| s.snapshot.clone()).collect::<Vec<_>>()
    };
    let removed: Vec<_> = plan
        .removals()
        .map(|e| e.summary.snapshot.clone())
        .collect();
    assert_eq!(removed, vec![ids[1].clone(), ids[0].clone()]);
    store.apply_prune(&plan).unwrap();
    let left = names(&store.list_snapshots(None).unwrap());
    assert_eq!(left, vec![ids[2].clone(), ids[3].clone(), other]);
    assert_eq!(fs::read_dir(store.trash_dir()).unwrap().count(), 0);
}

#[test]
fn gc_removes_unreferenced_chunks_and_keeps_referenced_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    backup(&store, &signer, "web01", &[1, 2], SystemTime::now());
    let (kept, _) = chunk(1);
    let (orphan, fo) = chunk(3);
    let (fresh, ff) = chunk(4);
    store.put_chunk(&orphan, &fo).unwrap();
    store.put_chunk(&fresh, &ff).unwrap();
    for seed in [1, 2, 3] {
        set_mark(&store, &chunk(seed).0, ago(7200));
    }
    let report = store.gc(SystemTime::now()).unwrap();
    assert_eq!(
        (
            report.removed_chunks,
            report.kept_chunks,
            report.missing_chunks
        ),
        (1, 3, 0)
    );
    assert!(store.has_chunk(&kept) && store.has_chunk(&fresh));
    assert!(!store.has_chunk(&orphan));
}

#[test]
fn gc_keeps_chunks_a_live_session_touched_before_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    // A backup started an hour ago and learned 30 minutes ago that chunk 1 is present.
    let _session = store.start_session("web01", CS, ago(3600)).unwrap();
    let (touched, f1) = chunk(1);
    let (stale, f2) = chunk(2);
    store.put_chunk(&touched, &f1).unwrap();
    store.put_chunk(&stale, &f2).unwrap();
    set_mark(&store, &touched, ago(1800));
    set_mark(&store, &stale, ago(3 * 3600));
    store.gc(SystemTime::now()).unwrap();
    assert!(store.has_chunk(&touched));
    assert!(!store.has_chunk(&stale));
}

#[test]
fn gc_waits_for_a_session_holding_the_chunk_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    let (id, frame) = chunk(1);
    store.put_chunk(&id, &frame).unwrap();
    set_mark(&store, &id, ago(7200));

    // The "server": checks the chunk is present holding the lock shared ...
    let lock = store.lock_chunks_shared().unwrap();
    assert!(store.has_chunk(&id));
    // ... while GC (another thread; flock works the same across processes) lists the chunk as a
    // candidate and blocks on the exclusive lock.
    let (tx, rx) = mpsc::channel();
    let gc_store = store.clone();
    let gc = thread::spawn(move || {
        let r = gc_store.gc(SystemTime::now());
        tx.send(()).unwrap();
        r
    });
    thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "GC must wait for the shared lock");
    // The server touches the chunk, then releases the lock: GC re-stats and keeps it.
    set_mark(&store, &id, SystemTime::now());
    drop(lock);
    let report = gc.join().unwrap().unwrap();
    assert_eq!(report.removed_chunks, 0);
    assert!(store.has_chunk(&id));
}
