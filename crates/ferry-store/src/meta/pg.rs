//! Records in PostgreSQL, for several appliance nodes sharing one store.
//!
//! - One schema per store (`PgConfig::schema`), so one database may hold several stores (the
//!   tests do). Tables: `records` (a JSON document per collection and id), `record_logs`
//!   (appended chunks of a record's log), `chunk_catalogue` (an S3 store's chunks and marks,
//!   [`catalogue`]), `schema_migrations` (applied versions).
//! - Schema migrations are numbered SQL scripts applied in order at open, in one transaction
//!   holding a transaction advisory lock, so nodes starting together apply each once. A
//!   database newer than this binary is refused.
//! - A collection's lock is a session advisory lock (key: the schema's hash, the collection's
//!   number). A thread keeps one connection for all the locks it holds on a store and runs its
//!   reads and writes on that connection meanwhile: if the connection dies (and PostgreSQL drops
//!   its locks with it), the writes made under the lock fail too instead of going on
//!   unprotected. A thread takes at most one connection for its locks, taken before its first
//!   lock, so a full pool cannot deadlock threads that hold locks.
//! - TLS: with a CA ([`PgConfig::ca`]) every connection requires TLS (rustls) and verifies the
//!   server's certificate against that CA and the URL's host; without one, none is attempted (a
//!   URL asking for TLS is refused then, rather than half-honoured).

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::config::SslMode;
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Collection, RecordLock, Records};
use crate::error::{Result, StoreError};

/// How long a request waits for a connection (also at open): a database that is down answers
/// 503 after this, not after a minute.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

mod catalogue;

pub use catalogue::PgCatalogue;

/// The schema version this binary writes (the last of [`MIGRATIONS`]).
pub const SCHEMA_VERSION: i32 = 2;

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Append only: a released
/// script is never edited.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE records (
        collection text NOT NULL,
        id text NOT NULL,
        body jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (collection, id)
    );
    CREATE TABLE record_logs (
        collection text NOT NULL,
        id text NOT NULL,
        seq bigserial NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (collection, id, seq)
    );
",
    "
    CREATE TABLE chunk_catalogue (
        id bytea PRIMARY KEY CHECK (octet_length(id) = 32),
        len bigint NOT NULL CHECK (len >= 0),
        marked timestamptz NOT NULL
    );
",
];

/// Where the records live.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (or the key=value form libpq takes).
    pub url: String,
    /// The store's schema in that database: `[a-z_][a-z0-9_]*`, at most 63 bytes.
    pub schema: String,
    /// Connections per node.
    pub pool_size: u32,
    /// PEM CA certificate(s) that sign the server's certificate: TLS required and verified.
    pub ca: Option<std::path::PathBuf>,
}

impl fmt::Debug for PgConfig {
    // The URL may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// Run blocking PostgreSQL work from any thread. The `postgres` client drives each call (and
/// its close) on a runtime of its own, which tokio refuses to start on a thread that runs
/// async tasks: the server opens the store, and may drop it, inside its runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => f(),
        // Leaves the runtime context for the call (a no-op on spawn_blocking's threads).
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        // block_in_place is refused there: a thread of our own.
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
}

/// A client that closes off any async runtime ([`off_runtime`]): r2d2 drops connections
/// wherever the pool is dropped. `None` only while being dropped.
struct PgConn(Option<postgres::Client>);

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            off_runtime(move || drop(client));
        }
    }
}

impl From<postgres::Client> for PgConn {
    fn from(client: postgres::Client) -> PgConn {
        PgConn(Some(client))
    }
}

