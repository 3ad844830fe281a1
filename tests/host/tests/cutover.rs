//! A migration's cutover end to end on this host (issue 11 item 6, docs/migration.md
//! "Cutover"): the real appliance, the real `backup-agent service` as the source (an image
//! file, so its point-in-time capture needs no freeze) and the real `restore-agent agent
//! --root FAKE` as the standby (image files stand in for /dev nodes, as in tests/standby.rs).
//!
//! - In sync, then `appliance migrations cutover`: the source's `pre_cutover` hook runs (it
//!   writes a file), its final sync is point-in-time, the standby applies it as a delta (the
//!   image equals the source), the fix-up runs (an image with no OS: "no operating system
//!   found", as for a restore job), the job ends with `then: reboot`, and `migrations show
//!   --json` has the timeline with a downtime (to the reboot: the fake root has no beacon).
//! - A `pre_cutover` hook that fails: the migration is back to syncing with the reason, and
//!   `post_cutover_abort` ran (it writes a file).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::machine::*;
use common::*;

const MIB: u64 = 1 << 20;

/// A child process killed when the test ends (also when it fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The source machine `web1`: an image, a backup token, the service's config with hooks.
struct Source {
    dir: tempfile::TempDir,
}

impl Source {
    /// `pre_cutover` writes `pre_cutover.ran` (and fails with exit 3 when `pre_fails`);
    /// `post_cutover_abort` writes `post_cutover_abort.ran`.
    fn new(a: &Appliance, pre_fails: bool) -> Source {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Source { dir };
        let token = a.token_with("backup", &["--machine", "web1"]);
        fs::write(s.p("enroll.token"), format!("{token}\n")).expect("token");
        make_image(&s.p("disk.img"), 64 * MIB, 41);
        ok(a.appliance()
            .args(["sources", "set", "--data"])
            .arg(a.data())
            .args([
                "web1",
                "--rate-limit",
                "off",
                "--idle-io",
                "off",
                "--consistency",
                "live",
            ]));
        ok(a.appliance()
            .args(["sources", "pause", "--data"])
            .arg(a.data())
            .arg("web1"));
        let hook = |file: &str, exit: u8| {
            format!(
                "[\"/bin/sh\", \"-c\", \"date > {} && exit {exit}\"]",
                s.p(file).display()
            )
        };
        fs::write(
            s.p("backup-agent.toml"),
            format!(
                "appliance = \"{url}\"\nca = \"{ca}\"\nmachine = \"web1\"\n\
                 state_dir = \"{state}\"\nenroll_token_file = \"{token}\"\n\
                 retry_window = \"60s\"\n\n[[disk]]\npath = \"{img}\"\n\n[hooks]\n\
                 pre_cutover = {pre}\npost_cutover_abort = {post}\ntimeout = \"30s\"\n",
                url = a.url(),
                ca = a.ca().display(),
                state = s.p("state").display(),
                token = s.p("enroll.token").display(),
                img = s.p("disk.img").display(),
                pre = hook("pre_cutover.ran", if pre_fails { 3 } else { 0 }),
                post = hook("post_cutover_abort.ran", 0),
            ),
        )
        .expect("config");
        s
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&self) -> Killed {
        let log = fs::File::create(self.p("service.log")).expect("log");
        Killed(
            Command::new(bin("backup-agent"))
                .args(["service", "--config"])
                .arg(self.p("backup-agent.toml"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start backup-agent service"),
        )
    }

    fn log(&self) -> String {
        fs::read_to_string(self.p("service.log")).unwrap_or_default()
    }
}

fn migration(a: &Appliance, id: &str) -> serde_json::Value {
    json(
        a.appliance()
            .args(["migrations", "show", "--json", "--data"])
            .arg(a.data())
            .arg(id),
    )
}

/// Poll `migrations show --json` until `done` says so (within 180 s).
fn wait_for(
    a: &Appliance,
    id: &str,
    what: &str,
    src: &Source,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let v = migration(a, id);
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: {v:#}\nsource log:\n{}",
            src.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The first sync (sync-now), a standby agent approved by MAC, a migration in sync with it.
/// Returns the migration id, the standby's process, its fake root and console file.
fn in_sync(
    a: &Appliance,
    src: &Source,
    mac: &str,
    work: &Path,
) -> (String, Killed, tempfile::TempDir, PathBuf) {
    ok(a.appliance()
        .args(["sources", "sync-now", "--data"])
        .arg(a.data())
        .arg("web1"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let s1 = loop {
        let v = json(
            a.appliance()
                .args(["sources", "show", "--json", "--data"])
                .arg(a.data())
                .arg("web1"),
        );
        if let Some(s) = v["history"][0]["state"]["succeeded"]["snapshot"].as_str() {
            break s.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no first sync: {v:#}\n{}",
            src.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let m = machine(mac, &[("vda", 64 * MIB)]);
    let console = work.join("standby.log");
    let agent = Killed(
        a.agent_cmd(&a.token("enroll"), m.path())
            .arg("--once")
            .stdout(fs::File::create(&console).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start restore-agent agent"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run(a
        .appliance()
        .args(["agents", "approve", "--data"])
        .arg(a.data())
        .args(["--mac", mac]))
    .status
    .success()
    {
        assert!(Instant::now() < deadline, "the standby never enrolled");
        std::thread::sleep(Duration::from_millis(200));
    }
    let created = json(
        a.appliance()
            .args(["migrations", "create", "--json", "--data"])
            .arg(a.data())
            .args([
                "--machine",
                "web1",
                "--agent",
                mac,
                "--map",
                "disk=/dev/vda",
            ]),
    );
    let id = created["id"].as_str().unwrap().to_string();
    wait_for(a, &id, "in sync with the first sync", src, |v| {
        v["standby"]["basis"] == s1.as_str()
    });
    (id, agent, m, console)
}

fn events(a: &Appliance, job: &str) -> Vec<String> {
    show(a, job)["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_cutover_takes_the_final_snapshot_applies_it_fixes_up_and_reboots() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let src = Source::new(&a, false);
    let _svc = src.start();
    let (id, mut agent, m, console) = in_sync(&a, &src, "52:54:00:cc:00:11", work.path());

    // The source changes 3 MiB; the cutover's final sync carries it.
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(src.p("disk.img"))
            .unwrap();
        write_region(&f, 20 * MIB, 3 * MIB as usize, "random", &mut Rng::new(5));
        f.sync_all().unwrap();
    }
    let asked = Instant::now();
    let out = ok(a
        .appliance()
        .args(["migrations", "cutover", "--data"])
        .arg(a.data())
        .arg(&id));
    assert!(out.contains("cutting over"), "{out}");
    let e = fails(
        a.appliance()
            .args(["migrations", "cutover", "--data"])
            .arg(a.data())
            .arg(&id),
    );
    assert!(
        e.contains("cutting-over and cannot become cutting-over"),
        "{e}"
    );

    let v = wait_for(&a, &id, "cut over", &src, |v| v["state"] == "cut-over");
    let status = agent.0.wait().expect("standby exit");
    let console = fs::read_to_string(&console).unwrap();
    log(format!("standby console:\n{console}"));
    assert!(status.success(), "standby exit {status}");
    assert!(console.contains("the job says reboot now"), "{console}");
    assert!(src.p("pre_cutover.ran").exists(), "{}", src.log());
    assert!(!src.p("post_cutover_abort.ran").exists(), "{}", src.log());

    let c = &v["cutover"];
    let last = c["snapshot"].as_str().expect("final snapshot");
    assert_eq!(c["consistency"], "point-in-time", "{v:#}");
    assert!(c["hook_seconds"].as_f64().is_some(), "{v:#}");
    assert_eq!(v["standby"]["basis"], last, "{v:#}");
    assert_eq!(v["job_state"], "succeeded", "{v:#}");
    cmp(&src.p("disk.img"), &m.path().join("dev/vda"));
    let written = c["bytes_written"].as_u64().unwrap();
    assert!(written < 16 * MIB, "the final delta wrote {written} bytes");

    let ev = events(&a, v["job"].as_str().unwrap());
    assert!(
        ev.iter()
            .any(|m| m.starts_with("cutover: applying final delta")),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|m| m.contains("bootability: no operating system found")),
        "the fix-up did not run: {ev:?}"
    );

    let t = &v["cutover_times"];
    let names: Vec<&str> = t["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for want in [
        "pre_cutover hook",
        "final sync (read and send)",
        "standby apply",
        "fix-up",
    ] {
        assert!(names.contains(&want), "{want} missing: {t:#}");
    }
    // Whole seconds (the store's times): a cutover on this host may take less than one.
    let downtime = t["downtime_seconds"].as_f64().expect("downtime");
    let wall = asked.elapsed().as_secs_f64();
    assert!(
        (0.0..=wall + 1.0).contains(&downtime),
        "downtime {downtime} s, but the whole cutover took {wall:.1} s: {t:#}"
    );
    assert_eq!(t["downtime_until"], "reboot", "{t:#}");
    let text = ok(a
        .appliance()
        .args(["migrations", "show", "--data"])
        .arg(a.data())
        .arg(&id));
    log(format!("migrations show:\n{text}"));
    assert!(text.contains("cutting-over -> cut-over"), "{text}");
    assert!(
        text.contains("(pre_cutover start to the reboot; no beacon reported yet)"),
        "{text}"
    );
    log(format!(
        "cutover: final delta {written} bytes, downtime {downtime:.1} s to the reboot"
    ));
}

#[test]
fn a_failing_pre_cutover_hook_aborts_back_to_syncing() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let src = Source::new(&a, true);
    let _svc = src.start();
    let (id, _agent, _m, _console) = in_sync(&a, &src, "52:54:00:cc:00:12", work.path());
    ok(a.appliance()
        .args(["migrations", "cutover", "--data"])
        .arg(a.data())
        .arg(&id));
    let v = wait_for(&a, &id, "back to syncing", &src, |v| {
        v["state"] == "syncing" && v["cutover"]["ended_by"].is_string()
    });
    assert!(src.p("pre_cutover.ran").exists(), "{}", src.log());
    assert!(src.p("post_cutover_abort.ran").exists(), "{}", src.log());
    let why = v["cutover"]["ended_by"].as_str().unwrap();
    assert!(why.contains("pre_cutover"), "{why}");
    let last = v["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["what"]["state"]["from"], "cutting-over", "{last}");
    assert_eq!(last["what"]["state"]["to"], "syncing", "{last}");
    assert_eq!(last["what"]["state"]["reason"], why, "{last}");
    assert_eq!(v["job_state"], "running", "the standby goes on: {v:#}");
    log(format!("aborted cutover: {why}"));
}
