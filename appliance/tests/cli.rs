//! The `appliance` binary: help lists every command, and the offline commands work on a fresh
//! store (init, token create, snapshots, prune, gc) and fail with a non-zero exit and advice.

use std::process::{Command, Output};

fn appliance(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn help_lists_every_command() {
    let help = stdout(&appliance(&["--help"]));
    for cmd in [
        "init",
        "serve",
        "token",
        "snapshots",
        "prune",
        "gc",
        "verify",
        "agents",
        "jobs",
        "sources",
        "webhook",
        "store",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    let sources = stdout(&appliance(&["sources", "--help"]));
    for cmd in ["list", "show", "set", "sync-now", "pause", "resume"] {
        assert!(sources.contains(cmd), "{cmd} missing from:\n{sources}");
    }
    let prune = stdout(&appliance(&["prune", "--help"]));
    assert!(prune.contains("--keep") && prune.contains("--dry-run"));
    let verify = stdout(&appliance(&["verify", "--help"]));
    for opt in ["--rate", "--resume", "--restart", "--json"] {
        assert!(verify.contains(opt), "{opt} missing from:\n{verify}");
    }
    let serve = stdout(&appliance(&["serve", "--help"]));
    for opt in [
        "--max-connections",
        "--tls-handshake-timeout",
        "--header-timeout",
        "--idle-timeout",
        "--max-chunk-uploads",
        "--max-chunk-downloads",
        "--max-index-uploads",
        "--queue-wait",
    ] {
        assert!(serve.contains(opt), "{opt} missing from:\n{serve}");
    }
    let create = stdout(&appliance(&["jobs", "create", "--help"]));
    for opt in [
        "--agent",
        "--mac",
        "--snapshot",
        "--map",
        "--then",
        "--overwrite",
    ] {
        assert!(create.contains(opt), "{opt} missing from:\n{create}");
    }
}

#[test]
fn agents_and_jobs_on_a_fresh_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    stdout(&appliance(&["init", "--data", data]));
    let enroll = stdout(&appliance(&[
        "token", "create", "--data", data, "--role", "enroll",
    ]));
    assert_eq!(enroll.trim().len(), 64);
    // Agent credentials come only from enrolling.
    assert!(
        !appliance(&["token", "create", "--data", data, "--role", "agent"])
            .status
            .success()
    );
    assert_eq!(
        stdout(&appliance(&["agents", "--data", data, "--json"])).trim(),
        "[]"
    );
    assert_eq!(
        stdout(&appliance(&["jobs", "list", "--data", data, "--json"])).trim(),
        "[]"
    );
    let create = |args: &[&str]| {
        let mut all = vec![
            "jobs",
            "create",
            "--data",
            data,
            "--snapshot",
            "web01-20250101T000000Z",
        ];
        all.extend_from_slice(args);
        let o = appliance(&all);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(create(&["--mac", "52:54:00:00:00:01", "--map", "sda=auto"]).contains("snapshot"));
    assert!(create(&["--mac", "not-a-mac", "--map", "sda=auto"]).contains("not a MAC"));
    assert!(create(&["--mac", "52:54:00:00:00:01", "--map", "sda"]).contains("DISK=TARGET"));
    assert!(create(&["--map", "sda=auto"]).contains("--agent"));
    assert!(String::from_utf8_lossy(
        &appliance(&["jobs", "show", "--data", data, "job-00000000"]).stderr
    )
    .contains("no job"));
}

#[test]
fn offline_commands_on_a_fresh_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    let init: serde_json::Value =
        serde_json::from_str(&stdout(&appliance(&["init", "--data", data, "--json"]))).unwrap();
    assert_eq!(init["admin_token"].as_str().unwrap().len(), 64);
    let again = appliance(&["init", "--data", data]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds an appliance store"));

    let token = stdout(&appliance(&[
        "token", "create", "--data", data, "--role", "restore",
    ]));
    assert_eq!(token.trim().len(), 64);
    assert!(
        !appliance(&["token", "create", "--data", data, "--role", "root"])
            .status
            .success()
    );

    assert!(stdout(&appliance(&["snapshots", "--data", data])).starts_with("SNAPSHOT"));
    assert_eq!(
        stdout(&appliance(&["snapshots", "--data", data, "--json"])).trim(),
        "[]"
    );
    assert!(stdout(&appliance(&[
        "prune",
        "--data",
        data,
        "--machine",
        "web01",
        "--keep",
        "3",
        "--dry-run"
    ]))
    .contains("Nothing to remove"));
    assert!(!appliance(&[
        "prune",
        "--data",
        data,
        "--machine",
        "web01",
        "--keep",
        "11"
    ])
    .status
    .success());
    let gc: serde_json::Value =
        serde_json::from_str(&stdout(&appliance(&["gc", "--data", data, "--json"]))).unwrap();
    assert_eq!(gc["removed_chunks"], 0);
    let usage: serde_json::Value =
        serde_json::from_str(&stdout(&appliance(&["store", "--data", data, "--json"]))).unwrap();
    assert_eq!(
        (usage["chunks"].as_u64(), usage["dedup_ratio"].as_f64()),
        (Some(0), Some(0.0))
    );
    assert!(stdout(&appliance(&["store", "--data", data])).contains("deduplication 0.00x"));

    let missing = appliance(&[
        "snapshots",
        "--data",
        dir.path().join("nope").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("run `appliance init"));
}

#[test]
fn sources_are_configured_ahead_of_their_agent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    assert!(appliance(&["init", "--data", data]).status.success());
    assert!(stdout(&appliance(&["sources", "list", "--data", data])).contains("no source machines"));

    let missing = appliance(&["sources", "sync-now", "--data", data, "web1"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr).into_owned();
    assert!(
        err.contains("web1") && err.contains("appliance sources set web1"),
        "{err}"
    );

    let set = appliance(&[
        "sources",
        "set",
        "--data",
        data,
        "web1",
        "--interval",
        "6h",
        "--keep",
        "2",
        "--rate-limit",
        "1Gbit",
    ]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let shown = stdout(&set);
    assert!(
        shown.contains("every 6h") && shown.contains("keep 2"),
        "{shown}"
    );
    assert!(shown.contains("1 Gbit/s"), "{shown}");

    assert!(appliance(&["sources", "pause", "--data", data, "web1"])
        .status
        .success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&appliance(&[
        "sources", "show", "--data", data, "web1", "--json",
    ])))
    .unwrap();
    assert_eq!(v["state"], "not enrolled");
    assert_eq!(v["schedule"]["paused"], true);
    assert_eq!(v["schedule"]["interval_seconds"], 21_600);
    assert!(v.get("credential_hash").is_none());
    assert!(v["next_sync"].is_null());

    assert!(appliance(&["sources", "resume", "--data", data, "web1"])
        .status
        .success());
    assert!(appliance(&["sources", "sync-now", "--data", data, "web1"])
        .status
        .success());
    let list: serde_json::Value = serde_json::from_str(&stdout(&appliance(&[
        "sources", "list", "--data", data, "--json",
    ])))
    .unwrap();
    assert_eq!(list[0]["machine"], "web1");
    assert_eq!(list[0]["sync_now"], true);

    let bad = appliance(&[
        "sources",
        "set",
        "--data",
        data,
        "web1",
        "--interval",
        "10s",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("shortest is 60s"));
}

/// `serve` with `FERRY_LOG_FORMAT=json`: every stderr line is a JSON object (no colour codes:
/// stderr is a file), the request log among them; `/healthz` answers without a credential.
#[test]
fn serve_logs_json_lines_and_answers_healthz() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data_s = data.to_str().unwrap();
    stdout(&appliance(&["init", "--data", data_s]));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["serve", "--data", data_s, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("FERRY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let trust = ferry_test_support::https::load_trust(&data.join("ca.pem"));
    let c = ferry_test_support::https::Client::new(&trust, addr, Duration::from_secs(10)).at_root();
    assert_eq!(c.status_without_token("/healthz"), 200);
    // The request line is written after the response: wait for it.
    let mut lines = Vec::new();
    while start.elapsed() < Duration::from_secs(20) {
        let text = std::fs::read(&log).unwrap();
        lines = text.lines().map(Result::unwrap).collect::<Vec<_>>();
        if lines.iter().any(|l| l.contains("/healthz")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!lines.is_empty());
    let mut saw_request = false;
    for l in &lines {
        assert!(!l.contains('\u{1b}'), "a colour code in {l:?}");
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
        let msg = v["message"].as_str().unwrap_or_default();
        saw_request |= msg.starts_with("GET /healthz 200");
    }
    assert!(saw_request, "no request line in {lines:#?}");
}

/// `webhook set` generates and prints a secret, keeps it out of `show`, stores it 0600;
/// bad input is refused with advice; `test` reports a hook that cannot be reached; `remove`.
#[test]
fn webhook_set_show_test_remove() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    stdout(&appliance(&["init", "--data", data]));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{dead}/hook");
    let set = appliance(&[
        "webhook",
        "set",
        "--data",
        data,
        "--url",
        &url,
        "--attempts",
        "2",
        "--backoff",
        "10ms",
    ]);
    let secret = stdout(&set).trim().to_owned();
    assert_eq!(secret.len(), 64);
    assert!(String::from_utf8_lossy(&set.stderr).contains("plain HTTP"));
    let path = std::path::Path::new(data).join("webhook.json");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let show = stdout(&appliance(&["webhook", "show", "--data", data]));
    assert!(
        show.contains(&url) && show.contains("attempts 2") && !show.contains(&secret),
        "{show}"
    );
    let bad = appliance(&["webhook", "set", "--data", data, "--url", "ftp://x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("http:// or https://"));
    let short = dir.path().join("short");
    std::fs::write(&short, "tiny").unwrap();
    let bad = appliance(&[
        "webhook",
        "set",
        "--data",
        data,
        "--url",
        &url,
        "--secret-file",
        short.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least 16 characters"));
    // Nothing listens: the ping fails after its attempts, and says so.
    let test = appliance(&["webhook", "test", "--data", data]);
    assert!(!test.status.success());
    let err = String::from_utf8_lossy(&test.stderr);
    assert!(
        err.contains("deliver a ping") && err.contains("2 attempts failed"),
        "{err}"
    );
    stdout(&appliance(&["webhook", "remove", "--data", data]));
    assert!(!path.exists());
    assert!(stdout(&appliance(&["webhook", "show", "--data", data])).contains("no webhook"));
}
