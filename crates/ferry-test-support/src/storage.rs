//! The data backend tests run on: `FERRY_TEST_STORAGE=local` (the default) or `s3`. With `s3`,
//! `FERRY_TEST_S3_ENV` names a shell-style `KEY=VALUE` file describing a running cluster (what
//! `scripts/s3-cluster start DIR` writes to `DIR/env`): `FERRY_S3_ENDPOINTS` (comma-separated),
//! `FERRY_S3_BUCKET`, `FERRY_S3_REGION`, and `FERRY_S3_CREDENTIALS` (a 0600 file) or
//! `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY`. Every store gets a fresh random key prefix,
//! so tests sharing the bucket never see each other's objects.
//!
//! The records backend likewise: `FERRY_TEST_RECORDS=local` (the default) or `pg`. With `pg`,
//! `FERRY_TEST_PG_ENV` names the env file of a running PostgreSQL (`scripts/pg start DIR`
//! writes `DIR/env`, mode 0600, `FERRY_PG_URL=postgres://…`); the store names that file as its
//! `--pg-url-file`, and every store gets a fresh schema, so tests sharing the database never
//! see each other's records.
//!
//! Tests about the local directory itself (file modes, mtimes, flocks, bytes edited in
//! `chunks/`, record files read directly) use local backends explicitly and run the same on
//! any setting.

use std::path::PathBuf;
use std::sync::OnceLock;

use ferry_store::config::{Backends, PostgresConfig, RecordsConfig, S3Config, Storage};
use ferry_store::data::s3::parse_env_lines;

/// Which backend `FERRY_TEST_STORAGE` asks for.
pub fn is_s3() -> bool {
    match std::env::var("FERRY_TEST_STORAGE").as_deref() {
        Ok("s3") => true,
        Ok("local") | Ok("") | Err(_) => false,
        Ok(other) => panic!("FERRY_TEST_STORAGE={other}: use local or s3"),
    }
}

/// Which records backend `FERRY_TEST_RECORDS` asks for.
pub fn is_pg() -> bool {
    match std::env::var("FERRY_TEST_RECORDS").as_deref() {
        Ok("pg") => true,
        Ok("local") | Ok("") | Err(_) => false,
        Ok(other) => panic!("FERRY_TEST_RECORDS={other}: use local or pg"),
    }
}

/// Where a new test store keeps its data and its records: [`test_data_storage`] and
/// [`test_records`].
pub fn test_storage() -> Backends {
    Backends {
        storage: test_data_storage(),
        records: test_records(),
    }
}

/// The storage of a new test store: local, or the cluster of `FERRY_TEST_S3_ENV` under a
/// prefix no other store uses.
pub fn test_data_storage() -> Storage {
    if !is_s3() {
        return Storage::Local;
    }
    let cluster = cluster();
    let mut cfg = cluster.clone();
    let rand: [u8; 8] = std::array::from_fn(|_| fastrand_byte());
    cfg.prefix = format!("test-{}/", hex(&rand));
    Storage::S3(cfg)
}

/// The records of a new test store: local, or a fresh schema in the database of
/// `FERRY_TEST_PG_ENV`.
pub fn test_records() -> RecordsConfig {
    if !is_pg() {
        return RecordsConfig::Local;
    }
    let url_file = std::env::var_os("FERRY_TEST_PG_ENV")
        .map(PathBuf::from)
        .expect("FERRY_TEST_RECORDS=pg needs FERRY_TEST_PG_ENV=DIR/env of `scripts/pg start DIR`");
    let rand: [u8; 8] = std::array::from_fn(|_| fastrand_byte());
    RecordsConfig::Postgres(PostgresConfig {
        ca: crate::pg::ca_of(&url_file),
        url_file,
        schema: format!("t_{}", hex(&rand)),
        // Two test threads, each with a server and the test's own store: stay well inside the
        // test cluster's 50 connections.
        pool_size: Some(6),
    })
}

/// `appliance init` flags that make `backends` (none for the local directory).
pub fn init_args(backends: &Backends) -> Vec<String> {
    let mut args = Vec::new();
    if let RecordsConfig::Postgres(pg) = &backends.records {
        args.extend([
            "--records".to_string(),
            "postgres".into(),
            "--pg-url-file".into(),
            pg.url_file.display().to_string(),
            "--pg-schema".into(),
            pg.schema.clone(),
        ]);
        if let Some(ca) = &pg.ca {
            args.extend(["--pg-ca".into(), ca.display().to_string()]);
        }
    }
    let Storage::S3(c) = &backends.storage else {
        return args;
    };
    args.extend(["--storage".to_string(), "s3".into()]);
    for e in &c.endpoints {
        args.extend(["--s3-endpoint".into(), e.clone()]);
    }
    args.extend([
        "--s3-bucket".into(),
        c.bucket.clone(),
        "--s3-region".into(),
        c.region.clone(),
        "--s3-prefix".into(),
        c.prefix.clone(),
        format!("--s3-path-style={}", c.path_style),
    ]);
    if let Some(p) = &c.credentials {
        args.extend(["--s3-credentials".into(), p.display().to_string()]);
    }
    if let Some(p) = &c.ca {
        args.extend(["--s3-ca".into(), p.display().to_string()]);
    }
    args
}

fn cluster() -> &'static S3Config {
    static CLUSTER: OnceLock<S3Config> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let path = std::env::var_os("FERRY_TEST_S3_ENV").map(PathBuf::from).expect(
            "FERRY_TEST_STORAGE=s3 needs FERRY_TEST_S3_ENV=DIR/env of `scripts/s3-cluster start DIR`",
        );
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read FERRY_TEST_S3_ENV {}: {e}", path.display()));
        let vars = parse_env_lines(&text);
        let get = |k: &str| {
            vars.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let need = |k: &str| {
            get(k).unwrap_or_else(|| panic!("{} does not set {k}", path.display()))
        };
        let credentials = match get("FERRY_S3_CREDENTIALS") {
            Some(p) => PathBuf::from(p),
            None => private_credentials(
                &need("AWS_ACCESS_KEY_ID"),
                &need("AWS_SECRET_ACCESS_KEY"),
            ),
        };
        S3Config {
            endpoints: need("FERRY_S3_ENDPOINTS")
                .split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
            bucket: need("FERRY_S3_BUCKET"),
            region: get("FERRY_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            prefix: String::new(),
            path_style: true,
            credentials: Some(credentials),
            ca: get("FERRY_S3_CA").map(PathBuf::from),
        }
    })
}

/// The keys of the env file written once per test process to a private file (the store reads
/// credentials from a file or its environment; tests must not change the environment).
fn private_credentials(id: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir().join(format!("ferry-test-s3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("credentials dir");
    let path = dir.join("credentials");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .expect("credentials file");
    std::io::Write::write_all(
        &mut f,
        format!("AWS_ACCESS_KEY_ID={id}\nAWS_SECRET_ACCESS_KEY={secret}\n").as_bytes(),
    )
    .expect("write credentials");
    path
}

/// A random byte from the OS (no RNG crate for one prefix per store).
fn fastrand_byte() -> u8 {
    use std::io::Read;
    let mut b = [0u8; 1];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b[0]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
