//! Not a test: bench/scale-out's measure of snapshot listing and known-chunk query latency
//! with many snapshots, on the backends `FERRY_TEST_STORAGE`/`FERRY_TEST_RECORDS` name. Run
//! with `--ignored`; `FERRY_BENCH_SNAPSHOTS` snapshots (default 1000) of 4 chunks each, made
//! on 8 threads; prints `METRIC` lines.

use std::time::{Instant, SystemTime};

use ferry_format::ChunkId;
use ferry_test_support::storage::test_storage;
use ferry_test_support::store::{disk, new_store_on, CS};

fn chunk_of(n: u64) -> (ChunkId, Vec<u8>) {
    let mut plain = vec![0u8; CS as usize];
    plain[..8].copy_from_slice(&n.to_le_bytes());
    (
        ChunkId::of(&plain),
        zstd::bulk::compress(&plain, 1).unwrap(),
    )
}

#[test]
#[ignore = "a benchmark: bench/scale-out runs it"]
fn snapshot_listing_and_known_chunks_latency() {
    let n: usize = std::env::var("FERRY_BENCH_SNAPSHOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let backend = format!(
        "{}+{}",
        std::env::var("FERRY_TEST_STORAGE").unwrap_or_else(|_| "local".into()),
        std::env::var("FERRY_TEST_RECORDS").unwrap_or_else(|_| "local".into())
    );
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store_on(dir.path(), &test_storage());
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..8 {
            let (store, signer) = (&store, &signer);
            s.spawn(move || {
                for i in (w..n).step_by(8) {
                    let ids: Vec<ChunkId> = (0..4u64)
                        .map(|k| {
                            let (id, frame) = chunk_of(i as u64 * 4 + k);
                            store.put_chunk(&id, &frame).unwrap();
                            id
                        })
                        .collect();
                    // Machines of 10 snapshots each, as retention keeps them.
                    let machine = format!("m{:05}", i / 10);
                    let session = store
                        .start_session(&machine, CS, SystemTime::now())
                        .unwrap();
                    let (index, req) = disk(&ids);
                    store
                        .put_index(&session, "sda", &index, SystemTime::now())
                        .unwrap();
                    store
                        .commit(&session, &req, signer, SystemTime::now())
                        .unwrap();
                }
            });
        }
    });
    let made = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let all = store.list_snapshots(None).unwrap();
    let first = t.elapsed().as_secs_f64();
    assert_eq!(all.len(), n);
    let t = Instant::now();
    let all = store.list_snapshots(None).unwrap();
    let listed = t.elapsed().as_secs_f64();
    assert_eq!(all.len(), n);
    let t = Instant::now();
    let one = store.list_snapshots(Some("m00000")).unwrap();
    let one_machine = t.elapsed().as_secs_f64();
    assert!(!one.is_empty());
    // A known-chunks query as an agent sends it: 4096 ids, all present.
    let ids: Vec<ChunkId> = (0..4096u64.min(n as u64 * 4))
        .map(|k| chunk_of(k).0)
        .collect();
    let t = Instant::now();
    let missing = store.touch_chunks(&ids).unwrap();
    let known = t.elapsed().as_secs_f64();
    assert!(missing.is_empty());
    println!(
        "METRIC snapshots backend={backend} snapshots={n} commit_ms={:.1} list_first_ms={:.0} \
         list_ms={:.0} list_one_machine_ms={:.0} known_chunks_ids={} known_chunks_us_per_id={:.2}",
        made * 1000.0 / n as f64,
        first * 1000.0,
        listed * 1000.0,
        one_machine * 1000.0,
        ids.len(),
        known * 1e6 / ids.len() as f64
    );
}
