//! The pure planner, table-driven: what steps each situation gives, in which order, and the
//! typed refusals. Nothing here touches a file.

use ferry_format::layout::ContentKind;
use ferry_format::marker::RestoreMarker;
use ferry_layout::{Action, GrowTarget, PlanError};

use super::*;
use crate::restore::{plan, GatheredDisk, Inputs, RestorePlan, Step};
use crate::{EngineError, Refusal};

type Check = fn(&RestorePlan);
type Refused = fn(&EngineError) -> bool;

enum Expect {
    Plan(Check),
    Error(Refused),
}

struct Case {
    name: &'static str,
    /// (disk name, size, layout)
    disks: Vec<(&'static str, u64, Option<DiskLayout>)>,
    /// Targets in the order of `disks` (a gathered disk each).
    targets: Vec<TargetCheck>,
    grow: bool,
    grow_lv: Option<&'static str>,
    expect: Expect,
}

fn case(
    name: &'static str,
    disks: Vec<(&'static str, u64, Option<DiskLayout>)>,
    targets: Vec<TargetCheck>,
    expect: Expect,
) -> Case {
    Case {
        name,
        disks,
        targets,
        grow: false,
        grow_lv: None,
        expect,
    }
}

fn inputs(c: &Case) -> Inputs {
    let (listed, indexes): (Vec<_>, Vec<_>) = c
        .disks
        .iter()
        .map(|(n, size, layout)| disk(n, *size, layout.clone()))
        .unzip();
    Inputs {
        manifest: manifest(listed),
        disks: c
            .disks
            .iter()
            .zip(indexes)
            .zip(&c.targets)
            .map(|(((n, _, _), index), t)| GatheredDisk {
                disk: n.to_string(),
                index,
                target: t.clone(),
            })
            .collect(),
        basis: None,
    }
}

fn kinds(p: &RestorePlan) -> Vec<String> {
    p.steps
        .iter()
        .map(|s| {
            let k = match s {
                Step::Sync { .. } => "sync",
                Step::DeltaFromBasis { .. } => "delta",
                Step::LayoutPatches { .. } => "patches",
                Step::FirstChunkLast { .. } => "first",
                Step::RereadPartitions { .. } => "reread",
                Step::GrowFilesystem { .. } => "grow",
            };
            format!("{k}:{}", s.disk())
        })
        .collect()
}

fn resumed(mut t: TargetCheck) -> TargetCheck {
    let m = RestoreMarker::new("job-00000001", "m-20260101-000000", "sda", &"aa".repeat(32));
    t.holds = Some("Ferry's in-progress marker of job job-00000001".into());
    t.resumes = true;
    t.marker = Some(m);
    t
}

#[test]
fn planner_table() {
    use Expect::*;
    let sda = || Some(sda_layout());
    let mut cases = vec![
        case(
            "same size: sync, first chunk last, nothing patched",
            vec![("sda", 20 * GIB, sda())],
            vec![target(
                "/t/sda.img",
                20 * GIB,
                TargetKind::File { created: false },
                0,
            )],
            Plan(|p| {
                assert_eq!(kinds(p), ["sync:0", "first:0"]);
                assert_eq!(p.layout.mappings[0].action, Action::Identical);
                assert_eq!(
                    p.steps[1],
                    Step::FirstChunkLast {
                        disk: 0,
                        len: u64::from(CHUNK),
                        patches: vec![]
                    }
                );
                let text = p.to_string();
                for want in [
                    "restore plan: snapshot m-20260101-000000 of machine m",
                    "same size, restored exactly as recorded",
                    "steps:\n  1. sync disk sda onto /t/sda.img: compare the target with the index (5120 chunks of 4 MiB)",
                    "\n  2. write the first chunk of /t/sda.img last: fdatasync, write bytes 0..4194304 (boot-critical) with 0 patches merged in",
                ] {
                    assert!(text.contains(want), "{want:?} not in:\n{text}");
                }
                assert!(!text.contains("  3."), "{text}");
            }),
        ),
        case(
            "a larger device with grow: GPT patches in order, re-read, then the filesystem",
            vec![("sda", 20 * GIB, sda())],
            vec![device("/dev/vdb", 30 * GIB)],
            Plan(|p| {
                assert_eq!(
                    kinds(p),
                    ["sync:0", "patches:0", "first:0", "reread:0", "grow:0"]
                );
                let Step::LayoutPatches { patches, .. } = &p.steps[1] else {
                    panic!("step 1 is {}", kinds(p)[1])
                };
                // The old backup header erased, the new backup entries and header at the end.
                let offsets: Vec<u64> = patches.iter().map(|p| p.offset).collect();
                assert_eq!(offsets, [20 * GIB - 512, 30 * GIB - 33 * 512]);
                let Step::FirstChunkLast { patches, .. } = &p.steps[2] else {
                    panic!("step 2 is {}", kinds(p)[2])
                };
                assert!(patches.iter().all(|p| p.end() <= u64::from(CHUNK)));
                assert_eq!(patches.first().map(|p| p.offset), Some(458));
                let Step::GrowFilesystem { grow, region, .. } = &p.steps[4] else {
                    panic!("step 4 is {}", kinds(p)[4])
                };
                assert_eq!(
                    (&grow.on, grow.fs),
                    (&GrowTarget::Partition { slot: 2 }, ContentKind::Ext4)
                );
                let last = 30 * GIB / 512 - 2048 - 1;
                assert_eq!(*region, Some((1050624 * 512, (last + 1 - 1050624) * 512)));
                assert_eq!(p.disks[0].target.size, 30 * GIB);
                let text = p.to_string();
                for want in [
                    "  2. write 2 layout patches to /dev/vdb:",
                    "  4. re-read the partition table of /dev/vdb",
                    "  5. grow ext4 on partition 2 of /dev/vdb: to ",
                    "e2fsck -f -p, then resize2fs",
                ] {
                    assert!(text.contains(want), "{want:?} not in:\n{text}");
                }
            }),
        ),
        case(
            "a 4Kn device of the same size: the GPT re-encoded in 4096-byte sectors",
            vec![("sda", 20 * GIB, sda())],
            vec![target("/dev/vdc", 20 * GIB, TargetKind::BlockDevice, 4096)],
            Plan(|p| {
                let m = &p.layout.mappings[0];
                assert_eq!((m.source_sector_size, m.target_sector_size), (512, 4096));
                assert!(matches!(m.action, Action::Adapt(_)));
                assert_eq!(kinds(p), ["sync:0", "patches:0", "first:0", "reread:0"]);
                let Step::FirstChunkLast { patches, .. } = &p.steps[2] else {
                    panic!("step 2 is {}", kinds(p)[2])
                };
                // The header and entries rewritten in 4096-byte sectors, inside the first chunk.
                let why: Vec<&str> = patches.iter().map(|p| p.why.as_str()).collect();
                assert!(
                    why.iter().any(|w| w.contains("primary GPT header")),
                    "{why:?}"
                );
                assert!(
                    p.to_string().contains("4096-byte sectors instead of 512"),
                    "{p}"
                );
            }),
        ),
        case(
            "two disks: each disk's steps, in the order given",
            vec![("sda", 20 * GIB, sda()), ("sdb", GIB, None)],
            vec![device("/dev/vdb", 20 * GIB), device("/dev/vdc", 2 * GIB)],
            Plan(|p| {
                assert_eq!(
                    kinds(p),
                    ["sync:0", "first:0", "reread:0", "sync:1", "first:1", "reread:1"]
                );
                let text = p.to_string();
                assert!(text.contains("  4. sync disk sdb onto /dev/vdc"), "{text}");
            }),
        ),
        case(
            "a smaller target is refused by the layout planner, typed",
            vec![("sda", 20 * GIB, sda())],
            vec![device("/dev/vdb", 10 * GIB)],
            Error(|e| {
                matches!(e, EngineError::Layout(PlanError::TargetTooSmall { needed, have, .. })
                    if *needed == 20 * GIB && *have == 10 * GIB)
                    && e.to_string().contains("needs at least 21474836480 bytes")
            }),
        ),
        case(
            "a target that holds data, without --overwrite",
            vec![("sda", 20 * GIB, sda())],
            vec![{
                let mut t = device("/dev/vdb", 20 * GIB);
                t.holds = Some("a GPT".into());
                t
            }],
            Error(|e| matches!(e, EngineError::Layout(PlanError::NotBlank { .. }))),
        ),
        case(
            "an interrupted job: its own marker counts as blank, the sync rewrites it first",
            vec![("sda", 20 * GIB, sda())],
            vec![resumed(device("/dev/vdb", 20 * GIB))],
            Plan(|p| {
                assert_eq!(
                    p.steps[0],
                    Step::Sync {
                        disk: 0,
                        marker: true
                    }
                );
                let text = p.to_string();
                assert!(
                    text.contains("holds this job's partial restore, resumed"),
                    "{text}"
                );
                assert!(
                    text.contains("write this job's in-progress marker"),
                    "{text}"
                );
            }),
        ),
        case(
            "a disk the snapshot lacks",
            vec![("sda", 20 * GIB, sda())],
            vec![device("/dev/vdb", 20 * GIB)],
            Error(|e| {
                matches!(e, EngineError::Refused(Refusal::NoSuchDisk { disk, available, .. })
                    if disk == "sdz" && available == &["sda"])
                    && e.to_string()
                        == "snapshot m-20260101-000000 has no disk \"sdz\"; its disks are: sda"
            }),
        ),
        case(
            "no targets",
            vec![],
            vec![],
            Error(|e| matches!(e, EngineError::Refused(Refusal::NoTargets))),
        ),
    ];
    cases[1].grow = true;
    let mut bad_lv = case(
        "--grow-lv that is not VG/LV",
        vec![("sda", 20 * GIB, sda())],
        vec![device("/dev/vdb", 30 * GIB)],
        Error(|e| {
            matches!(e, EngineError::Refused(Refusal::BadGrowLv { given }) if given == "root")
                && e.to_string() == "--grow-lv \"root\" is not VG/LV"
        }),
    );
    bad_lv.grow = true;
    bad_lv.grow_lv = Some("root");
    cases.push(bad_lv);
    for c in &cases {
        let mut inputs = inputs(c);
        if c.name == "a disk the snapshot lacks" {
            inputs.disks[0].disk = "sdz".into();
        }
        let mut opts = options(&[]);
        opts.grow = c.grow;
        opts.grow_lv = c.grow_lv.map(String::from);
        let got = plan(&inputs, &opts);
        match (&c.expect, got) {
            (Expect::Plan(check), Ok(p)) => check(&p),
            (Expect::Error(is), Err(e)) => assert!(is(&e), "{}: unexpected error {e:?}", c.name),
            (Expect::Plan(_), Err(e)) => panic!("{}: refused: {e}", c.name),
            (Expect::Error(_), Ok(p)) => panic!("{}: planned:\n{p}", c.name),
        }
    }
}

#[test]
fn an_index_that_disagrees_with_the_manifest_is_refused() {
    let c = case(
        "",
        vec![("sda", GIB, None)],
        vec![device("/dev/vdb", GIB)],
        Expect::Plan(|_| {}),
    );
    let mut inputs = inputs(&c);
    inputs.disks[0].index = DiskIndex::new_zero(2 * GIB, CHUNK).expect("index");
    let e = plan(&inputs, &options(&[])).expect_err("refused");
    assert!(
        matches!(&e, EngineError::Refused(Refusal::IndexSizeMismatch { index_size, manifest_size, .. })
            if *index_size == 2 * GIB && *manifest_size == GIB),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "the index of disk sda disagrees with the manifest on its size"
    );
}
