//! Resource limits of the real `appliance serve`: peak memory with six concurrent 512 MiB index
//! uploads (the audit measured 3.2 GB before they were streamed), a flood of connections over
//! the cap, a slowloris head through `openssl s_client`, a backup and a restore that succeed
//! through route limits of one (the agents retry the 503s), and the modes of every store file.

mod common;

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferry_store::index_file::scan_index;

const MIB: u64 = 1 << 20;

/// Restart the appliance's `serve` with extra flags; returns the child (killed on drop by the
/// caller).
fn serve_with(a: &mut Appliance, flags: &[&str]) -> Child {
    a.kill();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.dir.path().join("serve.log"))
        .expect("log");
    let child = Command::new(bin("appliance"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", a.port),
            "--data",
        ])
        .arg(a.data())
        .args(flags)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn appliance serve");
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", a.port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn curl(a: &Appliance, args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--cacert"])
        .arg(a.ca())
        .args(["-H", &format!("Authorization: Bearer {}", a.admin)])
        .args(args);
    c
}

/// A 512 MiB index file (16 M - 1 zero entries at 4 MiB chunks: a 64 TiB disk), sparse.
fn big_index(path: &Path) -> u64 {
    const CHUNK: u64 = 4 * MIB;
    let count = (512 * MIB - 32) / 32;
    let mut head = Vec::new();
    head.extend_from_slice(b"FERRYIDX");
    head.extend_from_slice(&1u32.to_le_bytes());
    head.extend_from_slice(&(CHUNK as u32).to_le_bytes());
    head.extend_from_slice(&(count * CHUNK).to_le_bytes());
    head.extend_from_slice(&count.to_le_bytes());
    let mut f = fs::File::create(path).unwrap();
    f.write_all(&head).unwrap();
    f.set_len(32 + 32 * count).unwrap();
    32 + 32 * count
}