impl PgConn {
    fn client(&mut self) -> Result<&mut postgres::Client, ConnError> {
        self.0.as_mut().ok_or(ConnError::Closed)
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Pg(#[from] postgres::Error),
    /// Only while the connection is being dropped.
    #[error("the connection is closed")]
    Closed,
}

/// r2d2_postgres's manager, handing out [`PgConn`]s.
struct Manager(PostgresConnectionManager<MakeRustlsConnect>);

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnError;

    fn connect(&self) -> Result<PgConn, ConnError> {
        Ok(PgConn::from(self.0.connect()?))
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnError> {
        Ok(self.0.is_valid(conn.client()?)?)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.0.as_ref().is_none_or(|c| c.is_closed())
    }
}

type Conn = r2d2::PooledConnection<Manager>;

#[derive(Clone, Debug)]
pub struct PgRecords {
    inner: Arc<Inner>,
}

struct Inner {
    pool: r2d2::Pool<Manager>,
    schema: String,
    /// [`describe_target`], for errors.
    target: String,
    /// Told apart in [`HELD`] from other stores the same thread uses.
    instance: u64,
    /// First half of every lock key: the schema's.
    lock_space: i32,
    /// The chunk catalogue's node-side lock state ([`catalogue`]): one per open store.
    chunk_lock: catalogue::ChunkLock,
    /// To open the connection that holds the node's shared chunk lock, outside the pool.
    pg: postgres::Config,
    tls: MakeRustlsConnect,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {}", self.target)
    }
}

/// The connection a thread holds its locks on, per store.
struct Held {
    instance: u64,
    conn: Conn,
    locks: usize,
}

thread_local! {
    static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// What to check when no connection can be had.
const CONNECT_HINT: &str = "check that PostgreSQL is running and reachable from this node, and \
     the user, password and database in the appliance's --pg-url-file";

fn db_err<'a>(database: &'a str, op: &'a str) -> impl FnOnce(postgres::Error) -> StoreError + 'a {
    move |e| {
        let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>());
        let tls = io
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        // "db error" alone says nothing: the server's message.
        let what = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => e.to_string(),
        };
        let refused =
            e.code() == Some(&postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        let detail = if let Some(tls) = tls {
            format!(
                "TLS handshake: {tls}: the server's certificate is not signed by the CA given \
                 with --pg-ca, or does not name the host of the URL"
            )
        } else if refused {
            format!(
                "{what}: the server's pg_hba.conf refuses this node; if it accepts TLS \
                 connections only, give the CA that signs its certificate with --pg-ca"
            )
        } else if e.is_closed() || io.is_some() {
            // A closed or refused connection is the database being away, not a bad query.
            format!("{what}: {CONNECT_HINT}")
        } else {
            what
        };
        StoreError::Database {
            op: op.to_string(),
            database: database.to_string(),
            detail,
        }
    }
}

fn pool_err<'a>(database: &'a str, op: &'a str) -> impl FnOnce(r2d2::Error) -> StoreError + 'a {
    move |e| StoreError::Database {
        op: op.to_string(),
        database: database.to_string(),
        detail: format!("no connection within {CONNECT_TIMEOUT:?} ({e}): {CONNECT_HINT}"),
    }
}

/// The connector for `cfg`, with the URL's `sslmode` set to what it does (module doc).
fn tls_for(cfg: &PgConfig, pg: &mut postgres::Config, target: &str) -> Result<MakeRustlsConnect> {
    let err = |op: String, detail: String| StoreError::Database {
        op,
        database: target.to_string(),
        detail,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("set up TLS".into(), e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca {
        None if matches!(pg.get_ssl_mode(), SslMode::Require) => {
            return Err(err(
                "read the PostgreSQL URL".into(),
                "it asks for TLS (sslmode=require) but the appliance has no CA to verify the \
                 server with: give the CA that signs the server's certificate with --pg-ca FILE"
                    .into(),
            ));
        }
        // No TLS: the connector is never used.
        None => {
            pg.ssl_mode(SslMode::Disable);
        }
        Some(_) if matches!(pg.get_ssl_mode(), SslMode::Disable) => {
            return Err(err(
                "read the PostgreSQL URL".into(),
                "it says sslmode=disable but a CA is given (--pg-ca), which means TLS: \
                 remove one of them"
                    .into(),
            ));
        }
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let op = || format!("read the PostgreSQL CA file {}", path.display());
            let hint = "give --pg-ca a PEM file of CERTIFICATE blocks";
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| err(op(), format!("{e}; {hint}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(err(op(), format!("no usable certificate in it; {hint}")));
            }
            pg.ssl_mode(SslMode::Require);
        }
    }
    Ok(MakeRustlsConnect::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// "ferry at 127.0.0.1:5432, schema s": the URL without its user and password.
fn describe_target(pg: &postgres::Config, schema: &str) -> String {
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = pg.get_ports().get(i).or(pg.get_ports().first());
            port.map_or(host.clone(), |p| format!("{host}:{p}"))
        })
        .collect();
    format!(
        "database {} at {}, schema {schema}",
        pg.get_dbname().or(pg.get_user()).unwrap_or("?"),
        if hosts.is_empty() {
            "localhost".to_string()
        } else {
            hosts.join(",")
        }
    )
}

/// A schema name safe to splice into SQL (identifiers cannot be bound as parameters).
fn check_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let ok = schema.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "PostgreSQL schema {schema:?}: use lowercase letters, digits and _, starting with a \
             letter or _, at most 63 bytes"
        )))
    }
}

