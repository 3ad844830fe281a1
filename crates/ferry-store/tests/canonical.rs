//! The canonical chunk store: padded or malformed frames are refused, a repeat PUT heals a
//! damaged stored chunk, and `verify` finds, quarantines and reports damage, resumably.

use std::fs;
use std::time::{Duration, SystemTime};

use ferry_format::index::Entry;
use ferry_format::{ChunkId, DiskIndex};
use ferry_store::chunks::PutOutcome;
use ferry_store::keys::ManifestSigner;
use ferry_store::state::StateDoc;
use ferry_store::verify::{Start, VerifyOptions, VERIFY_STATE};
use ferry_store::{Store, StoreError};
use ferry_test_support::storage::is_pg;
use ferry_test_support::store::{
    commit_request, mark_of, new_local_store, new_store, plant_chunk, remove_chunk, set_mark,
    stored_frame, CS,
};

/// A 64 KiB chunk of compressible, seed-dependent text and its frame as backup-agent makes it.
fn chunk(seed: u32) -> (ChunkId, Vec<u8>, Vec<u8>) {
    let plain: Vec<u8> = format!("chunk {seed} restore kernel initramfs virtio ")
        .bytes()
        .cycle()
        .take(CS as usize)
        .collect();
    let frame = zstd::bulk::Compressor::new(3)
        .unwrap()
        .compress(&plain)
        .unwrap();
    (ChunkId::of(&plain), frame, plain)
}

fn skippable(len: u32) -> Vec<u8> {
    let mut v = 0x184D_2A50u32.to_le_bytes().to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    v.resize(8 + len as usize, 0x55);
    v
}

fn verify(store: &Store, start: Start) -> ferry_store::verify::VerifyReport {
    store.verify(VerifyOptions { rate: None, start }).unwrap()
}

/// Commit one snapshot of `machine` whose disk holds `ids` (all stored already).
fn snapshot(store: &Store, signer: &ManifestSigner, machine: &str, ids: &[ChunkId]) -> String {
    let now = SystemTime::now();
    let session = store.start_session(machine, CS, now).unwrap();
    let mut index = DiskIndex::new_zero(CS as u64 * ids.len() as u64, CS).unwrap();
    for (i, id) in ids.iter().enumerate() {
        index.entries[i] = Entry::Data(*id);
    }
    let req = commit_request(&index, "raw");
    store
        .put_index(&session, "sda", &index.encode(), now)
        .unwrap();
    store.commit(&session, &req, signer, now).unwrap()
}

fn invalid(r: Result<PutOutcome, StoreError>) -> String {
    match r {
        Err(StoreError::Invalid(m)) => m,
        other => panic!("expected a refusal as invalid (400), got {other:?}"),
    }
}

#[test]
fn padded_and_malformed_frames_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    let (id, frame, plain) = chunk(1);
    let no_size = zstd::stream::encode_all(&plain[..], 3).unwrap();
    // Content size one byte short of the truth, in a frame of compressed blocks: only
    // decompression can tell.
    let mut lying = frame.clone();
    let at = 5 + usize::from(lying[4] & 0x20 == 0);
    let width = [1, 2, 4, 8][usize::from(lying[4] >> 6)];
    assert!(width >= 2, "content size stored in {width} bytes");
    let field = &mut lying[at..at + width];
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(field);
    let v = u64::from_le_bytes(v) - 1; // the 2-byte form holds size - 256: one less either way
    field.copy_from_slice(&v.to_le_bytes()[..width]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "skippable before",
            [skippable(64), frame.clone()].concat(),
            "skippable",
        ),
        (
            "skippable after",
            [frame.clone(), skippable(1 << 20)].concat(),
            "skippable",
        ),
        (
            "two frames",
            [frame.clone(), frame.clone()].concat(),
            "second zstd frame",
        ),
        (
            "trailing garbage",
            [frame.clone(), b"junk".to_vec()].concat(),
            "4 more bytes",
        ),
        (
            "no content size",
            no_size,
            "does not declare its content size",
        ),
        ("lying content size", lying, "decompress"),
        ("not zstd", b"hello".to_vec(), "magic"),
    ];
    for (name, bytes, want) in cases {
        let m = invalid(store.put_chunk(&id, &bytes));
        assert!(m.contains(want) && m.contains(&id.to_hex()), "{name}: {m}");
        assert!(!store.has_chunk(&id), "{name}: stored");
    }
    // Over 64 MiB of content: refused from the header alone.
    let big = vec![1u8; (64 << 20) + 1];
    let m = invalid(store.put_chunk(&ChunkId::of(&big), &zstd::bulk::compress(&big, 1).unwrap()));
    assert!(m.contains("more than a chunk may hold"), "{m}");
    // The genuine frame, then the same content under the wrong id (422, not 400).
    assert_eq!(store.put_chunk(&id, &frame).unwrap(), PutOutcome::Stored);
    let (other, _, _) = chunk(2);
    assert!(matches!(
        store.put_chunk(&other, &frame),
        Err(StoreError::BadChunk(_))
    ));
    // A padded upload of a present id is refused too and leaves the stored frame alone.
    invalid(store.put_chunk(&id, &[frame.clone(), skippable(8)].concat()));
    assert_eq!(stored_frame(&store, &id).unwrap(), frame);
}

