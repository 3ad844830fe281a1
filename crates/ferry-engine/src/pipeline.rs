//! What the backup and restore pipelines share so that no stage can block the others: the
//! appliance seam ([`ChunkStore`]) and the first-error cell every stage polls ([`Abort`]).
//!
//! The rules each pipeline follows (see the crate docs for the audit):
//! - every channel end is *owned* by the stage that uses it (moved into its thread), so a stage
//!   that returns or panics drops its ends and its peers see a disconnection instead of waiting;
//!   receivers shared by workers are `Arc`s, dropped when the last worker ends;
//! - every stage runs under [`Abort::guard`]: its error or its panic becomes the pipeline's
//!   error (typed, naming the stage) and raises the flag the others check between items;
//! - a wait that no disconnection can end (a free buffer from [`crate::pool::Pool`]) polls the
//!   flag;
//! - each appliance request is bounded by the client's retry window, so a stage busy in one ends.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use ferry_client::{Client, ClientError};
use ferry_format::ChunkId;

use crate::EngineError;

/// The appliance as the data path uses it. [`Client`] is the real one; tests use stores that
/// fail, stall or panic.
pub trait ChunkStore: Sync {
    /// Which of `ids` the backup session's appliance lacks.
    fn missing_chunks(&self, session: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>, ClientError>;
    /// Upload one zstd frame; true when it was new.
    fn put_chunk(&self, id: &ChunkId, zstd_frame: &[u8]) -> Result<bool, ClientError>;
    /// Fetch a chunk's zstd frame into `out` (unverified; the caller verifies it).
    fn get_chunk(&self, id: &ChunkId, out: &mut Vec<u8>, limit: u64) -> Result<(), ClientError>;
}

impl ChunkStore for Client {
    fn missing_chunks(&self, session: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>, ClientError> {
        Client::missing_chunks(self, session, ids)
    }
    fn put_chunk(&self, id: &ChunkId, zstd_frame: &[u8]) -> Result<bool, ClientError> {
        Client::put_chunk(self, id, zstd_frame)
    }
    fn get_chunk(&self, id: &ChunkId, out: &mut Vec<u8>, limit: u64) -> Result<(), ClientError> {
        Client::get_chunk(self, id, out, limit)
    }
}

/// First error wins; every stage stops when the flag is up.
#[derive(Default)]
pub(crate) struct Abort {
    flag: AtomicBool,
    error: Mutex<Option<EngineError>>,
}

impl Abort {
    pub(crate) fn set(&self, e: EngineError) {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
        self.flag.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The first error, if any stage failed.
    pub(crate) fn take(&self) -> Option<EngineError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Run one stage: an error or a panic becomes the pipeline's error and stops the others.
    /// Whatever the stage owns (its channel ends) is dropped when it ends, either way.
    pub(crate) fn guard<T>(
        &self,
        stage: &str,
        f: impl FnOnce() -> Result<T, EngineError>,
    ) -> Option<T> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.set(e);
                None
            }
            Err(panic) => {
                self.set(EngineError::Worker(format!(
                    "{stage} panicked ({}): this is a bug, please report it",
                    panic_text(&*panic)
                )));
                None
            }
        }
    }
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Faults in one stage must end both pipelines with that stage's error, in bounded time, and a
/// restore must write nothing it has not verified. Every case runs under [`within`], so a
/// deadlock fails the test instead of hanging it.
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use ferry_format::{DiskIndex, Entry};
    use ferry_image::{DiskSource, ImageError, ImageFormat};

    use crate::backup::{backup_disk, BackupOptions, Counters, SourceLimits};
    use crate::progress::Progress;
    use crate::restore::sync::sync_chunks;
    use crate::target::{Target, TargetKind};

    const CHUNK: usize = 64 << 10;
    const CHUNKS: usize = 48;
    /// Far above what any case needs (well under a second each): hitting it means a deadlock.
    const DEADLOCK: Duration = Duration::from_secs(30);

