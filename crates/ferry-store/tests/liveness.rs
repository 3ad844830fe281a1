//! GC liveness (a session kept alive for weeks no longer pins GC, while what it announced
//! lately survives), index uploads streamed through a file, and the modes of what the store
//! creates.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use ferry_format::DiskIndex;
use ferry_store::sessions::{SessionRecord, MAX_INDEX_BYTES, SESSION_PIN_WINDOW};
use ferry_store::{Store, StoreError};
use ferry_test_support::store::{
    ago, chunk, disk, mark_of, new_local_store, new_store, remove_chunk, set_mark, CS,
};

const DAY: u64 = 86_400;

#[test]
fn a_session_pins_gc_to_its_start_or_a_window_before_its_last_activity() {
    let rec = |started, last_activity| SessionRecord {
        machine: "m".into(),
        chunk_size: CS,
        started,
        last_activity,
        token: None,
        committed: None,
    };
    let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    let w = SESSION_PIN_WINDOW.as_secs();
    // A backup shorter than the window: its start, as before.
    assert_eq!(rec(100 * DAY, 100 * DAY + 3600).gc_pin(), at(100 * DAY));
    // Kept alive for 30 days: a window before its last request, not its start.
    assert_eq!(rec(100 * DAY, 130 * DAY).gc_pin(), at(130 * DAY - w));
}

#[test]
fn a_session_touched_daily_no_longer_keeps_old_garbage_but_keeps_what_it_announced() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    // A session opened 30 days ago that something has kept alive with a request a day (every
    // 23 h, on one fixed clock: a request exactly 24 h after the last one is at the edge).
    let base = SystemTime::now();
    let session = store
        .start_session("web01", CS, base - Duration::from_secs(30 * DAY))
        .unwrap();
    let mut back = 30 * DAY;
    while back > 3600 {
        back = back.saturating_sub(23 * 3600).max(3600);
        store
            .session(&session, base - Duration::from_secs(back))
            .unwrap();
    }
    let (garbage, fg) = chunk(1); // unreferenced, last used 20 days ago
    let (announced, fa) = chunk(2); // the session learned 2 h ago that it is present
    let (old_touch, fo) = chunk(3); // the session touched it 3 days ago
    for (id, f) in [(&garbage, &fg), (&announced, &fa), (&old_touch, &fo)] {
        store.put_chunk(id, f).unwrap();
    }
    set_mark(&store, &garbage, ago(20 * DAY));
    set_mark(&store, &announced, ago(2 * 3600));
    set_mark(&store, &old_touch, ago(3 * DAY));

    let report = store.gc(SystemTime::now()).unwrap();
    // Before: cutoff = the session's start - 5 min, 30 days ago: nothing was ever collected.
    assert_eq!(report.live_sessions, 1);
    assert!(
        !store.has_chunk(&garbage),
        "20-day-old garbage is collected"
    );
    assert!(
        store.has_chunk(&announced),
        "what the session announced lately survives"
    );
    assert!(!store.has_chunk(&old_touch));
    assert_eq!(report.removed_chunks, 2);

    // The session relied on the chunk it touched 3 days ago: its index upload says so (409),
    // the agent uploads it again, and the backup commits whole.
    let (index, req) = disk(&[announced, old_touch]);
    match store.put_index(&session, "sda", &index, SystemTime::now()) {
        Err(StoreError::MissingChunks(m)) => assert_eq!(m, vec![old_touch]),
        other => panic!("expected the collected chunk reported missing, got {other:?}"),
    }
    store.put_chunk(&old_touch, &fo).unwrap();
    store
        .put_index(&session, "sda", &index, SystemTime::now())
        .unwrap();
    let snapshot = store
        .commit(&session, &req, &signer, SystemTime::now())
        .unwrap();
    assert!(store.manifest(&snapshot).is_ok());
}

