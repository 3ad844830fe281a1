//! A throw-away PostgreSQL for tests: `scripts/pg` (Debian's server, installed by scripts/setup)
//! on a free port in a temporary directory, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestPg {
    dir: tempfile::TempDir,
    /// `postgres://ferry:PASSWORD@127.0.0.1:PORT/ferry`
    pub url: String,
}

fn scripts_pg() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg")
}

impl TestPg {
    pub fn start() -> TestPg {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let out = Command::new("bash")
            .arg(scripts_pg())
            .arg("start")
            .arg(dir.path())
            .args(["--port", &port.to_string()])
            .output()
            .expect("run scripts/pg");
        assert!(
            out.status.success(),
            "scripts/pg start failed (PostgreSQL comes from scripts/setup):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("env")).expect("DIR/env");
        let url = env
            .lines()
            .find_map(|l| l.strip_prefix("export FERRY_PG_URL="))
            .map(|v| v.trim_matches('\'').to_string())
            .expect("FERRY_PG_URL in DIR/env");
        TestPg { dir, url }
    }

    /// Its `DIR/env` (what `--pg-url-file` and `FERRY_TEST_PG_ENV` take).
    pub fn env_file(&self) -> PathBuf {
        self.dir.path().join("env")
    }

    /// The CA that signs its certificate (what `--pg-ca` takes).
    pub fn ca(&self) -> PathBuf {
        ca_of(&self.env_file()).expect("scripts/pg writes FERRY_PG_CA to DIR/env")
    }
}

/// `FERRY_PG_CA` of a `scripts/pg` env file: the CA its server's certificate is signed by
/// (the server takes TLS connections only).
pub fn ca_of(env: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(env)
        .unwrap_or_else(|e| panic!("read the PostgreSQL env file {}: {e}", env.display()));
    ferry_store::data::s3::parse_env_lines(&text)
        .into_iter()
        .find(|(k, v)| k == "FERRY_PG_CA" && !v.is_empty())
        .map(|(_, v)| PathBuf::from(v))
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(scripts_pg())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// The env file of a running PostgreSQL: `FERRY_TEST_PG_ENV`'s, or that of one started here
/// (kept running while the returned value lives).
pub fn env_file_or_start() -> (PathBuf, Option<TestPg>) {
    if let Some(env) = std::env::var_os("FERRY_TEST_PG_ENV") {
        return (PathBuf::from(env), None);
    }
    let pg = TestPg::start();
    (pg.env_file(), Some(pg))
}