#[test]
fn repeat_put_replaces_a_bad_stored_chunk_and_keeps_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    let (id, frame, plain) = chunk(3);
    let mut flipped = frame.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let (_, other_frame, _) = chunk(4);
    let planted: Vec<(&str, Vec<u8>)> = vec![
        (
            "padded by a skippable frame",
            [skippable(1 << 20), frame.clone()].concat(),
        ),
        ("a flipped byte", flipped),
        ("another chunk's frame", other_frame),
        ("empty", Vec::new()),
    ];
    for (name, bad) in planted {
        plant_chunk(&store, &id, &bad);
        assert_eq!(
            store.put_chunk(&id, &frame).unwrap(),
            PutOutcome::Replaced,
            "{name}"
        );
        assert_eq!(stored_frame(&store, &id).unwrap(), frame, "{name}");
    }
    // A good stored frame stays, even when another encoding of the same data is uploaded.
    let old = SystemTime::now() - Duration::from_secs(3600);
    set_mark(&store, &id, old);
    let level19 = zstd::bulk::compress(&plain, 19).unwrap();
    assert_ne!(level19, frame);
    assert_eq!(
        store.put_chunk(&id, &level19).unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert_eq!(stored_frame(&store, &id).unwrap(), frame);
    let mtime = mark_of(&store, &id).unwrap();
    assert!(
        mtime > old + Duration::from_secs(3000),
        "a present chunk is touched"
    );
}

#[test]
fn verify_quarantines_bad_chunks_names_damaged_snapshots_and_a_backup_heals_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let chunks: Vec<_> = (10..16).map(chunk).collect();
    for (id, frame, _) in &chunks {
        store.put_chunk(id, frame).unwrap();
    }
    let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
    let snap_a = snapshot(&store, &signer, "alpha", &ids[..3]);
    let snap_b = snapshot(&store, &signer, "beta", &ids[2..5]);
    let clean = verify(&store, Start::Auto);
    assert!(clean.is_clean(), "{clean}");
    assert_eq!((clean.chunks_checked, clean.snapshots_checked), (6, 2));

    // ids[0] (alpha only) gets padded, ids[4] (beta only) disappears, ids[5] (no snapshot)
    // is corrupt.
    let padded = [skippable(4096), chunks[0].1.clone()].concat();
    plant_chunk(&store, &ids[0], &padded);
    remove_chunk(&store, &ids[4]);
    plant_chunk(&store, &ids[5], b"\x28\xb5\x2f\xfd garbage");
    let r = verify(&store, Start::Auto);
    println!("{r}");
    assert!(!r.is_clean());
    let mut bad: Vec<_> = r.bad_chunks.iter().map(|b| b.id).collect();
    bad.sort();
    let mut want = vec![ids[0], ids[5]];
    want.sort();
    assert_eq!(bad, want);
    assert!(r.bad_chunks.iter().any(|b| b.fault.contains("skippable")));
    assert_eq!(r.missing_chunks, vec![ids[4]]);
    let a = r
        .damaged_snapshots
        .iter()
        .find(|d| d.snapshot == snap_a)
        .unwrap();
    let b = r
        .damaged_snapshots
        .iter()
        .find(|d| d.snapshot == snap_b)
        .unwrap();
    assert_eq!(
        (a.machine.as_str(), a.bad_chunks, a.missing_chunks),
        ("alpha", 1, 0)
    );
    assert_eq!(
        (b.machine.as_str(), b.bad_chunks, b.missing_chunks),
        ("beta", 0, 1)
    );
    assert!(
        a.action.contains("back up machine alpha again"),
        "{}",
        a.action
    );
    // Quarantined: out of chunks/, kept in damaged/, and known-chunks reports it missing.
    assert!(!store.has_chunk(&ids[0]));
    assert_eq!(
        store.data().read_quarantined(&ids[0]).unwrap().unwrap(),
        padded
    );
    assert_eq!(store.touch_chunks(&ids[..2]).unwrap(), vec![ids[0]]);
    // A second verify still reports the damage (the chunk is in damaged/, not stored).
    let again = verify(&store, Start::Auto);
    assert!(again.bad_chunks.is_empty() && !again.is_clean());
    // The next backups upload what is missing; then the store is whole again.
    assert_eq!(
        store.put_chunk(&ids[0], &chunks[0].1).unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(
        store.put_chunk(&ids[4], &chunks[4].1).unwrap(),
        PutOutcome::Stored
    );
    let healed = verify(&store, Start::Auto);
    assert!(healed.is_clean(), "{healed}");
    assert!(store
        .state_get(StateDoc::VerifyCheckpoint)
        .unwrap()
        .is_none());
}

