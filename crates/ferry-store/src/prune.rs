//! Retention that keeps the genuine history (docs/store.md, "Prune").
//!
//! Each snapshot records which credential wrote it (`snapshots/<id>/origin.json`, written inside
//! the session's directory before the commit's rename, so it appears with the snapshot). A
//! prune keeps, for each credential that wrote the machine, its newest N snapshots: a client
//! that floods a machine with snapshots pushes out only its own. On top of that nothing newer
//! than `--keep-within` and nothing a pending or running restore job uses is removed.
//!
//! Plan, then execute: [`compute_prune`] is pure (table-tested); `--dry-run` prints the plan and
//! [`Store::apply_prune`] executes that same value.
//!
//! Source machines (`sources/`, docs/migration.md) are pruned after each successful sync by
//! [`Store::retain_source`]: the same plan and execution, but counted per *machine*
//! ([`compute_source_prune`]: the schedule's `keep` newest of the machine, whoever wrote them)
//! and keeping the snapshots pinned in the source record (a migration, a standby target) as
//! well as those of live jobs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime};

use ferry_format::agent::JobState;
use ferry_format::api::SnapshotSummary;
use ferry_format::names::{check_name, NameKind};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::tokens::parse_rfc3339;
use crate::Store;

/// Retention bounds of `prune --keep` (per credential).
pub const KEEP_RANGE: std::ops::RangeInclusive<usize> = 1..=10;
/// `snapshots/<id>/origin.json`.
pub const ORIGIN_FILE: &str = "origin.json";

/// Who wrote a snapshot: store-side metadata (the manifest format rejects unknown fields, so
/// agents already in the field could not read a manifest carrying it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotOrigin {
    /// Public id of the token whose session committed the snapshot.
    pub token: String,
}

/// What `appliance prune` is asked to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrunePolicy {
    /// Newest snapshots kept per credential, in [`KEEP_RANGE`].
    pub keep: usize,
    /// Never remove a snapshot younger than this.
    pub keep_within: Option<Duration>,
}

/// One snapshot of the machine, as gathered for planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneCandidate {
    pub summary: SnapshotSummary,
    /// Token id from `origin.json`; `None` for snapshots committed before origins were recorded
    /// (they are one group of their own).
    pub writer: Option<String>,
}

/// Why a snapshot stays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepReason {
    /// Among the newest `of` snapshots its credential wrote (`rank` 1 is the newest).
    Newest { rank: usize, of: usize },
    /// Younger than `--keep-within`.
    Within,
    /// A pending or running restore job uses it.
    Job(String),
    /// Its creation time does not parse: its age is unknown, so it is not removed.
    UnknownAge,
    /// Among the newest `of` snapshots of the machine (source retention; `rank` 1 is the newest).
    NewestOfMachine { rank: usize, of: usize },
    /// Pinned in the source record by a migration or standby target (who, e.g. `migration mig-1`).
    Pinned(String),
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Newest { rank, of } => {
                write!(f, "its writer's newest #{rank} of {of}")
            }
            KeepReason::Within => f.write_str("within --keep-within"),
            KeepReason::Job(j) => write!(f, "used by job {j}"),
            KeepReason::UnknownAge => f.write_str("creation time unreadable"),
            KeepReason::NewestOfMachine { rank, of } => {
                write!(f, "the machine's newest #{rank} of {of}")
            }
            KeepReason::Pinned(by) => write!(f, "pinned by {by}"),
        }
    }
}

/// One line of the plan: a snapshot, its writer and why it stays (empty: it is removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneEntry {
    pub summary: SnapshotSummary,
    pub writer: Option<String>,
    pub keep: Vec<KeepReason>,
}

impl PruneEntry {
    pub fn removed(&self) -> bool {
        self.keep.is_empty()
    }
}

/// Every snapshot of a machine, newest first, each kept (with reasons) or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrunePlan {
    pub machine: String,
    pub policy: PrunePolicy,
    pub entries: Vec<PruneEntry>,
}

impl PrunePlan {
    pub fn removals(&self) -> impl Iterator<Item = &PruneEntry> {
        self.entries.iter().filter(|e| e.removed())
    }
}

/// The pure retention rule. `in_use` maps snapshot ids to the pending or running job using it.
pub fn compute_prune(
    machine: &str,
    snapshots: Vec<PruneCandidate>,
    policy: &PrunePolicy,
    now: SystemTime,
    in_use: &HashMap<String, String>,
) -> PrunePlan {
    plan_with(
        machine,
        snapshots,
        policy,
        now,
        &Protected {
            jobs: in_use,
            pins: &HashMap::new(),
        },
        Grouping::PerWriter,
    )
}

