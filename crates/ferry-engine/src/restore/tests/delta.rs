//! A delta from a known basis: the planner's table (which chunks each pair of entries gives, the
//! first chunk's rule, the refusals) and `execute` on the in-memory appliance (the result equals
//! a full restore, nothing is read from the target, a corrupt chunk is never written).

use ferry_format::marker::RestoreMarker;
use ferry_format::{DiskIndex, Entry};

use super::*;
use crate::refusal::BasisMismatch;
use crate::restore::memory::{MemDisk, MemorySource};
use crate::restore::{
    execute, gather, gather_with_basis, plan, Basis, BasisDisk, Delta, GatheredDisk, Inputs,
    JobMark, RestorePlan, Step,
};
use crate::{EngineError, Refusal};

// ---- the planner, pure ----

const N: usize = 8;

fn data(n: u8) -> Entry {
    Entry::Data(ChunkId::of(&[n]))
}

fn index(entries: &[Entry]) -> DiskIndex {
    let mut i = DiskIndex::new_zero(N as u64 * u64::from(CHUNK), CHUNK).expect("index");
    i.entries.copy_from_slice(entries);
    i
}

/// Snapshot Y (`new`) of disk sda onto a same-size device that holds X (`old`) exactly.
fn inputs(old: &[Entry], new: &[Entry]) -> Inputs {
    let size = N as u64 * u64::from(CHUNK);
    let (m, _) = disk("sda", size, None);
    Inputs {
        manifest: manifest(vec![m]),
        disks: vec![GatheredDisk {
            disk: "sda".into(),
            index: index(new),
            target: device("/dev/vdb", size),
        }],
        basis: Some(Basis {
            snapshot: "m-old".into(),
            machine: "m".into(),
            chunk_size: CHUNK,
            disks: vec![BasisDisk {
                disk: "sda".into(),
                size,
                index: index(old),
            }],
        }),
    }
}

fn delta_of(p: &RestorePlan) -> &Delta {
    match &p.steps[0] {
        Step::DeltaFromBasis { delta, .. } => delta,
        s => panic!("step 1 is {s:?}"),
    }
}

