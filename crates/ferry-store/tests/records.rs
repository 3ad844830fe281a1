//! The records contract (crates/ferry-store/src/meta), run on both backends: files in a
//! directory, and a real PostgreSQL started by scripts/pg (Debian's server, installed by
//! scripts/setup) in a temporary directory. Locks are checked by concurrent read-modify-write
//! cycles that lose updates without them, across threads and, on PostgreSQL, across two
//! independent pools as two nodes would hold.

use std::process::Command;
use std::sync::Arc;
use std::thread;

use ferry_store::meta::{Collection, LocalRecords, PgConfig, PgRecords, Records, SCHEMA_VERSION};
use ferry_store::StoreError;
use ferry_test_support::pg::TestPg;

/// A throw-away PostgreSQL cluster (stopped on drop) and the store's view of it.
struct Pg(TestPg);

impl Pg {
    fn start() -> Pg {
        Pg(TestPg::start())
    }

    fn records(&self, schema: &str) -> PgRecords {
        PgRecords::open(&self.config(schema)).expect("open the records on PostgreSQL")
    }

    fn config(&self, schema: &str) -> PgConfig {
        PgConfig {
            url: self.0.url.clone(),
            schema: schema.into(),
            pool_size: 4,
            ca: Some(self.0.ca()),
        }
    }

    fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([&self.0.url, "-tAc", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn body(n: u64) -> Vec<u8> {
    format!("{{\"n\": {n}}}").into_bytes()
}

fn read_n(r: &dyn Records, id: &str) -> u64 {
    let b = r.get(Collection::Jobs, id).expect("get").unwrap_or(body(0));
    let v: serde_json::Value = serde_json::from_slice(&b).expect("JSON");
    v["n"].as_u64().expect("n")
}

/// Records behave alike on every backend.
fn contract(r: &dyn Records) {
    let c = Collection::Agents;
    assert_eq!(r.get(c, "a1").expect("get"), None);
    assert_eq!(r.ids(c).expect("ids"), Vec::<String>::new());
    r.put(c, "b2", &body(2)).expect("put");
    r.put(c, "a1", &body(1)).expect("put");
    r.put(c, "a1", &body(3)).expect("replace");
    let got: serde_json::Value =
        serde_json::from_slice(&r.get(c, "a1").expect("get").expect("present")).expect("JSON");
    assert_eq!(got["n"], 3);
    assert_eq!(r.ids(c).expect("ids"), ["a1", "b2"]);
    // Collections do not see each other.
    assert_eq!(
        r.ids(Collection::Sources).expect("ids"),
        Vec::<String>::new()
    );

    // A record's log: appended in order, sized, removed with the record.
    assert_eq!(r.log_size(c, "a1").expect("size"), 0);
    assert_eq!(r.read_log(c, "a1").expect("log"), b"");
    assert_eq!(r.append_log(c, "a1", b"{\"e\":1}\n").expect("append"), 8);
    assert_eq!(r.append_log(c, "a1", b"{\"e\":2}\n").expect("append"), 16);
    assert_eq!(r.read_log(c, "a1").expect("log"), b"{\"e\":1}\n{\"e\":2}\n");
    assert!(r.delete(c, "a1").expect("delete"));
    assert!(!r.delete(c, "a1").expect("delete again"));
    assert_eq!(r.get(c, "a1").expect("get"), None);
    assert_eq!(r.log_size(c, "a1").expect("size"), 0);
    assert_eq!(r.ids(c).expect("ids"), ["b2"]);

    // Nested locks of different collections, released in any order.
    let jobs = r.lock(Collection::Jobs).expect("lock jobs");
    let agents = r.lock(Collection::Agents).expect("lock agents");
    r.put(Collection::Jobs, "j", &body(7))
        .expect("put under locks");
    drop(jobs);
    assert_eq!(read_n(r, "j"), 7);
    drop(agents);
}

/// `threads` threads, each doing `rounds` read-increment-write cycles of one record under the
/// jobs lock, each thread on its own handle (`handles[i % len]`).
fn hammer(handles: &[Arc<dyn Records>], threads: usize, rounds: u64) -> u64 {
    let id = "counter";
    handles[0]
        .put(Collection::Jobs, id, &body(0))
        .expect("reset");
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let r = Arc::clone(&handles[i % handles.len()]);
            thread::spawn(move || {
                for _ in 0..rounds {
                    let _lock = r.lock(Collection::Jobs).expect("lock");
                    let n = read_n(r.as_ref(), id);
                    // Widen the window a lost update needs.
                    thread::yield_now();
                    r.put(Collection::Jobs, id, &body(n + 1)).expect("put");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    read_n(handles[0].as_ref(), id)
}

#[test]
fn records_on_files_keep_the_contract_and_lock_across_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = LocalRecords::new(dir.path());
    contract(&r);
    // The layout docs/store.md describes.
    assert!(dir.path().join("agents/b2.json").is_file());
    let handles: Vec<Arc<dyn Records>> = vec![
        Arc::new(LocalRecords::new(dir.path())),
        Arc::new(LocalRecords::new(dir.path())),
    ];
    assert_eq!(hammer(&handles, 4, 50), 200);
}

#[test]
fn records_on_postgresql_keep_the_contract_and_lock_across_nodes() {
    let pg = Pg::start();
    let r = pg.records("store_a");
    assert_eq!(r.schema_version().expect("version"), SCHEMA_VERSION);
    contract(&r);
    // What a node sees through psql, a tool we did not write.
    assert_eq!(
        pg.psql("SELECT body->>'n' FROM store_a.records WHERE collection = 'agents' AND id = 'b2'"),
        "2"
    );

    // Two pools on one schema are two nodes: updates under the lock are never lost.
    let handles: Vec<Arc<dyn Records>> = vec![Arc::new(r.clone()), Arc::new(pg.records("store_a"))];
    assert_eq!(hammer(&handles, 4, 50), 200);

    // Another store in the same database sees none of it, and its locks are its own.
    let other = pg.records("store_b");
    assert_eq!(
        other.ids(Collection::Agents).expect("ids"),
        Vec::<String>::new()
    );
    let _held = r.lock(Collection::Jobs).expect("lock store_a's jobs");
    let t = thread::spawn(move || other.lock(Collection::Jobs).map(|_| ()).is_ok());
    assert!(
        t.join().expect("thread"),
        "store_b's jobs lock waited for store_a's"
    );

    // Opening again migrates nothing; a database newer than this binary is refused.
    assert_eq!(
        pg.records("store_a").schema_version().expect("version"),
        SCHEMA_VERSION
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM store_a.schema_migrations"),
        SCHEMA_VERSION.to_string()
    );
    pg.psql("INSERT INTO store_a.schema_migrations (version) VALUES (99)");
    let e = PgRecords::open(&pg.config("store_a")).expect_err("newer schema");
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    assert!(e.to_string().contains("version 99"), "{e}");

    // A schema name that is not a plain identifier never reaches SQL.
    let e = PgRecords::open(&pg.config("x; DROP TABLE records")).expect_err("bad schema");
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
}

/// The cluster takes TLS connections only (scripts/pg): with its CA a node connects; without a
/// CA, with another CA, with a URL asking for TLS but no CA, or with a CA file that holds no
/// certificate, the open fails naming the database and what to give.
#[test]
fn postgresql_connections_use_tls_verified_against_the_given_ca() {
    let pg = Pg::start();
    let good = pg.records("tls_ok");
    assert_eq!(good.schema_version().expect("version"), SCHEMA_VERSION);
    // Every connection of user ferry (the pool's, this psql's own) is encrypted.
    assert_eq!(
        pg.psql(
            "SELECT count(*) FILTER (WHERE NOT s.ssl) || '/' || count(*) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'ferry'"
        )
        .split('/')
        .next(),
        Some("0")
    );

    let open_err = |cfg: PgConfig| match PgRecords::open(&cfg) {
        Err(e @ StoreError::Database { .. }) => e.to_string(),
        Err(e) => panic!("not a database error: {e}"),
        Ok(_) => panic!("opened with {cfg:?}"),
    };
    let plain = PgConfig {
        ca: None,
        ..pg.config("tls_plain")
    };
    let e = open_err(plain.clone());
    assert!(
        e.contains("pg_hba.conf refuses this node") && e.contains("--pg-ca"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=another CA", "-keyout"])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    let e = open_err(PgConfig {
        ca: Some(other_ca.clone()),
        ..pg.config("tls_other")
    });
    assert!(
        e.contains("not signed by the CA given with --pg-ca")
            && e.contains(&other_ca.display().to_string()),
        "{e}"
    );

    let e = open_err(PgConfig {
        url: format!("{}?sslmode=require", pg.0.url),
        ..plain
    });
    assert!(
        e.contains("sslmode=require") && e.contains("--pg-ca FILE"),
        "{e}"
    );

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = open_err(PgConfig {
        ca: Some(empty.clone()),
        ..pg.config("tls_empty")
    });
    assert!(
        e.contains(&format!("read the PostgreSQL CA file {}", empty.display()))
            && e.contains("no usable certificate"),
        "{e}"
    );
}
