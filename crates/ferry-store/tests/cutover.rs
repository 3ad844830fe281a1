//! A migration's cutover against a real store (docs/migration.md, "Cutover"): the request
//! queues the source's `cutover` task ahead of any scheduled sync, its end moves the migration
//! (failed: back to syncing; succeeded: the final snapshot for the standby, handed with
//! `final: true`), the standby's steps with `applying` as the point of no return, the timeline.

use std::time::{Duration, SystemTime};

use ferry_format::agent::{EnrollRequest, JobState, StandbyReport};
use ferry_format::index::Entry;
use ferry_format::source::{
    Consistency, CutoverStep, SourceEnrollRequest, StandbyCutover, SyncFigures, TaskKind, TaskState,
};
use ferry_format::DiskIndex;
use ferry_store::keys::ManifestSigner;
use ferry_store::migrations::{Happened, MigrationError, MigrationState, NewMigration};
use ferry_store::Store;
use ferry_test_support::store::{chunk, commit_request, new_store, CS};

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

    fn at(&self, secs: u64) -> SystemTime {
        self.t + Duration::from_secs(secs)
    }

    /// A snapshot of web1 taken `secs` after the world's start.
    fn snap(&self, seed: u8, secs: u64) -> String {
        let (id, frame) = chunk(seed);
        self.store.put_chunk(&id, &frame).unwrap();
        let mut index = DiskIndex::new_zero(CS as u64, CS).unwrap();
        index.entries[0] = Entry::Data(id);
        let now = self.at(secs);
        let session = self
            .store
            .start_session_for("web1", CS, Some("tok-src"), now)
            .unwrap();
        self.store
            .put_index(&session, "sda", &index.encode(), now)
            .unwrap();
        self.store
            .commit(&session, &commit_request(&index, "raw"), &self.signer, now)
            .unwrap()
    }

    /// An approved standby agent with one blank disk.
    fn agent(&self) -> String {
        let inventory = ferry_test_support::inventory::one_blank_disk("52:54:00:00:00:09", 1 << 30);
        let req = EnrollRequest {
            inventory,
            version: "test".into(),
            resume: vec![],
        };
        let reply = self.store.enroll_agent(&req, SystemTime::now()).unwrap();
        self.store
            .approve_agent(&reply.agent, Some(&reply.code), SystemTime::now())
            .unwrap();
        reply.agent
    }

    /// web1 enrolled, S1 taken, a migration whose standby is in sync with S1.
    fn syncing(&self) -> (String, String, String) {
        let s1 = self.snap(1, 0);
        self.store
            .enroll_source(
                &SourceEnrollRequest {
                    machine: "web1".into(),
                    inventory: None,
                    version: "test".into(),
                },
                self.at(1),
            )
            .unwrap();
        let agent = self.agent();
        let m = self
            .store
            .create_migration(
                NewMigration {
                    machine: "web1".into(),
                    agent: agent.clone(),
                    mappings: vec!["sda=/dev/vda".parse().unwrap()],
                    overwrite: false,
                    network: Default::default(),
                },
                self.at(2),
            )
            .unwrap();
        // The agent takes its standby job (bound, running) as the job poll does.
        let job = self.store.take_job(&agent, self.at(3)).unwrap();
        assert!(job.is_some(), "the standby job is handed to its agent");
        self.store
            .set_job_state(&agent, &m.job, JobState::Running, self.at(3))
            .unwrap();
        // Before the standby holds anything a cutover is refused.
        assert!(matches!(
            self.store.request_cutover(&m.id, self.at(4)),
            Err(MigrationError::NotInSync { .. })
        ));
        let next = self
            .store
            .standby_next(&agent, None, self.at(5))
            .unwrap()
            .unwrap();
        assert_eq!((next.snapshot.as_str(), next.final_), (s1.as_str(), false));
        self.store
            .standby_report(
                &agent,
                &StandbyReport {
                    basis: s1.clone(),
                    applied: "2027-01-15T08:00:06Z".into(),
                    bytes_written: 4096,
                    seconds: 1.0,
                },
                self.at(6),
            )
            .unwrap();
        (m.id, agent, s1)
    }

    /// The source agent takes its next task: the cutover, before the due sync.
    fn take_cutover(&self, secs: u64) -> String {
        let task = self
            .store
            .take_task("web1", self.at(secs))
            .unwrap()
            .unwrap();
        assert_eq!(task.kind, TaskKind::Cutover);
        assert_eq!(task.consistency, Consistency::PointInTime);
        self.store
            .set_task_state("web1", &task.id, TaskState::Running, self.at(secs))
            .unwrap();
        task.id
    }

    fn succeed(&self, task: &str, snapshot: &str, secs: u64) {
        let figures = SyncFigures {
            cpu_seconds: 1.0,
            peak_rss_bytes: 1 << 20,
            bytes_read: 1 << 30,
            bytes_sent: 1 << 20,
            freeze_seconds: Some(0.5),
            consistency: Consistency::PointInTime,
            hook_seconds: Some(3.0),
        };
        self.store
            .set_task_state(
                "web1",
                task,
                TaskState::Succeeded {
                    snapshot: snapshot.into(),
                    figures,
                },
                self.at(secs),
            )
            .unwrap();
    }

    fn step(&self, agent: &str, snapshot: &str, step: CutoverStep, secs: u64) {
        self.try_step(agent, snapshot, step, secs).unwrap();
    }

    fn try_step(
        &self,
        agent: &str,
        snapshot: &str,
        step: CutoverStep,
        secs: u64,
    ) -> Result<ferry_store::migrations::MigrationRecord, MigrationError> {
        self.store.standby_cutover(
            agent,
            &StandbyCutover {
                snapshot: snapshot.into(),
                step,
                detail: (step == CutoverStep::Failed).then(|| "disk vda went away".into()),
                bytes_written: (step == CutoverStep::Applied).then_some(8192),
                seconds: (step == CutoverStep::Applied).then_some(7.5),
            },
            self.at(secs),
        )
    }
}

