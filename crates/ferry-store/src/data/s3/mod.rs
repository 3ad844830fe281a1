//! An S3-compatible bucket (docs/store.md, "S3"): chunks, session indexes and snapshot objects
//! under `<prefix>`, one node. Keys:
//!
//! ```text
//! <prefix>chunks/abcd/<64 hex>                    a chunk's zstd frame, as uploaded
//! <prefix>damaged/<64 hex>                        a chunk verify found bad
//! <prefix>sessions/<session>/<disk>.index         an open session's uploaded index
//! <prefix>snapshots/<id>/manifest.json, origin.json, <disk>.index
//! <prefix>snapshots/<id>/manifest.sig             written last: the snapshot exists iff it does
//! ```
//!
//! Known-chunk queries and GC marks must not cost a request per chunk: they are answered by the
//! chunk catalogue ([`super::catalogue`]), whose entry is written after the object's PUT and
//! removed after its DELETE, under the catalogue's chunk lock (the rule of [`crate::gc`]). An
//! object without an entry (a crash between the PUT and the entry) is collected by GC when its
//! LastModified is older than the cutoff; an entry lost apart from its object is made again by
//! GC's mark from a HEAD of the object. With records on PostgreSQL the catalogue is a table
//! there and several nodes share the bucket prefix; with local records, one node owns it.
//!
//! ferry-store is synchronous: requests run on a small tokio runtime owned here. Each endpoint
//! of the cluster has its client; a request that cannot reach one (connect, timeout, reset)
//! moves to the next and is retried there.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_format::names::{check_name, NameKind};
use ferry_format::ChunkId;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, Certificate, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};

mod credentials;
mod error;

use credentials::credentials;
pub use credentials::{parse_env_lines, read_credentials_file};
pub use error::S3Error;

use super::catalogue::{Catalogue, CatalogueEntry};
use super::{
    is_chunk_name, is_prefix_name, Blob, ChunkEntry, DataBackend, DataLock, EntryKind, LockMode,
    Published, SnapshotObjects,
};
use crate::chunks::ChunkUsage;
use crate::config::S3Config;
use crate::data::local::list_names;
use crate::error::{io_err, Result, StoreError};
use crate::fsx;
use crate::prune::ORIGIN_FILE;
use crate::snapshots::{MANIFEST_FILE, SIGNATURE_FILE};

/// Requests one endpoint gets before the next one is tried: a dead endpoint costs seconds,
/// not object_store's default three minutes.
const RETRIES_PER_ENDPOINT: usize = 2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A request that sends or receives a 64 MiB chunk on a slow link still finishes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The bucket, the chunk catalogue and the runtime requests run on.
pub struct S3Data {
    root: PathBuf,
    cfg: S3Config,
    catalogue: Arc<dyn Catalogue>,
    prefix: String,
    /// One client per endpoint, in the configured order.
    clients: Vec<Arc<AmazonS3>>,
    /// The endpoint that answered last: requests start there.
    current: AtomicUsize,
    /// `None` only while dropping (see [`Drop`]).
    rt: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for S3Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Data")
            .field("bucket", &self.cfg.bucket)
            .field("prefix", &self.prefix)
            .field("endpoints", &self.cfg.endpoints)
            .field("catalogue", &self.catalogue)
            .finish()
    }
}

