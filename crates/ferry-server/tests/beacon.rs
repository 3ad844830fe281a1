//! The first-boot beacon over the real HTTPS server: an agent gets a one-time credential for
//! its running job; the beacon reports once (200, then 410); an unknown or replaced credential
//! is 401; and a beacon credential is refused on every other route.

use std::time::{Duration, SystemTime};

use ferry_format::agent::beacon::{BeaconIssued, BeaconReply};
use ferry_format::agent::{
    Disk, EnrollReply, EnrollRequest, Inventory, Job, JobFor, JobRecord, Mapping, Nic, ResumeClaim,
    Then,
};
use ferry_format::api::{BackupSession, CommitReply, Role};
use ferry_format::index::Entry;
use ferry_format::{ChunkId, DiskIndex};
use ferry_server::commands::init_store;
use ferry_store::jobs::NewJob;
use ferry_store::tokens::create_token_at;
use ferry_store::Store;
use ferry_test_support::https::{load_trust, Client};
use ferry_test_support::store::{commit_request, CS};

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    rt: tokio::runtime::Runtime,
    server: Option<ferry_server::RunningServer>,
    c: Client,
    admin: String,
    backup: String,
    enroll: String,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let init = init_store(dir.path(), &[]).unwrap();
        let trust = load_trust(&init.trust_bundle);
        let t = "2025-01-01T00:00:00Z";
        let backup = create_token_at(dir.path(), Role::Backup, t).unwrap();
        let enroll = create_token_at(dir.path(), Role::Enroll, t).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt
            .block_on(ferry_server::start(
                dir.path(),
                "127.0.0.1:0".parse().unwrap(),
            ))
            .unwrap();
        let c = Client::new(&trust, server.addr, Duration::from_secs(60));
        let store = Store::open(dir.path()).unwrap();
        World {
            store,
            rt,
            server: Some(server),
            c,
            admin: init.admin_token,
            backup,
            enroll,
            _dir: dir,
        }
    }

    /// A committed snapshot of one 3-chunk disk `sda`; returns its id and data chunk ids.
    fn snapshot(&self, machine: &str, seed: u8) -> (String, Vec<ChunkId>) {
        let c = &self.c;
        let start = format!(r#"{{"machine":"{machine}","chunk_size":{CS}}}"#);
        let s: BackupSession = serde_json::from_slice(&c.ok(
            "POST",
            "/backups",
            &self.backup,
            Some(start.as_bytes()),
            200,
        ))
        .unwrap();
        let mut ids = Vec::new();
        let mut index = DiskIndex::new_zero(3 * CS as u64, CS).unwrap();
        for i in [0usize, 2] {
            let plain: Vec<u8> = (0..CS)
                .map(|j| (j as u8).wrapping_mul(seed).wrapping_add(i as u8))
                .collect();
            let id = ChunkId::of(&plain);
            c.ok(
                "PUT",
                &format!("/chunks/{id}"),
                &self.backup,
                Some(&zstd::bulk::compress(&plain, 1).unwrap()),
                201,
            );
            index.entries[i] = Entry::Data(id);
            ids.push(id);
        }
        c.ok(
            "PUT",
            &format!("/backups/{}/disks/sda/index", s.session),
            &self.backup,
            Some(&index.encode()),
            204,
        );
        let commit = commit_request(&index, "block-device");
        let body = serde_json::to_vec(&commit).unwrap();
        let r: CommitReply = serde_json::from_slice(&c.ok(
            "POST",
            &format!("/backups/{}/commit", s.session),
            &self.backup,
            Some(&body),
            200,
        ))
        .unwrap();
        (r.snapshot, ids)
    }

    fn enroll(&self, mac: &str, disks: &[(&str, u64, bool)]) -> EnrollReply {
        self.enroll_claiming(mac, disks, &[])
    }

    /// An enrollment that approves itself by the operator's hand.
    fn enroll_approved(&self, mac: &str, disks: &[(&str, u64, bool)]) -> EnrollReply {
        let a = self.enroll(mac, disks);
        assert!(!a.approved, "a plain enrollment is never approved");
        self.store
            .approve_agent(&a.agent, Some(&a.code), SystemTime::now())
            .unwrap();
        a
    }

    fn enroll_claiming(
        &self,
        mac: &str,
        disks: &[(&str, u64, bool)],
        claims: &[ResumeClaim],
    ) -> EnrollReply {
        let inventory = Inventory {
            disks: disks
                .iter()
                .map(|&(name, size, blank)| Disk {
                    name: name.into(),
                    size,
                    model: None,
                    serial: Some(format!("SER-{name}")),
                    wwn: None,
                    logical_sector_size: 512,
                    physical_sector_size: 512,
                    blank,
                    removable: false,
                    holds: (!blank).then(|| "an ext2/3/4 filesystem at offset 1 MiB".into()),
                    protected: None,
                })
                .collect(),
            nics: vec![Nic {
                name: "eth0".into(),
                mac: mac.into(),
                carrier: Some(true),
            }],
            ..Default::default()
        };
        let req = serde_json::to_vec(&EnrollRequest {
            inventory,
            version: "test".into(),
            resume: claims.to_vec(),
        })
        .unwrap();
        serde_json::from_slice(
            &self
                .c
                .ok("POST", "/agents/enroll", &self.enroll, Some(&req), 200),
        )
        .unwrap()
    }

    fn create_job(&self, snapshot: &str, for_: JobFor, map: &str) -> JobRecord {
        let new = NewJob {
            snapshot: snapshot.into(),
            for_,
            mappings: vec![map.parse::<Mapping>().unwrap()],
            then: Then::Reboot,
            overwrite: false,
            options: Default::default(),
        };
        self.store.create_job(new, SystemTime::now()).unwrap()
    }

    fn poll(&self, a: &EnrollReply, wait: u64) -> Option<Job> {
        let (status, body) = self.c.call(
            "GET",
            &format!("/agents/{}/job?wait={wait}", a.agent),
            &a.credential,
            None,
        );
        match status {
            204 => None,
            200 => Some(serde_json::from_slice(&body).unwrap()),
            s => panic!("poll: {s} {}", String::from_utf8_lossy(&body)),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = self.rt.block_on(s.shutdown(Duration::from_secs(1)));
        }
    }
}

