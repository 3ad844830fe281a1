//! Migrations against a real store: creation (agent by id or MAC, the standby job), the standby
//! cycle (next, report), pins kept through retention, legal transitions, bounded history.

use std::time::{Duration, SystemTime};

use ferry_format::agent::{EnrollRequest, JobKind, JobState, StandbyReport};
use ferry_format::index::Entry;
use ferry_format::DiskIndex;
use ferry_store::keys::ManifestSigner;
use ferry_store::migrations::{
    Happened, MigrationError, MigrationState, NewMigration, MAX_MIGRATION_HISTORY,
};
use ferry_store::Store;
use ferry_test_support::store::{chunk, commit_request, new_store, CS};

fn snapshot(
    store: &Store,
    signer: &ManifestSigner,
    machine: &str,
    seed: u8,
    now: SystemTime,
) -> String {
    let (id, frame) = chunk(seed);
    store.put_chunk(&id, &frame).unwrap();
    let mut index = DiskIndex::new_zero(CS as u64, CS).unwrap();
    index.entries[0] = Entry::Data(id);
    let session = store
        .start_session_for(machine, CS, Some("tok-src"), now)
        .unwrap();
    store
        .put_index(&session, "sda", &index.encode(), now)
        .unwrap();
    store
        .commit(&session, &commit_request(&index, "raw"), signer, now)
        .unwrap()
}

/// An enrolled agent with one NIC `mac` and one blank disk; approved when asked.
fn agent(store: &Store, mac: &str, approve: bool) -> String {
    let inventory = ferry_test_support::inventory::one_blank_disk(mac, 1 << 30);
    let req = EnrollRequest {
        inventory,
        version: "test".into(),
        resume: vec![],
    };
    let reply = store.enroll_agent(&req, SystemTime::now()).unwrap();
    if approve {
        store
            .approve_agent(&reply.agent, Some(&reply.code), SystemTime::now())
            .unwrap();
    }
    reply.agent
}

fn new(machine: &str, agent: &str) -> NewMigration {
    NewMigration {
        machine: machine.into(),
        agent: agent.into(),
        mappings: vec!["sda=/dev/vda".parse().unwrap()],
        overwrite: false,
        network: Default::default(),
    }
}

fn report(basis: &str, bytes: u64) -> StandbyReport {
    StandbyReport {
        basis: basis.into(),
        applied: "2026-01-01T00:00:00Z".into(),
        bytes_written: bytes,
        seconds: 1.5,
    }
}