fn state_reasons(store: &Store, id: &str) -> Vec<(String, String, Option<String>)> {
    store
        .migration(id)
        .unwrap()
        .history
        .into_iter()
        .filter_map(|h| match h.what {
            Happened::State { from, to, reason } => Some((from, to, reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_cutover_runs_from_request_to_reboot_with_its_timeline() {
    let w = World::new();
    let (id, agent, s1) = w.syncing();
    // A sync is due (sync-now) but the cutover is asked for: the cutover comes first.
    w.store.sync_now("web1").unwrap();
    let m = w.store.request_cutover(&id, w.at(100)).unwrap();
    assert_eq!(m.state, MigrationState::CuttingOver);
    // A second cutover while this one runs is refused.
    assert!(matches!(
        w.store.request_cutover(&id, w.at(101)),
        Err(MigrationError::Transition {
            from: "cutting-over",
            ..
        })
    ));
    // Until the source took its final sync the standby gets nothing.
    assert_eq!(
        w.store.standby_next(&agent, Some(&s1), w.at(102)).unwrap(),
        None
    );
    let task = w.take_cutover(110);
    let s2 = w.snap(2, 120);
    w.succeed(&task, &s2, 130);
    assert!(
        w.store.source("web1").unwrap().sync_now,
        "the sync asked for still comes after the cutover"
    );

    let next = w
        .store
        .standby_next(&agent, Some(&s1), w.at(131))
        .unwrap()
        .unwrap();
    assert_eq!((next.snapshot.as_str(), next.final_), (s2.as_str(), true));
    w.step(&agent, &s2, CutoverStep::Applying, 132);
    w.step(&agent, &s2, CutoverStep::Applied, 140);
    w.step(&agent, &s2, CutoverStep::FixedUp, 150);
    w.step(&agent, &s2, CutoverStep::Rebooting, 151);

    let m = w.store.migration(&id).unwrap();
    assert_eq!(m.state, MigrationState::CutOver);
    let src = w.store.source("web1").unwrap();
    assert!(
        src.schedule.paused && !src.sync_now,
        "the cut-over source keeps its schedule: {src:?}"
    );
    assert_eq!(ferry_store::sources::next_due(&src, w.at(152)), None);
    assert_eq!(m.standby.basis.as_deref(), Some(s2.as_str()));
    let job = w.store.job(&m.job).unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.snapshot, s2);
    let c = m.cutover.clone().unwrap();
    assert_eq!(c.snapshot.as_deref(), Some(s2.as_str()));
    assert_eq!(c.hook_seconds, Some(3.0));
    assert_eq!(c.bytes_written, Some(8192));
    assert_eq!(m.standby.seconds, Some(7.5));

    // Phases: task taken at 110, hook 3 s, sync ended 130, apply 132..140, fix-up to 150,
    // reboot at 151; no beacon: the downtime ends at the reboot.
    let t = c.times(None);
    let secs: Vec<(&str, f64)> = t
        .phases
        .iter()
        .map(|p| (p.name.as_str(), p.seconds))
        .collect();
    assert_eq!(
        secs,
        [
            ("waiting for the source agent", 10.0),
            ("pre_cutover hook", 3.0),
            ("final sync (read and send)", 17.0),
            ("handing to the standby", 2.0),
            ("standby apply", 8.0),
            ("fix-up", 10.0),
            ("to the reboot", 1.0),
        ]
    );
    assert_eq!(t.downtime_seconds, Some(41.0));
    assert_eq!(t.downtime_until.as_deref(), Some("reboot"));
    let booted = "2027-01-15T08:03:30Z"; // 210 s after the world's start
    let t = c.times(Some(booted));
    assert_eq!(t.downtime_seconds, Some(100.0));
    assert_eq!(t.downtime_until.as_deref(), Some("beacon"));
    assert_eq!(t.phases.last().unwrap().name, "reboot to the beacon");

    // Ended: the standby is gone (410 at the routes).
    assert!(matches!(
        w.store.standby_next(&agent, Some(&s2), w.at(160)),
        Err(MigrationError::NotStandby { .. })
    ));
}

#[test]
fn a_failed_cutover_task_aborts_back_to_syncing() {
    let w = World::new();
    let (id, agent, s1) = w.syncing();
    w.store.request_cutover(&id, w.at(100)).unwrap();
    let task = w.take_cutover(110);
    w.store
        .set_task_state(
            "web1",
            &task,
            TaskState::Failed {
                reason:
                    "cutover aborted: hook pre_cutover failed (exit 3); no final sync was taken"
                        .into(),
            },
            w.at(115),
        )
        .unwrap();
    let m = w.store.migration(&id).unwrap();
    assert_eq!(m.state, MigrationState::Syncing);
    let last = state_reasons(&w.store, &id).pop().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("cutting-over", "syncing")
    );
    assert!(
        last.2
            .as_deref()
            .unwrap()
            .contains("pre_cutover failed (exit 3)"),
        "{last:?}"
    );
    assert!(m.cutover.unwrap().ended_by.unwrap().contains(&task));
    assert_eq!(
        w.store.source("web1").unwrap().abort_cutover,
        None,
        "the source agent ran post_cutover_abort itself"
    );
    // Syncing again: the standby is handed ordinary snapshots, and may cut over again.
    let s2 = w.snap(2, 120);
    let next = w
        .store
        .standby_next(&agent, Some(&s1), w.at(121))
        .unwrap()
        .unwrap();
    assert_eq!((next.snapshot.as_str(), next.final_), (s2.as_str(), false));
    w.store.request_cutover(&id, w.at(130)).unwrap();
}

#[test]
fn the_standby_aborts_before_applying_and_fails_after() {
    let w = World::new();
    let (id, agent, _s1) = w.syncing();
    w.store.request_cutover(&id, w.at(100)).unwrap();
    let task = w.take_cutover(110);
    let s2 = w.snap(2, 120);
    w.succeed(&task, &s2, 130);
    // Before the point of no return: back to syncing, and `applying` is refused from then on.
    w.step(&agent, &s2, CutoverStep::Failed, 131);
    assert_eq!(
        w.store.migration(&id).unwrap().state,
        MigrationState::Syncing
    );
    assert!(matches!(
        w.try_step(&agent, &s2, CutoverStep::Applying, 132),
        Err(MigrationError::NotCuttingOver { .. })
    ));
    // The source's services were stopped by its final sync: it is told to start them again,
    // before anything else.
    w.store.sync_now("web1").unwrap();
    let abort = w.store.take_task("web1", w.at(133)).unwrap().unwrap();
    assert_eq!(abort.kind, TaskKind::CutoverAbort);
    w.store
        .set_task_state(
            "web1",
            &abort.id,
            TaskState::Done {
                detail: "post_cutover_abort ran".into(),
            },
            w.at(134),
        )
        .unwrap();
    let next = w.store.take_task("web1", w.at(135)).unwrap().unwrap();
    assert_eq!(next.kind, TaskKind::Sync, "then the sync asked for");
    w.store
        .set_task_state(
            "web1",
            &next.id,
            TaskState::Failed {
                reason: "not needed here".into(),
            },
            w.at(136),
        )
        .unwrap();

    // Again; this time the standby fails after it started writing: the migration fails.
    w.store.request_cutover(&id, w.at(200)).unwrap();
    let task = w.take_cutover(210);
    let s3 = w.snap(3, 220);
    w.succeed(&task, &s3, 230);
    // A step for another snapshot than the final one is refused.
    assert!(matches!(
        w.try_step(&agent, &s2, CutoverStep::Applying, 231),
        Err(MigrationError::NotCuttingOver { .. })
    ));
    w.step(&agent, &s3, CutoverStep::Applying, 232);
    w.step(&agent, &s3, CutoverStep::Failed, 240);
    let m = w.store.migration(&id).unwrap();
    match &m.state {
        MigrationState::Failed { reason } => {
            assert!(reason.contains("the source stays down"), "{reason}");
            assert!(reason.contains("disk vda went away"), "{reason}");
        }
        other => panic!("want failed, got {other:?}"),
    }
    assert_eq!(w.store.job(&m.job).unwrap().state.name(), "failed");
}

#[test]
fn sources_set_with_the_defaults_creates_the_record() {
    let w = World::new();
    assert!(w.store.source("db1").unwrap_err().is_not_found());
    let rec = w.store.set_schedule("db1", |_| {}).unwrap();
    assert_eq!(rec.schedule, ferry_format::source::Schedule::default());
    assert_eq!(w.store.source("db1").unwrap(), rec);
}

#[test]
fn poweroff_source_is_asked_only_past_the_point_of_no_return() {
    let w = World::new();
    let (id, agent, _s1) = w.syncing();
    w.store.request_cutover_with(&id, true, w.at(100)).unwrap();
    let task = w.take_cutover(110);
    let s2 = w.snap(2, 120);
    w.succeed(&task, &s2, 130);
    // The final sync is in, the standby has not started writing: an abort still needs the
    // source serving, so no poweroff yet.
    assert_eq!(w.store.take_task("web1", w.at(131)).unwrap(), None);
    w.step(&agent, &s2, CutoverStep::Applying, 132);
    // A repeated report asks only once.
    w.step(&agent, &s2, CutoverStep::Applying, 133);
    let off = w.store.take_task("web1", w.at(134)).unwrap().unwrap();
    assert_eq!(off.kind, TaskKind::Poweroff);
    let c = w.store.migration(&id).unwrap().cutover.unwrap();
    assert!(c.poweroff_source);
    assert_eq!(c.poweroff_asked.as_deref(), Some("2027-01-15T08:02:12Z"));
    w.store
        .set_task_state(
            "web1",
            &off.id,
            TaskState::Done {
                detail: "powering off".into(),
            },
            w.at(135),
        )
        .unwrap();
    assert_eq!(w.store.take_task("web1", w.at(136)).unwrap(), None);

    // Without --poweroff-source the source is never asked.
    let w = World::new();
    let (id, agent, _s1) = w.syncing();
    w.store.request_cutover(&id, w.at(100)).unwrap();
    let task = w.take_cutover(110);
    let s2 = w.snap(2, 120);
    w.succeed(&task, &s2, 130);
    w.step(&agent, &s2, CutoverStep::Applying, 132);
    assert_eq!(w.store.take_task("web1", w.at(134)).unwrap(), None);
}
