//! Source machines: a running server whose `backup-agent service` dials out to the appliance,
//! enrolls once, and takes sync tasks on a schedule (docs/migration.md, "The source agent" and
//! "Schedules and retention"; docs/protocol.md, "Sources").
//!
//! - [`SourceEnrollRequest`] / [`SourceEnrollReply`]: a backup token scoped to the machine is
//!   exchanged once for a per-source credential `src-<machine>.<64 hex>`.
//! - [`SyncTask`]: what the agent is to do now (a sync or the cutover's final sync), how
//!   consistent the capture must be, and how light on the source it must stay ([`SourceLimits`]).
//! - [`TaskState`]: what the agent reports: running, then succeeded (with the snapshot and its
//!   [`SyncFigures`]) or failed.
//! - [`Schedule`]: per machine, the interval between the end of one sync and the start of the
//!   next (at least [`MIN_INTERVAL_SECS`]), how many snapshots to keep ([`KEEP_RANGE`]), pause.
//!
//! Parsers of operator text ([`parse_interval`], [`parse_rate`]) return a typed
//! [`SourceError`] whose message says what to type instead.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::agent::Inventory;

/// The shortest interval between syncs (one minute: tests use it; hours to days in practice).
pub const MIN_INTERVAL_SECS: u64 = 60;
/// The longest interval between syncs (a year): keeps `finished + interval` far from overflow.
pub const MAX_INTERVAL_SECS: u64 = 366 * 86_400;
/// Snapshots kept per source machine.
pub const KEEP_RANGE: RangeInclusive<u32> = 1..=10;
/// Reads the agent keeps in flight at most, as the appliance may set it.
pub const READS_IN_FLIGHT_RANGE: RangeInclusive<u32> = 1..=64;
/// Default network cap: 300 Mbit/s, in bytes per second.
pub const DEFAULT_RATE_BYTES_PER_S: u64 = 300_000_000 / 8;
/// Default interval between syncs: one day.
pub const DEFAULT_INTERVAL_SECS: u64 = 86_400;
/// Default snapshots kept.
pub const DEFAULT_KEEP: u32 = 3;
/// Prefix of a source credential: `src-<machine>.<64 hex>`.
pub const CREDENTIAL_PREFIX: &str = "src-";

/// Operator text or a request value that does not follow the rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{0:?} is not an interval: use e.g. 90s, 30m, 6h or 7d")]
    IntervalText(String),
    #[error("interval {text:?} is {seconds} s: the shortest is 60s (1m)")]
    IntervalTooShort { text: String, seconds: u64 },
    #[error("interval {text:?} is {seconds} s: the longest is 366d")]
    IntervalTooLong { text: String, seconds: u64 },
    #[error("keep {0}: keep between 1 and 10 snapshots")]
    Keep(u32),
    #[error("{0:?} is not a rate: use e.g. 300Mbit, 1Gbit, 50MB (per second) or off")]
    RateText(String),
    #[error("reads in flight {0}: use 1 to 64")]
    ReadsInFlight(u32),
    #[error("{0:?} is not a consistency: use live or point-in-time")]
    ConsistencyText(String),
    #[error(
        "{0:?} is not a chunk size: use a power of two from 64KiB to 64MiB, e.g. 1MiB or 4MiB"
    )]
    ChunkSizeText(String),
}

/// The chunk size of a new source's syncs: 1 MiB. Smaller chunks make a standby's deltas
/// smaller (only changed chunks are written: about 2x what changed in the live-migration test,
/// against about 3x with 4 MiB) and the agent's buffers smaller; larger ones make indexes and
/// known-chunk queries smaller (a 1 TB disk: 1 M entries, 32 MiB of ids per snapshot).
pub const SOURCE_CHUNK_SIZE: u32 = 1 << 20;

/// What a record or a task that does not say meant: the one-shot backup's 4 MiB, which every
/// source used before the setting existed.
fn default_chunk_size() -> u32 {
    crate::chunk::DEFAULT_CHUNK_SIZE
}

fn is_default_chunk_size(size: &u32) -> bool {
    *size == crate::chunk::DEFAULT_CHUNK_SIZE
}

