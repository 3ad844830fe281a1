//! Host integration test: `init` a store, serve it on 127.0.0.1 (random port) in-process, and
//! drive the protocol with ureq pinning the store's CA, as the agents do.

use std::time::Duration;

use ferry_format::api::{
    BackupSession, CommitReply, CommitRequest, Hello, KnownChunksReply, MissingChunks, Role,
    SignedManifest, SnapshotSummary,
};
use ferry_format::index::Entry;
use ferry_format::manifest::{ChunkCounts, DiskManifest};
use ferry_format::{ChunkId, DiskIndex, Manifest};
use ferry_server::commands::init_store_with;
use ferry_store::tokens::create_token_at;
use ferry_test_support::https::{load_trust, Client};
use ferry_test_support::storage::test_storage;
use ferry_test_support::store::{patterned_chunk, CS};

#[test]
fn full_backup_and_restore_round() {
    let dir = tempfile::tempdir().unwrap();
    let init = init_store_with(dir.path(), &["appliance.test".into()], &test_storage()).unwrap();
    let trust = load_trust(&init.trust_bundle);
    assert_eq!(trust.ca_fingerprint(), init.ca_fingerprint);
    let backup = create_token_at(dir.path(), Role::Backup, "2025-01-01T00:00:00Z").unwrap();
    let restore = create_token_at(dir.path(), Role::Restore, "2025-01-01T00:00:00Z").unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(ferry_server::start(
            dir.path(),
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let c = Client::new(&trust, server.addr, Duration::from_secs(20));

    // Hello and authentication.
    let hello: Hello = c.json("GET", "/hello", &backup, None);
    assert_eq!(
        (hello.appliance.as_str(), hello.api, hello.role),
        ("appliance.test", 1, Role::Backup)
    );
    c.ok("GET", "/hello", "not-a-token", None, 401);
    assert_eq!(c.status_without_token("/hello"), 401);
    c.ok("GET", "/snapshots", &backup, None, 403);
    c.ok(
        "POST",
        "/backups",
        &restore,
        Some(br#"{"machine":"web01","chunk_size":65536}"#),
        403,
    );

    // Backup: session, known chunks, uploads, index (409 then 204), commit.
    let start = br#"{"machine":"web01","chunk_size":65536}"#;
    let BackupSession { session } = c.json("POST", "/backups", &backup, Some(start));
    let (a, fa) = patterned_chunk(3);
    let (b, fb) = patterned_chunk(5);
    let q = serde_json::to_vec(&serde_json::json!({ "ids": [a, b] })).unwrap();
    let known: KnownChunksReply = c.json(
        "POST",
        &format!("/backups/{session}/known-chunks"),
        &backup,
        Some(&q),
    );
    assert_eq!(known.missing, vec![a, b]);
    c.ok("PUT", &format!("/chunks/{a}"), &backup, Some(&fa), 201);
    c.ok("PUT", &format!("/chunks/{a}"), &backup, Some(&fa), 200);
    c.ok("PUT", &format!("/chunks/{b}"), &backup, Some(&fa), 422);

    let mut index = DiskIndex::new_zero(3 * CS as u64, CS).unwrap();
    index.entries[0] = Entry::Data(a);
    index.entries[2] = Entry::Data(b);
    let index_bytes = index.encode();
    let index_path = format!("/backups/{session}/disks/sda/index");
    let conflict: MissingChunks =
        serde_json::from_slice(&c.ok("PUT", &index_path, &backup, Some(&index_bytes), 409))
            .unwrap();
    assert_eq!(conflict.missing, vec![b]);
    c.ok("PUT", &format!("/chunks/{b}"), &backup, Some(&fb), 201);
    c.ok("PUT", &index_path, &backup, Some(&index_bytes), 204);

    let commit = CommitRequest {
        disks: vec![DiskManifest {
            name: "sda".into(),
            size: index.disk_size,
            logical_sector_size: 512,
            source: "/dev/vda".into(),
            source_format: "block-device".into(),
            index_digest: index.digest(),
            chunks: ChunkCounts {
                data: 2,
                zero: 1,
                unused: 0,
            },
            layout: None,
        }],
        os: None,
        agent: "test-agent".into(),
        consistency: ferry_format::consistency::Consistency::Live,
        network: None,
    };
    let body = serde_json::to_vec(&commit).unwrap();
    let CommitReply { snapshot } = c.json(
        "POST",
        &format!("/backups/{session}/commit"),
        &backup,
        Some(&body),
    );
    // The session is over; the same commit again (a retry whose reply was lost) answers with
    // the same snapshot and makes no other.
    let again: CommitReply = c.json(
        "POST",
        &format!("/backups/{session}/commit"),
        &backup,
        Some(&body),
    );
    assert_eq!(again.snapshot, snapshot);

    // Restore: list, verified manifest, index, chunk.
    let list: Vec<SnapshotSummary> = c.json("GET", "/snapshots?machine=web01", &restore, None);
    assert_eq!(
        list.iter().map(|s| s.snapshot.as_str()).collect::<Vec<_>>(),
        vec![snapshot.as_str()]
    );
    assert_eq!(list[0].consistency.mode(), "live");
    let none: Vec<SnapshotSummary> = c.json("GET", "/snapshots?machine=db01", &restore, None);
    assert!(none.is_empty());
    let signed: SignedManifest = c.json(
        "GET",
        &format!("/snapshots/{snapshot}/manifest"),
        &restore,
        None,
    );
    trust
        .signing_key
        .verify(signed.manifest.as_bytes(), &signed.signature)
        .unwrap();
    assert_eq!(signed.key_id, trust.signing_key.key_id());
    let manifest: Manifest = serde_json::from_str(&signed.manifest).unwrap();
    assert_eq!(
        (manifest.snapshot.as_str(), manifest.chunk_size),
        (snapshot.as_str(), CS)
    );
    assert_eq!(
        manifest.consistency,
        ferry_format::consistency::Consistency::Live
    );
    let got_index = c.ok(
        "GET",
        &format!("/snapshots/{snapshot}/disks/sda/index"),
        &restore,
        None,
        200,
    );
    assert_eq!(
        DiskIndex::decode(&got_index).unwrap().digest(),
        manifest.disks[0].index_digest
    );
    let frame = c.ok("GET", &format!("/chunks/{b}"), &restore, None, 200);
    assert_eq!(
        ChunkId::of(&zstd::bulk::decompress(&frame, CS as usize).unwrap()),
        b
    );
    c.ok(
        "GET",
        &format!("/chunks/{}", ChunkId::of(b"absent")),
        &restore,
        None,
        404,
    );
    c.ok(
        "GET",
        "/snapshots/nope-20250101T000000Z/manifest",
        &restore,
        None,
        404,
    );

    // An abandoned session leaves nothing behind.
    let BackupSession { session } = c.json("POST", "/backups", &backup, Some(start));
    c.ok("DELETE", &format!("/backups/{session}"), &backup, None, 204);
    c.ok("DELETE", &format!("/backups/{session}"), &backup, None, 404);

    // A client pinning another appliance's CA fails the handshake.
    let other_dir = tempfile::tempdir().unwrap();
    let other = init_store_with(other_dir.path(), &[], &test_storage()).unwrap();
    let other_trust = load_trust(&other.trust_bundle);
    let stranger = Client::new(&other_trust, server.addr, Duration::from_secs(20));
    assert!(stranger.try_call("GET", "/hello", &backup, None).is_err());

    rt.block_on(server.shutdown(Duration::from_secs(5)))
        .unwrap();
}
