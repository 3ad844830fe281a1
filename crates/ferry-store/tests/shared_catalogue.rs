//! Two nodes of one scaled-out store — data on S3, records and the chunk catalogue on
//! PostgreSQL (docs/operations.md, "Several nodes") — see one catalogue and one set of locks: a
//! chunk one node stored is known to the other, a touch on one is the mark GC on the other
//! reads, one GC at a time over both, and one node's exclusive chunk lock holds the other's
//! writers back, GC on one node finishes while the other uploads without a pause; and a
//! source's due sync is handed out once when two nodes are asked at once.
//! Runs with `FERRY_TEST_STORAGE=s3 FERRY_TEST_RECORDS=pg` (the last with PostgreSQL alone).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use ferry_store::chunks::PutOutcome;
use ferry_store::data::LockMode;
use ferry_store::{Store, StoreError};
use ferry_test_support::storage::{is_pg, is_s3, test_storage};
use ferry_test_support::store::{ago, chunk, mark_of, new_store_on, numbered_chunk, set_mark};

const DAY: u64 = 86_400;

/// Two stores on one test storage (bucket prefix and schema): two nodes, each with a data
/// directory of its own (kept while the returned directories live).
fn two_nodes() -> ([tempfile::TempDir; 2], Store, Store) {
    let backends = test_storage();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (a, _) = new_store_on(dirs[0].path(), &backends);
    let (b, _) = new_store_on(dirs[1].path(), &backends);
    (dirs, a, b)
}

#[test]
fn two_nodes_share_one_chunk_catalogue_and_its_locks() {
    if !(is_s3() && is_pg()) {
        println!(
            "SKIPPED: needs FERRY_TEST_STORAGE=s3 FERRY_TEST_RECORDS=pg (docs/development.md, \
             \"Backends\")"
        );
        return;
    }
    let (_dirs, a, b) = two_nodes();

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

/// B keeps uploads in flight without a pause (eight writers), so B's shared hold of the chunk
/// lock never ends on its own; GC on A must still get its exclusive turns, delete the garbage,
/// and hand the lock back: B drains for each of GC's batches and goes on.
#[test]
fn gc_on_one_node_finishes_while_the_other_uploads_steadily() {
    if !(is_s3() && is_pg()) {
        println!(
            "SKIPPED: needs FERRY_TEST_STORAGE=s3 FERRY_TEST_RECORDS=pg (docs/development.md, \
             \"Backends\")"
        );
        return;
    }
    const WRITERS: u64 = 8;
    const GARBAGE: u64 = 40;
    let (_dirs, a, b) = two_nodes();
    let garbage: Vec<_> = (0..GARBAGE).map(|n| numbered_chunk(1 << 40 | n)).collect();
    for (id, frame) in &garbage {
        a.put_chunk(id, frame).unwrap();
        set_mark(&a, id, ago(20 * 86_400));
    }

    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let (gc_took, during_gc) = std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (b, stop, written) = (&b, &stop, &written);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (id, frame) = numbered_chunk(w << 32 | n);
                    b.put_chunk(&id, &frame).unwrap();
                    written.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            });
        }
        let flowing = Instant::now();
        while written.load(Ordering::Relaxed) < 4 * WRITERS {
            assert!(
                flowing.elapsed() < Duration::from_secs(60),
                "B's uploads did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (tx, rx) = mpsc::channel();
        let before = written.load(Ordering::Relaxed);
        let started = Instant::now();
        let a = &a;
        s.spawn(move || tx.send(a.gc(SystemTime::now()).map_err(|e| e.to_string())));
        let report = rx.recv_timeout(Duration::from_secs(120));
        let took = started.elapsed();
        let during = written.load(Ordering::Relaxed) - before;
        // Whatever the verdict, let the writers go so the scope can end.
        std::thread::sleep(Duration::from_millis(500));
        let after = written.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let report = report
            .expect("GC on A finished within 120 s of B's steady uploads")
            .unwrap();
        assert_eq!(report.removed_chunks, GARBAGE, "{report:?}");
        assert!(after > before + during, "B's uploads went on after GC");
        (took, during)
    });
    println!("GC on A took {gc_took:?}; B wrote {during_gc} chunks meanwhile");
    for (id, _) in &garbage {
        assert!(!b.has_chunk(id), "garbage {id} is still catalogued");
    }
    assert!(b.has_chunk(&numbered_chunk(0).0));
}

/// A source's schedule fires once however many nodes its agent and the schedulers reach: two
/// nodes asked for the due task at the same instant, 20 times, hand out the same task.
#[test]
fn two_nodes_hand_out_one_sync_task_when_asked_at_once() {
    if !is_pg() {
        println!("SKIPPED: needs FERRY_TEST_RECORDS=pg (docs/development.md, \"Backends\")");
        return;
    }
    let (_dirs, a, b) = two_nodes();
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

/// What the store says about itself is the same from every node: GC's last run, verify's
/// "one at a time" and its checkpoint, the webhook configuration (records of `store-state`).
#[test]
fn two_nodes_share_gc_status_verify_lock_and_webhook() {
    use ferry_store::meta::Collection;
    use ferry_store::state::StateDoc;
    use ferry_store::verify::{Start, VerifyOptions};
    if !is_pg() {
        println!("SKIPPED: needs FERRY_TEST_RECORDS=pg (docs/development.md, \"Backends\")");
        return;
    }
    let (dirs, a, b) = two_nodes();

    assert!(b.gc_status().unwrap().last.is_none());
    let report = a.gc(SystemTime::now()).unwrap();
    let seen = b
        .gc_status()
        .unwrap()
        .last
        .expect("A's GC run, seen from B");
    assert_eq!(seen.report, Some(report));
    assert!(!dirs[1].path().join(StateDoc::GcLast.id()).exists());

    // A verify running on A (its lock held) is one B waits for, and B's refusal names it.
    let held = a.records().try_lock(Collection::StoreState).unwrap();
    assert!(held.is_some(), "A takes verify's lock");
    let opts = || VerifyOptions {
        rate: None,
        start: Start::Auto,
    };
    match b.verify(opts()) {
        Err(StoreError::Conflict(m)) => assert!(m.contains("another verify is running"), "{m}"),
        other => panic!("verify on B while A verifies: {other:?}"),
    }
    drop(held);
    // A checkpoint A left is the one B resumes from; B's finished run removes it for both.
    let checkpoint = serde_json::json!({
        "version": 1, "started": "2026-01-01T00:00:00Z", "after": null,
        "checked": 0, "bytes": 0, "bad": []
    });
    a.state_put(
        StateDoc::VerifyCheckpoint,
        &serde_json::to_vec(&checkpoint).unwrap(),
    )
    .unwrap();
    let r = b
        .verify(VerifyOptions {
            rate: None,
            start: Start::Resume,
        })
        .unwrap();
    assert_eq!(r.started, "2026-01-01T00:00:00Z");
    assert!(a.state_get(StateDoc::VerifyCheckpoint).unwrap().is_none());

    a.state_put(StateDoc::Webhook, br#"{"url":"https://hooks.example/x"}"#)
        .unwrap();
    assert_eq!(
        b.state_get(StateDoc::Webhook).unwrap().as_deref(),
        Some(&br#"{"url": "https://hooks.example/x"}"#[..])
    );
    assert!(b.state_delete(StateDoc::Webhook).unwrap());
    assert!(a.state_get(StateDoc::Webhook).unwrap().is_none());
}
