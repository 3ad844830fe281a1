//! Snapshots: `snapshots/<id>/{manifest.json, manifest.sig, <disk>.index}`, committed atomically
//! by renaming a session's `tmp/<session>/` directory, listed, read and pruned.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use ferry_format::api::{CommitRequest, SignedManifest, SnapshotSummary};
use ferry_format::manifest::MANIFEST_VERSION;
use ferry_format::names::{check_name, NameKind};
use ferry_format::Manifest;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::data::{Published, SnapshotObjects};
use crate::error::{Result, StoreError};
use crate::index_file::scan_index;
use crate::keys::ManifestSigner;
use crate::meta::Collection;
use crate::sessions::{SessionRecord, MAX_MISSING_REPORTED};
use crate::Store;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// Longest machine-name prefix of a snapshot id: leaves room for `-YYYYMMDDTHHMMSSZ-NNN` within
/// the 64 characters every name may have. The manifest always holds the full machine name.
const ID_MACHINE_MAX: usize = 64 - 17 - 4;

/// RFC 3339 UTC with whole seconds, e.g. `2025-01-31T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(&Rfc3339).unwrap_or_default()
}

/// `<machine>-<YYYYMMDDTHHMMSSZ>`, then `-2`, `-3`... for `attempt` 2, 3...
pub fn snapshot_id(machine: &str, t: SystemTime, attempt: u32) -> String {
    let stamp = OffsetDateTime::from(t)
        .format(format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let m = &machine[..machine.len().min(ID_MACHINE_MAX)];
    match attempt {
        0 | 1 => format!("{m}-{stamp}"),
        n => format!("{m}-{stamp}-{n}"),
    }
}

pub fn summarize(m: &Manifest) -> SnapshotSummary {
    SnapshotSummary {
        snapshot: m.snapshot.clone(),
        machine: m.machine.clone(),
        created: m.created.clone(),
        disks: m.disks.iter().map(|d| d.name.clone()).collect(),
        size: m.disks.iter().map(|d| d.size).sum(),
        data_chunks: m.disks.iter().map(|d| d.chunks.data).sum(),
        consistency: m.consistency.clone(),
    }
}

impl Store {
    /// Check a commit against the session's uploaded indexes, sign the manifest and make the
    /// snapshot visible atomically. Returns the snapshot id; the session ends.
    pub fn commit(
        &self,
        session: &str,
        req: &CommitRequest,
        signer: &ManifestSigner,
        now: SystemTime,
    ) -> Result<String> {
        let mut rec = self.session(session, now)?;
        if let Some(id) = self.already_committed(&rec, req)? {
            return Ok(id);
        }
        self.check_commit(session, &rec, req)?;
        let origin = match &rec.token {
            Some(token) => Some(crate::prune::origin_bytes(token)?),
            None => None,
        };
        let disks: Vec<String> = req.disks.iter().map(|d| d.name.clone()).collect();
        let created = rfc3339(now);
        for attempt in 1..=1000 {
            let id = snapshot_id(&rec.machine, now, attempt);
            if self.data().snapshot_exists(&id)? {
                continue;
            }
            let manifest = Manifest {
                version: MANIFEST_VERSION,
                snapshot: id.clone(),
                machine: rec.machine.clone(),
                created: created.clone(),
                chunk_size: rec.chunk_size,
                disks: req.disks.clone(),
                os: req.os.clone(),
                agent: req.agent.clone(),
                consistency: req.consistency.clone(),
                network: req.network.clone(),
            };
            manifest.check()?;
            check_name(NameKind::Snapshot, &id)?;
            let bytes = serde_json::to_vec_pretty(&manifest)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let signature = signer.sign(&bytes);
            let objects = SnapshotObjects {
                disks: &disks,
                manifest: &bytes,
                signature: signature.as_bytes(),
                origin: origin.as_deref(),
            };
            // Recorded before the snapshot becomes visible: if the reply is lost, the retried
            // commit finds it.
            let mut record = || {
                rec.committed = Some(id.clone());
                self.write_session(session, &rec)
            };
            match self
                .data()
                .publish_snapshot(session, &id, objects, &mut record)?
            {
                Published::Visible => return Ok(id),
                Published::IdTaken => continue,
            }
        }
        Err(StoreError::Conflict(format!(
            "no free snapshot id for machine {} at {created}: retry the commit",
            rec.machine
        )))
    }

    /// The snapshot an earlier attempt of this commit made: the session names it and it holds
    /// exactly the disks asked for. `None` when there is none (or the id was taken by another
    /// session's snapshot before the earlier attempt's rename).
    fn already_committed(
        &self,
        rec: &SessionRecord,
        req: &CommitRequest,
    ) -> Result<Option<String>> {
        let Some(id) = &rec.committed else {
            return Ok(None);
        };
        match self.manifest(id) {
            Ok(m) if m.machine == rec.machine && m.disks == req.disks => Ok(Some(id.clone())),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn check_commit(&self, session: &str, rec: &SessionRecord, req: &CommitRequest) -> Result<()> {
        if req.disks.is_empty() {
            return Err(StoreError::Invalid("the commit lists no disks".into()));
        }
        // Refused before any index is read (the manifest's check would refuse it too).
        if let Some(net) = &req.network {
            net.check().map_err(|e| {
                StoreError::Invalid(format!("the commit's network configuration: {e}"))
            })?;
        }
        for disk in &req.disks {
            check_name(NameKind::Disk, &disk.name)?;
            let path = self
                .session_tmp_dir(session)
                .join(format!("{}.index", disk.name));
            let blob = self
                .data()
                .open_session_index(session, &disk.name)?
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "disk {} has no index uploaded in this session: PUT its index, then commit",
                        disk.name
                    ))
                })?;
            let len = blob.len();
            // Read a block at a time (an index may be 512 MiB). Its chunks are touched, not only
            // checked: GC may have collected a chunk this session touched long ago (gc.rs), and
            // the touch keeps the rest from a GC running during the commit.
            let mut missing = Vec::new();
            let what = format!("the index of disk {}", disk.name);
            let index = scan_index(blob.into_reader(), len, &path, &what, |ids| {
                let room = MAX_MISSING_REPORTED - missing.len();
                missing.extend(self.touch_chunks(ids)?.into_iter().take(room));
                Ok(())
            })?;
            let bad = |why: String| StoreError::Invalid(format!("disk {}: {why}", disk.name));
            if index.digest != disk.index_digest {
                return Err(bad(format!(
                    "the uploaded index has digest {} but the commit says {}: upload the index again",
                    index.digest, disk.index_digest
                )));
            }
            if index.header.disk_size != disk.size {
                return Err(bad(format!(
                    "the index covers {} bytes but the commit says {}",
                    index.header.disk_size, disk.size
                )));
            }
            if index.header.chunk_size != rec.chunk_size {
                return Err(bad(format!(
                    "index chunk size {} is not the session's {}",
                    index.header.chunk_size, rec.chunk_size
                )));
            }
            let (data, zero, unused) = (index.data, index.zero, index.unused);
            let c = disk.chunks;
            if (c.data, c.zero, c.unused) != (data, zero, unused) {
                return Err(bad(format!(
                    "the commit counts {}/{}/{} data/zero/unused chunks, the index {data}/{zero}/{unused}",
                    c.data, c.zero, c.unused
                )));
            }
            if !missing.is_empty() {
                return Err(StoreError::MissingChunks(missing));
            }
        }
        Ok(())
    }

    /// Every committed snapshot (of `machine` if given), oldest first. Unreadable snapshot
    /// directories are skipped with a warning. On S3 the summaries come from the records'
    /// cache ([`Collection::SnapshotSummaries`]): one LIST and one read of the records instead
    /// of a GET per manifest; a snapshot missing from the cache is read and added.
    pub fn list_snapshots(&self, machine: Option<&str>) -> Result<Vec<SnapshotSummary>> {
        // A machine's snapshot ids start with its name (cut as `snapshot_id` cuts it) and a
        // dash; the prefix may catch a longer name too (`web` and `web-2`), filtered below.
        let prefix = machine.map_or(String::new(), |m| {
            format!("{}-", m.get(..m.len().min(ID_MACHINE_MAX)).unwrap_or(m))
        });
        let mut ids = self.snapshot_ids()?;
        ids.retain(|id| id.starts_with(&prefix));
        let cache = !self.config().storage.is_local();
        let mut cached: HashMap<String, SnapshotSummary> = HashMap::new();
        if cache {
            let entries = self
                .records()
                .all_with_prefix(Collection::SnapshotSummaries, &prefix)?;
            for (id, body) in entries {
                match serde_json::from_slice::<SnapshotSummary>(&body) {
                    Ok(s) if s.snapshot == id => {
                        cached.insert(id, s);
                    }
                    // Not ours to trust: made again from the manifest below.
                    _ => {
                        tracing::warn!("snapshot summary cache: entry {id} is not a summary of it")
                    }
                }
            }
        }
        let listed: HashSet<&str> = ids.iter().map(String::as_str).collect();
        for gone in cached.keys().filter(|id| !listed.contains(id.as_str())) {
            // Deleted since it was cached (prune, `snapshots delete`).
            if let Err(e) = self.records().delete(Collection::SnapshotSummaries, gone) {
                tracing::warn!("snapshot summary cache: remove {gone}: {e}");
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = cached.remove(&id) {
                out.push(s);
                continue;
            }
            match self.manifest(&id) {
                Ok(m) => {
                    let s = summarize(&m);
                    if cache {
                        let put = serde_json::to_vec(&s)
                            .map_err(|e| StoreError::Invalid(e.to_string()))
                            .and_then(|b| {
                                self.records().put(Collection::SnapshotSummaries, &id, &b)
                            });
                        if let Err(e) = put {
                            tracing::warn!("snapshot summary cache: add {id}: {e}");
                        }
                    }
                    out.push(s);
                }
                Err(e) => tracing::warn!("skipping snapshot {id}: {e}"),
            }
        }
        out.retain(|s| machine.is_none_or(|m| s.machine == m));
        out.sort_by(|a, b| (&a.created, &a.snapshot).cmp(&(&b.created, &b.snapshot)));
        Ok(out)
    }

    /// Ids of the visible snapshots.
    pub fn snapshot_ids(&self) -> Result<Vec<String>> {
        self.data().snapshot_ids()
    }

    fn snapshot_file(&self, id: &str, file: &str) -> Result<Vec<u8>> {
        check_name(NameKind::Snapshot, id)?;
        match self.data().read_snapshot_object(id, file)? {
            Some(bytes) => Ok(bytes),
            None if self.data().snapshot_exists(id)? => {
                Err(StoreError::NotFound(format!("snapshot {id} has no {file}")))
            }
            None => Err(StoreError::NotFound(format!(
                "snapshot {id} does not exist: list snapshots to see which do"
            ))),
        }
    }

    /// The parsed manifest of a snapshot (not verified: the store wrote it).
    pub fn manifest(&self, id: &str) -> Result<Manifest> {
        let bytes = self.snapshot_file(id, MANIFEST_FILE)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Invalid(format!("parse manifest of {id}: {e}")))
    }

    /// The stored manifest bytes and signature, for `GET /snapshots/{id}/manifest`.
    pub fn signed_manifest(&self, id: &str, key_id: &str) -> Result<SignedManifest> {
        let manifest = String::from_utf8(self.snapshot_file(id, MANIFEST_FILE)?)
            .map_err(|_| StoreError::Invalid(format!("the manifest of {id} is not UTF-8")))?;
        let signature = String::from_utf8(self.snapshot_file(id, SIGNATURE_FILE)?)
            .map_err(|_| StoreError::Invalid(format!("the signature of {id} is not UTF-8")))?;
        Ok(SignedManifest {
            manifest,
            signature,
            key_id: key_id.to_string(),
        })
    }

    /// The encoded index of one disk of a snapshot.
    pub fn snapshot_index(&self, id: &str, disk: &str) -> Result<Vec<u8>> {
        check_name(NameKind::Disk, disk)?;
        self.snapshot_file(id, &format!("{disk}.index"))
    }

    /// Delete what an interrupted deletion left (the local store's `trash/`; on S3, snapshot
    /// objects without a signature older than `stale_before`).
    pub fn empty_trash(&self, stale_before: SystemTime) -> Result<()> {
        self.data().remove_leftovers(stale_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn snapshot_ids_are_names_with_suffixes() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(snapshot_id("web01", t, 1), "web01-20231114T221320Z");
        assert_eq!(snapshot_id("web01", t, 3), "web01-20231114T221320Z-3");
        assert_eq!(
            rfc3339(t + Duration::from_millis(500)),
            "2023-11-14T22:13:20Z"
        );
        let long = "m".repeat(64);
        let id = snapshot_id(&long, t, 999);
        assert!(check_name(NameKind::Snapshot, &id).is_ok(), "{id}");
    }
}