#[derive(Debug)]
struct SearchPath(String);

impl r2d2::CustomizeConnection<PgConn, ConnError> for SearchPath {
    fn on_acquire(&self, conn: &mut PgConn) -> Result<(), ConnError> {
        Ok(conn
            .client()?
            .batch_execute(&format!("SET search_path TO {}", self.0))?)
    }
}

impl PgRecords {
    /// Connect, create the schema if needed and bring it to [`SCHEMA_VERSION`].
    pub fn open(cfg: &PgConfig) -> Result<PgRecords> {
        check_schema(&cfg.schema)?;
        let mut pg = postgres::Config::from_str(&cfg.url).map_err(|e| StoreError::Database {
            op: "read the PostgreSQL URL".into(),
            database: format!("(schema {})", cfg.schema),
            // Not the URL: it holds the password.
            detail: format!("{e}: write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE"),
        })?;
        let mut target = describe_target(&pg, &cfg.schema);
        let tls = tls_for(cfg, &mut pg, &target)?;
        if let Some(ca) = &cfg.ca {
            target.push_str(&format!(" (TLS, CA {})", ca.display()));
        }
        // One connection first: the pool reports a failed connect as a timeout, without why
        // (refused, TLS, authentication), which is what the operator needs.
        let first = {
            let (pg, tls) = (pg.clone(), tls.clone());
            off_runtime(move || pg.connect(tls).map(PgConn::from))
        };
        drop(first.map_err(db_err(&target, "connect"))?);
        let pool = r2d2::Pool::builder()
            .max_size(cfg.pool_size.max(2))
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .connection_customizer(Box::new(SearchPath(cfg.schema.clone())))
            // Failed connects are in the errors returned; r2d2 would also log each to stderr.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(Manager(PostgresConnectionManager::new(
                pg.clone(),
                tls.clone(),
            )))
            .map_err(pool_err(&target, "connect"))?;
        let digest = blake3::hash(format!("ferry records\0{}", cfg.schema).as_bytes());
        let [a, b, c, d, ..] = *digest.as_bytes();
        let records = PgRecords {
            inner: Arc::new(Inner {
                pool,
                schema: cfg.schema.clone(),
                target,
                instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
                lock_space: i32::from_le_bytes([a, b, c, d]),
                chunk_lock: catalogue::ChunkLock::default(),
                pg,
                tls,
            }),
        };
        off_runtime(|| records.migrate())?;
        Ok(records)
    }

    /// The schema version the database is at after [`PgRecords::open`].
    pub fn schema_version(&self) -> Result<i32> {
        self.with_conn("read the schema version", |c| {
            c.query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .map(|r| r.get(0))
        })
    }

    fn migrate(&self) -> Result<()> {
        let schema = &self.inner.schema;
        let target = &self.inner.target;
        let op = "apply the schema migrations";
        let mut conn = self.inner.pool.get().map_err(pool_err(target, op))?;
        let client = conn.client().map_err(|e| StoreError::Database {
            op: op.to_string(),
            database: target.clone(),
            detail: e.to_string(),
        })?;
        let mut tx = client.transaction().map_err(db_err(target, op))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, 0)",
            &[&self.inner.lock_space],
        )
        .map_err(db_err(target, op))?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             SET LOCAL search_path TO {schema};
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .map_err(db_err(target, op))?;
        let at: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(db_err(target, op))?
            .get(0);
        if at > SCHEMA_VERSION {
            return Err(StoreError::Conflict(format!(
                "PostgreSQL schema {schema} is at version {at}, newer than this appliance \
                 understands ({SCHEMA_VERSION}): run the newer appliance on every node"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(at as usize) {
            let version = i as i32 + 1;
            tx.batch_execute(sql).map_err(db_err(target, op))?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&version],
            )
            .map_err(db_err(target, op))?;
            tracing::info!("PostgreSQL schema {schema}: migrated to version {version}");
        }
        tx.commit().map_err(db_err(target, op))
    }

    fn key(&self, c: Collection) -> (i32, i32) {
        (self.inner.lock_space, c.lock_owner().lock_number())
    }

    /// Run `f` on the connection this thread holds its locks on, or on one from the pool.
    fn with_conn<T: Send>(
        &self,
        op: &str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T> {
        let instance = self.inner.instance;
        let inner = &*self.inner;
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            match h.iter_mut().find(|x| x.instance == instance) {
                Some(held) => {
                    let conn = &mut held.conn;
                    off_runtime(move || inner.run(conn, op, f))
                }
                None => {
                    drop(h);
                    off_runtime(move || {
                        let mut conn = inner.pool.get().map_err(pool_err(&inner.target, op))?;
                        inner.run(&mut conn, op, f)
                    })
                }
            }
        })
    }
}

