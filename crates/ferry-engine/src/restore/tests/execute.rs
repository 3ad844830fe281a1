//! `execute` against the in-memory appliance on temporary image files: it runs the plan's steps,
//! writes only verified chunks, holds the first chunk back until everything else is durable,
//! fetches only what differs, resumes a job, and names the step an error stopped in.

use std::os::unix::fs::FileExt;

use ferry_format::marker::RestoreMarker;

use super::*;
use crate::restore::memory::{MemDisk, MemorySource};
use crate::restore::{execute, gather, plan, JobMark, RestorePlan, RestoreSummary, Step};
use crate::EngineError;

const SMALL: u32 = 64 << 10;
const CHUNKS: usize = 16;
const SNAP: &str = "m-20260101-000000";

/// A 1 MiB disk of 64 KiB chunks: noise, with chunk 4 all zeros.
fn disk_bytes(seed: u64) -> Vec<u8> {
    let mut b = noise(SMALL as usize * CHUNKS, seed);
    b[4 * SMALL as usize..5 * SMALL as usize].fill(0);
    b
}

fn source(bytes: &[u8]) -> MemorySource {
    let mut s = MemorySource::new();
    let d = MemDisk {
        name: "d",
        bytes,
        logical_sector_size: 512,
        layout: None,
    };
    s.add_snapshot(SNAP, "m", SMALL, &[d]).expect("snapshot");
    s
}

fn chunk(b: &[u8], i: usize) -> &[u8] {
    &b[i * SMALL as usize..(i + 1) * SMALL as usize]
}

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        Run {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn target(&self) -> PathBuf {
        self.dir.path().join("t.img")
    }
    fn read(&self) -> Vec<u8> {
        std::fs::read(self.target()).expect("target")
    }
    fn plan(&self, src: &MemorySource, edit: impl Fn(&mut RestoreOptions)) -> RestorePlan {
        let t = self.target();
        let mut opts = options(&[("d", t.as_path())]);
        opts.snapshot = SNAP.into();
        edit(&mut opts);
        let inputs = gather(src, &opts).expect("gather");
        plan(&inputs, &opts).expect("plan")
    }
    fn execute(&self, src: &MemorySource, p: &RestorePlan) -> Result<RestoreSummary, EngineError> {
        execute(src, p, &options(&[]).exec())
    }
}

#[test]
fn a_full_restore_writes_the_snapshot_exactly() {
    let disk = disk_bytes(1);
    let src = source(&disk);
    let r = Run::new();
    let p = r.plan(&src, |_| {});
    assert_eq!(
        p.steps,
        [
            Step::Sync {
                disk: 0,
                marker: false
            },
            Step::FirstChunkLast {
                disk: 0,
                len: u64::from(SMALL),
                patches: vec![]
            }
        ]
    );
    let s = r.execute(&src, &p).expect("restore");
    assert_eq!(r.read(), disk);
    assert_eq!((s.chunks_fetched, s.disks.len()), (CHUNKS as u64 - 1, 1));
    // A fresh file is known zero: the zero chunk is neither read nor written.
    assert_eq!((s.chunks_zero_skipped, s.chunks_zero_written), (1, 0));
    assert_eq!(s.bytes_written, (CHUNKS as u64 - 1) * u64::from(SMALL));
}

#[test]
fn a_delta_restore_fetches_and_writes_only_the_chunks_that_differ() {
    let old = disk_bytes(1);
    let mut new = old.clone();
    for i in [3, 7, 12] {
        new[i * SMALL as usize + 5] ^= 0xff;
    }
    let r = Run::new();
    std::fs::write(r.target(), &old).expect("old snapshot on the target");
    let src = source(&new);
    // Without --overwrite the target (it holds data) is refused before anything is planned.
    let opts = |o: &mut RestoreOptions| o.snapshot = SNAP.into();
    let mut o = options(&[("d", r.target().as_path())]);
    opts(&mut o);
    let e = gather(&src, &o).expect_err("holds data");
    assert!(
        matches!(&e, EngineError::Refused(crate::Refusal::HoldsData { .. })),
        "{e:?}"
    );
    let p = r.plan(&src, |o| o.overwrite = true);
    assert!(p.to_string().contains("1. sync disk d onto"), "{p}");
    let s = r.execute(&src, &p).expect("restore");
    let want: Vec<_> = [3, 7, 12].iter().map(|&i| id(chunk(&new, i))).collect();
    let mut fetched = src.fetched();
    fetched.sort_by_key(|f| want.iter().position(|w| w == f));
    assert_eq!(fetched, want, "only the differing chunks are fetched");
    assert_eq!((s.chunks_fetched, s.chunks_present), (3, CHUNKS as u64 - 4));
    assert_eq!(s.bytes_written, 3 * u64::from(SMALL));
    assert_eq!(r.read(), new);
}