/// `4MiB`, `1M`, `256KiB`, `256K` or bytes (`1048576`): a chunk size
/// ([`crate::chunk::check_chunk_size`]).
pub fn parse_chunk_size(text: &str) -> Result<u32, SourceError> {
    let bad = || SourceError::ChunkSizeText(text.to_string());
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        _ => return Err(bad()),
    };
    let size = n
        .checked_mul(mult)
        .and_then(|s| u32::try_from(s).ok())
        .ok_or_else(bad)?;
    crate::chunk::check_chunk_size(size).map_err(|_| bad())
}

/// How a snapshot was taken. JSON `"live"` or `"point-in-time"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Read while the source was writing: fine for early syncs, never used for the cutover.
    Live,
    /// Every filesystem of the source disks captured at one instant (LVM snapshot or freeze).
    #[default]
    PointInTime,
}

impl Consistency {
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Live => "live",
            Consistency::PointInTime => "point-in-time",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Consistency {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, SourceError> {
        match s {
            "live" => Ok(Consistency::Live),
            "point-in-time" => Ok(Consistency::PointInTime),
            _ => Err(SourceError::ConsistencyText(s.to_string())),
        }
    }
}

/// `POST /sources/enroll`, with a backup token whose scope includes `machine`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEnrollRequest {
    pub machine: String,
    /// What the agent found on the source (disks, NICs, firmware), when it could look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// The agent's version.
    pub version: String,
}

/// The answer to an enrollment: the credential, shown once (the appliance keeps its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEnrollReply {
    /// `src-<machine>.<64 hex>`.
    pub credential: String,
}

/// The machine a source credential names, `None` when it is not one.
pub fn credential_machine(credential: &str) -> Option<&str> {
    let (machine, secret) = credential
        .strip_prefix(CREDENTIAL_PREFIX)?
        .rsplit_once('.')?;
    let hex = secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && crate::names::check_name(crate::names::NameKind::Machine, machine).is_ok())
        .then_some(machine)
}

/// What a task asks for. JSON `"sync"`, `"cutover"` or `"cutover-abort"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// A scheduled or manual sync.
    Sync,
    /// The cutover's final sync: run `pre_cutover` first; always point-in-time.
    Cutover,
    /// The appliance aborted a cutover after its final sync succeeded (the standby could not
    /// take it): run `post_cutover_abort` so the source serves again; report `done`.
    CutoverAbort,
    /// The cutover passed its point of no return and the operator asked to power the source
    /// off (`migrations cutover --poweroff-source`): report `done` and power off, when the
    /// agent's own config allows it (`poweroff_after_cutover = true`); else report `failed`.
    Poweroff,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Sync => "sync",
            TaskKind::Cutover => "cutover",
            TaskKind::CutoverAbort => "cutover-abort",
            TaskKind::Poweroff => "poweroff",
        }
    }
}

/// How light on the source a sync must stay (all adjustable per machine from the appliance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceLimits {
    /// Network cap in bytes per second; `None`: uncapped.
    pub rate_bytes_per_s: Option<u64>,
    /// Disk reads in flight at most ([`READS_IN_FLIGHT_RANGE`]).
    pub reads_in_flight: u32,
    /// Idle I/O class and low CPU priority.
    pub idle_io: bool,
    /// Reads that do not evict the source's page cache (O_DIRECT or POSIX_FADV_DONTNEED).
    pub drop_cache: bool,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            rate_bytes_per_s: Some(DEFAULT_RATE_BYTES_PER_S),
            reads_in_flight: 4,
            idle_io: true,
            drop_cache: true,
        }
    }
}

impl SourceLimits {
    pub fn check(&self) -> Result<(), SourceError> {
        if !READS_IN_FLIGHT_RANGE.contains(&self.reads_in_flight) {
            return Err(SourceError::ReadsInFlight(self.reads_in_flight));
        }
        if self.rate_bytes_per_s == Some(0) {
            return Err(SourceError::RateText("0".into()));
        }
        Ok(())
    }
}

/// `GET /sources/{machine}/task`: the task the source agent is to run now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncTask {
    /// `task-<8 hex>`.
    pub id: String,
    pub kind: TaskKind,
    pub consistency: Consistency,
    pub limits: SourceLimits,
    /// Chunk size of the snapshot to take (absent on the wire when the default, 4 MiB).
    #[serde(
        default = "default_chunk_size",
        skip_serializing_if = "is_default_chunk_size"
    )]
    pub chunk_size: u32,
}

/// `POST /migrations/{id}/cutover` (admin): the operator's cutover, as
/// `appliance migrations cutover` asks it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutoverRequest {
    /// Power the source off once the standby starts writing (its config must allow it).
    #[serde(default)]
    pub poweroff_source: bool,
}