impl Inner {
    /// `f` on `conn`, its error naming `op` and the database.
    fn run<T>(
        &self,
        conn: &mut PgConn,
        op: &str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let client = conn.client().map_err(|e| StoreError::Database {
            op: op.to_string(),
            database: self.target.clone(),
            detail: e.to_string(),
        })?;
        f(client).map_err(db_err(&self.target, op))
    }
}

/// Releases one lock; the thread's connection goes back to the pool with its last.
struct PgLockGuard {
    records: PgRecords,
    key: (i32, i32),
    /// `pg_advisory_unlock` or `pg_advisory_unlock_shared`.
    unlock: &'static str,
    _not_send: PhantomData<*const ()>,
}

impl Drop for PgLockGuard {
    fn drop(&mut self) {
        let instance = self.records.inner.instance;
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            let Some(i) = h.iter().position(|x| x.instance == instance) else {
                return;
            };
            let (key, unlock) = (self.key, self.unlock);
            let inner = &*self.records.inner;
            let conn = &mut h[i].conn;
            let released = off_runtime(move || {
                inner.run(conn, "release a record lock", |c| {
                    c.execute(unlock, &[&key.0, &key.1])
                })
            });
            if let Err(e) = released {
                // The connection is gone, and the lock with it.
                tracing::warn!("release a PostgreSQL record lock: {e}");
            }
            h[i].locks -= 1;
            if h[i].locks == 0 {
                h.swap_remove(i);
            }
        });
    }
}

/// How [`PgRecords::lock_key`] takes a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockHow {
    /// `pg_advisory_lock`: wait for it.
    Wait,
    /// `pg_try_advisory_lock`: `None` when another session holds it.
    Try,
}

