//! Scoped credentials through the real HTTPS API (in-process server on 127.0.0.1): backup tokens
//! write only their machines and only their own sessions, snapshots record their writer,
//! scoped restore tokens read only their machines, revoked and expired tokens get 401, last use
//! is recorded, tokens.json files from before these fields still work.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ferry_format::api::{BackupSession, CommitReply, Role, SnapshotSummary};
use ferry_format::index::Entry;
use ferry_format::signing::TrustBundle;
use ferry_format::{ChunkId, DiskIndex};
use ferry_server::commands::init_store;
use ferry_store::tokens::{create_token_with, hash_token, legacy_id, load_tokens, NewToken};
use ferry_store::Store;
use ferry_test_support::https::{load_trust, Client};
use ferry_test_support::store::{commit_request, CS};

struct Setup {
    dir: tempfile::TempDir,
    trust: TrustBundle,
    rt: tokio::runtime::Runtime,
    server: Option<ferry_server::RunningServer>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let init = init_store(dir.path(), &[]).unwrap();
        let trust = load_trust(&init.trust_bundle);
        let rt = tokio::runtime::Runtime::new().unwrap();
        Setup {
            dir,
            trust,
            rt,
            server: None,
        }
    }

    fn serve(&mut self) -> Client {
        let server = self
            .rt
            .block_on(ferry_server::start(
                self.dir.path(),
                "127.0.0.1:0".parse().unwrap(),
            ))
            .unwrap();
        let c = Client::new(&self.trust, server.addr, Duration::from_secs(20));
        self.server = Some(server);
        c
    }

    /// A token of `role` limited to `machines` (None: every machine): (id, token).
    fn token(&self, role: Role, machines: Option<&[&str]>) -> (String, String) {
        let new = NewToken {
            role,
            machines: machines.map(|m| m.iter().map(|s| s.to_string()).collect()),
            expires: None,
            name: None,
        };
        let t = create_token_with(self.dir.path(), &new, SystemTime::now()).unwrap();
        (t.id, t.token)
    }

    fn store(&self) -> Store {
        Store::open(self.dir.path()).unwrap()
    }
}

fn chunk(seed: u8) -> (ChunkId, Vec<u8>) {
    let plain: Vec<u8> = (0..CS)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect();
    (
        ChunkId::of(&plain),
        zstd::bulk::compress(&plain, 3).unwrap(),
    )
}