/// A job picked up and running on an approved agent; returns the agent and the job.
fn running_job(w: &World) -> (EnrollReply, Job) {
    let (snap, _) = w.snapshot("web01", 3);
    let a = w.enroll_approved("52:54:00:00:00:01", &[("vda", 1 << 20, true)]);
    w.create_job(&snap, JobFor::Agent(a.agent.clone()), "sda=vda");
    let job = w.poll(&a, 0).expect("the job is handed out");
    w.c.ok(
        "PUT",
        &format!("/agents/{}/jobs/{}/state", a.agent, job.id),
        &a.credential,
        Some(br#""running""#),
        204,
    );
    (a, job)
}

#[test]
fn a_beacon_reports_once_and_its_credential_opens_nothing_else() {
    let w = World::new();
    let (a, job) = running_job(&w);
    let c = &w.c;
    let issue_path = format!("/agents/{}/jobs/{}/beacon", a.agent, job.id);
    // Only the agent's own credential gets one.
    c.ok("POST", &issue_path, &w.backup, None, 403);
    c.ok("POST", &issue_path, &w.enroll, None, 403);
    let first: BeaconIssued =
        serde_json::from_slice(&c.ok("POST", &issue_path, &a.credential, None, 200)).unwrap();
    // Asking again replaces it: only the credential installed last is good.
    let issued: BeaconIssued =
        serde_json::from_slice(&c.ok("POST", &issue_path, &a.credential, None, 200)).unwrap();
    assert_eq!(issued.job, job.id);
    assert_ne!(issued.credential, first.credential);
    let raw =
        std::fs::read_to_string(w.store.jobs_dir().join(format!("{}.beacon", job.id))).unwrap();
    assert!(!raw.contains(issued.credential.rsplit('.').next().unwrap()));

    // Refused on every other route, before and after use.
    let cred = issued.credential.as_str();
    let others: &[(&str, String, Option<&[u8]>)] = &[
        ("GET", "/snapshots".into(), None),
        ("GET", format!("/snapshots/{}/manifest", job.snapshot), None),
        (
            "POST",
            "/backups".into(),
            Some(br#"{"machine":"web01","chunk_size":65536}"#),
        ),
        ("GET", format!("/agents/{}/job", a.agent), None),
        (
            "PUT",
            format!("/agents/{}/jobs/{}/state", a.agent, job.id),
            Some(br#""failed""#),
        ),
        ("POST", issue_path.clone(), None),
        ("POST", format!("/agents/{}/events", a.agent), Some(b"{}")),
        ("POST", "/agents/enroll".into(), Some(b"{}")),
        ("GET", "/sources/web01/task".into(), None),
        ("GET", format!("/chunks/{}", ChunkId::of(b"x")), None),
    ];
    for (m, p, body) in others {
        c.ok(m, p, cred, *body, 401);
    }

    let report = |token: &str, job: &str| {
        c.call(
            "POST",
            "/beacon",
            token,
            Some(format!(r#"{{"job":"{job}","hostname":"web01\n"}}"#).as_bytes()),
        )
    };
    assert_eq!(
        report(&first.credential, &job.id).0,
        401,
        "a replaced credential"
    );
    assert_eq!(
        report(&w.admin, &job.id).0,
        401,
        "an admin token is no beacon credential"
    );
    assert_eq!(
        report(cred, "job-ffffffff").0,
        400,
        "the report names another job"
    );
    let (status, body) = report(cred, &job.id);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let reply: BeaconReply = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply.job, job.id);
    let rec = w.store.beacon(&job.id).unwrap().unwrap();
    assert_eq!(rec.booted.as_deref(), Some(reply.booted.as_str()));
    assert_eq!(rec.hostname.as_deref(), Some("web01"));
    assert!(
        rec.address
            .as_deref()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{rec:?}"
    );
    // Once: the second report is gone, and the record keeps the first.
    let (status, body) = report(cred, &job.id);
    assert_eq!(status, 410, "{}", String::from_utf8_lossy(&body));
    assert_eq!(w.store.beacon(&job.id).unwrap().unwrap(), rec);
    // After the report no new credential is issued for the job.
    c.ok("POST", &issue_path, &a.credential, None, 409);
    for (m, p, body) in others {
        c.ok(m, p, cred, *body, 401);
    }
}

#[test]
fn a_beacon_credential_is_issued_only_for_the_agents_running_job() {
    let w = World::new();
    let (snap, _) = w.snapshot("web01", 3);
    let a = w.enroll_approved("52:54:00:00:00:01", &[("vda", 1 << 20, true)]);
    let b = w.enroll_approved("52:54:00:00:00:02", &[("vda", 1 << 20, true)]);
    w.create_job(&snap, JobFor::Agent(a.agent.clone()), "sda=vda");
    let job = w.poll(&a, 0).unwrap();
    // Handed out but not running yet: no credential.
    let path = format!("/agents/{}/jobs/{}/beacon", a.agent, job.id);
    w.c.ok("POST", &path, &a.credential, None, 409);
    // Another agent's job is not found to it, and its credential is not a's.
    w.c.ok(
        "POST",
        &format!("/agents/{}/jobs/{}/beacon", b.agent, job.id),
        &b.credential,
        None,
        404,
    );
    w.c.ok("POST", &path, &b.credential, None, 403);
}