#[test]
fn the_delta_is_the_entries_that_differ() {
    let (z, u) = (Entry::Zero, Entry::Unused);
    let x = [data(0), data(1), data(2), z, u, data(5), z, data(7)];
    let c = u64::from(CHUNK);
    // (case, new entries, fetched, zeroed, first chunk refreshed, bytes to fetch)
    type Case = (&'static str, [Entry; N], Vec<usize>, Vec<usize>, bool, u64);
    let cases: Vec<Case> = vec![
        ("identical snapshots: nothing", x, vec![], vec![], false, 0),
        (
            "one chunk changed: it, and the first chunk refreshed",
            [data(0), data(1), data(9), z, u, data(5), z, data(7)],
            vec![2],
            vec![],
            true,
            2 * c,
        ),
        (
            "data to zero: written as zeros",
            [data(0), data(1), data(2), z, u, z, z, u],
            vec![],
            vec![5, 7],
            true,
            c,
        ),
        (
            "zero and unused to data: fetched",
            [
                data(0),
                data(1),
                data(2),
                data(3),
                data(4),
                data(5),
                z,
                data(7),
            ],
            vec![3, 4],
            vec![],
            true,
            3 * c,
        ),
        (
            "zero and unused swapped: both read as zeros, nothing",
            [data(0), data(1), data(2), u, z, data(5), u, data(7)],
            vec![],
            vec![],
            false,
            0,
        ),
        (
            "only the first chunk changed: just it, last",
            [data(9), data(1), data(2), z, u, data(5), z, data(7)],
            vec![0],
            vec![],
            false,
            c,
        ),
        (
            "the first chunk and another changed: no refresh needed",
            [z, data(1), data(2), z, u, data(5), z, data(8)],
            vec![7],
            vec![0],
            false,
            c,
        ),
    ];
    for (name, y, fetch, zero, refresh, bytes) in cases {
        let p = plan(&inputs(&x, &y), &options(&[])).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = delta_of(&p);
        assert_eq!(
            (&d.fetch, &d.zero, d.refresh_first, d.fetch_bytes),
            (&fetch, &zero, refresh, bytes),
            "{name}"
        );
        assert_eq!(d.chunks, N, "{name}");
        // The first chunk is still written last, by its own step.
        assert!(
            matches!(p.steps[1], Step::FirstChunkLast { disk: 0, .. }),
            "{name}"
        );
        let text = p.to_string();
        let want = format!(
            "1. delta-sync disk sda onto /dev/vdb: apply the delta from snapshot m-old: {} of {N} chunks differ ({bytes} bytes to fetch), no target read",
            fetch.len() + zero.len()
        );
        assert!(text.contains(&want), "{name}: {want:?} not in\n{text}");
        assert!(
            text.contains("as a delta from snapshot m-old that the targets hold"),
            "{text}"
        );
        assert_eq!(
            text.contains("before any other write: wipe the first chunk"),
            d.wipes_first(),
            "{name}: {text}"
        );
        if fetch.is_empty() && zero.is_empty() {
            assert!(text.contains("nothing is written"), "{name}: {text}");
        }
    }
}

#[test]
fn a_job_delta_puts_the_marker_first() {
    let x = [
        data(0),
        data(1),
        Entry::Zero,
        data(3),
        data(4),
        data(5),
        data(6),
        data(7),
    ];
    let mut y = x;
    y[4] = data(44);
    let mut inputs = inputs(&x, &y);
    inputs.disks[0].target.marker = Some(RestoreMarker::new(
        "job-00000001",
        "m-20260101-000000",
        "sda",
        &"aa".repeat(32),
    ));
    let p = plan(&inputs, &options(&[])).expect("plan");
    assert!(matches!(
        p.steps[0],
        Step::DeltaFromBasis { marker: true, .. }
    ));
    let text = p.to_string();
    assert!(
        text.contains("wipe the first chunk and write this job's in-progress marker there")
            && text.contains("the first chunk does not differ but is wiped: it is fetched and written again last"),
        "{text}"
    );
}

#[test]
fn a_basis_that_does_not_fit_is_refused_by_the_planner() {
    let x = [data(0); N];
    type Edit = fn(&mut Inputs, &mut RestoreOptions);
    type Why = fn(&BasisMismatch) -> bool;
    let cases: Vec<(&str, Edit, Why)> = vec![
        (
            "another machine",
            |i, _| i.basis.as_mut().expect("basis").machine = "other".into(),
            |w| matches!(w, BasisMismatch::OtherMachine { basis_machine, .. } if basis_machine == "other"),
        ),
        (
            "another chunk size",
            |i, _| i.basis.as_mut().expect("basis").chunk_size = CHUNK / 2,
            |w| matches!(w, BasisMismatch::ChunkSize { basis, new } if *basis == CHUNK / 2 && *new == CHUNK),
        ),
        (
            "another disk size",
            |i, _| {
                let b = &mut i.basis.as_mut().expect("basis").disks[0];
                b.size *= 2;
                b.index = DiskIndex::new_zero(b.size, CHUNK).expect("index");
            },
            |w| matches!(w, BasisMismatch::DiskSize { .. }),
        ),
        (
            "another disk",
            |i, _| i.basis.as_mut().expect("basis").disks[0].disk = "sdb".into(),
            |w| matches!(w, BasisMismatch::OtherDisks),
        ),
        (
            "--grow",
            |_, o| o.grow = true,
            |w| matches!(w, BasisMismatch::Grow),
        ),
    ];
    for (name, edit, is) in cases {
        let mut i = inputs(&x, &x);
        let mut o = options(&[]);
        edit(&mut i, &mut o);
        let e = plan(&i, &o).expect_err(name);
        match &e {
            EngineError::Refused(Refusal::BasisUnusable { basis, disk, why }) => {
                assert_eq!((basis.as_str(), disk.as_str()), ("m-old", "sda"), "{name}");
                assert!(is(why), "{name}: {why:?}");
            }
            e => panic!("{name}: {e:?}"),
        }
        let text = e.to_string();
        assert!(
            text.starts_with("snapshot m-old cannot be the basis of disk sda: ")
                && text.contains("restore without --basis (a full seeded sync"),
            "{text}"
        );
    }
}

#[test]
fn a_layout_change_is_refused_by_the_planner() {
    // A GPT disk onto a larger device: the backup header would move, so the target would not
    // hold the snapshot's bytes.
    let layout = sda_layout();
    let (m, index) = disk("sda", 20 * GIB, Some(layout));
    let i = Inputs {
        manifest: manifest(vec![m]),
        disks: vec![GatheredDisk {
            disk: "sda".into(),
            index: index.clone(),
            target: device("/dev/vdb", 30 * GIB),
        }],
        basis: Some(Basis {
            snapshot: "m-old".into(),
            machine: "m".into(),
            chunk_size: CHUNK,
            disks: vec![BasisDisk {
                disk: "sda".into(),
                size: 20 * GIB,
                index,
            }],
        }),
    };
    let e = plan(&i, &options(&[])).expect_err("layout changes");
    assert!(
        matches!(
            &e,
            EngineError::Refused(Refusal::BasisUnusable {
                why: BasisMismatch::LayoutChanges { .. },
                ..
            })
        ),
        "{e:?}"
    );
}

// ---- execute, on the in-memory appliance ----

const SMALL: u32 = 64 << 10;
const CHUNKS: usize = 16;
const X: &str = "m-1";
const Y: &str = "m-2";

/// X: noise with chunk 4 zero. Y: chunks 3 and 9 changed, chunk 6 zeroed, chunk 4 filled.
fn snapshots() -> (Vec<u8>, Vec<u8>) {
    let sz = SMALL as usize;
    let mut x = noise(sz * CHUNKS, 11);
    x[4 * sz..5 * sz].fill(0);
    let mut y = x.clone();
    y[3 * sz + 100] ^= 0xff;
    y[9 * sz..9 * sz + 300].fill(7);
    y[6 * sz..7 * sz].fill(0);
    y[4 * sz..5 * sz].copy_from_slice(&noise(sz, 12));
    (x, y)
}

fn add(src: &mut MemorySource, id: &str, machine: &str, bytes: &[u8]) {
    let d = MemDisk {
        name: "d",
        bytes,
        logical_sector_size: 512,
        layout: None,
    };
    src.add_snapshot(id, machine, SMALL, &[d])
        .expect("snapshot");
}

fn chunk(b: &[u8], i: usize) -> &[u8] {
    &b[i * SMALL as usize..(i + 1) * SMALL as usize]
}

fn opts(target: &Path, snapshot: &str) -> RestoreOptions {
    let mut o = options(&[("d", target)]);
    o.snapshot = snapshot.into();
    o.overwrite = true;
    o
}

/// A target holding X exactly, restored the ordinary way.
fn restored_x(src: &MemorySource, dir: &Path) -> PathBuf {
    let t = dir.join("t.img");
    let mut o = opts(&t, X);
    o.overwrite = false;
    let p = plan(&gather(src, &o).expect("gather"), &o).expect("plan");
    execute(src, &p, &o.exec()).expect("restore X");
    t
}

#[test]
fn a_delta_gives_what_a_full_restore_gives_without_reading_the_target() {
    let (x, y) = snapshots();
    let mut src = MemorySource::new();
    add(&mut src, X, "m", &x);
    add(&mut src, Y, "m", &y);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = restored_x(&src, dir.path());
    assert_eq!(std::fs::read(&t).expect("target"), x);
    let before = src.fetched().len();

    let o = opts(&t, Y);
    let inputs = gather_with_basis(&src, &o, Some(X)).expect("gather");
    let p = plan(&inputs, &o).expect("plan");
    let d = delta_of(&p);
    assert_eq!(
        (&d.fetch, &d.zero, d.refresh_first),
        (&vec![3, 4, 9], &vec![6], true)
    );
    let s = execute(&src, &p, &o.exec()).expect("delta");
    let got = std::fs::read(&t).expect("target");
    assert!(got == y, "the target is not snapshot Y");

    // Only the differing chunks and the refreshed first chunk were fetched; nothing was read.
    let mut fetched = src.fetched()[before..].to_vec();
    let mut want: Vec<ChunkId> = [0, 3, 4, 9].iter().map(|&i| id(chunk(&y, i))).collect();
    fetched.sort();
    want.sort();
    assert_eq!(fetched, want);
    assert_eq!(s.target_bytes_read, 0);
    assert_eq!(s.basis.as_deref(), Some(X));
    assert_eq!((s.chunks_fetched, s.chunks_zero_written), (4, 1));
    assert_eq!(s.bytes_written, 5 * u64::from(SMALL));
    assert_eq!(s.chunks_present + s.chunks_zero_skipped, CHUNKS as u64 - 5);

    // The same bytes as a full restore of Y onto a fresh file.
    let full = dir.path().join("full.img");
    let fo = {
        let mut fo = opts(&full, Y);
        fo.overwrite = false;
        fo
    };
    let fp = plan(&gather(&src, &fo).expect("gather"), &fo).expect("plan");
    execute(&src, &fp, &fo.exec()).expect("full restore of Y");
    assert!(std::fs::read(&full).expect("full") == got);

    // A second delta from Y to Y writes nothing at all.
    let inputs = gather_with_basis(&src, &o, Some(Y)).expect("gather");
    let p = plan(&inputs, &o).expect("plan");
    let s = execute(&src, &p, &o.exec()).expect("empty delta");
    assert_eq!(
        (s.bytes_written, s.chunks_fetched, s.target_bytes_read),
        (0, 0, 0)
    );
    assert!(std::fs::read(&t).expect("target") == y);
}

#[test]
fn a_delta_trusts_its_basis_and_reads_nothing() {
    // A chunk the basis claims but the target does not hold stays wrong: proof that the delta
    // did not read the target (a seeded sync would have repaired it).
    let (x, y) = snapshots();
    let mut src = MemorySource::new();
    add(&mut src, X, "m", &x);
    add(&mut src, Y, "m", &y);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = restored_x(&src, dir.path());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&t)
        .expect("open");
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xaa; 16], 12 * u64::from(SMALL))
        .expect("damage");
    let o = opts(&t, Y);
    let p = plan(&gather_with_basis(&src, &o, Some(X)).expect("gather"), &o).expect("plan");
    execute(&src, &p, &o.exec()).expect("delta");
    let got = std::fs::read(&t).expect("target");
    assert_eq!(&got[12 * SMALL as usize..][..16], &[0xaa; 16]);
    let mut fixed = got.clone();
    fixed[12 * SMALL as usize..][..16].copy_from_slice(&y[12 * SMALL as usize..][..16]);
    assert!(fixed == y);
}

