//! Test harness: a real appliance in a temp dir on 127.0.0.1, the real agent binaries, and
//! deterministic disk images.

#![allow(dead_code)]

pub mod machine;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory of the workspace's built binaries (`cargo test --workspace` builds them first).
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("FERRY_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test exe path");
            // target/<profile>/deps/<test> -> target/<profile>
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf()
        });
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` (or cargo test --workspace) first",
        p.display()
    );
    p
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

/// Run and require success; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run and require failure; returns stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin: String,
    pub backup: String,
    pub restore: String,
    server: Option<Child>,
}

impl Appliance {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    /// The stored manifest.json of a snapshot, byte for byte, read through the store (on
    /// either backend).
    pub fn manifest_json(&self, snapshot: &str) -> String {
        ferry_store::Store::open(&self.data())
            .and_then(|s| s.signed_manifest(snapshot, ""))
            .unwrap_or_else(|e| panic!("read the manifest of {snapshot}: {e}"))
            .manifest
    }
    pub fn ca(&self) -> PathBuf {
        self.data().join("ca.pem")
    }
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// An appliance whose data and records are on the backends `FERRY_TEST_STORAGE` and
    /// `FERRY_TEST_RECORDS` name (local, a fresh prefix of the S3 cluster, a fresh schema of
    /// the PostgreSQL database; ferry_test_support::storage).
    pub fn start() -> Self {
        Self::start_on(&ferry_test_support::storage::test_storage())
    }

    /// An appliance on the local directory whatever `FERRY_TEST_STORAGE` and
    /// `FERRY_TEST_RECORDS` say: for tests that edit or inspect the files of `chunks/`,
    /// `snapshots/`, `tmp/` or `sessions/`.
    pub fn start_local() -> Self {
        Self::start_on(&ferry_store::config::Backends::default())
    }

    pub fn start_on(storage: &ferry_store::config::Backends) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = ok(Command::new(bin("appliance"))
            .args(["init", "--json", "--data"])
            .arg(&data)
            .args(ferry_test_support::storage::init_args(storage)));
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("init --json printed {out:?}: {e}"));
        let admin = v["admin_token"]
            .as_str()
            .expect("admin_token in init --json")
            .to_string();
        let token = |role: &str| {
            ok(Command::new(bin("appliance"))
                .args(["token", "create", "--role", role, "--data"])
                .arg(&data)
                .args(if role == "backup" {
                    &["--all-machines"][..]
                } else {
                    &[]
                }))
            .trim()
            .to_string()
        };
        let backup = token("backup");
        let restore = token("restore");
        let port = free_port();
        let mut a = Appliance {
            dir,
            port,
            admin,
            backup,
            restore,
            server: None,
        };
        a.serve();
        a
    }

    /// Serve the store in `dir`/data made from `from`'s (`appliance move-store`): the same
    /// tokens, a port of its own.
    pub fn serve_moved(dir: tempfile::TempDir, from: &Appliance) -> Self {
        let port = free_port();
        let mut a = Appliance {
            dir,
            port,
            admin: from.admin.clone(),
            backup: from.backup.clone(),
            restore: from.restore.clone(),
            server: None,
        };
        a.serve();
        a
    }

    /// Start (or restart) `appliance serve` and wait until it accepts connections.
    pub fn serve(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .expect("log");
        let child = Command::new(bin("appliance"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--data",
            ])
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn appliance serve");
        self.server = Some(child);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "appliance did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn appliance(&self) -> Command {
        Command::new(bin("appliance"))
    }

    /// `backup-agent backup` with this appliance's connection settings, uncapped (the 300 Mbit/s
    /// default would only slow the tests down; tests/throttle.rs passes its own cap, which
    /// overrides this one).
    pub fn backup_cmd(&self, machine: &str, disks: &[&Path]) -> Command {
        let mut c = Command::new(bin("backup-agent"));
        c.args([
            "backup",
            "--json",
            "--rate-limit",
            "0",
            "--appliance",
            &self.url(),
            "--token",
            &self.backup,
            "--machine",
            machine,
            "--ca",
        ])
        .arg(self.ca());
        for d in disks {
            c.arg("--disk").arg(d);
        }
        c
    }

    pub fn backup(&self, machine: &str, disks: &[&Path]) -> serde_json::Value {
        let out = ok(&mut self.backup_cmd(machine, disks));
        serde_json::from_str(&out).expect("backup --json")
    }

    pub fn restore_cmd(&self, snapshot: &str, targets: &[(&str, &Path)]) -> Command {
        let mut c = Command::new(bin("restore-agent"));
        c.args([
            "restore",
            "--json",
            "--retry-window",
            "60s",
            "--appliance",
            &self.url(),
            "--token",
            &self.restore,
            "--snapshot",
            snapshot,
            "--ca",
        ])
        .arg(self.ca());
        for (disk, dest) in targets {
            c.arg("--target").arg(format!("{disk}={}", dest.display()));
        }
        c
    }

    /// A new token of `role` (`appliance token create`; backup tokens for every machine).
    pub fn token(&self, role: &str) -> String {
        let all: &[&str] = if role == "backup" {
            &["--all-machines"]
        } else {
            &[]
        };
        self.token_with(role, all)
    }

    /// A new token of `role` with more `token create` arguments (`--machine web01`, ...).
    pub fn token_with(&self, role: &str, args: &[&str]) -> String {
        ok(Command::new(bin("appliance"))
            .args(["token", "create", "--role", role, "--data"])
            .arg(self.data())
            .args(args))
        .trim()
        .to_string()
    }

    /// `restore-agent agent` with this appliance's connection settings and a fake machine at `root`.
    pub fn agent_cmd(&self, token: &str, root: &Path) -> Command {
        let mut c = Command::new(bin("restore-agent"));
        c.args([
            "agent",
            "--retry-window",
            "60s",
            "--appliance",
            &self.url(),
            "--token",
            token,
            "--ca",
        ])
        .arg(self.ca())
        .arg("--root")
        .arg(root);
        c
    }

    /// Run `restore-agent agent --once` for the machine under `root` and approve it, as the
    /// operator does, once it has enrolled (by its MAC): an unapproved agent gets no job.
    pub fn run_agent_approved(&self, token: &str, root: &Path, mac: &str) -> Output {
        let child = self
            .agent_cmd(token, root)
            .arg("--once")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start restore-agent agent");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = run(self
                .appliance()
                .args(["agents", "approve", "--data"])
                .arg(self.data())
                .args(["--mac", mac]));
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the agent with MAC {mac} never enrolled: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        child
            .wait_with_output()
            .expect("wait for restore-agent agent")
    }

    pub fn restore(
        &self,
        snapshot: &str,
        targets: &[(&str, &Path)],
        extra: &[&str],
    ) -> serde_json::Value {
        let out = ok(self.restore_cmd(snapshot, targets).args(extra));
        serde_json::from_str(&out).expect("restore --json")
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Wait until something listens on `port`.
pub fn wait_listening(port: u16) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "appliance node on port {port} did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Another `appliance serve` node: on an [`Appliance`]'s store, or on a data directory of its
/// own. Killed when dropped.
pub struct Node {
    pub data: PathBuf,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    pub fn start(data: &Path, log: PathBuf) -> Node {
        let mut n = Node {
            data: data.to_path_buf(),
            port: free_port(),
            child: None,
            log,
        };
        n.serve();
        n
    }

    /// Start (or restart) it and wait until it listens.
    pub fn serve(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(bin("appliance"))
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data")
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn appliance serve");
        self.child = Some(child);
        wait_listening(self.port);
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// xorshift64*: fast deterministic bytes for test images.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Write `len` bytes at `off`: random, text-like (compressible) or a repeated block.
pub fn write_region(f: &std::fs::File, off: u64, len: usize, kind: &str, rng: &mut Rng) {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    match kind {
        "random" => rng.fill(&mut buf),
        "text" => {
            let words = [
                &b"restore "[..],
                b"kernel ",
                b"initramfs ",
                b"virtio ",
                b"chunk\n",
                b"ext4 ",
                b"grub ",
            ];
            let mut i = 0;
            while i < len {
                let w = words[(rng.next() % words.len() as u64) as usize];
                let n = w.len().min(len - i);
                buf[i..i + n].copy_from_slice(&w[..n]);
                i += n;
            }
        }
        "repeat" => {
            let mut block = vec![0u8; 1 << 20];
            rng.fill(&mut block);
            for c in buf.chunks_mut(block.len()) {
                let n = c.len();
                c.copy_from_slice(&block[..n]);
            }
        }
        _ => panic!("unknown region kind {kind}"),
    }
    f.write_all_at(&buf, off).expect("write region");
}

/// A disk image with random, text, repeated and zero regions; partition table written by the caller.
pub fn make_image(path: &Path, size: u64, seed: u64) {
    let f = std::fs::File::create(path).expect("create image");
    f.set_len(size).expect("size image");
    let mut rng = Rng::new(seed);
    const MIB: u64 = 1 << 20;
    // Leave the first 2 MiB for the partition table; fill the rest in a pattern of regions.
    let mut off = 2 * MIB;
    let kinds = ["random", "text", "zero", "repeat", "random", "zero", "text"];
    let mut k = 0;
    while off < size - 2 * MIB {
        let len = ((rng.next() % 48) + 8) * MIB / 2 + (rng.next() % 4096);
        let len = len.min(size - 2 * MIB - off);
        let kind = kinds[k % kinds.len()];
        if kind != "zero" {
            write_region(&f, off, len as usize, kind, &mut rng);
        }
        off += len;
        k += 1;
    }
    f.sync_all().expect("sync image");
}

pub fn cmp(a: &Path, b: &Path) {
    ok(Command::new("cmp").arg(a).arg(b));
}

pub fn sh(script: &str) -> String {
    ok(Command::new("sh").arg("-ec").arg(script))
}

pub fn log(msg: impl AsRef<str>) {
    let _ = writeln!(std::io::stderr(), "[test] {}", msg.as_ref());
}