/// Source retention, pure: the newest `keep` snapshots of the machine (whoever wrote them),
/// every snapshot a live job uses (`in_use`: snapshot → job) and every pinned one (`pins`:
/// snapshot → holder) stay; everything else is removed.
pub fn compute_source_prune(
    machine: &str,
    snapshots: Vec<PruneCandidate>,
    keep: usize,
    now: SystemTime,
    in_use: &HashMap<String, String>,
    pins: &HashMap<String, String>,
) -> PrunePlan {
    let policy = PrunePolicy {
        keep,
        keep_within: None,
    };
    plan_with(
        machine,
        snapshots,
        &policy,
        now,
        &Protected { jobs: in_use, pins },
        Grouping::PerMachine,
    )
}

/// Snapshots kept whatever their rank: snapshot id → the job using it, → who pinned it.
struct Protected<'a> {
    jobs: &'a HashMap<String, String>,
    pins: &'a HashMap<String, String>,
}

/// What the newest-N rank counts over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grouping {
    PerWriter,
    PerMachine,
}

fn plan_with(
    machine: &str,
    mut snapshots: Vec<PruneCandidate>,
    policy: &PrunePolicy,
    now: SystemTime,
    protected: &Protected<'_>,
    grouping: Grouping,
) -> PrunePlan {
    let group = |c: &PruneCandidate| match grouping {
        Grouping::PerWriter => c.writer.clone(),
        Grouping::PerMachine => None,
    };
    let key = |c: &PruneCandidate| {
        (
            c.summary.created.clone(),
            id_suffix(&c.summary.snapshot),
            c.summary.snapshot.clone(),
        )
    };
    let newest_first = |a: &PruneCandidate, b: &PruneCandidate| key(b).cmp(&key(a));
    snapshots.sort_by(newest_first);
    let mut per_writer: HashMap<Option<String>, usize> = HashMap::new();
    for s in &snapshots {
        *per_writer.entry(group(s)).or_default() += 1;
    }
    let mut seen: HashMap<Option<String>, usize> = HashMap::new();
    let entries = snapshots
        .into_iter()
        .map(|c| {
            let g = group(&c);
            let rank = {
                let n = seen.entry(g.clone()).or_default();
                *n += 1;
                *n
            };
            let mut keep = Vec::new();
            if let Some(job) = protected.jobs.get(&c.summary.snapshot) {
                keep.push(KeepReason::Job(job.clone()));
            }
            if let Some(by) = protected.pins.get(&c.summary.snapshot) {
                keep.push(KeepReason::Pinned(by.clone()));
            }
            if rank <= policy.keep {
                let of = policy.keep.min(per_writer.get(&g).copied().unwrap_or(0));
                keep.push(match grouping {
                    Grouping::PerWriter => KeepReason::Newest { rank, of },
                    Grouping::PerMachine => KeepReason::NewestOfMachine { rank, of },
                });
            }
            match parse_rfc3339(&c.summary.created) {
                None => keep.push(KeepReason::UnknownAge),
                Some(created) => {
                    let age = now.duration_since(created).unwrap_or(Duration::ZERO);
                    if policy.keep_within.is_some_and(|w| age < w) {
                        keep.push(KeepReason::Within);
                    }
                }
            }
            PruneEntry {
                summary: c.summary,
                writer: c.writer,
                keep,
            }
        })
        .collect();
    PrunePlan {
        machine: machine.to_string(),
        policy: policy.clone(),
        entries,
    }
}

/// The `-N` a commit appends to a snapshot id taken within the same second (1 without one):
/// `-10` is newer than `-9`, which a plain string order gets wrong.
fn id_suffix(id: &str) -> u32 {
    match id.rsplit_once('-') {
        Some((stem, n)) if stem.ends_with('Z') => n.parse().unwrap_or(1),
        _ => 1,
    }
}