/// What one sync cost the source, and how its snapshot was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFigures {
    /// User + system CPU seconds of the agent during the sync.
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub bytes_read: u64,
    pub bytes_sent: u64,
    /// How long filesystems stayed frozen (or the LVM snapshot existed); `None` for `live`.
    #[serde(default)]
    pub freeze_seconds: Option<f64>,
    /// How the snapshot was actually taken (a point-in-time request may fall back to live).
    pub consistency: Consistency,
    /// A cutover's `pre_cutover` hook: how long it ran before the final sync started (`None`
    /// for a sync, or from an agent that does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_seconds: Option<f64>,
}

/// A task's life as the agent reports it (`PUT /sources/{machine}/tasks/{id}/state`). JSON:
/// `"running"`, `{"succeeded": {"snapshot": ..., "figures": {...}}}`, `{"done": {"detail":
/// ...}}` (a task that takes no snapshot: `cutover-abort`) or `{"failed": {"reason": ...}}`.
/// A task is running from the moment it is handed out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum TaskState {
    Running,
    Succeeded {
        snapshot: String,
        figures: SyncFigures,
    },
    Done {
        detail: String,
    },
    Failed {
        reason: String,
    },
}

impl TaskState {
    pub fn is_final(&self) -> bool {
        !matches!(self, TaskState::Running)
    }

    /// running → running (a restarted agent resumes reporting), running → succeeded | failed.
    /// A finished task never changes.
    pub fn may_become(&self, _next: &TaskState) -> bool {
        matches!(self, TaskState::Running)
    }

    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Succeeded { .. } => "succeeded",
            TaskState::Done { .. } => "done",
            TaskState::Failed { .. } => "failed",
        }
    }
}

/// A step of a migration's cutover on its standby target (`PUT
/// /agents/{id}/standby/cutover`, [`StandbyCutover`]). JSON `"applying"`, `"applied"`,
/// `"fixed-up"`, `"rebooting"` or `"failed"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutoverStep {
    /// About to write the final delta: the point of no return. The appliance answers 409 when
    /// the cutover is no longer under way (aborted), and then the standby writes nothing.
    Applying,
    /// The final snapshot is written and verified.
    Applied,
    /// The fix-up ended (`detail`: its bootability summary).
    FixedUp,
    /// Everything is done; the machine reboots into the migrated system now.
    Rebooting,
    /// A step failed (`detail`: why). Before `applying` the cutover is aborted; after it the
    /// migration has failed and the operator decides.
    Failed,
}

impl CutoverStep {
    pub fn name(self) -> &'static str {
        match self {
            CutoverStep::Applying => "applying",
            CutoverStep::Applied => "applied",
            CutoverStep::FixedUp => "fixed-up",
            CutoverStep::Rebooting => "rebooting",
            CutoverStep::Failed => "failed",
        }
    }
}

/// `PUT /agents/{id}/standby/cutover`: a standby's step of the cutover with the final
/// snapshot it was handed (`StandbyNext` with `final: true`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyCutover {
    /// The final snapshot.
    pub snapshot: String,
    pub step: CutoverStep,
    /// What happened, for the operator (a failure's reason, the fix-up's summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Bytes the final apply wrote (`applied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<u64>,
    /// Seconds the final apply took (`applied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// A source machine's schedule and the limits its syncs run under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The next sync starts this long after the previous one *finished*.
    pub interval_seconds: u64,
    /// Snapshots of the machine kept after each sync ([`KEEP_RANGE`]).
    pub keep: u32,
    /// No scheduled sync starts while paused (`sync-now` still does).
    pub paused: bool,
    /// Consistency asked of scheduled syncs.
    pub consistency: Consistency,
    pub limits: SourceLimits,
    /// Chunk size of the syncs (records written before it existed: the default, 4 MiB).
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u32,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            interval_seconds: DEFAULT_INTERVAL_SECS,
            keep: DEFAULT_KEEP,
            paused: false,
            consistency: Consistency::PointInTime,
            limits: SourceLimits::default(),
            chunk_size: SOURCE_CHUNK_SIZE,
        }
    }
}

impl Schedule {
    pub fn check(&self) -> Result<(), SourceError> {
        check_interval(
            &format_interval(self.interval_seconds),
            self.interval_seconds,
        )?;
        check_keep(self.keep)?;
        crate::chunk::check_chunk_size(self.chunk_size)
            .map_err(|_| SourceError::ChunkSizeText(self.chunk_size.to_string()))?;
        self.limits.check()
    }
}