#[test]
fn six_concurrent_512_mib_index_uploads_keep_the_server_small() {
    if !have("curl") {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    let mut a = Appliance::start_local(); // local only: it checks the files of tmp/<session>/
    let server = Killed(serve_with(&mut a, &["--max-index-uploads", "6"]));
    let pid = server.0.id();
    let index = a.dir.path().join("big.index");
    let len = big_index(&index);
    let out = ok(&mut curl(
        &a,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"machine":"big","chunk_size":4194304}"#,
            &format!("{}/api/v1/backups", a.url()),
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("session json");
    let session = v["session"].as_str().expect("session id").to_string();
    let base_kib = status_kib(pid, "VmRSS");

    let t = Instant::now();
    let uploads: Vec<Child> = (0..6)
        .map(|i| {
            curl(
                &a,
                &[
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-T",
                    index.to_str().unwrap(),
                    &format!("{}/api/v1/backups/{session}/disks/d{i}/index", a.url()),
                ],
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl")
        })
        .collect();
    for u in uploads {
        let out = u.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "204",
            "upload answered"
        );
    }
    let secs = t.elapsed().as_secs_f64();
    let peak_kib = status_kib(pid, "VmHWM");
    log(format!(
        "6 x {} MiB index uploads in {secs:.1}s: server RSS {} MiB before, peak {} MiB \
         (audit before streaming: 3.2 GB)",
        len >> 20,
        base_kib >> 10,
        peak_kib >> 10
    ));
    for i in 0..6 {
        let stored = a
            .data()
            .join("tmp")
            .join(&session)
            .join(format!("d{i}.index"));
        assert_eq!(fs::metadata(&stored).unwrap().len(), len);
    }
    assert!(peak_kib < 256 << 10, "peak RSS {} MiB", peak_kib >> 10);

    // Commit the six disks (the commit reads each index a block at a time), then download the
    // six indexes at once (streamed from the files).
    let file = fs::File::open(&index).unwrap();
    let scan = scan_index(file, len, &index, "the test index", |_| Ok(())).unwrap();
    let disks: Vec<serde_json::Value> = (0..6)
        .map(|i| {
            serde_json::json!({
                "name": format!("d{i}"), "size": scan.header.disk_size,
                "logical_sector_size": 512, "source": "/dev/null", "source_format": "raw",
                "index_digest": scan.digest.to_hex(),
                "chunks": {"data": scan.data, "zero": scan.zero, "unused": scan.unused},
            })
        })
        .collect();
    let commit = serde_json::json!({"disks": disks, "agent": "limits-test"}).to_string();
    let t = Instant::now();
    let out = ok(&mut curl(
        &a,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &commit,
            &format!("{}/api/v1/backups/{session}/commit", a.url()),
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
    let snapshot = v["snapshot"].as_str().expect("snapshot id").to_string();
    let commit_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // Four at once is the route's limit; the other two wait up to its queue time (10 s) and get
    // 503 + Retry-After when the first ones take longer (a loaded machine): they try again, as
    // agents do.
    std::thread::scope(|s| {
        for i in 0..6 {
            let (a, snapshot) = (&a, &snapshot);
            s.spawn(move || {
                let url = format!("{}/api/v1/snapshots/{snapshot}/disks/d{i}/index", a.url());
                let mut got = String::new();
                for _ in 0..5 {
                    let out = curl(
                        a,
                        &[
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code} %{size_download}",
                            &url,
                        ],
                    )
                    .output()
                    .expect("curl");
                    got = String::from_utf8_lossy(&out.stdout).into_owned();
                    if !got.starts_with("503 ") {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
                assert_eq!(got, format!("200 {len}"));
            });
        }
    });
    let peak_kib = status_kib(pid, "VmHWM");
    log(format!(
        "commit of the 6 disks in {commit_secs:.1}s, 6 concurrent index downloads in {:.1}s: \
         server peak RSS over uploads, commit and downloads {} MiB",
        t.elapsed().as_secs_f64(),
        peak_kib >> 10
    ));
    assert!(peak_kib < 256 << 10, "peak RSS {} MiB", peak_kib >> 10);
}

#[test]
fn a_connection_flood_over_the_cap_costs_no_memory_and_the_server_still_serves() {
    let mut a = Appliance::start();
    let server = Killed(serve_with(
        &mut a,
        &["--max-connections", "32", "--tls-handshake-timeout", "60s"],
    ));
    let pid = server.0.id();
    let before = status_kib(pid, "VmRSS");
    // 600 connections that never start TLS: 32 are held, the rest closed at once.
    let flood: Vec<TcpStream> = (0..600)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", a.port)).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let fds = open_fds(pid);
    let during = status_kib(pid, "VmRSS");
    log(format!(
        "{} connections opened against a cap of 32: server holds {fds} fds, RSS {} -> {} MiB",
        flood.len(),
        before >> 10,
        during >> 10
    ));
    assert!(fds < 32 + 40, "{fds} open fds");
    assert!(
        during < before + (32 << 10),
        "RSS grew from {before} to {during} KiB"
    );
    drop(flood);
    // Once the flood is gone, clients are served again.
    std::thread::sleep(Duration::from_millis(500));
    let hello = ok(&mut curl(&a, &[&format!("{}/api/v1/hello", a.url())]));
    assert!(hello.contains("\"api\":1"), "{hello}");
}

#[test]
fn slowloris_through_openssl_is_closed_at_the_header_timeout() {
    if !have("openssl") {
        eprintln!("SKIP: openssl is not installed");
        return;
    }
    let mut a = Appliance::start();
    let _server = Killed(serve_with(&mut a, &["--header-timeout", "3s"]));
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-quiet", "-alpn", "http/1.1", "-CAfile"])
        .arg(a.ca())
        .args(["-connect", &format!("127.0.0.1:{}", a.port)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = s_client.stdin.take().unwrap();
    let t = Instant::now();
    // Half a head; stdin stays open, so only the server can end the connection.
    stdin
        .write_all(b"GET /api/v1/hello HTTP/1.1\r\nHost: appliance\r\nX-Slow: ")
        .unwrap();
    stdin.flush().unwrap();
    let closed = loop {
        if s_client.try_wait().unwrap().is_some() {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(20), "slowloris kept open");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    log(format!(
        "slowloris (openssl s_client, half a head) closed after {closed:?}"
    ));
    assert!(closed >= Duration::from_secs(2), "{closed:?}");
}

#[test]
fn backup_and_restore_succeed_through_route_limits_of_one_and_store_files_are_private() {
    let mut a = Appliance::start();
    let _server = Killed(serve_with(
        &mut a,
        &[
            "--max-chunk-uploads",
            "1",
            "--max-chunk-downloads",
            "1",
            "--max-index-uploads",
            "1",
            "--queue-wait",
            "0",
        ],
    ));
    let src = a.dir.path().join("disk");
    make_image(&src, 96 * MIB, 7);
    let b = a.backup("web01", &[&src]);
    let snapshot = b["snapshot"].as_str().expect("snapshot id").to_string();
    let dst = a.dir.path().join("dst.img");
    a.restore(&snapshot, &[("disk", &dst)], &[]);
    cmp(&src, &dst);
    let served = fs::read_to_string(a.dir.path().join("serve.log")).unwrap();
    let refused = served.matches("busy: answering 503").count();
    log(format!(
        "backup + restore through limits of 1: {refused} requests answered 503, retried"
    ));
    assert!(
        refused > 0,
        "the limits were never reached: the test proves nothing"
    );

    // Every file the store made is private, every directory 0700.
    let mut files = 0;
    let mut stack = vec![a.data()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o777;
        if m.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", p.display());
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
            files += 1;
        }
    }
    log(format!(
        "{files} store files: none readable by group or others; directories 0700"
    ));
}