impl PgRecords {
    /// Take advisory lock `key` (exclusive) on the connection this thread holds its locks on
    /// (taken from the pool for its first lock): a thread never holds two connections, so a
    /// full pool cannot deadlock threads that hold locks.
    pub(crate) fn lock_key(
        &self,
        key: (i32, i32),
        op: &str,
        how: LockHow,
    ) -> Result<Option<Box<dyn std::any::Any>>> {
        let instance = self.inner.instance;
        let taken = HELD.with(|h| {
            let mut h = h.borrow_mut();
            let inner = &*self.inner;
            let i = match h.iter().position(|x| x.instance == instance) {
                Some(i) => i,
                None => {
                    let conn =
                        off_runtime(|| inner.pool.get()).map_err(pool_err(&inner.target, op))?;
                    h.push(Held {
                        instance,
                        conn,
                        locks: 0,
                    });
                    h.len() - 1
                }
            };
            let conn = &mut h[i].conn;
            let taken = off_runtime(move || {
                inner.run(conn, op, |c| match how {
                    LockHow::Wait => c
                        .execute("SELECT pg_advisory_lock($1, $2)", &[&key.0, &key.1])
                        .map(|_| true),
                    LockHow::Try => c
                        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&key.0, &key.1])
                        .map(|r| r.get(0)),
                })
            });
            match taken {
                Ok(true) => h[i].locks += 1,
                Ok(false) | Err(_) => {
                    if h[i].locks == 0 {
                        h.swap_remove(i);
                    }
                }
            }
            taken
        })?;
        Ok(taken.then(|| {
            Box::new(PgLockGuard {
                records: self.clone(),
                key,
                unlock: "SELECT pg_advisory_unlock($1, $2)",
                _not_send: PhantomData,
            }) as Box<dyn std::any::Any>
        }))
    }
}

impl Records for PgRecords {
    fn lock(&self, c: Collection) -> Result<RecordLock> {
        let op = format!("lock the {c} records");
        match self.lock_key(self.key(c), &op, LockHow::Wait)? {
            Some(held) => Ok(RecordLock { _held: held }),
            None => Err(StoreError::Conflict(format!("{op}: not taken"))),
        }
    }

    fn try_lock(&self, c: Collection) -> Result<Option<RecordLock>> {
        let op = format!("lock the {c} records");
        Ok(self
            .lock_key(self.key(c), &op, LockHow::Try)?
            .map(|held| RecordLock { _held: held }))
    }

    fn get(&self, c: Collection, id: &str) -> Result<Option<Vec<u8>>> {
        self.with_conn(&format!("read {c} record {id}"), |conn| {
            conn.query_opt(
                "SELECT body::text FROM records WHERE collection = $1 AND id = $2",
                &[&c.name(), &id],
            )
            .map(|row| row.map(|r| r.get::<_, String>(0).into_bytes()))
        })
    }

    fn put(&self, c: Collection, id: &str, body: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(body).map_err(|_| {
            StoreError::Invalid(format!("{c} record {id}: the record is not UTF-8 JSON"))
        })?;
        self.with_conn(&format!("write {c} record {id}"), |conn| {
            conn.execute(
                "INSERT INTO records (collection, id, body) VALUES ($1, $2, $3::text::jsonb)
                 ON CONFLICT (collection, id)
                 DO UPDATE SET body = excluded.body, updated_at = now()",
                &[&c.name(), &id, &text],
            )
            .map(|_| ())
        })
    }