#[test]
fn a_corrupt_chunk_is_never_written_and_the_marker_stays() {
    let (x, _) = snapshots();
    // Every chunk but the first changes; the last one arrives corrupt.
    let mut y = x.clone();
    for i in 1..CHUNKS {
        y[i * SMALL as usize + 1] ^= 0x5a;
    }
    let mut src = MemorySource::new();
    add(&mut src, X, "m", &x);
    add(&mut src, Y, "m", &y);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = restored_x(&src, dir.path());
    // Chunk 15 of Y is served with chunk 1's frame: it decompresses but hashes wrong.
    let other = src.frame(&id(chunk(&y, 1))).expect("frame");
    src.replace_frame(id(chunk(&y, 15)), other);
    let mut o = opts(&t, Y);
    o.job = Some(JobMark {
        job: "job-00000002".into(),
        proof: "bb".repeat(32),
    });
    let p = plan(&gather_with_basis(&src, &o, Some(X)).expect("gather"), &o).expect("plan");
    // One fetch worker: the chunks before 15 reach the writer before its fetch fails.
    let mut one = o.exec();
    one.parallel = 1;
    let e = execute(&src, &p, &one).expect_err("corrupt");
    assert!(
        matches!(e.cause(), EngineError::CorruptChunk { offset, .. } if *offset == 15 * u64::from(SMALL)),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with("step 1 (delta-sync disk d onto "),
        "{e}"
    );
    let got = std::fs::read(&t).expect("target");
    assert_eq!(
        chunk(&got, 15),
        chunk(&x, 15),
        "the corrupt chunk reached the target"
    );
    assert!(
        (1..15).any(|i| chunk(&got, i) == chunk(&y, i)),
        "nothing was written"
    );
    // The first chunk carries the job's marker: an interrupted delta is detectable, and the
    // disk does not boot.
    let m = RestoreMarker::decode(chunk(&got, 0))
        .expect("marker")
        .expect("a marker");
    assert_eq!((m.job.as_str(), m.snapshot.as_str()), ("job-00000002", Y));
    assert_ne!(chunk(&got, 0), chunk(&y, 0));
}