fn pins(store: &Store, machine: &str) -> Vec<String> {
    let mut p: Vec<String> = store
        .source(machine)
        .unwrap()
        .pinned
        .into_iter()
        .map(|p| p.snapshot)
        .collect();
    p.sort();
    p
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    signer: ManifestSigner,
    t: SystemTime,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let (store, signer) = new_store(dir.path());
        World {
            _dir: dir,
            store,
            signer,
            t: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    /// A snapshot of `machine` taken `secs` after the world's start (distinct `created`).
    fn snap(&self, machine: &str, seed: u8, secs: u64) -> String {
        snapshot(
            &self.store,
            &self.signer,
            machine,
            seed,
            self.t + Duration::from_secs(secs),
        )
    }
}

#[test]
fn a_migration_binds_an_agent_by_mac_and_its_standby_job_follows_the_basis() {
    let w = World::new();
    let s = &w.store;
    w.store.set_schedule("web1", |sch| sch.keep = 1).unwrap();
    let s1 = w.snap("web1", 1, 0);
    let a = agent(s, "52:54:00:00:00:01", true);

    let m = s
        .create_migration(new("web1", "52-54-00-00-00-01"), w.t)
        .unwrap();
    assert_eq!(m.agent, a, "the MAC resolves to the enrolled agent");
    assert_eq!(m.state, MigrationState::Syncing);
    let job = s.job(&m.job).unwrap();
    assert_eq!(job.kind, JobKind::Standby);
    assert_eq!(job.migration.as_deref(), Some(m.id.as_str()));
    assert_eq!(job.snapshot, s1);
    assert!(!job.options.fixup, "the fix-up belongs to the cutover");
    assert_eq!(pins(s, "web1"), vec![s1.clone()]);

    // The agent takes its standby job through the ordinary job poll.
    let wire = s.take_job(&a, w.t).unwrap().unwrap();
    assert_eq!(
        (wire.kind, wire.id.as_str()),
        (JobKind::Standby, m.job.as_str())
    );
    assert_eq!(s.standby_snapshots(&a).unwrap(), Some(vec![]));

    // next: the newest (nothing known in this boot), then nothing new while it is the basis.
    let n1 = s.standby_next(&a, None, w.t).unwrap().unwrap();
    assert_eq!(
        (n1.snapshot.as_str(), n1.migration.as_str()),
        (s1.as_str(), m.id.as_str())
    );
    assert_eq!(s.standby_snapshots(&a).unwrap(), Some(vec![s1.clone()]));
    let m1 = s.standby_report(&a, &report(&s1, 4096), w.t).unwrap();
    assert_eq!(m1.standby.basis.as_deref(), Some(s1.as_str()));
    assert!(m1
        .standby
        .describe()
        .starts_with(&format!("in sync with snapshot {s1}, taken ")));
    assert!(s.standby_next(&a, Some(&s1), w.t).unwrap().is_none());

    // A newer snapshot: handed, both readable, both pinned.
    let s2 = w.snap("web1", 2, 60);
    let n2 = s.standby_next(&a, Some(&s1), w.t).unwrap().unwrap();
    assert_eq!(n2.snapshot, s2);
    assert_eq!(
        s.standby_snapshots(&a).unwrap(),
        Some(vec![s2.clone(), s1.clone()])
    );
    let mut both = vec![s1.clone(), s2.clone()];
    both.sort();
    assert_eq!(pins(s, "web1"), both);

    // Retention with keep=1 while S2 is being applied: the basis S1 stays (pinned).
    let plan = s
        .retain_source("web1", w.t + Duration::from_secs(120))
        .unwrap();
    assert_eq!(plan.removals().count(), 0, "{plan:?}");
    assert!(s.manifest(&s1).is_ok());

    // A report of a snapshot it was not handed is refused.
    let s3 = w.snap("web1", 3, 90);
    let e = s.standby_report(&a, &report(&s3, 1), w.t).unwrap_err();
    assert!(matches!(e, MigrationError::WrongBasis { .. }), "{e}");

    let m2 = s.standby_report(&a, &report(&s2, 1234), w.t).unwrap();
    assert_eq!(m2.standby.bytes_written, Some(1234));
    assert_eq!(
        s.job(&m.job).unwrap().snapshot,
        s2,
        "the job's snapshot follows the basis"
    );
    // S1 is free now; S2 (basis) and S3 (newest) are pinned.
    let mut want = vec![s2.clone(), s3.clone()];
    want.sort();
    assert_eq!(pins(s, "web1"), want);
    s.retain_source("web1", w.t + Duration::from_secs(120))
        .unwrap();
    assert!(s.manifest(&s1).is_err(), "S1 was pruned");
    assert!(s.manifest(&s2).is_ok() && s.manifest(&s3).is_ok());
    let applied: Vec<&Happened> = m2
        .history
        .iter()
        .map(|h| &h.what)
        .filter(|h| matches!(h, Happened::Applied { .. }))
        .collect();
    assert_eq!(applied.len(), 2);

    // Cancel: the job ends, the pins go, the agent reads nothing and is told to stop.
    let c = s.cancel_migration(&m.id, w.t).unwrap();
    assert_eq!(c.state, MigrationState::Cancelled);
    assert!(matches!(
        s.job(&m.job).unwrap().state,
        JobState::Failed { .. }
    ));
    assert!(pins(s, "web1").is_empty());
    assert_eq!(s.standby_snapshots(&a).unwrap(), None);
    assert!(matches!(
        s.standby_next(&a, Some(&s2), w.t),
        Err(MigrationError::NotStandby { .. })
    ));
    // Final states stay final.
    let e = s.cancel_migration(&m.id, w.t).unwrap_err();
    assert!(
        matches!(
            e,
            MigrationError::Transition {
                from: "cancelled",
                to: "cancelled",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("cannot become"), "{e}");
}

#[test]
fn creation_refuses_what_cannot_be_a_standby() {
    let w = World::new();
    let s = &w.store;
    let e = s
        .create_migration(new("web1", "agent-525400000001"), w.t)
        .unwrap_err();
    assert!(e.to_string().contains("appliance sources set web1"), "{e}");
    s.set_schedule("web1", |sch| sch.keep = 7).unwrap();
    s.set_schedule("db1", |sch| sch.keep = 7).unwrap();
    let unapproved = agent(s, "52:54:00:00:00:09", false);
    let a = agent(s, "52:54:00:00:00:01", true);
    // (what, new migration, fragment)
    let cases = [
        ("no snapshot yet", new("web1", &a), "has no snapshot yet"),
        (
            "unknown MAC",
            new("web1", "52:54:00:00:00:77"),
            "no approved agent has MAC 52:54:00:00:00:77",
        ),
        (
            "unapproved agent",
            new("web1", &unapproved),
            "is not approved",
        ),
        (
            "unapproved agent's MAC",
            new("web1", "52:54:00:00:00:09"),
            "no approved agent has MAC",
        ),
        (
            "neither id nor MAC",
            new("web1", "standby-1"),
            "neither an agent id",
        ),
    ];
    for (what, n, fragment) in cases {
        let e = s.create_migration(n, w.t).unwrap_err();
        assert!(e.to_string().contains(fragment), "{what}: {e}");
    }
    w.snap("web1", 1, 0);
    w.snap("db1", 2, 0);
    let mut bad = new("web1", &a);
    bad.mappings = vec!["sdz=/dev/vda".parse().unwrap()];
    let e = s.create_migration(bad, w.t).unwrap_err();
    assert!(e.to_string().contains("has no disk \"sdz\""), "{e}");
    let mut twice = new("web1", &a);
    twice.mappings.push("sda=/dev/vdb".parse().unwrap());
    assert!(s
        .create_migration(twice, w.t)
        .unwrap_err()
        .to_string()
        .contains("mapped twice"));

    let m = s.create_migration(new("web1", &a), w.t).unwrap();
    let other = agent(s, "52:54:00:00:00:02", true);
    let e = s.create_migration(new("web1", &other), w.t).unwrap_err();
    assert!(matches!(e, MigrationError::MachineBusy { .. }), "{e}");
    let e = s.create_migration(new("db1", &a), w.t).unwrap_err();
    assert!(matches!(e, MigrationError::AgentBusy { .. }), "{e}");
    assert!(e.to_string().contains(&m.id), "{e}");
    assert_eq!(s.list_migrations().unwrap().len(), 1);
    assert!(matches!(
        s.migration("mig-00000000"),
        Err(MigrationError::NotFound(_))
    ));
}

#[test]
fn transitions_are_enforced_and_history_is_bounded() {
    let w = World::new();
    let s = &w.store;
    s.set_schedule("web1", |sch| sch.keep = 7).unwrap();
    let s1 = w.snap("web1", 1, 0);
    let a = agent(s, "52:54:00:00:00:01", true);
    let m = s.create_migration(new("web1", &a), w.t).unwrap();
    s.take_job(&a, w.t).unwrap();
    s.standby_next(&a, None, w.t).unwrap();
    for i in 0..(MAX_MIGRATION_HISTORY + 10) {
        s.standby_report(&a, &report(&s1, i as u64), w.t).unwrap();
    }
    // A cutover aborted, then done.
    s.set_migration_state(&m.id, MigrationState::CuttingOver, w.t)
        .unwrap();
    s.set_migration_state(&m.id, MigrationState::Syncing, w.t)
        .unwrap();
    s.set_migration_state(&m.id, MigrationState::CuttingOver, w.t)
        .unwrap();
    let e = s.cancel_migration(&m.id, w.t).unwrap_err();
    assert!(
        matches!(
            e,
            MigrationError::Transition {
                from: "cutting-over",
                to: "cancelled",
                ..
            }
        ),
        "{e}"
    );
    let done = s
        .set_migration_state(&m.id, MigrationState::CutOver, w.t)
        .unwrap();
    assert_eq!(done.history.len(), MAX_MIGRATION_HISTORY);
    let states: Vec<(&str, &str)> = done
        .history
        .iter()
        .filter_map(|h| match &h.what {
            Happened::State { from, to, .. } => Some((from.as_str(), to.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            ("syncing", "cutting-over"),
            ("cutting-over", "syncing"),
            ("syncing", "cutting-over"),
            ("cutting-over", "cut-over")
        ]
    );
    // The oldest entries went first: the newest apply is still there.
    assert!(done.history.iter().any(|h| matches!(
        &h.what,
        Happened::Applied { bytes_written, .. } if *bytes_written == (MAX_MIGRATION_HISTORY + 9) as u64
    )));
    assert!(!done
        .history
        .iter()
        .any(|h| matches!(h.what, Happened::Created { .. })));
    assert_eq!(s.job(&m.job).unwrap().state, JobState::Succeeded);
    assert!(s.source("web1").unwrap().pinned.is_empty());
    let e = s
        .set_migration_state(&m.id, MigrationState::Syncing, w.t)
        .unwrap_err();
    assert!(matches!(e, MigrationError::Transition { .. }), "{e}");
}

#[test]
fn network_rules_are_checked_against_the_snapshot_and_the_standby_before_anything_is_created() {
    use ferry_format::agent::JobNetwork;
    use ferry_format::network::{ConfigSystem, Interface, NetworkConfig};
    let w = World::new();
    let s = &w.store;
    s.set_schedule("web1", |sch| sch.keep = 1).unwrap();
    // A snapshot whose manifest records the source's network: ens192, static 10.1.0.15/24.
    let (id, frame) = chunk(9);
    s.put_chunk(&id, &frame).unwrap();
    let mut index = DiskIndex::new_zero(CS as u64, CS).unwrap();
    index.entries[0] = Entry::Data(id);
    let session = s
        .start_session_for("web1", CS, Some("tok-src"), w.t)
        .unwrap();
    s.put_index(&session, "sda", &index.encode(), w.t).unwrap();
    let mut req = commit_request(&index, "raw");
    req.network = Some(NetworkConfig {
        interfaces: vec![Interface {
            name: "ens192".into(),
            mac: Some("00:50:56:aa:00:01".into()),
            addresses: vec!["10.1.0.15/24".parse().unwrap()],
            system: ConfigSystem::Networkd,
            file: "/etc/systemd/network/10-ens192.network".into(),
            ..Interface::default()
        }],
    });
    s.commit(&session, &req, &w.signer, w.t).unwrap();
    agent(s, "52:54:00:00:00:01", true);
    let with = |nic: &[&str], reip: &[&str], ip: &[&str]| {
        let v = |x: &[&str]| x.iter().map(|r| r.to_string()).collect();
        NewMigration {
            network: JobNetwork {
                nic: v(nic),
                reip: v(reip),
                ip: v(ip),
            },
            ..new("web1", "52:54:00:00:00:01")
        }
    };
    let refused = [
        (
            with(&["ens192=enp9s0"], &[], &[]),
            "the target has no NIC enp9s0 (it has: eth0)",
        ),
        (
            with(&["eth5=eth0"], &[], &[]),
            "the source has no interface eth5 (it has: ens192)",
        ),
        (
            with(&[], &["10.1.0.15/32=10.2.0.255/32"], &[]),
            "10.1.0.15/24 would become 10.2.0.255/24",
        ),
        (with(&[], &[], &["ens9=10.1.0.20/24"]), "named ens9"),
        (with(&["ens192"], &[], &[]), "write OLD=NEW"),
    ];
    for (m, want) in refused {
        let err = s.create_migration(m, w.t).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
    assert!(
        s.list_migrations().unwrap().is_empty(),
        "nothing was created"
    );
    assert!(s.list_jobs().unwrap().is_empty(), "no job was created");

    let rules = with(&["ens192=eth0"], &[], &["eth0=10.1.0.20/24,gw=10.1.0.1"]);
    let m = s.create_migration(rules, w.t).unwrap();
    let job = s.job(&m.job).unwrap();
    assert_eq!(job.options.network.nic, ["ens192=eth0"]);
    assert_eq!(job.options.network.ip, ["eth0=10.1.0.20/24,gw=10.1.0.1"]);
}
