//! Fault runs (issue 9): the appliance is SIGKILLed at random points during 20 backups and 20
//! restores and restarted on the same store and port. Afterwards every committed snapshot
//! restores `cmp`-identical to the image it was taken from, every stored chunk verifies, no
//! snapshot is half-visible, no temporary file is left where docs/store.md does not allow one,
//! and GC (once while a backup runs, once killed part-way) keeps every chunk a snapshot needs.
//!
//! The kill points come from a seeded RNG; the seed is printed. `FERRY_KILL_SEED=N` replays a
//! run's choices (the timing of the processes differs from run to run), `FERRY_KILL_ROUNDS=N`
//! changes the number of backup and restore rounds (at least 3).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;

const MIB: u64 = 1 << 20;
/// Each source image: big enough that a run takes a few hundred milliseconds, small enough for
/// 40 rounds on two loaded cores.
const IMAGE_SIZE: u64 = 64 * MIB;
/// Small chunks: hundreds of requests per run, so a kill often lands mid-transfer.
const CHUNK_SIZE: u64 = 256 << 10;
const MACHINES: [&str; 3] = ["alpha", "beta", "gamma"];
/// Content every image holds at the same offset: dedup across machines matters.
const SHARED: (u64, usize) = (8 * MIB, 16 << 20);
/// Where [`Fault::stamp`] writes, a MiB per machine.
const STAMP: u64 = 40 * MIB;
const ROUNDS: usize = 20;
/// An agent given this rides out any restart of the appliance.
const LONG_WINDOW: &str = "60s";
/// An agent given this fails when the appliance stays down for [`LONG_DOWN`].
const SHORT_WINDOW: &str = "1s";
const LONG_DOWN: Duration = Duration::from_millis(2500);
/// An agent still running this long after its round started has hung: the test fails.
const AGENT_LIMIT: Duration = Duration::from_secs(180);

/// Where in a run the appliance dies.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// This long after the agent started (the agent may already be done: a kill after commit).
    After(Duration),
    /// This long after an index upload landed in `tmp/`: the commit request is next.
    IndexUploaded(Duration),
    /// As soon as the commit's snapshot directory is visible, before the agent has the reply.
    SnapshotVisible,
}

#[derive(Clone, Debug)]
struct Snap {
    id: String,
    machine: usize,
    /// A copy of the source image as it was backed up.
    image: PathBuf,
}

#[derive(Default, Debug)]
struct Stats {
    kills: u32,
    /// Kills that found the agent still running (the others hit a finished run).
    kills_mid_run: u32,
    /// Agents running at the kill that finished on their own after the restart.
    rode_out: u32,
    /// Agents that were done before the kill (a kill after commit).
    done_before_kill: u32,
    /// Agents that failed (retry window spent) and were run again.
    rerun: u32,
    /// Commits that became visible although the agent reported failure.
    commits_of_failed_runs: u32,
    /// Commits the agent sent again after the appliance died, answered with one snapshot.
    commits_retried: u32,
    /// Snapshots that became visible (all restored and compared; some pruned later).
    committed: usize,
    bytes_uploaded: u64,
    bytes_fetched: u64,
    /// Restores re-run onto a partial target that found chunks already there.
    reruns_that_resumed: u32,
}

struct Fault {
    a: Appliance,
    work: tempfile::TempDir,
    rng: Rng,
    stats: Stats,
    snaps: Vec<Snap>,
    versions: usize,
    expected_backup: Duration,
    expected_restore: Duration,
}

fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next() % n.max(1)
}