#[test]
fn verify_checks_manifest_signatures_and_index_digests() {
    let dir = tempfile::tempdir().unwrap();
    // Local only: the damage is edited into the snapshot's files in place.
    let (store, signer) = new_local_store(dir.path());
    let (id, frame, _) = chunk(20);
    store.put_chunk(&id, &frame).unwrap();
    let s1 = snapshot(&store, &signer, "gamma", &[id]);
    let s2 = snapshot(&store, &signer, "gamma", &[id]);
    let m = store.snapshots_dir().join(&s1).join("manifest.json");
    let text = fs::read_to_string(&m)
        .unwrap()
        .replace("\"test\"", "\"evil\"");
    fs::write(&m, text).unwrap();
    fs::write(
        store.snapshots_dir().join(&s2).join("sda.index"),
        b"FERRYIDX",
    )
    .unwrap();
    let r = verify(&store, Start::Auto);
    println!("{r}");
    assert_eq!(r.damaged_snapshots.len(), 2);
    let d1 = r
        .damaged_snapshots
        .iter()
        .find(|d| d.snapshot == s1)
        .unwrap();
    assert!(
        d1.manifest_error.as_deref().unwrap().contains("signature"),
        "{d1:?}"
    );
    assert_eq!(d1.machine, "gamma");
    let d2 = r
        .damaged_snapshots
        .iter()
        .find(|d| d.snapshot == s2)
        .unwrap();
    assert!(
        d2.index_errors[0].contains("not the one the manifest names"),
        "{d2:?}"
    );
    assert!(d2.action.contains("do not restore it"));
}

#[test]
fn verify_resumes_after_the_checkpoint_and_resume_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    let mut ids: Vec<ChunkId> = (100..140)
        .map(|s| {
            let (id, frame, _) = chunk(s);
            store.put_chunk(&id, &frame).unwrap();
            id
        })
        .collect();
    ids.sort();
    assert!(matches!(
        store.verify(VerifyOptions {
            rate: None,
            start: Start::Resume
        }),
        Err(StoreError::NotFound(_))
    ));
    // What a run killed after its 15th chunk leaves (the documented verify.state format).
    let state = serde_json::json!({
        "version": 1, "started": "2026-01-01T00:00:00Z", "after": ids[14],
        "checked": 15, "bytes": 12345, "bad": []
    });
    let checkpoint = serde_json::to_vec(&state).unwrap();
    store
        .state_put(StateDoc::VerifyCheckpoint, &checkpoint)
        .unwrap();
    if !is_pg() {
        // Where it has always been with local records.
        assert!(dir.path().join(VERIFY_STATE).exists());
    }
    // A chunk before the checkpoint is corrupted: the resumed run does not read it again.
    plant_chunk(&store, &ids[3], b"garbage");
    let r = verify(&store, Start::Resume);
    assert!(r.resumed);
    assert_eq!((r.chunks_skipped, r.chunks_checked), (15, 25));
    assert_eq!(r.started, "2026-01-01T00:00:00Z");
    assert!(r.bad_chunks.is_empty());
    assert!(
        store
            .state_get(StateDoc::VerifyCheckpoint)
            .unwrap()
            .is_none(),
        "a finished run removes its checkpoint"
    );
    // --restart reads everything and finds it.
    store
        .state_put(StateDoc::VerifyCheckpoint, &checkpoint)
        .unwrap();
    let r = verify(&store, Start::Restart);
    assert_eq!((r.chunks_skipped, r.chunks_checked), (0, 40));
    assert_eq!(r.bad_chunks.len(), 1);
    assert_eq!(r.bad_chunks[0].id, ids[3]);
}

#[test]
fn verify_rate_limit_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(dir.path());
    let mut total = 0;
    for s in 200..220 {
        let (id, frame, _) = chunk(s);
        total += frame.len() as u64;
        store.put_chunk(&id, &frame).unwrap();
    }
    // About one second's worth at this rate.
    let rate = total;
    let t = std::time::Instant::now();
    let r = store
        .verify(VerifyOptions {
            rate: Some(rate),
            start: Start::Auto,
        })
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "verify read {} bytes in {secs:.2} s: {:.0} B/s against a limit of {rate} B/s",
        r.bytes_checked, r.rate
    );
    assert_eq!(r.bytes_checked, total);
    assert!(r.rate <= rate as f64 * 1.05, "{} > {rate}", r.rate);
    assert!(secs >= 0.95, "{secs}");
}