/// `keep` within [`KEEP_RANGE`].
pub fn check_keep(keep: u32) -> Result<u32, SourceError> {
    if KEEP_RANGE.contains(&keep) {
        Ok(keep)
    } else {
        Err(SourceError::Keep(keep))
    }
}

fn check_interval(text: &str, seconds: u64) -> Result<u64, SourceError> {
    if seconds < MIN_INTERVAL_SECS {
        return Err(SourceError::IntervalTooShort {
            text: text.to_string(),
            seconds,
        });
    }
    if seconds > MAX_INTERVAL_SECS {
        return Err(SourceError::IntervalTooLong {
            text: text.to_string(),
            seconds,
        });
    }
    Ok(seconds)
}

/// `90s`, `30m`, `6h`, `7d` (or `2w`, or plain seconds) to seconds, at least a minute and at
/// most 366 days.
pub fn parse_interval(text: &str) -> Result<u64, SourceError> {
    let seconds = crate::api::parse_duration_secs(text)
        .map_err(|_| SourceError::IntervalText(text.to_string()))?;
    check_interval(text, seconds)
}

/// Seconds in the largest unit that divides them exactly: `6h`, `90s`, `7d`.
pub fn format_interval(seconds: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds >= size && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// Units of [`parse_rate`]: suffix and bytes per second of one.
const RATE_UNITS: [(&str, u64); 10] = [
    ("Gbit", 1_000_000_000 / 8),
    ("Mbit", 1_000_000 / 8),
    ("Kbit", 1000 / 8),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1000),
    ("B", 1),
];