#[test]
fn a_delta_dry_run_counts_from_the_plan_and_touches_nothing() {
    let (x, y) = snapshots();
    let mut src = MemorySource::new();
    add(&mut src, X, "m", &x);
    add(&mut src, Y, "m", &y);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = restored_x(&src, dir.path());
    let before = src.fetched().len();
    let mut o = opts(&t, Y);
    o.dry_run = true;
    let p = plan(&gather_with_basis(&src, &o, Some(X)).expect("gather"), &o).expect("plan");
    let s = execute(&src, &p, &o.exec()).expect("dry run");
    assert_eq!(src.fetched().len(), before);
    assert_eq!(
        (s.chunks_fetched, s.chunks_zero_written, s.target_bytes_read),
        (4, 1, 0)
    );
    assert_eq!(s.chunks_present + s.chunks_zero_skipped, CHUNKS as u64 - 5);
    assert!(std::fs::read(&t).expect("target") == x);
}

#[test]
fn gather_refuses_a_basis_that_does_not_fit_and_writes_nothing() {
    let (x, y) = snapshots();
    let mut src = MemorySource::new();
    add(&mut src, X, "m", &x);
    add(&mut src, Y, "m", &y);
    add(&mut src, "o-1", "o", &x);
    let mut longer = x.clone();
    longer.extend_from_slice(&noise(SMALL as usize, 3));
    add(&mut src, "m-big", "m", &longer);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = restored_x(&src, dir.path());
    let why = |basis: &str, o: &RestoreOptions| match gather_with_basis(&src, o, Some(basis)) {
        Err(EngineError::Refused(Refusal::BasisUnusable { why, .. })) => why,
        r => panic!("basis {basis}: {:?}", r.map(|_| ())),
    };
    let o = opts(&t, Y);
    assert!(matches!(why("o-1", &o), BasisMismatch::OtherMachine { .. }));
    assert!(matches!(why("m-big", &o), BasisMismatch::DiskSize { .. }));
    let mut grow = opts(&t, Y);
    grow.grow = true;
    assert!(matches!(why(X, &grow), BasisMismatch::Grow));
    // A target that is not exactly the disk's size, or does not exist.
    let short = dir.path().join("short.img");
    std::fs::write(&short, chunk(&x, 0)).expect("short");
    assert!(matches!(
        why(X, &opts(&short, Y)),
        BasisMismatch::TargetSize { .. }
    ));
    let missing = dir.path().join("missing.img");
    assert!(matches!(
        why(X, &opts(&missing, Y)),
        BasisMismatch::NoTarget { .. }
    ));
    assert!(!missing.exists());
    assert!(std::fs::read(&t).expect("target") == x);
    assert_eq!(std::fs::read(&short).expect("short"), chunk(&x, 0));
}