impl Drop for S3Data {
    fn drop(&mut self) {
        // A runtime dropped inside the server's async context would panic; this one holds no
        // task worth waiting for.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl S3Data {
    /// Clients for the configured endpoints; no request is made.
    pub fn open(root: &Path, cfg: &S3Config, catalogue: Arc<dyn Catalogue>) -> Result<S3Data> {
        if cfg.endpoints.is_empty() {
            return Err(S3Error::NoEndpoint.into());
        }
        let (key_id, secret, token) = credentials(cfg)?;
        let mut options = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        if let Some(ca) = &cfg.ca {
            let pem = fs::read(ca).map_err(io_err("read the S3 CA file", ca))?;
            for cert in Certificate::from_pem_bundle(&pem).map_err(|cause| S3Error::Ca {
                path: ca.clone(),
                cause,
            })? {
                options = options.with_root_certificate(cert);
            }
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: RETRIES_PER_ENDPOINT,
            retry_timeout: Duration::from_secs(30),
        };
        let mut clients = Vec::new();
        for endpoint in &cfg.endpoints {
            let mut b = AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_bucket_name(&cfg.bucket)
                .with_region(&cfg.region)
                .with_access_key_id(&key_id)
                .with_secret_access_key(&secret)
                .with_virtual_hosted_style_request(!cfg.path_style)
                .with_client_options(
                    options
                        .clone()
                        .with_allow_http(endpoint.starts_with("http://")),
                )
                .with_retry(retry.clone());
            if let Some(t) = &token {
                b = b.with_token(t);
            }
            let client = b.build().map_err(|cause| S3Error::Client {
                endpoint: endpoint.clone(),
                cause,
            })?;
            clients.push(Arc::new(client));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-s3")
            .enable_all()
            .build()
            .map_err(io_err("start the S3 client runtime", root))?;
        Ok(S3Data {
            root: root.to_path_buf(),
            cfg: cfg.clone(),
            catalogue,
            prefix: normalize_prefix(&cfg.prefix),
            clients,
            current: AtomicUsize::new(0),
            rt: Some(rt),
        })
    }

    /// Check the bucket is reachable and writable: put, read back and delete a probe object.
    /// `appliance init --storage s3` runs it before it writes config.json.
    pub fn probe(&self) -> Result<()> {
        let key = format!("{}.ferry-probe-{}", self.prefix, fsx::random_hex(8)?);
        let body = format!("ferry probe {key}").into_bytes();
        let fail = |step: &'static str, e: StoreError| S3Error::Probe {
            bucket: self.cfg.bucket.clone(),
            endpoints: self.cfg.endpoints.join(", "),
            step,
            key: key.clone(),
            cause: Box::new(e),
        };
        self.put(&key, body.clone())
            .map_err(|e| fail("writing", e))?;
        let back = self.get(&key).map_err(|e| fail("reading", e))?;
        if back.as_deref() != Some(&body[..]) {
            return Err(S3Error::ProbeMismatch {
                bucket: self.cfg.bucket.clone(),
                key,
            }
            .into());
        }
        self.delete(&key).map_err(|e| fail("deleting", e))?;
        Ok(())
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .unwrap_or_else(|| unreachable!("the runtime is taken only by drop"))
    }

    /// Run `op` against the current endpoint; on a connection failure, against the next ones.
    fn request<T, F, Fut>(&self, what: &'static str, key: &str, op: F) -> Result<T>
    where
        F: Fn(Arc<AmazonS3>) -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let n = self.clients.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut tried = 0;
        loop {
            let i = (first + tried) % n;
            match self.runtime().block_on(op(self.clients[i].clone())) {
                Err(e) if tried + 1 < n && is_connection_failure(&e) => {
                    tracing::warn!(
                        "S3 endpoint {} failed ({e}); trying {}",
                        self.cfg.endpoints[i],
                        self.cfg.endpoints[(i + 1) % n]
                    );
                    tried += 1;
                }
                Err(cause) => {
                    return Err(S3Error::Request {
                        op: what,
                        bucket: self.cfg.bucket.clone(),
                        key: key.to_string(),
                        endpoint: self.cfg.endpoints[i].clone(),
                        cause,
                    }
                    .into())
                }
                Ok(v) => {
                    if tried > 0 {
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
            }
        }
    }

    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let payload = PutPayload::from(bytes);
        let k = Key::from(key);
        self.request("put", key, |c| {
            let (k, payload) = (k.clone(), payload.clone());
            async move { c.put(&k, payload).await.map(drop) }
        })
    }

    /// The object's bytes, `None` when absent.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let k = Key::from(key);
        self.request("get", key, |c| {
            let k = k.clone();
            async move {
                match c.get(&k).await {
                    Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let k = Key::from(key);
        self.request("head", key, |c| {
            let k = k.clone();
            async move {
                match c.head(&k).await {
                    Ok(m) => Ok(Some(m)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
    }

    /// Delete an object; deleting an absent one is no error.
    fn delete(&self, key: &str) -> Result<()> {
        let k = Key::from(key);
        self.request("delete", key, |c| {
            let k = k.clone();
            async move {
                match c.delete(&k).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    other => other,
                }
            }
        })
    }

    fn copy(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (Key::from(from), Key::from(to));
        self.request("copy", from, |c| {
            let (f, t) = (f.clone(), t.clone());
            async move { c.copy(&f, &t).await }
        })
    }

    /// Every object under `dir/` (a key prefix without its trailing `/`).
    fn list(&self, dir: &str) -> Result<Vec<ObjectMeta>> {
        let k = Key::from(dir);
        self.request("list", dir, |c| {
            let k = k.clone();
            async move { c.list(Some(&k)).try_collect::<Vec<_>>().await }
        })
    }

    /// The names of the "directories" right under `dir/`.
    fn list_dirs(&self, dir: &str) -> Result<Vec<String>> {
        let k = Key::from(dir);
        let listed = self.request("list", dir, |c| {
            let k = k.clone();
            async move { c.list_with_delimiter(Some(&k)).await }
        })?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    fn chunk_key(&self, id: &ChunkId) -> String {
        format!(
            "{}chunks/{}/{}",
            self.prefix,
            id.store_prefix(),
            id.to_hex()
        )
    }

    fn damaged_key(&self, id: &ChunkId) -> String {
        format!("{}damaged/{}", self.prefix, id.to_hex())
    }

    fn session_key(&self, session: &str, disk: &str) -> String {
        format!("{}sessions/{session}/{disk}.index", self.prefix)
    }

    fn snapshot_key(&self, id: &str, name: &str) -> String {
        format!("{}snapshots/{id}/{name}", self.prefix)
    }

    fn staging_dir(&self, session: &str) -> PathBuf {
        self.root.join("tmp").join(session)
    }
}

impl DataBackend for S3Data {
    fn location(&self) -> String {
        format!(
            "s3://{}/{} (endpoints {})",
            self.cfg.bucket,
            self.prefix,
            self.cfg.endpoints.join(", ")
        )
    }

    fn catalogue(&self) -> Option<&dyn Catalogue> {
        Some(self.catalogue.as_ref())
    }

    fn lock_chunks(&self, mode: LockMode) -> Result<DataLock> {
        self.catalogue.lock_chunks(mode)
    }

    fn try_lock_gc(&self) -> Result<Option<DataLock>> {
        self.catalogue.try_lock_gc()
    }

    fn write_chunk(&self, id: &ChunkId, frame: &[u8]) -> Result<()> {
        // Object first, entry second: a crash between leaves an unmarked object GC collects.
        self.put(&self.chunk_key(id), frame.to_vec())?;
        self.catalogue.insert(id, frame.len() as u64)
    }

    fn read_chunk(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        self.get(&self.chunk_key(id))
    }

    fn open_chunk(&self, id: &ChunkId) -> Result<Option<Blob>> {
        Ok(self.read_chunk(id)?.map(Blob::Bytes))
    }

    fn touch_chunk(&self, id: &ChunkId) -> Result<bool> {
        self.catalogue.touch(id)
    }

    fn touch_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        self.catalogue.touch_many(ids)
    }

    fn mark_chunk(&self, id: &ChunkId) -> Result<bool> {
        if self.catalogue.touch(id)? {
            return Ok(true);
        }
        // A referenced chunk without an entry: the catalogue lost it (or the object is gone).
        match self.head(&self.chunk_key(id))? {
            Some(meta) => {
                let _lock = self.lock_chunks(LockMode::Shared)?;
                self.catalogue.insert(id, meta.size)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.catalogue.get(id)?.is_some())
    }

    fn chunk_prefixes(&self) -> Result<Vec<String>> {
        let mut all: BTreeSet<String> = self.catalogue.prefixes()?.into_iter().collect();
        all.extend(
            self.list_dirs(&format!("{}chunks", self.prefix))?
                .into_iter()
                .filter(|p| is_prefix_name(p)),
        );
        Ok(all.into_iter().collect())
    }

    fn list_chunk_entries(&self, prefix: &str) -> Result<Vec<ChunkEntry>> {
        let mut out = Vec::new();
        let mut marked = BTreeSet::new();
        for e in self.catalogue.list(prefix)? {
            marked.insert(e.id);
            out.push(catalogued_entry(e));
        }
        for meta in self.list(&format!("{}chunks/{prefix}", self.prefix))? {
            let Some(id) = meta
                .location
                .filename()
                .filter(|n| is_chunk_name(n))
                .and_then(|n| n.parse::<ChunkId>().ok())
            else {
                continue;
            };
            if !marked.contains(&id) {
                out.push(unmarked_entry(id, &meta));
            }
        }
        Ok(out)
    }

    fn recheck_entry(&self, entry: &ChunkEntry) -> Result<Option<ChunkEntry>> {
        let Some(id) = entry.chunk else {
            return Ok(None);
        };
        if let Some(e) = self.catalogue.get(&id)? {
            return Ok(Some(catalogued_entry(e)));
        }
        if entry.kind == EntryKind::Chunk {
            // Its marker went with its object (verify's quarantine): nothing left to collect.
            return Ok(None);
        }
        Ok(self
            .head(&self.chunk_key(&id))?
            .map(|meta| unmarked_entry(id, &meta)))
    }

    fn delete_entry(&self, entry: &ChunkEntry) -> Result<bool> {
        let Some(id) = entry.chunk else {
            return Ok(false);
        };
        // Object first: a crash between leaves a marker of a missing chunk, which a backup
        // reaches at its index upload or commit (409) and uploads again.
        self.delete(&self.chunk_key(&id))?;
        self.catalogue.remove(&id)?;
        Ok(true)
    }

    fn stored_chunks(&self, prefix: &str) -> Result<Vec<ChunkId>> {
        let mut ids: Vec<ChunkId> = self
            .list(&format!("{}chunks/{prefix}", self.prefix))?
            .iter()
            .filter_map(|m| m.location.filename().and_then(|n| n.parse().ok()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn quarantine_chunk(&self, id: &ChunkId) -> Result<String> {
        let to = self.damaged_key(id);
        self.copy(&self.chunk_key(id), &to)?;
        self.delete(&self.chunk_key(id))?;
        self.catalogue.remove(id)?;
        Ok(format!("s3://{}/{to}", self.cfg.bucket))
    }

    fn is_quarantined(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.head(&self.damaged_key(id))?.is_some())
    }

    fn read_quarantined(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        self.get(&self.damaged_key(id))
    }

    fn quarantine_location(&self) -> String {
        format!("s3://{}/{}damaged/", self.cfg.bucket, self.prefix)
    }

    fn chunk_usage(&self) -> Result<ChunkUsage> {
        self.catalogue.usage()
    }

    fn put_session_index(&self, session: &str, disk: &str, staged: &Path) -> Result<()> {
        // At most MAX_INDEX_BYTES (checked while it was received).
        let bytes = fs::read(staged).map_err(io_err("read", staged))?;
        self.put(&self.session_key(session, disk), bytes)?;
        fs::remove_file(staged).map_err(io_err("remove", staged))
    }

    fn open_session_index(&self, session: &str, disk: &str) -> Result<Option<Blob>> {
        Ok(self.get(&self.session_key(session, disk))?.map(Blob::Bytes))
    }

    fn sessions_with_data(&self) -> Result<Vec<String>> {
        let mut all: BTreeSet<String> = list_names(&self.root.join("tmp"))?.into_iter().collect();
        all.extend(self.list_dirs(&format!("{}sessions", self.prefix))?);
        Ok(all.into_iter().collect())
    }

    fn session_has_data(&self, session: &str) -> Result<bool> {
        Ok(self.staging_dir(session).exists()
            || !self
                .list(&format!("{}sessions/{session}", self.prefix))?
                .is_empty())
    }

    fn remove_session_data(&self, session: &str) -> Result<()> {
        for meta in self.list(&format!("{}sessions/{session}", self.prefix))? {
            self.delete(meta.location.as_ref())?;
        }
        let dir = self.staging_dir(session);
        fsx::remove_tree(&dir)
    }

    fn publish_snapshot(
        &self,
        session: &str,
        id: &str,
        objects: SnapshotObjects<'_>,
        before_visible: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Published> {
        // Two commits of one machine in one second choose the same id, maybe on two nodes.
        let _lock = self.catalogue.lock_publish(id)?;
        if self.snapshot_exists(id)? {
            return Ok(Published::IdTaken);
        }
        for disk in objects.disks {
            let name = format!("{disk}.index");
            self.copy(
                &self.session_key(session, disk),
                &self.snapshot_key(id, &name),
            )?;
        }
        if let Some(origin) = objects.origin {
            self.put(&self.snapshot_key(id, ORIGIN_FILE), origin.to_vec())?;
        }
        self.put(
            &self.snapshot_key(id, MANIFEST_FILE),
            objects.manifest.to_vec(),
        )?;
        before_visible()?;
        // The signature last: the snapshot exists from here on, whole.
        self.put(
            &self.snapshot_key(id, SIGNATURE_FILE),
            objects.signature.to_vec(),
        )?;
        if let Err(e) = self.remove_session_data(session) {
            // GC removes it with the session record.
            tracing::warn!("remove the data of committed session {session}: {e}");
        }
        Ok(Published::Visible)
    }

    fn snapshot_ids(&self) -> Result<Vec<String>> {
        let dir = format!("{}snapshots", self.prefix);
        let mut ids = Vec::new();
        for meta in self.list(&dir)? {
            let parts: Vec<_> = meta.location.parts().collect();
            let n = parts.len();
            if n >= 2 && parts[n - 1].as_ref() == SIGNATURE_FILE {
                let id = parts[n - 2].as_ref().to_string();
                if check_name(NameKind::Snapshot, &id).is_ok() {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    fn snapshot_exists(&self, id: &str) -> Result<bool> {
        Ok(self.head(&self.snapshot_key(id, SIGNATURE_FILE))?.is_some())
    }

    fn read_snapshot_object(&self, id: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let bytes = self.get(&self.snapshot_key(id, name))?;
        // Objects of a publication in progress (or a deletion) are not the snapshot's yet.
        if bytes.is_some() && name != SIGNATURE_FILE && !self.snapshot_exists(id)? {
            return Ok(None);
        }
        Ok(bytes)
    }

    fn open_snapshot_object(&self, id: &str, name: &str) -> Result<Option<Blob>> {
        Ok(self.read_snapshot_object(id, name)?.map(Blob::Bytes))
    }

    fn delete_snapshots(&self, ids: &[String]) -> Result<()> {
        for id in ids {
            // The signature first: the snapshot is gone whole at once.
            self.delete(&self.snapshot_key(id, SIGNATURE_FILE))?;
        }
        for id in ids {
            for meta in self.list(&format!("{}snapshots/{id}", self.prefix))? {
                self.delete(meta.location.as_ref())?;
            }
        }
        Ok(())
    }

    /// Objects of snapshots without a signature (an interrupted deletion or publication), once
    /// the newest is older than `stale_before`: a publication in progress is younger.
    fn remove_leftovers(&self, stale_before: SystemTime) -> Result<()> {
        let mut by_id: BTreeMap<String, (bool, SystemTime, Vec<String>)> = BTreeMap::new();
        for meta in self.list(&format!("{}snapshots", self.prefix))? {
            let parts: Vec<_> = meta.location.parts().collect();
            let n = parts.len();
            if n < 2 {
                continue;
            }
            let e = by_id.entry(parts[n - 2].as_ref().to_string()).or_insert((
                false,
                UNIX_EPOCH,
                Vec::new(),
            ));
            e.0 |= parts[n - 1].as_ref() == SIGNATURE_FILE;
            e.1 = e.1.max(last_modified(&meta));
            e.2.push(meta.location.to_string());
        }
        for (id, (signed, newest, keys)) in by_id {
            if signed || newest >= stale_before {
                continue;
            }
            tracing::info!(
                "removing {} objects of unpublished snapshot {id}",
                keys.len()
            );
            for key in keys {
                self.delete(&key)?;
            }
        }
        Ok(())
    }
}

fn catalogued_entry(e: CatalogueEntry) -> ChunkEntry {
    ChunkEntry {
        chunk: Some(e.id),
        name: e.id.to_hex(),
        marked: e.marked,
        len: e.len,
        kind: EntryKind::Chunk,
    }
}

fn unmarked_entry(id: ChunkId, meta: &ObjectMeta) -> ChunkEntry {
    ChunkEntry {
        chunk: Some(id),
        name: meta.location.to_string(),
        marked: last_modified(meta),
        len: meta.size,
        kind: EntryKind::Unmarked,
    }
}

fn last_modified(meta: &ObjectMeta) -> SystemTime {
    let secs = u64::try_from(meta.last_modified.timestamp()).unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `""`, or the prefix with exactly one trailing `/`.
fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// The request never got an HTTP answer: the endpoint is down or unreachable, so another
/// endpoint of the cluster may do.
fn is_connection_failure(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<HttpError>() {
            return matches!(
                h.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn prefixes_end_in_one_slash() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("/"), "");
        assert_eq!(normalize_prefix("a/b"), "a/b/");
        assert_eq!(normalize_prefix("/a/b//"), "a/b/");
    }

    #[test]
    fn an_unreachable_endpoint_is_left_for_the_next_one() {
        // Two dead endpoints on 127.0.0.1: the error names the last one tried, after both.
        let closed = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            drop(l);
            format!("http://127.0.0.1:{port}")
        };
        let (a, b) = (closed(), closed());
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        fs::write(&creds, "AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\n").unwrap();
        fs::set_permissions(&creds, fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = S3Config {
            endpoints: vec![a.clone(), b.clone()],
            bucket: "bk".into(),
            region: "us-east-1".into(),
            prefix: String::new(),
            path_style: true,
            credentials: Some(creds),
            ca: None,
        };
        let catalogue = Arc::new(crate::data::catalogue::LocalCatalogue::new(dir.path()));
        let data = S3Data::open(dir.path(), &cfg, catalogue).unwrap();
        let e = data.probe().unwrap_err();
        let text = e.to_string();
        assert!(text.contains("bucket bk") && text.contains(&a), "{text}");
        let StoreError::S3(probe) = &e else {
            panic!("{e:?}")
        };
        let S3Error::Probe { cause, .. } = &**probe else {
            panic!("{e:?}")
        };
        let StoreError::S3(request) = &**cause else {
            panic!("{cause:?}")
        };
        assert!(
            matches!(&**request, S3Error::Request { endpoint, .. } if *endpoint == b),
            "{cause}"
        );
    }
}