    fn delete(&self, c: Collection, id: &str) -> Result<bool> {
        self.with_conn(&format!("delete {c} record {id}"), |conn| {
            let mut tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM record_logs WHERE collection = $1 AND id = $2",
                &[&c.name(), &id],
            )?;
            let n = tx.execute(
                "DELETE FROM records WHERE collection = $1 AND id = $2",
                &[&c.name(), &id],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn ids(&self, c: Collection) -> Result<Vec<String>> {
        self.with_conn(&format!("list the {c} records"), |conn| {
            conn.query(
                "SELECT id FROM records WHERE collection = $1 ORDER BY id COLLATE \"C\"",
                &[&c.name()],
            )
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn all_with_prefix(&self, c: Collection, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.with_conn(&format!("read the {c} records"), |conn| {
            conn.query(
                "SELECT id, body::text FROM records WHERE collection = $1 AND starts_with(id, $2)
                 ORDER BY id COLLATE \"C\"",
                &[&c.name(), &prefix],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), r.get::<_, String>(1).into_bytes()))
                    .collect()
            })
        })
    }

    fn append_log(&self, c: Collection, id: &str, data: &[u8]) -> Result<u64> {
        self.with_conn(&format!("append to the log of {c} record {id}"), |conn| {
            conn.execute(
                "INSERT INTO record_logs (collection, id, data) VALUES ($1, $2, $3)",
                &[&c.name(), &id, &data],
            )?;
            log_size(conn, c, id)
        })
    }

    fn read_log(&self, c: Collection, id: &str) -> Result<Vec<u8>> {
        self.with_conn(&format!("read the log of {c} record {id}"), |conn| {
            let rows = conn.query(
                "SELECT data FROM record_logs WHERE collection = $1 AND id = $2 ORDER BY seq",
                &[&c.name(), &id],
            )?;
            Ok(rows.iter().flat_map(|r| r.get::<_, Vec<u8>>(0)).collect())
        })
    }

    fn log_size(&self, c: Collection, id: &str) -> Result<u64> {
        self.with_conn(&format!("size the log of {c} record {id}"), |conn| {
            log_size(conn, c, id)
        })
    }

    fn stamp(&self, c: Collection, id: &str) -> Result<Option<String>> {
        // xmin: the transaction that wrote this row version; every put makes a new one.
        self.with_conn(&format!("check {c} record {id}"), |conn| {
            conn.query_opt(
                "SELECT xmin::text || ':' || updated_at::text FROM records
                 WHERE collection = $1 AND id = $2",
                &[&c.name(), &id],
            )
            .map(|row| row.map(|r| r.get(0)))
        })
    }

    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.inner.target)
    }

    fn chunk_catalogue(&self) -> Option<Arc<dyn crate::data::catalogue::Catalogue>> {
        Some(Arc::new(PgCatalogue::new(self.clone())))
    }
}

fn log_size(conn: &mut postgres::Client, c: Collection, id: &str) -> Result<u64, postgres::Error> {
    let n: i64 = conn
        .query_one(
            "SELECT coalesce(sum(octet_length(data)), 0)::bigint FROM record_logs
             WHERE collection = $1 AND id = $2",
            &[&c.name(), &id],
        )?
        .get(0);
    Ok(n.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_that_does_not_answer_is_a_database_error_naming_it() {
        // A port nothing listens on: connection refused, at once and on every retry.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let cfg = PgConfig {
            url: format!("postgres://ferry:secret@127.0.0.1:{port}/ferrydb"),
            schema: "site1".into(),
            pool_size: 2,
            ca: None,
        };
        let e = PgRecords::open(&cfg).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Database { .. }), "{text}");
        assert!(
            text.contains(&format!(
                "database ferrydb at 127.0.0.1:{port}, schema site1"
            )),
            "{text}"
        );
        assert!(text.contains("check that PostgreSQL is running"), "{text}");
        assert!(!text.contains("secret"), "the password leaked: {text}");
    }

    #[test]
    fn calls_from_inside_an_async_runtime_do_not_panic() {
        // The postgres client refuses to block on a runtime's thread; off_runtime steps aside.
        for rt in [
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .unwrap(),
        ] {
            let got = rt.block_on(async {
                off_runtime(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .build()
                        .map(|inner| inner.block_on(async { 7 }))
                })
            });
            assert_eq!(got.unwrap(), 7);
        }
    }

    #[test]
    fn schema_names_that_could_inject_sql_are_refused() {
        for ok in ["ferry", "_t1", "store_2026"] {
            assert!(check_schema(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Ferry",
            "a;drop",
            "a b",
            "a\"b",
            &"x".repeat(64),
        ] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
    }
}