    /// Run `f` on its own thread; fail if it has not returned within [`DEADLOCK`].
    fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(DEADLOCK) {
            Ok(v) => v,
            Err(_) => panic!("{what}: the pipeline did not end within {DEADLOCK:?} (deadlock)"),
        }
    }

    fn disk_bytes(seed: u64) -> Vec<u8> {
        let mut x = seed.max(1);
        (0..CHUNK * CHUNKS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn no_space() -> ClientError {
        ClientError::ServerFailing {
            url: "https://appliance".into(),
            what: "PUT /chunks/…".into(),
            status: 500,
            message: "write chunk: No space left on device (os error 28)".into(),
            waited: Duration::from_secs(20),
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Fault {
        None,
        /// Calls number `n` and later fail (counted from 0 over all threads).
        FailFrom(usize),
        /// Call number `n` panics.
        PanicAt(usize),
        /// Every known-chunks query fails.
        QueryFails,
        /// Every fetch of the chunk at this index fails; the others succeed.
        FailChunk(usize),
        /// The chunk at this index comes back with another chunk's frame.
        CorruptChunk(usize),
    }

    /// An in-memory appliance with one injected fault.
    struct FakeStore {
        fault: Fault,
        calls: AtomicUsize,
        frames: Mutex<HashMap<ChunkId, Vec<u8>>>,
        /// Index of each chunk id in the test disk (for per-chunk faults).
        order: HashMap<ChunkId, usize>,
    }

    impl FakeStore {
        fn new(fault: Fault) -> Self {
            FakeStore {
                fault,
                calls: AtomicUsize::new(0),
                frames: Mutex::default(),
                order: HashMap::new(),
            }
        }

        /// A store holding every chunk of `disk` (for restores).
        fn holding(disk: &[u8], fault: Fault) -> Self {
            let mut s = FakeStore::new(fault);
            let mut frames = HashMap::new();
            for (i, c) in disk.chunks(CHUNK).enumerate() {
                let id = ChunkId::of(c);
                frames.insert(id, zstd::bulk::compress(c, 1).expect("zstd"));
                s.order.insert(id, i);
            }
            s.frames = Mutex::new(frames);
            s
        }

        /// Count a call and apply a call-numbered fault.
        fn call(&self) -> Result<(), ClientError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            match self.fault {
                Fault::FailFrom(k) if n >= k => Err(no_space()),
                Fault::PanicAt(k) if n == k => panic!("injected panic in call {n}"),
                _ => Ok(()),
            }
        }
    }

    impl ChunkStore for FakeStore {
        fn missing_chunks(&self, _: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>, ClientError> {
            if self.fault == Fault::QueryFails {
                return Err(no_space());
            }
            let frames = self.frames.lock().expect("frames");
            Ok(ids
                .iter()
                .filter(|id| !frames.contains_key(id))
                .copied()
                .collect())
        }
        fn put_chunk(&self, id: &ChunkId, frame: &[u8]) -> Result<bool, ClientError> {
            self.call()?;
            let mut frames = self.frames.lock().expect("frames");
            Ok(frames.insert(*id, frame.to_vec()).is_none())
        }
        fn get_chunk(&self, id: &ChunkId, out: &mut Vec<u8>, _: u64) -> Result<(), ClientError> {
            self.call()?;
            let i = self.order[id];
            let frames = self.frames.lock().expect("frames");
            let frame = match self.fault {
                Fault::FailChunk(k) if k == i => return Err(no_space()),
                // A neighbour's frame: decompresses fine, hashes wrong.
                Fault::CorruptChunk(k) if k == i => {
                    let other = self.order.iter().find(|(_, &j)| j == (i + 1) % CHUNKS);
                    &frames[other.expect("neighbour").0]
                }
                _ => &frames[id],
            };
            out.clear();
            out.extend_from_slice(frame);
            Ok(())
        }
    }

    struct Mem {
        bytes: Vec<u8>,
        /// Reading this chunk fails.
        bad_chunk: Option<usize>,
        /// Reads under way now, and the most seen at once.
        reading: AtomicUsize,
        most_reading: Arc<AtomicUsize>,
    }

    impl DiskSource for Mem {
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
            if self.bad_chunk == Some(offset as usize / CHUNK) {
                return Err(ImageError::Read {
                    path: "mem".into(),
                    offset,
                    source: std::io::Error::from_raw_os_error(libc::EIO),
                });
            }
            let now = self.reading.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_reading.fetch_max(now, Ordering::SeqCst);
            // Long enough for the other readers to overlap this one.
            std::thread::sleep(Duration::from_millis(2));
            let o = offset as usize;
            buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
            self.reading.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
        fn format(&self) -> ImageFormat {
            ImageFormat::Raw
        }
    }

    /// A backup of a 48-chunk disk with `parallel` uploads and `parallel` reads in flight;
    /// also returns the most source reads seen at once.
    fn run_backup(
        fault: Fault,
        bad_chunk: Option<usize>,
        parallel: usize,
    ) -> (Result<DiskIndex, EngineError>, Arc<FakeStore>, usize) {
        let store = Arc::new(FakeStore::new(fault));
        let s = Arc::clone(&store);
        let most_reading = Arc::new(AtomicUsize::new(0));
        let most = Arc::clone(&most_reading);
        let r = within(
            &format!("backup with {fault:?}, parallel {parallel}"),
            move || {
                let src = Mem {
                    bytes: disk_bytes(7),
                    bad_chunk,
                    reading: AtomicUsize::new(0),
                    most_reading: most,
                };
                let opts = BackupOptions {
                    machine: "m".into(),
                    disks: Vec::new(),
                    chunk_size: CHUNK as u32,
                    parallel,
                    level: 1,
                    quiet: true,
                    limits: SourceLimits {
                        reads_in_flight: parallel,
                        ..SourceLimits::unlimited()
                    },
                    ..Default::default()
                };
                let counters = Counters::default();
                backup_disk(
                    &*s,
                    &opts,
                    "session",
                    &src,
                    None,
                    &counters,
                    &mut HashSet::new(),
                    &Progress::new(),
                )
            },
        );
        (r, store, most_reading.load(Ordering::SeqCst))
    }

    #[test]
    fn a_healthy_backup_uploads_every_chunk_with_at_most_the_reads_asked_in_flight() {
        let disk = disk_bytes(7);
        for parallel in [1, 4] {
            let (r, store, most_reading) = run_backup(Fault::None, None, parallel);
            let index = r.expect("backup");
            // Readers finish out of order; every entry is still the right chunk.
            for (i, (e, c)) in index.entries.iter().zip(disk.chunks(CHUNK)).enumerate() {
                assert_eq!(*e, Entry::Data(ChunkId::of(c)), "entry {i}");
            }
            assert_eq!(store.frames.lock().expect("frames").len(), CHUNKS);
            assert!(
                (1..=parallel).contains(&most_reading),
                "{most_reading} reads in flight, {parallel} allowed"
            );
            // More than one reader really reads at once (each read sleeps 2 ms).
            assert!(parallel == 1 || most_reading > 1, "reads never overlapped");
            eprintln!("reads in flight: at most {most_reading} of {parallel} allowed");
        }
    }

    #[test]
    fn backup_faults_end_with_the_cause_and_never_hang() {
        let cases: &[(Fault, Option<usize>, &str)] = &[
            // Disk full on the appliance from the first upload: every worker fails.
            (Fault::FailFrom(0), None, "No space left on device"),
            // One worker fails mid-way while the others still succeed.
            (Fault::FailFrom(5), None, "No space left on device"),
            (Fault::PanicAt(3), None, "an upload worker panicked"),
            (Fault::QueryFails, None, "No space left on device"),
            (Fault::None, Some(20), "at offset 1310720"),
        ];
        for &(fault, bad_chunk, cause) in cases {
            for parallel in [1, 2, 4] {
                let t = Instant::now();
                let (r, store, _) = run_backup(fault, bad_chunk, parallel);
                let e = r.expect_err("the backup must fail");
                assert!(
                    e.to_string().contains(cause),
                    "{fault:?}/{parallel}: {e} (expected {cause:?})"
                );
                // Stopped promptly: at most the calls already under way when it failed.
                let calls = store.calls.load(Ordering::SeqCst);
                if let Fault::FailFrom(k) | Fault::PanicAt(k) = fault {
                    assert!(
                        calls <= k + 1 + parallel,
                        "{fault:?}/{parallel}: {calls} uploads"
                    );
                }
                eprintln!(
                    "backup {fault:?}/{bad_chunk:?} parallel {parallel}: failed in {:?}",
                    t.elapsed()
                );
            }
        }
    }

    struct Restore {
        _dir: tempfile::TempDir,
        path: PathBuf,
        disk: Vec<u8>,
    }

    fn run_restore(
        fault: Fault,
        parallel: usize,
        read_only: bool,
    ) -> (Result<(), EngineError>, Restore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("target.img");
        let disk = disk_bytes(11);
        let size = disk.len() as u64;
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(size))
            .expect("target");
        let store = FakeStore::holding(&disk, fault);
        let mut index = DiskIndex::new_zero(size, CHUNK as u32).expect("index");
        for (e, c) in index.entries.iter_mut().zip(disk.chunks(CHUNK)) {
            *e = Entry::Data(ChunkId::of(c));
        }
        let p = path.clone();
        let r = within(
            &format!("restore with {fault:?}, parallel {parallel}"),
            move || {
                let file = if read_only {
                    std::fs::File::open(&p)
                } else {
                    std::fs::OpenOptions::new().read(true).write(true).open(&p)
                }
                .expect("open target");
                let t = Target {
                    path: p,
                    file,
                    kind: TargetKind::File { created: true },
                    size,
                    marker: None,
                };
                sync_chunks(&store, "sda", &index, &[], &t, parallel, &Progress::new()).map(|_| ())
            },
        );
        (
            r,
            Restore {
                _dir: dir,
                path,
                disk,
            },
        )
    }

    /// Every chunk of the target is still zero or is the snapshot's; the boot chunk is zero.
    fn only_verified_writes(r: &Restore) -> usize {
        let f = std::fs::File::open(&r.path).expect("target");
        let mut buf = vec![0u8; CHUNK];
        let mut written = 0;
        for (i, want) in r.disk.chunks(CHUNK).enumerate() {
            f.read_exact_at(&mut buf, (i * CHUNK) as u64)
                .expect("read target");
            if buf.iter().all(|&b| b == 0) {
                continue;
            }
            assert!(
                i != 0,
                "the boot-critical first chunk was written by a failed restore"
            );
            assert!(
                buf == want,
                "chunk {i} holds bytes that are not the snapshot's"
            );
            written += 1;
        }
        written
    }

    #[test]
    fn a_healthy_restore_writes_every_chunk() {
        let (r, restore) = run_restore(Fault::None, 4, false);
        r.expect("restore");
        assert_eq!(std::fs::read(&restore.path).expect("target"), restore.disk);
    }

    #[test]
    fn restore_faults_end_with_the_cause_write_only_verified_data_and_never_hang() {
        let cases: &[(Fault, bool, &str)] = &[
            // The appliance fails every fetch (stopped, or its disk failing).
            (Fault::FailFrom(0), false, "No space left on device"),
            // Fetches fail part-way through the disk.
            (Fault::FailFrom(10), false, "No space left on device"),
            // One chunk keeps failing while the rest arrive.
            (Fault::FailChunk(30), false, "No space left on device"),
            (Fault::CorruptChunk(12), false, "does not match its id"),
            (Fault::PanicAt(7), false, "a chunk fetch worker panicked"),
            // The target refuses writes: the writer fails, fetchers must not wait on it.
            (Fault::None, true, "write"),
        ];
        for &(fault, read_only, cause) in cases {
            for parallel in [1, 2, 4] {
                let t = Instant::now();
                let (r, restore) = run_restore(fault, parallel, read_only);
                let e = r.expect_err("the restore must fail");
                assert!(
                    e.to_string().contains(cause),
                    "{fault:?}/{parallel}: {e} (expected {cause:?})"
                );
                let written = only_verified_writes(&restore);
                eprintln!(
                    "restore {fault:?} read-only {read_only} parallel {parallel}: failed in {:?}, {written} verified chunks written",
                    t.elapsed()
                );
            }
        }
    }
}