impl Store {
    /// Who wrote snapshot `id`: `None` when it predates origin records.
    pub fn snapshot_origin(&self, id: &str) -> Result<Option<SnapshotOrigin>> {
        check_name(NameKind::Snapshot, id)?;
        match self.data().read_snapshot_object(id, ORIGIN_FILE)? {
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                StoreError::Invalid(format!("parse {ORIGIN_FILE} of snapshot {id}: {e}"))
            }),
            None => Ok(None),
        }
    }

    /// Gather a machine's snapshots, their writers and the jobs using them; plan.
    pub fn plan_prune(
        &self,
        machine: &str,
        policy: &PrunePolicy,
        now: SystemTime,
    ) -> Result<PrunePlan> {
        check_name(NameKind::Machine, machine)?;
        if !KEEP_RANGE.contains(&policy.keep) {
            return Err(StoreError::Invalid(format!(
                "--keep {}: keep between 1 and 10 snapshots per credential",
                policy.keep
            )));
        }
        let mut candidates = Vec::new();
        for summary in self.list_snapshots(Some(machine))? {
            let writer = self.snapshot_origin(&summary.snapshot)?.map(|o| o.token);
            candidates.push(PruneCandidate { summary, writer });
        }
        let in_use = self.snapshots_in_use()?;
        Ok(compute_prune(machine, candidates, policy, now, &in_use))
    }

    /// Snapshot id -> a pending or running job that uses it.
    fn snapshots_in_use(&self) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for job in self.list_jobs_if_any()? {
            if matches!(job.state, JobState::Pending | JobState::Running) {
                out.entry(job.snapshot).or_insert(job.id);
            }
        }
        Ok(out)
    }

    fn list_jobs_if_any(&self) -> Result<Vec<ferry_format::agent::JobRecord>> {
        self.list_jobs()
    }

    /// Remove the plan's snapshots: each is renamed into `trash/` (atomic: it disappears whole),
    /// then deleted; their chunks stay until the next GC. Holds `jobs/.lock` meanwhile and
    /// refuses, removing nothing, when a job created since the plan uses one of them.
    pub fn apply_prune(&self, plan: &PrunePlan) -> Result<()> {
        let _jobs = self.lock_jobs()?;
        self.check_still_unused(plan)?;
        self.trash_removals(plan)
    }

    /// Refuse (`Conflict`) when a job uses one of the plan's removals now. Called holding
    /// `jobs/.lock`.
    fn check_still_unused(&self, plan: &PrunePlan) -> Result<()> {
        let in_use = self.snapshots_in_use()?;
        if let Some((s, job)) = plan
            .removals()
            .find_map(|e| in_use.get_key_value(&e.summary.snapshot))
        {
            return Err(StoreError::Conflict(format!(
                "job {job} now uses snapshot {s}: run the prune again"
            )));
        }
        Ok(())
    }

    /// Remove one snapshot (`appliance snapshots delete`, `DELETE /snapshots/{id}`), refused
    /// while a pending or running job uses it or its source pins it (a migration's standby
    /// basis, a sync's basis). Its chunks stay until the next GC. Answers what was removed.
    pub fn delete_snapshot(&self, id: &str) -> Result<SnapshotSummary> {
        check_name(NameKind::Snapshot, id)?;
        let summary = self
            .list_snapshots(None)?
            .into_iter()
            .find(|s| s.snapshot == id)
            .ok_or_else(|| {
                StoreError::NotFound(format!("snapshot {id}: see `appliance snapshots`"))
            })?;
        let _jobs = self.lock_jobs()?;
        let _sources = self.lock_sources()?;
        if let Some(job) = self.snapshots_in_use()?.get(id) {
            return Err(StoreError::Conflict(format!(
                "job {job} uses snapshot {id}: cancel it or let it finish first"
            )));
        }
        let pins = match self.source(&summary.machine) {
            Ok(rec) => pin_map(&rec),
            Err(e) if e.is_not_found() => HashMap::new(),
            Err(e) => return Err(e),
        };
        if let Some(by) = pins.get(id) {
            return Err(StoreError::Conflict(format!(
                "{by} pins snapshot {id} of {}: it is kept while that needs it (cancel the migration to release it)",
                summary.machine
            )));
        }
        let plan = PrunePlan {
            machine: summary.machine.clone(),
            policy: PrunePolicy {
                keep: 0,
                keep_within: None,
            },
            entries: vec![PruneEntry {
                summary: summary.clone(),
                writer: None,
                keep: Vec::new(),
            }],
        };
        self.trash_removals(&plan)?;
        Ok(summary)
    }

    /// Gather source `machine`'s snapshots, the jobs using them and its pins; plan its
    /// retention to the schedule's `keep`.
    pub fn plan_source_prune(&self, machine: &str, now: SystemTime) -> Result<PrunePlan> {
        let rec = self.source(machine)?;
        let pins = pin_map(&rec);
        let mut candidates = Vec::new();
        for summary in self.list_snapshots(Some(machine))? {
            let writer = self.snapshot_origin(&summary.snapshot)?.map(|o| o.token);
            candidates.push(PruneCandidate { summary, writer });
        }
        let in_use = self.snapshots_in_use()?;
        let keep = usize::try_from(rec.schedule.keep).unwrap_or(usize::MAX);
        Ok(compute_source_prune(
            machine, candidates, keep, now, &in_use, &pins,
        ))
    }

    /// Prune source `machine` to its schedule's `keep` (after a successful sync). Holding
    /// `jobs/.lock` then `sources/.lock`, checks again that no job and no pin holds a snapshot
    /// to remove (if one does, nothing is removed; the next sync prunes again). Returns the
    /// plan executed.
    pub fn retain_source(&self, machine: &str, now: SystemTime) -> Result<PrunePlan> {
        let plan = self.plan_source_prune(machine, now)?;
        if plan.removals().next().is_none() {
            return Ok(plan);
        }
        let _jobs = self.lock_jobs()?;
        let _sources = self.lock_sources()?;
        self.check_still_unused(&plan)?;
        let pins = pin_map(&self.source(machine)?);
        if let Some((s, by)) = plan
            .removals()
            .find_map(|e| pins.get_key_value(&e.summary.snapshot))
        {
            return Err(StoreError::Conflict(format!(
                "{by} now pins snapshot {s} of {machine}: it is kept; the next sync prunes again"
            )));
        }
        self.trash_removals(&plan)?;
        Ok(plan)
    }

    /// Make each removal of `plan` invisible at once (locally: renamed into `trash/`), then
    /// delete its objects.
    fn trash_removals(&self, plan: &PrunePlan) -> Result<()> {
        let ids: Vec<String> = plan
            .removals()
            .map(|e| e.summary.snapshot.clone())
            .collect();
        self.data().delete_snapshots(&ids)
    }
}

