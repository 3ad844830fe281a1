//! An appliance in memory for tests (feature `test-support`): snapshots built from disk bytes
//! with the real formats (an encoded index bound to the manifest by its digest, zstd frames
//! named by [`ChunkId::of`]), served through [`SnapshotSource`] and [`ChunkStore`], with faults
//! to inject (a frame replaced, a fetch that fails) and a log of the chunks fetched.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ferry_client::ClientError;
use ferry_format::layout::DiskLayout;
use ferry_format::manifest::{ChunkCounts, DiskManifest, MANIFEST_VERSION};
use ferry_format::{ChunkId, DiskIndex, Entry, Manifest};

use super::SnapshotSource;
use crate::pipeline::ChunkStore;
use crate::EngineError;

/// One disk of a snapshot to build.
pub struct MemDisk<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
    pub logical_sector_size: u32,
    pub layout: Option<DiskLayout>,
}

#[derive(Default)]
pub struct MemorySource {
    manifests: HashMap<String, Manifest>,
    /// (snapshot, disk) → encoded index.
    indexes: HashMap<(String, String), Vec<u8>>,
    frames: Mutex<HashMap<ChunkId, Vec<u8>>>,
    failing: Mutex<HashSet<ChunkId>>,
    fetched: Mutex<Vec<ChunkId>>,
}

/// The index of `bytes` cut into `chunk_size` chunks: all-zero chunks are [`Entry::Zero`].
pub fn index_of(bytes: &[u8], chunk_size: u32) -> Result<DiskIndex, EngineError> {
    let mut index =
        DiskIndex::new_zero(bytes.len() as u64, chunk_size).map_err(crate::Refusal::Unindexable)?;
    for (e, c) in index
        .entries
        .iter_mut()
        .zip(bytes.chunks(chunk_size as usize))
    {
        if !ferry_format::chunk::is_zero(c) {
            *e = Entry::Data(ChunkId::of(c));
        }
    }
    Ok(index)
}

fn bad(what: &str, detail: String) -> ClientError {
    ClientError::BadAnswer {
        what: what.to_string(),
        detail,
    }
}

impl MemorySource {
    pub fn new() -> MemorySource {
        MemorySource::default()
    }

    /// Store snapshot `id` of `machine` holding `disks`; returns its manifest.
    pub fn add_snapshot(
        &mut self,
        id: &str,
        machine: &str,
        chunk_size: u32,
        disks: &[MemDisk],
    ) -> Result<Manifest, EngineError> {
        let mut listed = Vec::new();
        for d in disks {
            let index = index_of(d.bytes, chunk_size)?;
            let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
            for c in d.bytes.chunks(chunk_size as usize) {
                if !ferry_format::chunk::is_zero(c) {
                    let frame = zstd::bulk::compress(c, 1)
                        .map_err(|e| EngineError::Worker(format!("zstd: {e}")))?;
                    frames.insert(ChunkId::of(c), frame);
                }
            }
            let encoded = index.encode();
            let (data, zero, unused) = index.counts();
            listed.push(DiskManifest {
                name: d.name.to_string(),
                size: d.bytes.len() as u64,
                logical_sector_size: d.logical_sector_size,
                source: format!("memory:{}", d.name),
                source_format: "raw".into(),
                index_digest: ChunkId::of(&encoded),
                chunks: ChunkCounts { data, zero, unused },
                layout: d.layout.clone(),
            });
            self.indexes
                .insert((id.to_string(), d.name.to_string()), encoded);
        }
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            snapshot: id.to_string(),
            machine: machine.to_string(),
            created: "2026-01-01T00:00:00Z".into(),
            chunk_size,
            disks: listed,
            os: None,
            agent: "memory".into(),
            consistency: Default::default(),
            network: None,
        };
        manifest.check().map_err(crate::Refusal::Unindexable)?;
        self.manifests.insert(id.to_string(), manifest.clone());
        Ok(manifest)
    }

    /// From now on `id` is served as `frame` (say, another chunk's frame: a corrupt appliance).
    pub fn replace_frame(&self, id: ChunkId, frame: Vec<u8>) {
        let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        frames.insert(id, frame);
    }

    /// The stored frame of `id`.
    pub fn frame(&self, id: &ChunkId) -> Option<Vec<u8>> {
        let frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        frames.get(id).cloned()
    }

    /// Every fetch of `id` fails from now on.
    pub fn fail_fetches_of(&self, id: ChunkId) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing.insert(id);
    }

    /// The chunks fetched so far, in the order they were asked for.
    pub fn fetched(&self) -> Vec<ChunkId> {
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl SnapshotSource for MemorySource {
    fn manifest(&self, snapshot: &str) -> Result<Manifest, EngineError> {
        self.manifests.get(snapshot).cloned().ok_or_else(|| {
            ClientError::Refused {
                what: format!("GET /snapshots/{snapshot}/manifest"),
                status: 404,
                message: format!("no snapshot {snapshot}"),
            }
            .into()
        })
    }

    /// Checked against the manifest's digest, as the client does.
    fn index(&self, manifest: &Manifest, disk: &str) -> Result<DiskIndex, EngineError> {
        let key = (manifest.snapshot.clone(), disk.to_string());
        let (Some(bytes), Some(d)) = (self.indexes.get(&key), manifest.disk(disk)) else {
            return Err(bad("index", format!("no disk {disk}")).into());
        };
        if ChunkId::of(bytes) != d.index_digest {
            return Err(ClientError::IndexDigest {
                snapshot: manifest.snapshot.clone(),
                disk: disk.to_string(),
            }
            .into());
        }
        DiskIndex::decode(bytes).map_err(|e| bad("index", e.to_string()).into())
    }
}

impl ChunkStore for MemorySource {
    fn missing_chunks(&self, _: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>, ClientError> {
        let frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ids
            .iter()
            .filter(|id| !frames.contains_key(id))
            .copied()
            .collect())
    }

    fn put_chunk(&self, id: &ChunkId, frame: &[u8]) -> Result<bool, ClientError> {
        let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        Ok(frames.insert(*id, frame.to_vec()).is_none())
    }

    fn get_chunk(&self, id: &ChunkId, out: &mut Vec<u8>, _limit: u64) -> Result<(), ClientError> {
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(*id);
        let what = format!("GET /chunks/{id}");
        if self
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
        {
            return Err(bad(&what, "injected failure".into()));
        }
        let frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        let frame = frames
            .get(id)
            .ok_or_else(|| bad(&what, "no such chunk".into()))?;
        out.clear();
        out.extend_from_slice(frame);
        Ok(())
    }
}
