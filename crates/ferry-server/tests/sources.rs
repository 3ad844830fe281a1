//! Source machines over the real HTTPS server: enrollment with a backup token scoped to the
//! machine, the credential as that machine's backup credential, the long-polled sync task and
//! its state, retention after a successful sync.

use std::time::{Duration, Instant, SystemTime};

use ferry_format::api::{BackupSession, CommitReply, Role};
use ferry_format::index::Entry;
use ferry_format::source::{
    Consistency, SourceEnrollReply, SyncFigures, SyncTask, TaskKind, TaskState,
};
use ferry_format::{ChunkId, DiskIndex};
use ferry_server::commands::init_store_with;
use ferry_store::tokens::{create_token_with, NewToken};
use ferry_store::Store;
use ferry_test_support::https::{load_trust, Client};
use ferry_test_support::storage::test_storage;
use ferry_test_support::store::{commit_request, CS};

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    _rt: tokio::runtime::Runtime,
    _server: ferry_server::RunningServer,
    c: Client,
    admin: String,
    web1: String,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let init = init_store_with(dir.path(), &[], &test_storage()).unwrap();
        let trust = load_trust(&init.trust_bundle);
        let new = NewToken {
            machines: Some(vec!["web1".into()]),
            ..NewToken::unscoped(Role::Backup)
        };
        let web1 = create_token_with(dir.path(), &new, SystemTime::now())
            .unwrap()
            .token;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt
            .block_on(ferry_server::start(
                dir.path(),
                "127.0.0.1:0".parse().unwrap(),
            ))
            .unwrap();
        let c = Client::new(&trust, server.addr, Duration::from_secs(60));
        World {
            store: Store::open(dir.path()).unwrap(),
            _rt: rt,
            _server: server,
            c,
            admin: init.admin_token,
            web1,
            _dir: dir,
        }
    }

    fn enroll(&self, token: &str, machine: &str, want: u16) -> Vec<u8> {
        let body = format!(r#"{{"machine":"{machine}","version":"0.1.0"}}"#);
        self.c.ok(
            "POST",
            "/sources/enroll",
            token,
            Some(body.as_bytes()),
            want,
        )
    }

    /// A one-chunk backup of `machine` with `token`.
    fn backup(&self, token: &str, machine: &str, seed: u8) -> String {
        let c = &self.c;
        let start = format!(r#"{{"machine":"{machine}","chunk_size":{CS}}}"#);
        let s: BackupSession =
            serde_json::from_slice(&c.ok("POST", "/backups", token, Some(start.as_bytes()), 200))
                .unwrap();
        let plain: Vec<u8> = (0..CS).map(|j| (j as u8).wrapping_mul(seed)).collect();
        let id = ChunkId::of(&plain);
        let frame = zstd::bulk::compress(&plain, 1).unwrap();
        let (code, _) = c.call("PUT", &format!("/chunks/{id}"), token, Some(&frame));
        assert!(code == 201 || code == 200, "chunk upload: {code}");
        let mut index = DiskIndex::new_zero(CS as u64, CS).unwrap();
        index.entries[0] = Entry::Data(id);
        c.ok(
            "PUT",
            &format!("/backups/{}/disks/sda/index", s.session),
            token,
            Some(&index.encode()),
            204,
        );
        let body = serde_json::to_vec(&commit_request(&index, "block-device")).unwrap();
        let r: CommitReply = serde_json::from_slice(&c.ok(
            "POST",
            &format!("/backups/{}/commit", s.session),
            token,
            Some(&body),
            200,
        ))
        .unwrap();
        r.snapshot
    }

    fn poll(&self, cred: &str, machine: &str, wait: u64) -> Option<SyncTask> {
        let (code, body) = self.c.call(
            "GET",
            &format!("/sources/{machine}/task?wait={wait}"),
            cred,
            None,
        );
        match code {
            200 => Some(serde_json::from_slice(&body).unwrap()),
            204 => None,
            other => panic!("task poll: {other} {}", String::from_utf8_lossy(&body)),
        }
    }

    fn report(&self, cred: &str, machine: &str, id: &str, state: &TaskState, want: u16) -> String {
        let body = serde_json::to_vec(state).unwrap();
        String::from_utf8_lossy(&self.c.ok(
            "PUT",
            &format!("/sources/{machine}/tasks/{id}/state"),
            cred,
            Some(&body),
            want,
        ))
        .into_owned()
    }
}

fn succeeded(snapshot: &str) -> TaskState {
    TaskState::Succeeded {
        snapshot: snapshot.into(),
        figures: SyncFigures {
            cpu_seconds: 1.0,
            peak_rss_bytes: 30 << 20,
            bytes_read: CS as u64,
            bytes_sent: 100,
            freeze_seconds: Some(0.5),
            hook_seconds: None,
            consistency: Consistency::PointInTime,
        },
    }
}

#[test]
fn a_source_enrolls_in_scope_and_its_credential_backs_up_only_its_machine() {
    let w = World::new();
    // Out of the token's scope: 403, nothing recorded.
    let refused = String::from_utf8_lossy(&w.enroll(&w.web1, "db1", 403)).into_owned();
    assert!(refused.contains("db1"), "{refused}");
    assert!(w.store.source("db1").unwrap_err().is_not_found());

    let reply: SourceEnrollReply = serde_json::from_slice(&w.enroll(&w.web1, "web1", 200)).unwrap();
    let cred = reply.credential;
    assert!(cred.starts_with("src-web1."), "{cred}");

    // A backup credential for web1 only; the snapshot records it as its writer.
    let snap = w.backup(&cred, "web1", 3);
    let origin = w.store.snapshot_origin(&snap).unwrap().unwrap();
    assert_eq!(origin.token, "src-web1");
    let start = format!(r#"{{"machine":"db1","chunk_size":{CS}}}"#);
    w.c.ok("POST", "/backups", &cred, Some(start.as_bytes()), 403);
    // Not a restore credential, and not another source's.
    w.c.ok("GET", "/snapshots", &cred, None, 403);
    w.store.set_schedule("web2", |_| {}).unwrap();
    let (code, _) = w.c.call("GET", "/sources/web2/task", &cred, None);
    assert_eq!(code, 403);
    // The plain backup token reaches no source route.
    let (code, _) = w.c.call("GET", "/sources/web1/task", &w.web1, None);
    assert_eq!(code, 403);

    // Re-enrolling replaces the credential.
    let again: SourceEnrollReply = serde_json::from_slice(&w.enroll(&w.web1, "web1", 200)).unwrap();
    let (code, _) = w.c.call("GET", "/sources/web1/task", &cred, None);
    assert_eq!(code, 401);
    assert!(w.poll(&again.credential, "web1", 0).is_some());
}

#[test]
fn the_task_cycle_over_https() {
    let w = World::new();
    w.store
        .set_schedule("web1", |s| {
            s.interval_seconds = 3600;
            s.keep = 1;
        })
        .unwrap();
    let reply: SourceEnrollReply = serde_json::from_slice(&w.enroll(&w.web1, "web1", 200)).unwrap();
    let cred = reply.credential;

    let task = w
        .poll(&cred, "web1", 0)
        .expect("never synced: a task at once");
    assert_eq!(task.kind, TaskKind::Sync);
    assert_eq!(task.consistency, Consistency::PointInTime);
    // A restarted agent gets the same task back.
    assert_eq!(w.poll(&cred, "web1", 0), Some(task.clone()));
    w.report(&cred, "web1", &task.id, &TaskState::Running, 204);
    let first = w.backup(&cred, "web1", 1);
    let second = w.backup(&cred, "web1", 2);
    w.report(&cred, "web1", &task.id, &succeeded(&second), 204);
    // keep 1: the older snapshot was pruned after the sync.
    let left: Vec<String> = w
        .store
        .list_snapshots(Some("web1"))
        .unwrap()
        .into_iter()
        .map(|s| s.snapshot)
        .collect();
    assert_eq!(left, std::slice::from_ref(&second));
    assert_ne!(first, second);

    // A finished task cannot change: 409.
    let err = w.report(&cred, "web1", &task.id, &TaskState::Running, 409);
    assert!(err.contains("succeeded"), "{err}");
    // Bad JSON is 400.
    w.c.ok(
        "PUT",
        &format!("/sources/web1/tasks/{}/state", task.id),
        &cred,
        Some(b"{\"done\":1}"),
        400,
    );

    // Not due for an hour: a short poll answers 204 after its wait.
    let t0 = Instant::now();
    assert!(w.poll(&cred, "web1", 1).is_none());
    assert!(t0.elapsed() >= Duration::from_millis(900));

    // sync-now from another process is seen by a waiting poll.
    let next = std::thread::scope(|s| {
        let poller = s.spawn(|| w.poll(&cred, "web1", 20));
        std::thread::sleep(Duration::from_millis(1200));
        Store::open(w.store.root())
            .unwrap()
            .sync_now("web1")
            .unwrap();
        poller.join().unwrap()
    });
    let next = next.expect("sync-now hands out a task");
    assert_ne!(next.id, task.id);
    let failed = TaskState::Failed {
        reason: "network cut".into(),
    };
    w.report(&w.admin, "web1", &next.id, &failed, 204);
    assert_eq!(w.store.source("web1").unwrap().history.len(), 2);
}