/// A source record's pins: snapshot → who holds it.
fn pin_map(rec: &crate::sources::SourceRecord) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for p in &rec.pinned {
        out.entry(p.snapshot.clone())
            .or_insert_with(|| p.by.clone());
    }
    out
}

/// `origin.json` of a snapshot whose session's token has public id `token`.
pub(crate) fn origin_bytes(token: &str) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(&SnapshotOrigin {
        token: token.to_string(),
    })
    .map_err(|e| StoreError::Invalid(e.to_string()))
}

pub fn per_writer_counts(plan: &PrunePlan) -> BTreeMap<Option<String>, (usize, usize)> {
    let mut out: BTreeMap<Option<String>, (usize, usize)> = BTreeMap::new();
    for e in &plan.entries {
        let c = out.entry(e.writer.clone()).or_default();
        if e.removed() {
            c.1 += 1;
        } else {
            c.0 += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshots::rfc3339;
    use std::time::UNIX_EPOCH;

    const DAY: u64 = 86_400;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    /// `(id, created seconds, writer)`.
    fn candidates(rows: &[(&str, u64, Option<&str>)]) -> Vec<PruneCandidate> {
        rows.iter()
            .map(|(id, t, w)| PruneCandidate {
                summary: SnapshotSummary {
                    snapshot: id.to_string(),
                    machine: "m".into(),
                    created: rfc3339(at(*t)),
                    disks: vec![],
                    size: 0,
                    data_chunks: 0,
                    consistency: Default::default(),
                },
                writer: w.map(str::to_string),
            })
            .collect()
    }

    fn removed(plan: &PrunePlan) -> Vec<&str> {
        plan.removals()
            .map(|e| e.summary.snapshot.as_str())
            .collect()
    }

    fn policy(keep: usize, within_days: Option<u64>) -> PrunePolicy {
        PrunePolicy {
            keep,
            keep_within: within_days.map(|d| Duration::from_secs(d * DAY)),
        }
    }

    #[test]
    fn retention_table() {
        let none = HashMap::new();
        let now = at(100 * DAY);
        // (name, snapshots, policy, jobs using snapshots, expected removals newest first)
        type Case = (
            &'static str,
            Vec<PruneCandidate>,
            PrunePolicy,
            Vec<(&'static str, &'static str)>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "one writer: newest N by creation then id",
                candidates(&[
                    ("a", 1, Some("tok-b")),
                    ("c", 3, Some("tok-b")),
                    ("b", 2, Some("tok-b")),
                    ("b-2", 2, Some("tok-b")),
                ]),
                policy(2, None),
                vec![],
                vec!["b", "a"],
            ),
            (
                "a flood from one credential keeps the other's",
                {
                    let mut v = candidates(&[("g1", 10, Some("tok-b")), ("g2", 20, Some("tok-b"))]);
                    for i in 0..10 {
                        v.extend(candidates(&[(
                            ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"][i],
                            50 + i as u64,
                            Some("tok-a"),
                        )]));
                    }
                    v
                },
                policy(2, None),
                vec![],
                vec!["f7", "f6", "f5", "f4", "f3", "f2", "f1", "f0"],
            ),
            (
                "snapshots without an origin are a group of their own",
                candidates(&[("o1", 1, None), ("o2", 2, None), ("n1", 3, Some("tok-b"))]),
                policy(1, None),
                vec![],
                vec!["o1"],
            ),
            (
                "nothing younger than --keep-within goes",
                candidates(&[
                    ("old", 0, Some("t")),
                    ("week", 95 * DAY, Some("t")),
                    ("new", 99 * DAY, Some("t")),
                ]),
                policy(1, Some(7)),
                vec![],
                vec!["old"],
            ),
            (
                "within one second -10 is newer than -9",
                candidates(&[
                    ("m-20261204T164509Z", 5, Some("t")),
                    ("m-20261204T164509Z-9", 5, Some("t")),
                    ("m-20261204T164509Z-10", 5, Some("t")),
                ]),
                policy(1, None),
                vec![],
                vec!["m-20261204T164509Z-9", "m-20261204T164509Z"],
            ),
            (
                "a job's snapshot stays",
                candidates(&[
                    ("x1", 1, Some("t")),
                    ("x2", 2, Some("t")),
                    ("x3", 3, Some("t")),
                ]),
                policy(1, None),
                vec![("x1", "job-1")],
                vec!["x2"],
            ),
        ];
        for (name, snaps, pol, jobs, want) in cases {
            let in_use: HashMap<String, String> = jobs
                .iter()
                .map(|(s, j)| (s.to_string(), j.to_string()))
                .collect();
            let plan = compute_prune(
                "m",
                snaps,
                &pol,
                now,
                if jobs.is_empty() { &none } else { &in_use },
            );
            assert_eq!(removed(&plan), want, "{name}");
        }
    }

    #[test]
    fn source_retention_counts_the_machine_and_keeps_pins_and_jobs() {
        let snaps = candidates(&[
            ("s1", 1, Some("tok-a")),
            ("s2", 2, Some("tok-b")),
            ("s3", 3, Some("tok-a")),
            ("s4", 4, Some("tok-b")),
            ("s5", 5, Some("tok-a")),
        ]);
        let jobs = HashMap::from([("s2".to_string(), "job-1".to_string())]);
        let pins = HashMap::from([("s1".to_string(), "migration mig-1".to_string())]);
        let plan = compute_source_prune("m", snaps, 2, at(100 * DAY), &jobs, &pins);
        assert_eq!(removed(&plan), ["s3"]);
        let reasons: Vec<String> = plan
            .entries
            .iter()
            .map(|e| {
                let r: Vec<String> = e.keep.iter().map(ToString::to_string).collect();
                format!("{}: {}", e.summary.snapshot, r.join(", "))
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "s5: the machine's newest #1 of 2",
                "s4: the machine's newest #2 of 2",
                "s3: ",
                "s2: used by job job-1",
                "s1: pinned by migration mig-1",
            ]
        );
    }

    #[test]
    fn reasons_explain_each_kept_snapshot() {
        let in_use = HashMap::from([("x1".to_string(), "job-7".to_string())]);
        let snaps = candidates(&[("x1", 1, Some("t")), ("x2", 99 * DAY, Some("t"))]);
        let plan = compute_prune("m", snaps, &policy(1, Some(7)), at(100 * DAY), &in_use);
        assert_eq!(plan.entries[0].summary.snapshot, "x2");
        assert_eq!(
            plan.entries[0].keep,
            [KeepReason::Newest { rank: 1, of: 1 }, KeepReason::Within]
        );
        assert_eq!(plan.entries[1].keep, [KeepReason::Job("job-7".into())]);
        assert_eq!(plan.entries[1].keep[0].to_string(), "used by job job-7");
        let mut odd = candidates(&[("y1", 1, None), ("y2", 2, None)]);
        odd[0].summary.created = "0000-bad".into();
        let plan = compute_prune("m", odd, &policy(1, None), at(100 * DAY), &HashMap::new());
        assert_eq!(plan.entries[1].keep, [KeepReason::UnknownAge]);
        assert_eq!(per_writer_counts(&plan)[&None], (2, 0));
    }
}