fn seed() -> u64 {
    std::env::var("FERRY_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// At least 3: the GC checks need a second snapshot of every machine.
fn rounds() -> usize {
    std::env::var("FERRY_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS)
        .max(3)
}

#[test]
fn appliance_killed_during_backups_and_restores_loses_nothing() {
    let seed = seed();
    log(format!(
        "kill_appliance seed {seed} (replay with FERRY_KILL_SEED={seed})"
    ));
    let t0 = Instant::now();
    let mut f = Fault::new(seed);
    let n = rounds();
    for r in 0..n {
        f.backup_round(r);
    }
    for r in 0..n {
        f.restore_round(r);
    }
    let gc_removed = f.check_and_gc();
    let s = &f.stats;
    log(format!(
        "kill_appliance summary (seed {seed}): {n} backup + {n} restore rounds, {} kills ({} mid-run), \
         {} runs rode out the restart, {} were done before the kill, {} re-run after failing ({} restores re-run onto their partial \
         target found chunks there), {} commits from runs that reported failure, {} commits retried, {} snapshots committed ({} after prune), \
         {} MiB uploaded, {} MiB fetched, gc removed {gc_removed} chunks, {:.0} s",
        s.kills,
        s.kills_mid_run,
        s.rode_out,
        s.done_before_kill,
        s.rerun,
        s.reruns_that_resumed,
        s.commits_of_failed_runs,
        s.commits_retried,
        s.committed,
        f.snaps.len(),
        s.bytes_uploaded >> 20,
        s.bytes_fetched >> 20,
        t0.elapsed().as_secs_f64()
    ));
}

impl Fault {
    fn new(seed: u64) -> Fault {
        let a = Appliance::start_local(); // local only: it watches tmp/ and snapshots/
        let work = tempfile::tempdir().expect("tempdir");
        let mut f = Fault {
            a,
            work,
            rng: Rng::new(seed),
            stats: Stats::default(),
            snaps: Vec::new(),
            versions: 0,
            expected_backup: Duration::ZERO,
            expected_restore: Duration::ZERO,
        };
        fs::create_dir_all(f.dir("versions")).expect("versions dir");
        let mut shared = vec![0u8; SHARED.1];
        Rng::new(0x5eed).fill(&mut shared);
        for (m, _) in MACHINES.iter().enumerate() {
            let img = f.source(m);
            make_image(&img, IMAGE_SIZE, 1000 + m as u64);
            std::os::unix::fs::FileExt::write_all_at(
                &fs::OpenOptions::new().write(true).open(&img).unwrap(),
                &shared,
                SHARED.0,
            )
            .expect("write shared region");
            f.stamp(m);
        }
        // Full backups without faults; the last, incremental one sets the expected run time.
        for m in 0..MACHINES.len() {
            f.clean_backup(m);
        }
        f.change(0);
        f.expected_backup = f.clean_backup(0);
        let t = Instant::now();
        let snap = f.snaps[0].clone();
        let dest = f.dir("calibrate.img");
        f.a.restore(&snap.id, &[(MACHINES[snap.machine], &dest)], &[]);
        f.expected_restore = t.elapsed();
        cmp(&snap.image, &dest);
        fs::remove_file(&dest).unwrap();
        log(format!(
            "kill_appliance: a backup takes {:?}, a restore {:?}",
            f.expected_backup, f.expected_restore
        ));
        f
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn source(&self, m: usize) -> PathBuf {
        self.dir(&format!("{}.img", MACHINES[m]))
    }

    /// Rewrite a few chunk-sized-to-megabyte runs of machine `m`'s image.
    fn change(&mut self, m: usize) {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(self.source(m))
            .unwrap();
        for _ in 0..1 + below(&mut self.rng, 3) {
            let len = (CHUNK_SIZE + below(&mut self.rng, 3 * MIB)) as usize;
            let off = below(&mut self.rng, IMAGE_SIZE - len as u64);
            let kind = ["random", "text", "repeat"][below(&mut self.rng, 3) as usize];
            write_region(&file, off, len, kind, &mut self.rng);
        }
        file.sync_all().unwrap();
        self.stamp(m);
    }

    /// Fresh random data in a MiB of the image only this machine has: every version holds
    /// chunks no other one does, so pruned versions always leave garbage for GC.
    fn stamp(&mut self, m: usize) {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(self.source(m))
            .unwrap();
        let off = STAMP + m as u64 * MIB;
        write_region(&file, off, MIB as usize, "random", &mut self.rng);
        file.sync_all().unwrap();
    }

    /// Keep a copy of machine `m`'s image as it is now, for the restores to be compared with.
    fn freeze(&mut self, m: usize) -> PathBuf {
        self.versions += 1;
        let copy = self
            .dir("versions")
            .join(format!("{}.{}.img", MACHINES[m], self.versions));
        fs::copy(self.source(m), &copy).expect("copy image version");
        copy
    }

    fn snapshot_ids(&self) -> BTreeSet<String> {
        let out = ok(self
            .a
            .appliance()
            .args(["snapshots", "--json", "--data"])
            .arg(self.a.data()));
        let v: serde_json::Value = serde_json::from_str(&out).expect("snapshots --json");
        v.as_array()
            .expect("snapshot list")
            .iter()
            .map(|s| s["snapshot"].as_str().expect("snapshot id").to_string())
            .collect()
    }

    fn backup_cmd(&self, m: usize, window: &str) -> Command {
        let mut c = self.a.backup_cmd(MACHINES[m], &[&self.source(m)]);
        c.args([
            "--chunk-size",
            &CHUNK_SIZE.to_string(),
            "--parallel",
            "2",
            "--retry-window",
            window,
        ]);
        c
    }

    /// A backup with no fault; returns how long it took.
    fn clean_backup(&mut self, m: usize) -> Duration {
        let before = self.snapshot_ids();
        let image = self.freeze(m);
        let t = Instant::now();
        let out = ok(&mut self.backup_cmd(m, LONG_WINDOW));
        let took = t.elapsed();
        let v: serde_json::Value = serde_json::from_str(&out).expect("backup --json");
        self.stats.bytes_uploaded += v["bytes_uploaded"].as_u64().unwrap_or(0);
        self.record(m, &image, &before, v["snapshot"].as_str());
        took
    }

    /// Record the snapshots that appeared since `before`: all of machine `m`'s image `image`.
    /// `reported` is the id the agent printed, which must be among them. Returns how many.
    fn record(
        &mut self,
        m: usize,
        image: &Path,
        before: &BTreeSet<String>,
        reported: Option<&str>,
    ) -> usize {
        let new: Vec<String> = self.snapshot_ids().difference(before).cloned().collect();
        if let Some(id) = reported {
            assert!(
                new.iter().any(|n| n == id),
                "the agent reported snapshot {id}, the store lists {new:?} as new"
            );
        }
        self.stats.committed += new.len();
        for id in &new {
            assert!(
                id.starts_with(&format!("{}-", MACHINES[m])),
                "snapshot {id} appeared during a backup of {}",
                MACHINES[m]
            );
            self.snaps.push(Snap {
                id: id.clone(),
                machine: m,
                image: image.to_path_buf(),
            });
        }
        new.len()
    }

    /// Spawn an agent with its output in files (a full pipe must not stall it).
    fn spawn(&self, cmd: &mut Command, name: &str) -> Child {
        let file = |ext: &str| {
            fs::File::create(self.dir(&format!("{name}.{ext}"))).expect("agent output file")
        };
        cmd.stdout(file("out"))
            .stderr(file("err"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
    }

    fn any_index_uploaded(&self) -> bool {
        let tmp = self.a.data().join("tmp");
        fs::read_dir(tmp).into_iter().flatten().flatten().any(|s| {
            fs::read_dir(s.path())
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".index"))
        })
    }

    fn session_files(&self) -> usize {
        names(&self.a.data().join("sessions"))
            .iter()
            .filter(|n| n.ends_with(".json"))
            .count()
    }

    fn snapshot_dirs(&self) -> usize {
        fs::read_dir(self.a.data().join("snapshots"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Wait for `moment`, SIGKILL the appliance, keep it down for `down`, restart it on the same
    /// store and port.
    /// Returns whether the agent was still running at the kill.
    fn kill_at(&mut self, child: &mut Child, moment: Moment, down: Duration) -> bool {
        let t = Instant::now();
        let snapshots = self.snapshot_dirs();
        let mut index_seen: Option<Instant> = None;
        let running = loop {
            let running = child.try_wait().expect("try_wait").is_none();
            let due = match moment {
                Moment::After(d) => t.elapsed() >= d,
                Moment::IndexUploaded(d) => {
                    if index_seen.is_none() && self.any_index_uploaded() {
                        index_seen = Some(Instant::now());
                    }
                    index_seen.is_some_and(|s| s.elapsed() >= d)
                }
                Moment::SnapshotVisible => self.snapshot_dirs() > snapshots,
            };
            if due || !running {
                break running;
            }
            assert!(
                t.elapsed() < AGENT_LIMIT,
                "the agent ran for {AGENT_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        self.a.kill();
        self.stats.kills += 1;
        self.stats.kills_mid_run += u32::from(running);
        std::thread::sleep(down);
        self.a.serve();
        running
    }

    /// Wait for the agent, bounded: one that outlives [`AGENT_LIMIT`] has hung.
    fn finish(&self, mut child: Child, name: &str) -> (bool, String) {
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if t.elapsed() > AGENT_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{name}: the agent hung after the appliance restart:\n{}",
                    self.output(name).1
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let (out, err) = self.output(name);
        if !status.success() {
            log(format!("{name}: agent failed: {}", last_line(&err)));
        }
        (status.success(), out)
    }

    fn output(&self, name: &str) -> (String, String) {
        let read =
            |ext: &str| fs::read_to_string(self.dir(&format!("{name}.{ext}"))).unwrap_or_default();
        (read("out"), read("err"))
    }

    /// Pick the window, the kill point and the downtime of a round.
    /// The first backup rounds cover the commit for certain: a kill just before it, one right
    /// after its rename (the reply lost, the agent retries), and that again with an agent that
    /// gives up (its re-run makes a second snapshot). The rest is drawn at random.
    fn plan(
        &mut self,
        expected: Duration,
        backup: Option<usize>,
    ) -> (&'static str, Moment, Duration) {
        let down = Duration::from_millis(below(&mut self.rng, 1500));
        match backup {
            Some(0) => {
                let after = Duration::from_millis(below(&mut self.rng, 40));
                return (LONG_WINDOW, Moment::IndexUploaded(after), down);
            }
            Some(1) => return (LONG_WINDOW, Moment::SnapshotVisible, down),
            Some(2) => return (SHORT_WINDOW, Moment::SnapshotVisible, LONG_DOWN),
            _ => {}
        }
        let fail = below(&mut self.rng, 4) == 0;
        let spread = |rng: &mut Rng| {
            // Up to 1.25x the expected run time: some kills hit a finished run.
            let ms = expected.as_millis() as u64 * 5 / 4;
            Duration::from_millis(below(rng, ms + 1))
        };
        let moment = match (backup.is_some(), below(&mut self.rng, 6)) {
            (true, 0) => Moment::IndexUploaded(Duration::from_millis(below(&mut self.rng, 40))),
            (true, 1) => Moment::SnapshotVisible,
            _ => Moment::After(spread(&mut self.rng)),
        };
        let down = if fail { LONG_DOWN } else { down };
        (if fail { SHORT_WINDOW } else { LONG_WINDOW }, moment, down)
    }

    fn backup_round(&mut self, r: usize) {
        let m = r % MACHINES.len();
        self.change(m);
        let image = self.freeze(m);
        let before = self.snapshot_ids();
        let (window, moment, down) = self.plan(self.expected_backup, Some(r));
        let name = format!("backup-{r}");
        let mut child = self.spawn(&mut self.backup_cmd(m, window), &name);
        let running = self.kill_at(&mut child, moment, down);
        let (success, out) = self.finish(child, &name);
        // Down for at most 1.5 s against a 60 s window: the run must resume, not fail.
        assert!(
            success || window == SHORT_WINDOW,
            "{name}: the agent failed although the appliance was back within its retry window:\n{}",
            self.output(&name).1
        );
        let committed;
        if success {
            self.count_success(running);
            let retried = self.output(&name).1.lines().any(|l| {
                l.contains("/commit") && (l.contains("retrying") || l.contains("succeeded after"))
            });
            self.stats.commits_retried += u32::from(retried);
            let v: serde_json::Value = serde_json::from_str(&out).expect("backup --json");
            self.stats.bytes_uploaded += v["bytes_uploaded"].as_u64().unwrap_or(0);
            committed = self.record(m, &image, &before, v["snapshot"].as_str());
            assert_eq!(committed, 1, "{name}: one run, one snapshot");
        } else {
            self.stats.rerun += 1;
            let ids = self.snapshot_ids();
            let out = ok(&mut self.backup_cmd(m, LONG_WINDOW));
            let v: serde_json::Value = serde_json::from_str(&out).expect("backup --json");
            self.stats.bytes_uploaded += v["bytes_uploaded"].as_u64().unwrap_or(0);
            self.stats.commits_of_failed_runs += (ids.len() - before.len()) as u32;
            committed = self.record(m, &image, &before, v["snapshot"].as_str());
        }
        log(format!(
            "{name}: {} {moment:?}, down {down:?}, window {window}: {}, {committed} snapshot(s)",
            MACHINES[m],
            if success { "rode it out" } else { "re-run" }
        ));
    }

    fn count_success(&mut self, running: bool) {
        if running {
            self.stats.rode_out += 1;
        } else {
            self.stats.done_before_kill += 1;
        }
    }

    fn restore_cmd(&self, snap: &Snap, dest: &Path, window: &str) -> Command {
        let mut c = self
            .a
            .restore_cmd(&snap.id, &[(MACHINES[snap.machine], dest)]);
        c.args(["--parallel", "2", "--overwrite", "--retry-window", window]);
        c
    }

    fn restore_round(&mut self, r: usize) {
        let snap = self.snaps[below(&mut self.rng, self.snaps.len() as u64) as usize].clone();
        // Mostly fresh targets; sometimes one holding another snapshot (an incremental restore).
        let dest = self.dir("restore.img");
        let kind = if below(&mut self.rng, 3) == 0 && dest.exists() {
            "onto an older restore"
        } else {
            let _ = fs::remove_file(&dest);
            "fresh"
        };
        let (window, moment, down) = self.plan(self.expected_restore, None);
        let name = format!("restore-{r}");
        let mut child = self.spawn(&mut self.restore_cmd(&snap, &dest, window), &name);
        let running = self.kill_at(&mut child, moment, down);
        let (success, mut out) = self.finish(child, &name);
        // Down for at most 1.5 s against a 60 s window: the run must resume, not fail.
        assert!(
            success || window == SHORT_WINDOW,
            "{name}: the agent failed although the appliance was back within its retry window:\n{}",
            self.output(&name).1
        );
        if success {
            self.count_success(running);
        } else {
            self.stats.rerun += 1;
            out = ok(&mut self.restore_cmd(&snap, &dest, LONG_WINDOW));
            let v: serde_json::Value = serde_json::from_str(&out).expect("restore --json");
            if v["chunks_present"].as_u64().unwrap_or(0) > 0 {
                self.stats.reruns_that_resumed += 1;
            }
        }
        let v: serde_json::Value = serde_json::from_str(&out).expect("restore --json");
        self.stats.bytes_fetched += v["bytes_fetched"].as_u64().unwrap_or(0);
        cmp(&snap.image, &dest);
        log(format!(
            "{name}: {} {kind}, {moment:?}, down {down:?}, window {window}: {}",
            snap.id,
            if success { "rode it out" } else { "re-run" }
        ));
    }

    /// Store checks, every snapshot restored, then prune + GC (one concurrent with a backup) and
    /// everything again. Returns the chunks GC removed.
    fn check_and_gc(&mut self) -> u64 {
        self.check_store(false);
        self.restore_all();
        // GC deletes only chunks older than its start minus 5 minutes: drop history so some
        // chunks are garbage, and age every chunk so the sweep really runs.
        let pruned = self.prune(1, 1);
        // gamma's older versions stay garbage; beta's oldest comes back while GC runs.
        self.prune(2, 1);
        age_store(&self.a.data());
        // A backup of a pruned image (its chunks are now garbage) while GC runs.
        let old = pruned.first().expect("prune removed a snapshot").clone();
        fs::copy(&old.image, self.source(old.machine)).unwrap();
        let before = self.snapshot_ids();
        let sessions = self.session_files();
        let mut child = self.spawn(
            self.backup_cmd(old.machine, LONG_WINDOW)
                .args(["--parallel", "1"]),
            "backup-gc",
        );
        // GC starts as soon as the backup's session is open; the backup still has the whole
        // image to read, query and upload.
        let t = Instant::now();
        while self.session_files() == sessions && child.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < AGENT_LIMIT, "backup-gc opened no session");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut removed = self.gc();
        let overlapped = child.try_wait().unwrap().is_none();
        log(format!(
            "gc while a backup ran: still running after gc: {overlapped}"
        ));
        let (success, out) = self.finish(child, "backup-gc");
        assert!(success, "a backup while GC runs failed");
        let v: serde_json::Value = serde_json::from_str(&out).expect("backup --json");
        self.record(old.machine, &old.image, &before, v["snapshot"].as_str());
        age_store(&self.a.data());
        // A GC killed part-way (its lock dies with it) leaves nothing the next one trips on.
        let mut gc = self.spawn(
            self.a.appliance().args(["gc", "--data"]).arg(self.a.data()),
            "gc-killed",
        );
        std::thread::sleep(Duration::from_millis(below(&mut self.rng, 100)));
        let _ = gc.kill();
        let _ = gc.wait();
        removed += self.gc();
        assert!(
            removed > 0,
            "GC removed nothing although pruned snapshots left garbage"
        );
        self.check_store(true);
        self.restore_all();
        removed
    }

    /// Prune `machine` to `keep` snapshots; returns the snapshots removed.
    fn prune(&mut self, machine: usize, keep: usize) -> Vec<Snap> {
        ok(self
            .a
            .appliance()
            .args(["prune", "--machine", MACHINES[machine], "--keep"])
            .arg(keep.to_string())
            .arg("--data")
            .arg(self.a.data()));
        let ids = self.snapshot_ids();
        let (kept, removed): (Vec<Snap>, Vec<Snap>) =
            self.snaps.drain(..).partition(|s| ids.contains(&s.id));
        self.snaps = kept;
        assert!(
            removed.iter().all(|s| s.machine == machine),
            "prune removed another machine's snapshot: {removed:?}"
        );
        removed
    }

    /// `appliance gc`; returns the chunks it removed. It must find nothing missing.
    fn gc(&self) -> u64 {
        let out = ok(self
            .a
            .appliance()
            .args(["gc", "--json", "--data"])
            .arg(self.a.data()));
        let v: serde_json::Value = serde_json::from_str(&out).expect("gc --json");
        assert_eq!(v["missing_chunks"], 0, "gc: {v}");
        log(format!("gc: {v}"));
        v["removed_chunks"].as_u64().expect("removed_chunks")
    }

    /// Every recorded snapshot, restored into a fresh file, is its image byte for byte.
    fn restore_all(&mut self) {
        let dest = self.dir("check.img");
        for s in &self.snaps {
            let _ = fs::remove_file(&dest);
            let v = self.a.restore(&s.id, &[(MACHINES[s.machine], &dest)], &[]);
            self.stats.bytes_fetched += v["bytes_fetched"].as_u64().unwrap_or(0);
            cmp(&s.image, &dest);
        }
        let _ = fs::remove_file(&dest);
        assert_eq!(
            self.snapshot_ids(),
            self.snaps.iter().map(|s| s.id.clone()).collect(),
            "the store lists other snapshots than the test recorded"
        );
    }

    /// Nothing half-visible, only the temporary files docs/store.md allows, every chunk verifies.
    fn check_store(&self, after_gc: bool) {
        let data = self.a.data();
        for e in fs::read_dir(data.join("snapshots")).unwrap().flatten() {
            check_snapshot_dir(&e.path());
        }
        let sessions: BTreeSet<String> = names(&data.join("sessions"))
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect();
        for s in names(&data.join("tmp")) {
            // A killed commit leaves tmp/<s>/ behind; GC removes it once its session is gone.
            assert!(
                !after_gc || sessions.contains(&s),
                "tmp/{s} outlived its session and a GC"
            );
        }
        // A record write the appliance died in leaves a temporary file; GC removes old ones.
        for (dir, n) in [
            ("sessions", names(&data.join("sessions"))),
            (".", names(&data)),
        ]
        .into_iter()
        .flat_map(|(d, ns)| ns.into_iter().map(move |n| (d, n)))
        {
            if n.starts_with(".tmp-") {
                assert!(!after_gc, "{dir}/{n} outlived a GC");
            } else if dir == "sessions" {
                assert!(n.ends_with(".json") && !n.starts_with('.'), "sessions/{n}");
            }
        }
        let mut chunks = 0;
        for prefix in names(&data.join("chunks")) {
            if prefix == ".lock" {
                continue;
            }
            for n in names(&data.join("chunks").join(&prefix)) {
                let path = data.join("chunks").join(&prefix).join(&n);
                if n.starts_with(".tmp-") {
                    assert!(!after_gc, "{} outlived a GC", path.display());
                    continue;
                }
                verify_chunk(&path);
                chunks += 1;
            }
        }
        log(format!("store check: {chunks} chunks verify"));
        // The appliance's own check (exits non-zero on any damage) agrees.
        let out = ok(self
            .a
            .appliance()
            .args(["verify", "--json", "--restart", "--data"])
            .arg(&data));
        log(format!(
            "appliance verify: {}",
            out.split_whitespace().collect::<String>()
        ));
        assert!(
            names(&data.join("damaged")).is_empty(),
            "verify quarantined chunks"
        );
    }
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("")
}

fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A committed snapshot directory holds its manifest, its signature and the index of every disk
/// the manifest names, the record of who wrote it when there is one, and nothing else.
fn check_snapshot_dir(dir: &Path) {
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(dir.join("manifest.json"))
            .unwrap_or_else(|e| panic!("{}: no manifest: {e}", dir.display())),
    )
    .unwrap_or_else(|e| panic!("{}: manifest: {e}", dir.display()));
    let sig = fs::read_to_string(dir.join("manifest.sig"))
        .unwrap_or_else(|e| panic!("{}: no signature: {e}", dir.display()));
    assert!(!sig.trim().is_empty(), "{}: empty signature", dir.display());
    let mut want: BTreeSet<String> = ["manifest.json", "manifest.sig"]
        .into_iter()
        .map(String::from)
        .collect();
    for d in manifest["disks"].as_array().expect("disks") {
        want.insert(format!("{}.index", d["name"].as_str().expect("disk name")));
    }
    let have: BTreeSet<String> = names(dir)
        .into_iter()
        .filter(|n| n != "origin.json")
        .collect();
    assert_eq!(have, want, "{}: files", dir.display());
}

/// Decompress a stored chunk and check its BLAKE3 against its name, with the store's own check.
fn verify_chunk(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy();
    let id: ferry_format::ChunkId = name
        .parse()
        .unwrap_or_else(|e| panic!("{}: not a chunk name: {e:?}", path.display()));
    let frame = fs::read(path).unwrap();
    ferry_store::chunks::verify_chunk(&id, &frame)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Set the mtime of every file under `chunks/<prefix>/` and of every temporary file in
/// `sessions/` and the root an hour back, as if the store were old.
fn age_store(data: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    let chunks = data.join("chunks");
    let prefixes = names(&chunks).into_iter().map(|p| chunks.join(p));
    for dir in prefixes.chain([data.join("sessions"), data.to_path_buf()]) {
        if !dir.is_dir() {
            continue;
        }
        let chunk_dir = dir.parent() == Some(chunks.as_path());
        for n in names(&dir) {
            if !chunk_dir && !n.starts_with(".tmp-") {
                continue;
            }
            fs::File::options()
                .write(true)
                .open(dir.join(&n))
                .and_then(|f| f.set_modified(old))
                .unwrap_or_else(|e| panic!("age {}/{n}: {e}", dir.display()));
        }
    }
}