/// A network cap as the operator types it: `300Mbit`, `1Gbit`, `50MB`, `64MiB` (per second;
/// a trailing `/s` is accepted), or `off` (uncapped: `None`). Bits are decimal.
pub fn parse_rate(text: &str) -> Result<Option<u64>, SourceError> {
    let bad = || SourceError::RateText(text.to_string());
    let t = text.trim();
    if matches!(t, "off" | "none" | "unlimited") {
        return Ok(None);
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    let (num, per) = RATE_UNITS
        .iter()
        .find_map(|(u, per)| t.strip_suffix(u).map(|n| (n.trim(), *per)))
        .ok_or_else(bad)?;
    let n: u64 = num.parse().map_err(|_| bad())?;
    match n.checked_mul(per) {
        Some(0) | None => Err(bad()),
        Some(r) => Ok(Some(r)),
    }
}

/// A cap as people read it: `300 Mbit/s`, `uncapped`.
pub fn format_rate(rate: Option<u64>) -> String {
    let Some(r) = rate else {
        return "uncapped".into();
    };
    let bits = u128::from(r) * 8;
    for (unit, size) in [("Gbit/s", 1_000_000_000u128), ("Mbit/s", 1_000_000)] {
        if bits >= size && bits % size == 0 {
            return format!("{} {unit}", bits / size);
        }
    }
    format!("{} B/s", r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        let cases: &[(&str, Result<u64, SourceError>)] = &[
            ("90s", Ok(90)),
            ("60s", Ok(60)),
            ("1m", Ok(60)),
            ("30m", Ok(1800)),
            ("6h", Ok(6 * 3600)),
            ("7d", Ok(7 * 86_400)),
            ("2w", Ok(14 * 86_400)),
            ("120", Ok(120)),
            (
                "59s",
                Err(SourceError::IntervalTooShort {
                    text: "59s".into(),
                    seconds: 59,
                }),
            ),
            (
                "0",
                Err(SourceError::IntervalTooShort {
                    text: "0".into(),
                    seconds: 0,
                }),
            ),
            (
                "400d",
                Err(SourceError::IntervalTooLong {
                    text: "400d".into(),
                    seconds: 400 * 86_400,
                }),
            ),
            ("6x", Err(SourceError::IntervalText("6x".into()))),
            ("h", Err(SourceError::IntervalText("h".into()))),
            ("-5m", Err(SourceError::IntervalText("-5m".into()))),
            ("", Err(SourceError::IntervalText(String::new()))),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_interval(text), want, "{text:?}");
        }
        assert!(parse_interval("59s")
            .unwrap_err()
            .to_string()
            .contains("shortest is 60s"));
    }

    #[test]
    fn interval_text_round_trips() {
        for (secs, text) in [(90, "90s"), (60, "1m"), (21_600, "6h"), (604_800, "7d")] {
            assert_eq!(format_interval(secs), text);
            assert_eq!(parse_interval(text), Ok(secs));
        }
    }

    #[test]
    fn keep_bounds() {
        for (keep, ok) in [(0, false), (1, true), (10, true), (11, false)] {
            assert_eq!(check_keep(keep).is_ok(), ok, "keep {keep}");
        }
        let s = Schedule {
            keep: 0,
            ..Schedule::default()
        };
        assert_eq!(s.check(), Err(SourceError::Keep(0)));
        let s = Schedule {
            interval_seconds: 30,
            ..Schedule::default()
        };
        assert!(matches!(
            s.check(),
            Err(SourceError::IntervalTooShort { seconds: 30, .. })
        ));
        assert_eq!(Schedule::default().check(), Ok(()));
    }

    #[test]
    fn rates() {
        let cases: &[(&str, Result<Option<u64>, ()>)] = &[
            ("300Mbit", Ok(Some(37_500_000))),
            ("300 Mbit/s", Ok(Some(37_500_000))),
            ("1Gbit", Ok(Some(125_000_000))),
            ("50MB", Ok(Some(50_000_000))),
            ("50MB/s", Ok(Some(50_000_000))),
            ("64MiB", Ok(Some(64 << 20))),
            ("800Kbit", Ok(Some(100_000))),
            ("4096B", Ok(Some(4096))),
            ("off", Ok(None)),
            ("0Mbit", Err(())),
            ("300", Err(())),
            ("fast", Err(())),
            ("99999999999999999999GB", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_rate(text).map_err(|_| ()), want, "{text:?}");
        }
        assert_eq!(format_rate(Some(DEFAULT_RATE_BYTES_PER_S)), "300 Mbit/s");
        assert_eq!(format_rate(Some(125_000_000)), "1 Gbit/s");
        assert_eq!(format_rate(Some(4096)), "4096 B/s");
        assert_eq!(format_rate(None), "uncapped");
    }

    #[test]
    fn limits_are_checked() {
        let mut l = SourceLimits::default();
        assert_eq!(l.check(), Ok(()));
        l.reads_in_flight = 0;
        assert_eq!(l.check(), Err(SourceError::ReadsInFlight(0)));
        l.reads_in_flight = 65;
        assert_eq!(l.check(), Err(SourceError::ReadsInFlight(65)));
    }

    #[test]
    fn credentials_name_their_machine() {
        let hex = "ab".repeat(32);
        let cases = [
            (format!("src-web1.{hex}"), Some("web1")),
            (format!("src-db.prod.{hex}"), Some("db.prod")),
            (format!("agent-1.{hex}"), None),
            ("src-web1.abc".to_string(), None),
            (format!("src-.{hex}"), None),
            (format!("src-../x.{hex}"), None),
        ];
        for (cred, want) in &cases {
            assert_eq!(credential_machine(cred), *want, "{cred}");
        }
    }

    #[test]
    fn wire_shapes() {
        let state = TaskState::Succeeded {
            snapshot: "web1-20261204T200000Z".into(),
            figures: SyncFigures {
                cpu_seconds: 1.5,
                peak_rss_bytes: 50 << 20,
                bytes_read: 1 << 30,
                bytes_sent: 1 << 20,
                freeze_seconds: Some(2.0),
                consistency: Consistency::PointInTime,
                hook_seconds: Some(0.5),
            },
        };
        let json = serde_json::to_string(&state).unwrap();
        assert!(
            json.starts_with(r#"{"succeeded":{"snapshot":"web1-"#),
            "{json}"
        );
        assert!(json.contains(r#""consistency":"point-in-time""#), "{json}");
        assert_eq!(serde_json::from_str::<TaskState>(&json).unwrap(), state);
        assert_eq!(
            serde_json::from_str::<TaskState>(r#""running""#).unwrap(),
            TaskState::Running
        );
        let done: TaskState =
            serde_json::from_str(r#"{"done":{"detail":"post_cutover_abort ran"}}"#).unwrap();
        assert!(done.is_final() && done.name() == "done");
        assert_eq!(
            serde_json::to_value(TaskKind::CutoverAbort).unwrap(),
            "cutover-abort"
        );
        let failed: TaskState =
            serde_json::from_str(r#"{"failed":{"reason":"disk gone"}}"#).unwrap();
        assert_eq!(failed.name(), "failed");
        assert!(
            serde_json::from_str::<TaskState>(r#"{"failed":{"reason":"x","extra":1}}"#).is_err()
        );

        let task = SyncTask {
            id: "task-0011aabb".into(),
            kind: TaskKind::Sync,
            consistency: Consistency::Live,
            limits: SourceLimits::default(),
            chunk_size: crate::chunk::DEFAULT_CHUNK_SIZE,
        };
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(json["kind"], "sync");
        assert_eq!(json["consistency"], "live");
        assert_eq!(json["limits"]["rate_bytes_per_s"], 37_500_000);
        assert!(json.get("chunk_size").is_none(), "the default is left out");
        assert_eq!(serde_json::from_value::<SyncTask>(json).unwrap(), task);
        let small = SyncTask {
            chunk_size: 1 << 20,
            ..task
        };
        let json = serde_json::to_value(&small).unwrap();
        assert_eq!(json["chunk_size"], 1 << 20);
        assert_eq!(serde_json::from_value::<SyncTask>(json).unwrap(), small);

        for (text, size) in [
            ("4MiB", 4 << 20),
            ("1M", 1 << 20),
            ("256KiB", 256 << 10),
            ("65536", 65536),
        ] {
            assert_eq!(parse_chunk_size(text).unwrap(), size, "{text}");
        }
        for bad in [
            "3MiB",
            "32KiB",
            "128MiB",
            "1G",
            "",
            "MiB",
            "99999999999999999999",
        ] {
            assert!(parse_chunk_size(bad).is_err(), "{bad}");
        }
        let mut s = Schedule::default();
        assert!(s.check().is_ok());
        assert_eq!(
            s.chunk_size, SOURCE_CHUNK_SIZE,
            "a new source syncs with 1 MiB chunks"
        );
        let mut old = serde_json::to_value(&s).unwrap();
        old.as_object_mut().unwrap().remove("chunk_size");
        let old: Schedule = serde_json::from_value(old).unwrap();
        assert_eq!(
            old.chunk_size,
            crate::chunk::DEFAULT_CHUNK_SIZE,
            "older records keep 4 MiB"
        );
        s.chunk_size = 3 << 20;
        assert!(s.check().is_err());

        // An agent that does not say how long its hook ran.
        let old: SyncFigures = serde_json::from_str(
            r#"{"cpu_seconds":1,"peak_rss_bytes":2,"bytes_read":3,"bytes_sent":4,"consistency":"live"}"#,
        )
        .unwrap();
        assert_eq!(old.hook_seconds, None);
        let step = StandbyCutover {
            snapshot: "web1-20261204T200000Z".into(),
            step: CutoverStep::FixedUp,
            detail: None,
            bytes_written: None,
            seconds: None,
        };
        let json = serde_json::to_string(&step).unwrap();
        assert_eq!(
            json,
            r#"{"snapshot":"web1-20261204T200000Z","step":"fixed-up"}"#
        );
        assert_eq!(serde_json::from_str::<StandbyCutover>(&json).unwrap(), step);

        let req: SourceEnrollRequest =
            serde_json::from_str(r#"{"machine":"web1","version":"0.1"}"#).unwrap();
        assert_eq!(req.inventory, None);
        assert!(serde_json::from_str::<SourceEnrollRequest>(
            r#"{"machine":"web1","version":"0.1","token":"x"}"#
        )
        .is_err());
    }

    #[test]
    fn transitions() {
        let ok = TaskState::Succeeded {
            snapshot: "s".into(),
            figures: SyncFigures {
                cpu_seconds: 0.0,
                peak_rss_bytes: 0,
                bytes_read: 0,
                bytes_sent: 0,
                freeze_seconds: None,
                consistency: Consistency::Live,
                hook_seconds: None,
            },
        };
        let failed = TaskState::Failed { reason: "x".into() };
        let running = TaskState::Running;
        // (from, to, allowed)
        let cases = [
            (&running, &running, true),
            (&running, &ok, true),
            (&running, &failed, true),
            (&ok, &running, false),
            (&ok, &failed, false),
            (&failed, &ok, false),
            (&failed, &running, false),
        ];
        for (from, to, allowed) in cases {
            assert_eq!(
                from.may_become(to),
                allowed,
                "{} -> {}",
                from.name(),
                to.name()
            );
        }
    }
}
