//! `backup-agent service` (the source agent) against a real appliance on 127.0.0.1: it enrolls
//! once with a backup token scoped to its machine, keeps its credential 0600, takes the tasks
//! `appliance sources sync-now` asks for, reports them with figures, uploads only changed
//! chunks the second time, absorbs an appliance restart during a sync, exits 0 on SIGTERM, and
//! refuses a CA that is not the appliance's with an error naming the file.
//!
//! The machine's limits are set uncapped on the appliance (`sources set --rate-limit off`)
//! so the syncs run fast, except where a sync must last long enough to be interrupted.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 4 * MIB;

/// A running `backup-agent service`; killed when dropped.
struct Service {
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    fn start(config: &Path, log: &Path) -> Service {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("service log");
        let child = Command::new(bin("backup-agent"))
            .args(["service", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start backup-agent service");
        Service {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then its exit status (within 20 s).
    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        let t = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the service did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its exit status once it ends by itself (within `limit`).
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let t = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if t.elapsed() > limit {
                let _ = child.kill();
                panic!("the service kept running:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One source machine `m` of an appliance: its token file, image, config and state dir.
struct Source {
    dir: tempfile::TempDir,
    machine: &'static str,
}

impl Source {
    /// A backup token for `machine` only, in a file; the machine configured ahead on the
    /// appliance (paused, so only `sync-now` starts a sync; live; uncapped unless `rate`).
    fn new(a: &Appliance, machine: &'static str, image_mib: u64, rate: &str) -> Source {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = a.token_with("backup", &["--machine", machine]);
        std::fs::write(dir.path().join("enroll.token"), format!("{token}\n")).expect("token");
        let image = dir.path().join("disk.img");
        let f = std::fs::File::create(&image).expect("image");
        f.set_len(image_mib * MIB).expect("size");
        write_region(
            &f,
            0,
            (image_mib * MIB) as usize,
            "random",
            &mut Rng::new(7),
        );
        ok(a.appliance()
            .args(["sources", "set", "--data"])
            .arg(a.data())
            .args([
                machine,
                "--rate-limit",
                rate,
                "--idle-io",
                "off",
                "--consistency",
                "live",
            ]));
        ok(a.appliance()
            .args(["sources", "pause", "--data"])
            .arg(a.data())
            .arg(machine));
        Source { dir, machine }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self, a: &Appliance, ca: &Path) -> PathBuf {
        let config = self.p("backup-agent.toml");
        std::fs::write(
            &config,
            format!(
                "appliance = \"{url}\"\nca = \"{ca}\"\nmachine = \"{m}\"\n\
                 state_dir = \"{state}\"\nenroll_token_file = \"{token}\"\n\
                 retry_window = \"60s\"\n\n[[disk]]\npath = \"{img}\"\n",
                url = a.url(),
                ca = ca.display(),
                m = self.machine,
                state = self.p("state").display(),
                token = self.p("enroll.token").display(),
                img = self.p("disk.img").display(),
            ),
        )
        .expect("config");
        config
    }

    fn start(&self, a: &Appliance) -> Service {
        Service::start(&self.write_config(a, &a.ca()), &self.p("service.log"))
    }
}

fn show(a: &Appliance, machine: &str) -> serde_json::Value {
    let out = ok(a
        .appliance()
        .args(["sources", "show", "--json", "--data"])
        .arg(a.data())
        .arg(machine));
    serde_json::from_str(&out).expect("sources show --json")
}

fn sync_now(a: &Appliance, machine: &str) {
    ok(a.appliance()
        .args(["sources", "sync-now", "--data"])
        .arg(a.data())
        .arg(machine));
}

/// Wait for the `n`-th finished task in the machine's history; returns it.
fn finished(
    a: &Appliance,
    s: &Service,
    machine: &str,
    n: usize,
    limit: Duration,
) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let v = show(a, machine);
        if let Some(task) = v["history"].as_array().and_then(|h| h.get(n - 1)) {
            return task.clone();
        }
        assert!(
            t.elapsed() < limit,
            "no {n}th finished task after {limit:?}: {v:#}\nservice log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The figures of a succeeded task (fails the test with the reason of a failed one).
fn succeeded<'a>(task: &'a serde_json::Value, s: &Service) -> (&'a str, &'a serde_json::Value) {
    let ok = &task["state"]["succeeded"];
    assert!(
        ok.is_object(),
        "task did not succeed: {task:#}\n{}",
        s.log()
    );
    (ok["snapshot"].as_str().expect("snapshot"), &ok["figures"])
}

fn snapshots(a: &Appliance) -> Vec<String> {
    let out = ok(a
        .appliance()
        .args(["snapshots", "--json", "--data"])
        .arg(a.data()));
    let v: serde_json::Value = serde_json::from_str(&out).expect("snapshots --json");
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s["snapshot"].as_str().expect("id").to_string())
        .collect()
}

fn figure(f: &serde_json::Value, key: &str) -> u64 {
    f[key]
        .as_u64()
        .unwrap_or_else(|| panic!("figure {key} in {f}"))
}

#[test]
fn enrolls_once_syncs_on_demand_uploads_only_changes_and_needs_no_token_after() {
    let a = Appliance::start();
    let src = Source::new(&a, "m", 64, "off");
    let mut svc = src.start(&a);

    // Enrolled: the credential is 0600, the appliance knows the source.
    let cred = src.p("state/source.cred");
    let t = Instant::now();
    while !cred.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "never enrolled:\n{}",
            svc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mode = std::fs::metadata(&cred).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credential mode");
    let text = std::fs::read_to_string(&cred).expect("credential");
    assert!(text.starts_with("src-m."), "credential {text:?}");
    assert!(
        !svc.log().contains(text.trim()),
        "the credential was logged"
    );

    // First sync: a full upload of the 64 MiB of random data.
    sync_now(&a, "m");
    let first = finished(&a, &svc, "m", 1, Duration::from_secs(120));
    let (snap1, f1) = succeeded(&first, &svc);
    assert!(
        snapshots(&a).contains(&snap1.to_string()),
        "{snap1} not listed"
    );
    assert_eq!(figure(f1, "bytes_read"), 64 * MIB);
    assert!(figure(f1, "bytes_sent") >= 64 * MIB, "{f1}");
    assert!(figure(f1, "peak_rss_bytes") > 0, "{f1}");
    assert!(f1["cpu_seconds"].as_f64().expect("cpu") > 0.0, "{f1}");
    assert_eq!(f1["consistency"], "live");
    log(format!("first sync: {snap1}: {f1}"));

    // 1% changed (640 KiB inside one chunk): only that chunk is sent again.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(src.p("disk.img"))
        .expect("image");
    write_region(
        &f,
        5 * CHUNK + 4096,
        640 * 1024,
        "random",
        &mut Rng::new(99),
    );
    f.sync_all().expect("sync");
    sync_now(&a, "m");
    let second = finished(&a, &svc, "m", 2, Duration::from_secs(120));
    let (snap2, f2) = succeeded(&second, &svc);
    assert_ne!(snap1, snap2);
    let sent = figure(f2, "bytes_sent");
    assert!(
        sent <= CHUNK + 64 * 1024,
        "sent {sent} bytes for one changed chunk: {f2}"
    );
    log(format!("second sync after 1% changed: sent {sent} bytes"));

    // SIGTERM: exits 0. Without the token the restarted service still syncs.
    assert!(svc.terminate().success(), "SIGTERM exit:\n{}", svc.log());
    assert!(svc.log().contains("task") && svc.log().contains("succeeded: snapshot"));
    std::fs::remove_file(src.p("enroll.token")).expect("remove token");
    let svc = src.start(&a);
    sync_now(&a, "m");
    let third = finished(&a, &svc, "m", 3, Duration::from_secs(120));
    let (_, f3) = succeeded(&third, &svc);
    assert!(
        figure(f3, "bytes_sent") <= 64 * 1024,
        "nothing changed: {f3}"
    );
    assert_eq!(
        std::fs::read_to_string(&cred).expect("credential"),
        text,
        "enrolled again"
    );
}

#[test]
fn an_appliance_restart_during_a_sync_is_absorbed_by_the_retries() {
    let mut a = Appliance::start();
    // 96 MiB at 24 MB/s: about 4 s of upload, long enough to restart the appliance in it.
    let src = Source::new(&a, "m", 96, "24MB");
    let svc = src.start(&a);
    sync_now(&a, "m");
    let t = Instant::now();
    loop {
        let v = show(&a, "m");
        if v["task"]["state"] == "running" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no running task: {v:#}\n{}",
            svc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    a.kill();
    log("appliance stopped during the sync");
    std::thread::sleep(Duration::from_secs(3));
    a.serve();
    // The cut (3 s) is shorter than the retry window (60 s): the same task succeeds.
    let task = finished(&a, &svc, "m", 1, Duration::from_secs(120));
    let (snap, f) = succeeded(&task, &svc);
    assert_eq!(figure(f, "bytes_read"), 96 * MIB, "{f}");
    assert!(snapshots(&a).contains(&snap.to_string()));
    assert!(
        svc.log().contains("retrying"),
        "the sync never met the restart:\n{}",
        svc.log()
    );
}

#[test]
fn a_ca_that_is_not_the_appliances_is_refused_naming_the_file() {
    let a = Appliance::start();
    let src = Source::new(&a, "m", 8, "off");
    let other = tempfile::tempdir().expect("tempdir");
    let other_data = other.path().join("data");
    ok(a.appliance()
        .args(["init", "--json", "--data"])
        .arg(&other_data));
    let wrong_ca = other_data.join("ca.pem");
    let config = src.write_config(&a, &wrong_ca);
    let mut svc = Service::start(&config, &src.p("service.log"));
    let status = svc.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the service ran with a wrong CA");
    let log = svc.log();
    assert!(log.contains(&wrong_ca.display().to_string()), "{log}");
    assert!(log.contains("vouches for"), "{log}");
    assert!(
        !src.p("state/source.cred").exists(),
        "enrolled through a wrong CA"
    );

    // A config naming a disk that does not exist is refused before anything is sent.
    let bad = std::fs::read_to_string(&config)
        .expect("config")
        .replace("disk.img", "missing.img");
    std::fs::write(&config, bad).expect("config");
    let err = fails(
        Command::new(bin("backup-agent"))
            .args(["service", "--config"])
            .arg(&config),
    );
    assert!(
        err.contains("disk[0].path") && err.contains("missing.img"),
        "{err}"
    );
}