#[test]
fn a_corrupt_chunk_is_never_written_and_the_error_names_the_step() {
    let disk = disk_bytes(2);
    let src = source(&disk);
    // Chunk 9 is served with chunk 10's frame: it decompresses, but hashes wrong.
    let other = src.frame(&id(chunk(&disk, 10))).expect("frame");
    src.replace_frame(id(chunk(&disk, 9)), other);
    let r = Run::new();
    let p = r.plan(&src, |_| {});
    let e = r.execute(&src, &p).expect_err("corrupt");
    assert!(
        matches!(e.cause(), EngineError::CorruptChunk { offset, disk, .. }
            if *offset == 9 * u64::from(SMALL) && disk == "d"),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "step 1 (sync disk d onto {}) failed: chunk ",
            r.target().display()
        )) && text.contains("does not match its id"),
        "{text}"
    );
    let t = r.read();
    assert!(
        chunk(&t, 9).iter().all(|&b| b == 0),
        "the corrupt chunk reached the target"
    );
    assert!(
        chunk(&t, 0).iter().all(|&b| b == 0),
        "the first chunk was written"
    );
}

#[test]
fn the_first_chunk_is_written_last_and_a_job_resumes_where_it_stopped() {
    let disk = disk_bytes(3);
    let failing = source(&disk);
    failing.fail_fetches_of(id(chunk(&disk, 13)));
    let r = Run::new();
    let job = |o: &mut RestoreOptions| {
        o.job = Some(JobMark {
            job: "job-00000001".into(),
            proof: "aa".repeat(32),
        })
    };
    let p = r.plan(&failing, job);
    // One fetch worker: chunks 1..12 reach the writer before the fetch of chunk 13 fails.
    let mut one = options(&[]).exec();
    one.parallel = 1;
    let e = execute(&failing, &p, &one).expect_err("a fetch fails");
    assert!(e.to_string().contains("injected failure"), "{e}");
    // Stopped mid-way: the first chunk holds this job's marker, never the snapshot's bytes.
    let t = r.read();
    let marker = RestoreMarker::decode(chunk(&t, 0))
        .expect("marker")
        .expect("a marker");
    assert_eq!(
        (marker.job.as_str(), marker.disk.as_str()),
        ("job-00000001", "d")
    );
    assert_ne!(chunk(&t, 0), chunk(&disk, 0));
    assert_eq!(chunk(&t, 13), vec![0u8; SMALL as usize].as_slice());
    // Chunk 4 is zero on both; at least chunks 1..8 were written before the failure.
    let written = (1..CHUNKS)
        .filter(|&i| chunk(&t, i) == chunk(&disk, i))
        .count();
    assert!(
        (8..CHUNKS - 1).contains(&written),
        "{written} chunks in place"
    );

    // The rerun: no --overwrite needed for the job's own marker; only what is missing comes.
    let healthy = source(&disk);
    let p = r.plan(&healthy, job);
    assert!(p.disks[0].target.resumes);
    let s = r.execute(&healthy, &p).expect("resumed");
    assert_eq!(r.read(), disk);
    // What the first run wrote is found in place (less the zero chunk 4); the marked first
    // chunk is fetched again.
    assert_eq!(s.chunks_present as usize, written - 1);
    assert_eq!(s.chunks_fetched as usize, CHUNKS - written);
    assert_eq!(src_fetched_first(&healthy, &disk), 1);
}

#[test]
fn a_dry_run_compares_and_writes_nothing() {
    let disk = disk_bytes(4);
    let src = source(&disk);
    let r = Run::new();
    let p = r.plan(&src, |o| o.dry_run = true);
    let mut opts = options(&[]);
    opts.dry_run = true;
    let s = execute(&src, &p, &opts.exec()).expect("dry run");
    assert!(s.dry_run);
    assert_eq!(s.chunks_fetched, CHUNKS as u64 - 1);
    assert!(src.fetched().is_empty());
    assert!(!r.target().exists());
}

#[test]
fn layout_patches_land_after_the_data_and_inside_the_first_chunk() {
    // A 1 MiB GPT disk restored onto a 2 MiB file: the backup header moves to the new end.
    let mut disk = disk_bytes(5);
    disk[..SMALL as usize].fill(0);
    let layout = gpt(
        MIB,
        &[(1, 34, 2047 - 34, ferry_format::layout::ContentKind::Ext4)],
    );
    let mut src = MemorySource::new();
    let d = MemDisk {
        name: "d",
        bytes: &disk,
        logical_sector_size: 512,
        layout: Some(layout),
    };
    src.add_snapshot(SNAP, "m", SMALL, &[d]).expect("snapshot");
    let r = Run::new();
    std::fs::File::create(r.target())
        .and_then(|f| f.set_len(2 * MIB))
        .expect("target");
    let p = r.plan(&src, |_| {});
    assert_eq!(p.steps.len(), 3, "{p}");
    assert!(matches!(p.steps[1], Step::LayoutPatches { .. }), "{p}");
    r.execute(&src, &p).expect("restore");
    let f = std::fs::File::open(r.target()).expect("target");
    let mut sig = [0u8; 8];
    f.read_exact_at(&mut sig, 2 * MIB - 512).expect("read");
    assert_eq!(&sig, b"EFI PART", "the backup GPT header at the new end");
    f.read_exact_at(&mut sig, 512).expect("read");
    assert_eq!(
        &sig, b"EFI PART",
        "the primary GPT header, written with the first chunk"
    );
    let kept = SMALL as usize..MIB as usize - 512 * 33;
    assert_eq!(&r.read()[kept.clone()], &disk[kept]);
}

/// How often the first chunk was fetched.
fn src_fetched_first(src: &MemorySource, disk: &[u8]) -> usize {
    let first = id(chunk(disk, 0));
    src.fetched().iter().filter(|&&f| f == first).count()
}
