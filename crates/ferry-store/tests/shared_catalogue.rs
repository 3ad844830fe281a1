//! Two nodes of one scaled-out store — data on S3, records and the chunk catalogue on
//! PostgreSQL (docs/operations.md, "Several nodes") — see one catalogue and one set of locks: a
//! chunk one node stored is known to the other, a touch on one is the mark GC on the other
//! reads, one GC at a time over both, and one node's exclusive chunk lock holds the other's
//! writers back; and a source's due sync is handed out once when two nodes are asked at once.
//! Runs with `FERRY_TEST_STORAGE=s3 FERRY_TEST_RECORDS=pg` (the last with PostgreSQL alone).

use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use ferry_store::chunks::PutOutcome;
use ferry_store::data::LockMode;
use ferry_store::StoreError;
use ferry_test_support::storage::{is_pg, is_s3, test_storage};
use ferry_test_support::store::{ago, chunk, mark_of, new_store_on, set_mark};

const DAY: u64 = 86_400;

#[test]
fn two_nodes_share_one_chunk_catalogue_and_its_locks() {
    if !(is_s3() && is_pg()) {
        println!(
            "SKIPPED: needs FERRY_TEST_STORAGE=s3 FERRY_TEST_RECORDS=pg (docs/development.md, \
             \"Backends\")"
        );
        return;
    }
    let backends = test_storage();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _) = new_store_on(da.path(), &backends);
    let (b, _) = new_store_on(db.path(), &backends);

    // What A stores, B knows, without a request to the bucket per chunk.
    let (kept, kept_frame) = chunk(1);
    let (absent, _) = chunk(9);
    assert_eq!(a.put_chunk(&kept, &kept_frame).unwrap(), PutOutcome::Stored);
    assert!(b.has_chunk(&kept));
    assert_eq!(b.touch_chunks(&[absent, kept]).unwrap(), vec![absent]);
    assert_eq!(
        b.put_chunk(&kept, &kept_frame).unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert_eq!(a.chunk_usage().unwrap(), b.chunk_usage().unwrap());

    // B's touch is the mark A reads.
    set_mark(&a, &kept, ago(3 * DAY));
    b.touch_chunks(&[kept]).unwrap();
    assert!(mark_of(&a, &kept).unwrap() > ago(60));

    // One GC at a time over both nodes.
    let held = a
        .data()
        .try_lock_gc()
        .unwrap()
        .expect("A takes the GC lock");
    assert!(b.data().try_lock_gc().unwrap().is_none());
    match b.gc(SystemTime::now()) {
        Err(StoreError::Conflict(m)) => assert!(m.contains("another gc is running"), "{m}"),
        other => panic!("GC on B while A holds the GC lock: {other:?}"),
    }
    drop(held);

    // GC on B collects what A stored and nobody used for 20 days, and keeps what B touched.
    let (garbage, garbage_frame) = chunk(2);
    a.put_chunk(&garbage, &garbage_frame).unwrap();
    set_mark(&a, &garbage, ago(20 * DAY));
    let report = b.gc(SystemTime::now()).unwrap();
    assert_eq!(report.removed_chunks, 1, "{report:?}");
    assert!(!a.has_chunk(&garbage));
    assert!(a.has_chunk(&kept));

    // A's exclusive chunk lock (GC's deletions) holds B's chunk writes back until released.
    let exclusive = a.data().lock_chunks(LockMode::Exclusive).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let (id, frame) = chunk(3);
            let outcome = b.put_chunk(&id, &frame);
            done_tx.send(outcome.map_err(|e| e.to_string())).unwrap();
        });
        assert!(
            done_rx.recv_timeout(Duration::from_millis(1500)).is_err(),
            "B wrote a chunk while A held the exclusive chunk lock"
        );
        drop(exclusive);
        let written = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("B's write once A released the lock");
        assert_eq!(written.unwrap(), PutOutcome::Stored);
    });
    assert!(a.has_chunk(&chunk(3).0));
}

/// A source's schedule fires once however many nodes its agent and the schedulers reach: two
/// nodes asked for the due task at the same instant, 20 times, hand out the same task.
#[test]
fn two_nodes_hand_out_one_sync_task_when_asked_at_once() {
    if !is_pg() {
        println!("SKIPPED: needs FERRY_TEST_RECORDS=pg (docs/development.md, \"Backends\")");
        return;
    }
    let backends = test_storage();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _) = new_store_on(da.path(), &backends);
    let (b, _) = new_store_on(db.path(), &backends);
    for round in 0..20 {
        let machine = format!("src{round:02}");
        let req = ferry_format::source::SourceEnrollRequest {
            machine: machine.clone(),
            inventory: None,
            version: "0.1.0".into(),
        };
        a.enroll_source(&req, SystemTime::now()).unwrap();
        let barrier = std::sync::Barrier::new(2);
        let now = SystemTime::now();
        let (ta, tb) = std::thread::scope(|s| {
            let ja = s.spawn(|| {
                barrier.wait();
                a.take_task(&machine, now).unwrap()
            });
            let jb = s.spawn(|| {
                barrier.wait();
                b.take_task(&machine, now).unwrap()
            });
            (ja.join().unwrap(), jb.join().unwrap())
        });
        let (ta, tb) = (ta.expect("a due task"), tb.expect("a due task"));
        assert_eq!(ta.id, tb.id, "round {round}: two sync tasks for one source");
    }
}
