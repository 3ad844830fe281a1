//! `appliance move-store` (issue 16): a local store with snapshots moved onto the backends
//! `FERRY_TEST_STORAGE`/`FERRY_TEST_RECORDS` name (S3 + PostgreSQL in the scaled-out run,
//! another local directory otherwise), then served and restored from there byte for byte with
//! the old tokens; a damaged chunk stops the move before the snapshot that needs it is
//! published, and a rerun resumes; a store with an open backup session is refused.

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::*;

const MIB: u64 = 1 << 20;

fn move_cmd(src: &Appliance, to: &Path, backends: &[String]) -> std::process::Command {
    let mut c = src.appliance();
    c.args(["move-store", "--data"])
        .arg(src.data())
        .arg("--to")
        .arg(to)
        .args(backends);
    c
}

fn snapshot_ids(a: &Appliance) -> Vec<String> {
    let out = ok(a
        .appliance()
        .args(["snapshots", "--json", "--data"])
        .arg(a.data()));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_local_store_moves_with_every_chunk_checked_and_restores_identically() {
    let mut src = Appliance::start_local();
    let work = tempfile::tempdir().unwrap();
    let (web, db) = (work.path().join("web.img"), work.path().join("db.img"));
    make_image(&web, 48 * MIB, 31);
    make_image(&db, 32 * MIB, 32);
    let first = src.backup("web01", &[&web]);
    // An incremental of web01 (most chunks shared) and a second machine.
    let f = std::fs::OpenOptions::new().write(true).open(&web).unwrap();
    write_region(&f, 8 * MIB, 2 * MIB as usize, "random", &mut Rng::new(7));
    drop(f);
    let second = src.backup("web01", &[&web]);
    // A move goes oldest first, ties broken by id (db01 < web01): db01's snapshot must be the
    // newest by a second for web01's to move before it (the damage below).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let other = src.backup("db01", &[&db]);
    src.kill();
    let ids = snapshot_ids(&src);
    assert_eq!(ids.len(), 3);
    // A webhook and a GC report: store-state records, which move with the others.
    ok(src
        .appliance()
        .args([
            "webhook",
            "set",
            "--url",
            "https://hooks.example/ferry",
            "--data",
        ])
        .arg(src.data()));
    ok(src.appliance().args(["gc", "--data"]).arg(src.data()));

    let backends =
        ferry_test_support::storage::init_args(&ferry_test_support::storage::test_storage());
    let dest = tempfile::tempdir().unwrap();
    let to = dest.path().join("data");

    // The plan writes nothing.
    let plan = ok(move_cmd(&src, &to, &backends).args(["--dry-run", "--json"]));
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["snapshots"].as_array().unwrap().len(), 3, "{plan}");
    assert!(plan["chunks"].as_u64().unwrap() > 0, "{plan}");
    assert!(!to.exists(), "--dry-run wrote {}", to.display());

    // Refused: the target inside the store, and a store with an open backup session.
    let inside = fails(&mut move_cmd(&src, &src.data().join("moved"), &backends));
    assert!(inside.contains("inside the store being moved"), "{inside}");
    let store = ferry_store::Store::open(&src.data()).unwrap();
    let open = store
        .start_session("mail01", 64 << 10, SystemTime::now())
        .unwrap();
    let busy = fails(&mut move_cmd(&src, &to, &backends));
    assert!(
        busy.contains("backup sessions are open") && busy.contains("mail01"),
        "{busy}"
    );
    assert!(!to.exists());
    store.abandon_session(&open).unwrap();

    // A damaged chunk of db01's snapshot: web01's snapshots move, db01's is not published.
    let db_manifest = store.manifest(other["snapshot"].as_str().unwrap()).unwrap();
    let db_index = store
        .open_snapshot_index(&db_manifest.snapshot, &db_manifest.disks[0].name)
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut db_index.into_reader(), &mut bytes).unwrap();
    let index = ferry_format::DiskIndex::decode(&bytes).unwrap();
    let web_chunks: std::collections::HashSet<_> = [
        first["snapshot"].as_str().unwrap(),
        second["snapshot"].as_str().unwrap(),
    ]
    .iter()
    .flat_map(|id| {
        let m = store.manifest(id).unwrap();
        let blob = store.open_snapshot_index(id, &m.disks[0].name).unwrap();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut blob.into_reader(), &mut b).unwrap();
        ferry_store::sessions::unique_data_chunks(&ferry_format::DiskIndex::decode(&b).unwrap())
    })
    .collect();
    let victim = *ferry_store::sessions::unique_data_chunks(&index)
        .iter()
        .find(|c| !web_chunks.contains(c))
        .expect("a chunk only db01 has");
    let path = store.chunk_path(&victim);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&path, &bad).unwrap();
    let e = fails(&mut move_cmd(&src, &to, &backends));
    assert!(
        e.contains(&victim.to_hex()) && e.contains(&db_manifest.snapshot) && e.contains("damaged"),
        "{e}"
    );
    // Resumed with the damage still there: the same refusal, web01's snapshots already moved.
    let plan = ok(move_cmd(&src, &to, &backends).args(["--dry-run", "--json"]));
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["snapshots_in_target"], 2, "{plan}");
    fails(&mut move_cmd(&src, &to, &backends));

    // Repaired (as a new backup would): the rerun moves the rest and checks every chunk.
    std::fs::write(&path, &good).unwrap();
    let out = ok(move_cmd(&src, &to, &backends).arg("--json"));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    log(format!("move-store resumed: {report}"));
    assert_eq!(report["snapshots_moved"], 1, "{report}");
    assert_eq!(report["snapshots_skipped"], 2, "{report}");
    assert!(report["records"].as_u64().unwrap() >= 3, "{report}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(to.join("move.json")).unwrap()).unwrap();
    assert!(state["finished"].is_string(), "{state}");

    // Served from the new store with the old tokens: the same snapshots, signatures that
    // verify (the restore checks them), every disk identical, nothing missing for GC.
    drop(store);
    let moved = Appliance::serve_moved(dest, &src);
    assert_eq!(snapshot_ids(&moved), ids);
    // The webhook and the last GC report came along (on PostgreSQL: rows, not files).
    let hook = ok(moved
        .appliance()
        .args(["webhook", "show", "--data"])
        .arg(moved.data()));
    assert!(hook.contains("url https://hooks.example/ferry"), "{hook}");
    let status = ok(moved
        .appliance()
        .args(["gc", "--status", "--json", "--data"])
        .arg(moved.data()));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["last"]["finished"].is_string(), "{status}");
    for (snap, img, disk) in [(&second, &web, "web"), (&other, &db, "db")] {
        let out = work.path().join("restored.img");
        moved.restore(snap["snapshot"].as_str().unwrap(), &[(disk, &out)], &[]);
        cmp(img, &out);
        std::fs::remove_file(&out).unwrap();
    }
    let gc = ok(moved
        .appliance()
        .args(["gc", "--json", "--data"])
        .arg(moved.data()));
    let gc: serde_json::Value = serde_json::from_str(&gc).unwrap();
    assert_eq!(gc["missing_chunks"], 0, "{gc}");
    assert_eq!(gc["removed_chunks"], 0, "{gc}");
    // The source is untouched.
    assert_eq!(snapshot_ids(&src), ids);
}