#[test]
fn commit_touches_the_chunks_it_makes_part_of_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (store, signer) = new_store(dir.path());
    let session = store.start_session("web01", CS, SystemTime::now()).unwrap();
    let (id, f) = chunk(7);
    store.put_chunk(&id, &f).unwrap();
    let (index, req) = disk(&[id]);
    store
        .put_index(&session, "sda", &index, SystemTime::now())
        .unwrap();
    // As if the index had been uploaded long ago: the commit must renew the chunk's mtime
    // (under the shared lock) rather than only check that it exists.
    set_mark(&store, &id, ago(3 * DAY));
    let before = ago(1);
    store
        .commit(&session, &req, &signer, SystemTime::now())
        .unwrap();
    assert!(mark_of(&store, &id).unwrap() >= before);

    // And a chunk GC took meanwhile makes the commit answer MissingChunks, not a snapshot
    // with a hole.
    let session = store.start_session("web02", CS, SystemTime::now()).unwrap();
    let (id2, f2) = chunk(8);
    store.put_chunk(&id2, &f2).unwrap();
    let (index, req) = disk(&[id2]);
    store
        .put_index(&session, "sda", &index, SystemTime::now())
        .unwrap();
    remove_chunk(&store, &id2);
    assert!(matches!(
        store.commit(&session, &req, &signer, SystemTime::now()),
        Err(StoreError::MissingChunks(m)) if m == vec![id2]
    ));
    assert_eq!(store.list_snapshots(Some("web02")).unwrap().len(), 0);
}

fn tmp_files(store: &Store, session: &str) -> Vec<String> {
    fs::read_dir(store.session_tmp_dir(session))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn streamed_index_uploads_are_checked_from_the_file_and_leave_nothing_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Local only: it looks at the files of tmp/<session>/, where the local store keeps them.
    let (store, _) = new_local_store(dir.path());
    let session = store.start_session("web01", CS, SystemTime::now()).unwrap();
    let (id, f) = chunk(1);
    store.put_chunk(&id, &f).unwrap();
    let (index, _) = disk(&[id]);

    // Written in pieces, like the server does with the body's frames.
    let mut up = store
        .begin_index_upload(&session, "sda", SystemTime::now())
        .unwrap();
    for piece in index.chunks(7) {
        up.write(piece).unwrap();
    }
    store.finish_index_upload(up, SystemTime::now()).unwrap();
    assert_eq!(tmp_files(&store, &session), ["sda.index"]);
    assert_eq!(
        fs::read(store.session_tmp_dir(&session).join("sda.index")).unwrap(),
        index
    );

    // Cut short, one byte too many, a wrong chunk size: refused, nothing left behind.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            index[..index.len() - 1].to_vec(),
            "bytes but its header says",
        ),
        ([&index[..], &[0]].concat(), "bytes but its header says"),
        (index[..20].to_vec(), "shorter than its header"),
        (
            DiskIndex::new_zero(4 * CS as u64, CS * 2).unwrap().encode(),
            "chunk size",
        ),
    ];
    for (bytes, why) in cases {
        let err = store
            .put_index(&session, "sdb", &bytes, SystemTime::now())
            .unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        assert_eq!(tmp_files(&store, &session), ["sda.index"]);
    }

    // Past the size bound: refused while writing, the temporary file removed.
    let mut up = store
        .begin_index_upload(&session, "sdc", SystemTime::now())
        .unwrap();
    let mb = vec![0u8; 1 << 20];
    let mut refused = None;
    for _ in 0..=(MAX_INDEX_BYTES >> 20) {
        if let Err(e) = up.write(&mb) {
            refused = Some(e);
            break;
        }
    }
    assert!(matches!(refused, Some(StoreError::TooLarge(_))));
    drop(up);
    assert_eq!(tmp_files(&store, &session), ["sda.index"]);
}

#[test]
fn the_store_creates_private_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    // Local only: the modes of the local layout's files.
    let (store, signer) = new_local_store(&root);
    let session = store.start_session("web01", CS, SystemTime::now()).unwrap();
    let (id, f) = chunk(1);
    store.put_chunk(&id, &f).unwrap();
    let (index, req) = disk(&[id]);
    store
        .put_index(&session, "sda", &index, SystemTime::now())
        .unwrap();
    store
        .commit(&session, &req, &signer, SystemTime::now())
        .unwrap();
    let _open = store.start_session("web02", CS, SystemTime::now()).unwrap();

    let mut seen = 0;
    let mut stack = vec![root.clone()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o777;
        if m.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", p.display());
            seen += 1;
        }
    }
    // config, keys, chunk, lock files, manifest, signature, index, session
    assert!(seen >= 8, "only {seen} files");
}
