//! The server test world the agent, beacon and standby tests share: a store with an admin,
//! a backup and an enroll token, the real HTTPS server on 127.0.0.1, a pinned client, and the
//! helpers that enroll agents, commit small snapshots and create and poll jobs.
#![allow(dead_code)] // each test file uses some of the helpers

use std::time::{Duration, SystemTime};

use ferry_format::agent::{
    Disk, EnrollReply, EnrollRequest, Inventory, Job, JobFor, JobRecord, Mapping, Nic, ResumeClaim,
    Then,
};
use ferry_format::api::Role;
use ferry_format::api::{BackupSession, CommitReply};
use ferry_format::index::Entry;
use ferry_format::{ChunkId, DiskIndex};
use ferry_server::commands::init_store_with;
use ferry_store::jobs::NewJob;
use ferry_store::tokens::create_token_at;
use ferry_store::Store;
use ferry_test_support::https::{load_trust, Client};
use ferry_test_support::storage::test_storage;
use ferry_test_support::store::{commit_request, CS};

pub struct World {
    pub _dir: tempfile::TempDir,
    pub store: Store,
    pub rt: tokio::runtime::Runtime,
    pub server: Option<ferry_server::RunningServer>,
    pub c: Client,
    pub admin: String,
    pub backup: String,
    pub enroll: String,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let init = init_store_with(dir.path(), &[], &test_storage()).unwrap();
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
    pub fn snapshot(&self, machine: &str, seed: u8) -> (String, Vec<ChunkId>) {
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

    pub fn enroll(&self, mac: &str, disks: &[(&str, u64, bool)]) -> EnrollReply {
        self.enroll_claiming(mac, disks, &[])
    }

    /// An enrollment that approves itself by the operator's hand.
    pub fn enroll_approved(&self, mac: &str, disks: &[(&str, u64, bool)]) -> EnrollReply {
        let a = self.enroll(mac, disks);
        assert!(!a.approved, "a plain enrollment is never approved");
        self.store
            .approve_agent(&a.agent, Some(&a.code), SystemTime::now())
            .unwrap();
        a
    }

    pub fn enroll_claiming(
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
                driver: None,
                pci_path: None,
                predictable: None,
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

    pub fn create_job(&self, snapshot: &str, for_: JobFor, map: &str) -> JobRecord {
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

    pub fn poll(&self, a: &EnrollReply, wait: u64) -> Option<Job> {
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