fn start(c: &Client, token: &str, machine: &str) -> String {
    let body = format!(r#"{{"machine":"{machine}","chunk_size":{CS}}}"#);
    let text = c.want("POST", "/backups", token, body.as_bytes(), 200);
    serde_json::from_str::<BackupSession>(&text)
        .unwrap()
        .session
}

/// One disk of one data chunk `seed`: (index bytes, commit body).
fn disk(seed: u8) -> (Vec<u8>, Vec<u8>) {
    let (id, _) = chunk(seed);
    let mut index = DiskIndex::new_zero(CS as u64, CS).unwrap();
    index.entries[0] = Entry::Data(id);
    let commit = commit_request(&index, "raw");
    (index.encode(), serde_json::to_vec(&commit).unwrap())
}

/// A whole backup of `machine` holding chunk `seed`; returns the snapshot id.
fn backup(c: &Client, token: &str, machine: &str, seed: u8) -> String {
    let session = start(c, token, machine);
    let (id, frame) = chunk(seed);
    c.call("PUT", &format!("/chunks/{id}"), token, Some(&frame));
    let (index, commit) = disk(seed);
    c.want(
        "PUT",
        &format!("/backups/{session}/disks/sda/index"),
        token,
        &index,
        204,
    );
    let text = c.want(
        "POST",
        &format!("/backups/{session}/commit"),
        token,
        &commit,
        200,
    );
    serde_json::from_str::<CommitReply>(&text).unwrap().snapshot
}

fn origin(dir: &Path, snapshot: &str) -> String {
    let text =
        std::fs::read_to_string(dir.join("snapshots").join(snapshot).join("origin.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn backup_tokens_write_only_their_machines_and_their_own_sessions() {
    let mut s = Setup::new();
    let (web_id, web) = s.token(Role::Backup, Some(&["web*"]));
    let (_, other) = s.token(Role::Backup, Some(&["web*"]));
    let (_, admin) = s.token(Role::Admin, None);
    let c = s.serve();

    let body = format!(r#"{{"machine":"db01","chunk_size":{CS}}}"#);
    let refused = c.want("POST", "/backups", &web, body.as_bytes(), 403);
    assert!(
        refused.contains("db01") && refused.contains("web*") && refused.contains(&web_id),
        "{refused}"
    );

    // A session is used only by the token that opened it, even one with the same scope, even
    // an admin token.
    let session = start(&c, &web, "web01");
    let (id, frame) = chunk(1);
    c.want("PUT", &format!("/chunks/{id}"), &web, &frame, 201);
    let (index, commit) = disk(1);
    let q = serde_json::to_vec(&serde_json::json!({ "ids": [id] })).unwrap();
    for token in [&other, &admin] {
        for (method, path, body) in [
            ("POST", format!("/backups/{session}/known-chunks"), &q[..]),
            (
                "PUT",
                format!("/backups/{session}/disks/sda/index"),
                &index[..],
            ),
            ("POST", format!("/backups/{session}/commit"), &commit[..]),
            ("DELETE", format!("/backups/{session}"), &[][..]),
        ] {
            let text = c.want(method, &path, token, body, 403);
            assert!(
                text.contains("opened by another token"),
                "{method} {path}: {text}"
            );
        }
    }
    // Nothing the intruders did reached the session: the owner completes it.
    c.want(
        "PUT",
        &format!("/backups/{session}/disks/sda/index"),
        &web,
        &index,
        204,
    );
    let text = c.want(
        "POST",
        &format!("/backups/{session}/commit"),
        &web,
        &commit,
        200,
    );
    let snapshot = serde_json::from_str::<CommitReply>(&text).unwrap().snapshot;
    assert_eq!(origin(s.dir.path(), &snapshot), web_id);

    // A session opened before sessions recorded their token is refused, not adopted.
    let legacy = s
        .store()
        .start_session("web02", CS, SystemTime::now())
        .unwrap();
    let text = c.want("DELETE", &format!("/backups/{legacy}"), &web, &[], 403);
    assert!(text.contains("start a new backup"), "{text}");
}

#[test]
fn scoped_restore_tokens_read_only_their_machines() {
    let mut s = Setup::new();
    let (_, backup_all) = s.token(Role::Backup, None);
    let (_, web_reader) = s.token(Role::Restore, Some(&["web01"]));
    let (_, all_reader) = s.token(Role::Restore, None);
    let c = s.serve();
    let web = backup(&c, &backup_all, "web01", 1);
    let db = backup(&c, &backup_all, "db01", 2);
    let (web_chunk, _) = chunk(1);
    let (db_chunk, _) = chunk(2);

    // Sorted: snapshots committed within one second list in id order.
    let list = |token: &str| -> Vec<String> {
        let text = c.want("GET", "/snapshots", token, &[], 200);
        let mut ids: Vec<String> = serde_json::from_str::<Vec<SnapshotSummary>>(&text)
            .unwrap()
            .into_iter()
            .map(|s| s.snapshot)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(list(&web_reader), vec![web.clone()]);
    assert_eq!(list(&all_reader), vec![db.clone(), web.clone()]);
    let text = c.want("GET", "/snapshots?machine=db01", &web_reader, &[], 200);
    assert_eq!(text, "[]");

    c.want(
        "GET",
        &format!("/snapshots/{web}/manifest"),
        &web_reader,
        &[],
        200,
    );
    c.want(
        "GET",
        &format!("/snapshots/{web}/disks/sda/index"),
        &web_reader,
        &[],
        200,
    );
    c.want(
        "GET",
        &format!("/chunks/{web_chunk}"),
        &web_reader,
        &[],
        200,
    );
    for path in [
        format!("/snapshots/{db}/manifest"),
        format!("/snapshots/{db}/disks/sda/index"),
        format!("/chunks/{db_chunk}"),
    ] {
        let text = c.want("GET", &path, &web_reader, &[], 403);
        assert!(text.contains("web01"), "{path}: {text}");
        c.want("GET", &path, &all_reader, &[], 200);
    }
    // A snapshot committed after the reader's chunk set was built is readable at once.
    let web2 = backup(&c, &backup_all, "web01", 3);
    let (new_chunk, _) = chunk(3);
    c.want(
        "GET",
        &format!("/chunks/{new_chunk}"),
        &web_reader,
        &[],
        200,
    );
    let mut want = vec![web, web2];
    want.sort();
    assert_eq!(list(&web_reader), want);
}

#[test]
fn revoked_and_expired_tokens_get_401_saying_so() {
    let mut s = Setup::new();
    let (id, revoked) = s.token(Role::Restore, None);
    let short = NewToken {
        expires: Some(SystemTime::now() + Duration::from_secs(2)),
        ..NewToken::unscoped(Role::Restore)
    };
    let expiring = create_token_with(s.dir.path(), &short, SystemTime::now()).unwrap();
    let c = s.serve();
    c.want("GET", "/hello", &revoked, &[], 200);
    c.want("GET", "/hello", &expiring.token, &[], 200);

    s.store().revoke_token(&id, SystemTime::now()).unwrap();
    let text = c.want("GET", "/snapshots", &revoked, &[], 401);
    assert!(text.contains("revoked") && text.contains(&id), "{text}");

    std::thread::sleep(Duration::from_millis(2500));
    let text = c.want("GET", "/snapshots", &expiring.token, &[], 401);
    assert!(
        text.contains("expired") && text.contains(&expiring.id),
        "{text}"
    );
}

#[test]
fn last_use_is_recorded_without_a_write_per_request() {
    let mut s = Setup::new();
    let (_, token) = s.token(Role::Restore, None);
    let c = s.serve();
    let path = s.dir.path().join("tokens.json");
    let last_used = || {
        load_tokens(&path).unwrap()[&hash_token(&token)]
            .last_used
            .clone()
    };
    assert_eq!(last_used(), None);
    c.want("GET", "/hello", &token, &[], 200);
    // Written off the request path: wait for it.
    for _ in 0..100 {
        if last_used().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(last_used().is_some(), "last use was not recorded");
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    for _ in 0..20 {
        c.want("GET", "/hello", &token, &[], 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn tokens_json_from_before_scopes_still_works() {
    let mut s = Setup::new();
    // A record as older appliances wrote it: role and created only.
    let token = "0123456789abcdef".repeat(4);
    let hash = hash_token(&token);
    let path = s.dir.path().join("tokens.json");
    let mut table: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    table.insert(
        hash.clone(),
        serde_json::json!({"role": "backup", "created": "2025-01-01T00:00:00Z"}),
    );
    std::fs::write(&path, serde_json::to_vec_pretty(&table).unwrap()).unwrap();
    let c = s.serve();
    // Every machine, as before; the snapshot records the id derived from the hash.
    let a = backup(&c, &token, "web01", 1);
    let b = backup(&c, &token, "db01", 2);
    assert_eq!(origin(s.dir.path(), &a), legacy_id(&hash));
    assert_eq!(origin(s.dir.path(), &b), legacy_id(&hash));
    let listed = s.store().list_tokens(SystemTime::now()).unwrap();
    assert!(listed
        .iter()
        .any(|t| t.id == legacy_id(&hash) && t.machines.is_none()));
}
