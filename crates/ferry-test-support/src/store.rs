//! A store on a temporary directory and the chunks, indexes and commits tests put into it.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ferry_format::api::CommitRequest;
use ferry_format::index::Entry;
use ferry_format::manifest::{ChunkCounts, DiskManifest};
use ferry_format::{ChunkId, DiskIndex};
use ferry_store::data::LockMode;
use ferry_store::keys::{generate_signing_key, write_private, ManifestSigner, SIGNING_KEY};
use ferry_store::{config, Store};

/// The chunk size of every test store: 64 KiB, the smallest the format allows, keeps tests fast.
pub const CS: u32 = 64 << 10;

/// A store laid out in `dir` as `appliance init` does, with a fresh signing key, its data and
/// records on the backends `FERRY_TEST_STORAGE` and `FERRY_TEST_RECORDS` name
/// ([`crate::storage`]).
pub fn new_store(dir: &Path) -> (Store, ManifestSigner) {
    new_store_on(dir, &crate::storage::test_storage())
}

/// [`new_store`] on the local directory whatever `FERRY_TEST_STORAGE` and `FERRY_TEST_RECORDS`
/// say: for tests of the local layout itself (file times, modes, bytes edited in `chunks/`,
/// record files).
pub fn new_local_store(dir: &Path) -> (Store, ManifestSigner) {
    new_store_on(dir, &config::Backends::default())
}

/// A store laid out in `dir` on `backends`: two dirs on the same backends are two nodes of one
/// scaled-out store (each with its own signing key here).
pub fn new_store_on(dir: &Path, backends: &config::Backends) -> (Store, ManifestSigner) {
    config::create_layout(dir).unwrap();
    let pk8 = generate_signing_key().unwrap();
    write_private(&dir.join("keys").join(SIGNING_KEY), &pk8).unwrap();
    config::write_config_on(dir, "test-appliance", backends).unwrap();
    let store = Store::open(dir).unwrap();
    let signer = store.load_signer().unwrap();
    (store, signer)
}

/// A chunk of `CS` bytes all equal to `seed`: its id and its frame (zstd level 1).
pub fn chunk(seed: u8) -> (ChunkId, Vec<u8>) {
    let plain = vec![seed; CS as usize];
    (
        ChunkId::of(&plain),
        zstd::bulk::compress(&plain, 1).unwrap(),
    )
}

/// A chunk of `CS` bytes, zero but for `n` in its first 8 (little-endian): one of as many
/// distinct chunks as a test needs. Its id and its frame (zstd level 1).
pub fn numbered_chunk(n: u64) -> (ChunkId, Vec<u8>) {
    let mut plain = vec![0; CS as usize];
    plain[..8].copy_from_slice(&n.to_le_bytes());
    (
        ChunkId::of(&plain),
        zstd::bulk::compress(&plain, 1).unwrap(),
    )
}

/// A chunk of `CS` bytes that vary with their offset (byte `i` is `i * seed`): its id and its
/// frame (zstd level 3).
pub fn patterned_chunk(seed: u8) -> (ChunkId, Vec<u8>) {
    let plain: Vec<u8> = (0..CS).map(|i| (i as u8).wrapping_mul(seed)).collect();
    (
        ChunkId::of(&plain),
        zstd::bulk::compress(&plain, 3).unwrap(),
    )
}

/// The commit request of one disk `sda` read from `/dev/sda` as `source_format`, indexed by
/// `index` (chunk counts taken from it).
pub fn commit_request(index: &DiskIndex, source_format: &str) -> CommitRequest {
    let (data, zero, unused) = index.counts();
    CommitRequest {
        disks: vec![DiskManifest {
            name: "sda".into(),
            size: index.disk_size,
            logical_sector_size: 512,
            source: "/dev/sda".into(),
            source_format: source_format.into(),
            index_digest: index.digest(),
            chunks: ChunkCounts { data, zero, unused },
            layout: None,
        }],
        os: None,
        agent: "test".into(),
        consistency: Default::default(),
        network: None,
    }
}

/// One raw disk holding `ids`, then a zero chunk: encoded index and its commit request.
pub fn disk(ids: &[ChunkId]) -> (Vec<u8>, CommitRequest) {
    let mut index = DiskIndex::new_zero(CS as u64 * (ids.len() as u64 + 1), CS).unwrap();
    for (i, id) in ids.iter().enumerate() {
        index.entries[i] = Entry::Data(*id);
    }
    let req = commit_request(&index, "raw");
    (index.encode(), req)
}

/// `id`'s GC mark: its chunk file's mtime, or on S3 its entry in the chunk catalogue (marker
/// files, or PostgreSQL with the records there). `None` when it has none.
pub fn mark_of(store: &Store, id: &ChunkId) -> Option<SystemTime> {
    match store.data().catalogue() {
        Some(cat) => cat.get(id).unwrap().map(|e| e.marked),
        None => std::fs::metadata(store.chunk_path(id))
            .ok()
            .map(|m| m.modified().unwrap()),
    }
}

/// Set `id`'s GC mark to `t` (what its last use at `t` would have left). The chunk must be stored.
pub fn set_mark(store: &Store, id: &ChunkId, t: SystemTime) {
    match store.data().catalogue() {
        Some(cat) => assert!(cat.mark_at(id, t).unwrap(), "chunk {id} is not catalogued"),
        None => set_mtime(&store.chunk_path(id), t),
    }
}

/// Chunks the store holds, by its own count (the chunk files, or the catalogue's entries).
pub fn stored_chunk_count(store: &Store) -> u64 {
    store.chunk_usage().unwrap().chunks
}

/// Store `bytes` as `id`'s frame without any check, as damage on the backend would leave it.
pub fn plant_chunk(store: &Store, id: &ChunkId, bytes: &[u8]) {
    let _lock = store.lock_chunks_shared().unwrap();
    store.data().write_chunk(id, bytes).unwrap();
}

/// What the backend holds for `id`, unchecked.
pub fn stored_frame(store: &Store, id: &ChunkId) -> Option<Vec<u8>> {
    store.data().read_chunk(id).unwrap()
}

/// Delete `id` from the backend as a loss would (not through GC).
pub fn remove_chunk(store: &Store, id: &ChunkId) {
    let entry = store
        .data()
        .list_chunk_entries(&id.store_prefix())
        .unwrap()
        .into_iter()
        .find(|e| e.chunk == Some(*id))
        .unwrap_or_else(|| panic!("chunk {id} is not stored"));
    let _lock = store.data().lock_chunks(LockMode::Exclusive).unwrap();
    assert!(store.data().delete_entry(&entry).unwrap());
}

/// `secs` seconds before now.
pub fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}

/// Sets `path`'s modification time (GC and session expiry go by it).
pub fn set_mtime(path: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}
