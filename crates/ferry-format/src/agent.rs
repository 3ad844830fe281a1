//! Unattended restore jobs: what a rescue-image agent tells the appliance about its machine
//! ([`Inventory`]), how it enrolls ([`EnrollRequest`], [`EnrollReply`]), the [`Job`] it is given,
//! the [`Event`]s it streams back, and the pure resolution of a job's disk mappings against an
//! inventory ([`resolve_mappings`]). docs/protocol.md ("Agents and jobs") describes the routes.
//!
//! Invariants:
//! - A job handed to an agent names only devices of that agent's inventory (`auto` is resolved
//!   by the appliance when the agent picks the job up); every target exists, is at least as large
//!   as the snapshot's disk, and is blank unless the job says `overwrite`.
//! - Device names are kernel block device names (`vda`, `nvme0n1`); `/dev/` is accepted on input
//!   and shown on output.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{check_name, NameKind};

/// What the agent found on its machine, sent at enrollment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub firmware: Firmware,
    /// MemTotal from /proc/meminfo, in bytes.
    pub memory_bytes: u64,
    pub cpu: Cpu,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Kernel name (`vda`, `sda`, `nvme0n1`): the device is `/dev/<name>`.
    pub name: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// Nothing found anywhere the blank check looks: both ends, every usual partition start,
    /// and samples across the whole disk (false when it could not be read).
    pub blank: bool,
    #[serde(default)]
    pub removable: bool,
    /// What the blank check found, when the disk is not blank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<String>,
    /// Why this disk is never a restore target whatever a job says (it holds the medium the
    /// rescue image booted from, or an installation medium).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub name: String,
    /// Lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Link detected; `None` when the interface is down and the kernel cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    #[default]
    Bios,
    Uefi,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// Logical processors.
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Inventory {
    /// Every NIC's MAC, lowercase.
    pub fn macs(&self) -> Vec<String> {
        self.nics.iter().map(|n| n.mac.clone()).collect()
    }

    pub fn disk(&self, name: &str) -> Option<&Disk> {
        self.disks.iter().find(|d| d.name == name)
    }
}

/// `aa:bb:cc:dd:ee:ff` in lowercase, from any case and `-` or `:` separators.
pub fn normalize_mac(text: &str) -> Result<String, String> {
    let t = text.trim().to_ascii_lowercase().replace('-', ":");
    let parts: Vec<&str> = t.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(t)
    } else {
        Err(format!(
            "{text:?} is not a MAC address: use six hex pairs, e.g. 52:54:00:12:34:56"
        ))
    }
}

/// `POST /agents/enroll` (enroll token): who I am.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub inventory: Inventory,
    /// restore-agent version.
    pub version: String,
    /// In-progress markers found on this machine's disks: the proof that it is the machine a
    /// running job was writing to (see [`crate::marker`]). At most [`MAX_RESUME_CLAIMS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resume: Vec<ResumeClaim>,
}

/// A job this agent's disks carry the in-progress marker of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeClaim {
    pub job: String,
    /// The marker's proof (64 hex digits).
    pub proof: String,
}

/// Most resume claims one enrollment may carry.
pub const MAX_RESUME_CLAIMS: usize = 16;
/// Most disks and NICs an inventory may list, and the longest text field: bounds what an
/// enrollment (a token stamped into every image) can make the appliance store.
pub const MAX_INVENTORY_DISKS: usize = 128;
pub const MAX_INVENTORY_NICS: usize = 64;
pub const MAX_INVENTORY_TEXT: usize = 256;

impl Inventory {
    /// Refuse an inventory larger than any machine's: what to fix, as a sentence.
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.disks.len() > MAX_INVENTORY_DISKS || self.nics.len() > MAX_INVENTORY_NICS {
            return Err(format!(
                "an inventory lists at most {MAX_INVENTORY_DISKS} disks and {MAX_INVENTORY_NICS} NICs, this one {} and {}",
                self.disks.len(),
                self.nics.len()
            ));
        }
        let texts = self
            .disks
            .iter()
            .flat_map(|d| [d.model.as_deref(), d.serial.as_deref(), d.wwn.as_deref()])
            .chain([self.cpu.model.as_deref()])
            .flatten()
            .chain(self.nics.iter().map(|n| n.name.as_str()));
        for t in texts {
            if t.len() > MAX_INVENTORY_TEXT {
                return Err(format!(
                    "an inventory field is {} bytes long; at most {MAX_INVENTORY_TEXT}",
                    t.len()
                ));
            }
        }
        for n in &self.nics {
            normalize_mac(&n.mac)?;
        }
        Ok(())
    }
}

/// The agent's id and its credential: a bearer token valid only for this agent's routes and the
/// snapshot of its current job. Shown once; the appliance keeps its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollReply {
    pub agent: String,
    pub credential: String,
    /// Whether the agent may be given jobs now: approved by the operator (`appliance agents
    /// approve`), or by the proof of a running job found on its disks. An agent that is not
    /// keeps polling and is given nothing until it is.
    #[serde(default)]
    pub approved: bool,
    /// Shown on the agent's console: `appliance agents approve ID --code CODE` checks that the
    /// operator approves this enrollment and not another one claiming the same hardware.
    #[serde(default)]
    pub code: String,
}

/// What to do once the job is over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Then {
    Reboot,
    Poweroff,
    #[default]
    None,
}

/// How the restored system is adapted to its new disks and hardware (`appliance jobs create
/// --grow --grow-lv --no-fixup`). Absent in older records: the defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobOptions {
    /// Grow the last partition, the PV on it, an LV and its filesystem into a larger target.
    pub grow: bool,
    /// The LV to grow, `VG/LV`; default: the one mounted at /.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grow_lv: Option<String>,
    /// Adapt the restored OS to this machine (drivers, initramfs, fstab, boot loader).
    pub fixup: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            grow: false,
            grow_lv: None,
            fixup: true,
        }
    }
}

impl std::str::FromStr for Then {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reboot" => Ok(Then::Reboot),
            "poweroff" => Ok(Then::Poweroff),
            "none" => Ok(Then::None),
            _ => Err(format!(
                "unknown --then {s:?}: use reboot, poweroff or none"
            )),
        }
    }
}

/// Where a snapshot disk goes: a device of the agent's machine, or the single blank disk that is
/// large enough, or the disk with a given serial number (both resolved by the appliance when the
/// agent picks the job up). JSON: `"auto"`, `"serial:<serial>"` or the device path `"/dev/vda"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum MapTarget {
    Auto,
    /// Kernel device name, without `/dev/`.
    Device(String),
    /// The disk whose serial number (as the inventory reports it) is this.
    Serial(String),
}

impl fmt::Display for MapTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapTarget::Auto => f.write_str("auto"),
            MapTarget::Device(d) => write!(f, "/dev/{d}"),
            MapTarget::Serial(s) => write!(f, "serial:{s}"),
        }
    }
}

impl From<MapTarget> for String {
    fn from(t: MapTarget) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for MapTarget {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for MapTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(MapTarget::Auto);
        }
        if let Some(serial) = s.strip_prefix("serial:") {
            let ok = !serial.is_empty()
                && serial.len() <= 128
                && serial.bytes().all(|b| b.is_ascii_graphic());
            return if ok {
                Ok(MapTarget::Serial(serial.to_string()))
            } else {
                Err(format!(
                    "{s:?}: a serial number is 1 to 128 printable characters"
                ))
            };
        }
        let name = s.strip_prefix("/dev/").unwrap_or(s);
        check_name(NameKind::Disk, name)
            .map(|()| MapTarget::Device(name.to_string()))
            .map_err(|_| {
                format!(
                    "{s:?} is not a target: use a device as the agent sees it (/dev/vda) or auto"
                )
            })
    }
}

/// One snapshot disk onto one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub disk: String,
    pub target: MapTarget,
}

impl std::str::FromStr for Mapping {
    type Err = String;
    /// `DISK=TARGET`, e.g. `sda=/dev/vda` or `sda=auto`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (disk, target) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not DISK=TARGET (e.g. sda=/dev/vda or sda=auto)"))?;
        check_name(NameKind::Disk, disk).map_err(|e| e.to_string())?;
        Ok(Mapping {
            disk: disk.to_string(),
            target: target.parse()?,
        })
    }
}

/// A job's life. JSON: `"pending"`, `"running"`, `"succeeded"` or
/// `{"failed": {"reason": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum JobState {
    /// Created; no agent has started it (it may have been handed to one).
    Pending,
    Running,
    Succeeded,
    Failed {
        reason: String,
    },
}

impl JobState {
    pub fn is_final(&self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed { .. })
    }

    /// The agent may move a job pending → running → succeeded/failed (or pending → failed).
    pub fn may_become(&self, next: &JobState) -> bool {
        matches!(
            (self, next),
            (JobState::Pending, JobState::Running)
                | (
                    JobState::Pending | JobState::Running,
                    JobState::Failed { .. }
                )
                | (JobState::Running, JobState::Succeeded)
                | (JobState::Running, JobState::Running)
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed { .. } => "failed",
        }
    }
}

/// `GET /agents/{id}/job`: the job an agent is to run. Its mappings are resolved (no `auto`).
/// A job in state `failed` is handed out once so the agent can show why; `running` means the
/// agent restarted during it and resumes (the restore is a seeded sync).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub id: String,
    pub snapshot: String,
    /// Resolved by the appliance against the inventory this agent enrolled with; the agent
    /// resolves `requested` again against its own view of its disks and refuses any difference.
    pub mappings: Vec<Mapping>,
    /// The mappings as the operator gave them (may hold `auto` and `serial:`).
    #[serde(default)]
    pub requested: Vec<Mapping>,
    /// What the agent writes into each target's in-progress marker (64 hex digits).
    #[serde(default)]
    pub proof: String,
    pub then: Then,
    pub overwrite: bool,
    #[serde(default)]
    pub options: JobOptions,
    pub state: JobState,
}

/// Severity of an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Info,
    Warn,
    Error,
}

/// Where in a job an event was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Fetching the manifest and indexes, checking the targets. Nothing written.
    Plan,
    /// Comparing, fetching and writing data.
    Restore,
    /// Adapting the restored OS to this machine, and the bootability report.
    Fixup,
    /// Finished successfully.
    Done,
    /// Stopped by an error.
    Failed,
}

/// One structured event of a job, as posted by the agent and stored append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// RFC 3339 UTC, the agent's clock.
    pub time: String,
    pub level: Level,
    pub phase: Phase,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Bytes per second since the phase began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Seconds left at that rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<u64>,
}

/// Most events one `POST /agents/{id}/events` may carry.
pub const MAX_EVENT_BATCH: usize = 1000;

/// `POST /agents/{id}/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub job: String,
    pub events: Vec<Event>,
}

/// Which machine a job is for: an enrolled agent, or whichever agent enrolls with this MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum JobFor {
    Agent(String),
    Mac(String),
}

/// Progress as last reported by the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobProgress {
    pub phase: Option<Phase>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub rate: u64,
    pub eta: u64,
}

/// The appliance's record of a job (`jobs/<id>.json`; `appliance jobs show --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    pub id: String,
    pub snapshot: String,
    #[serde(rename = "for")]
    pub for_: JobFor,
    /// As given at creation (may hold `auto`).
    pub mappings: Vec<Mapping>,
    pub then: Then,
    pub overwrite: bool,
    #[serde(default)]
    pub options: JobOptions,
    /// RFC 3339 UTC.
    pub created: String,
    /// The agent that picked the job up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The mappings resolved against that agent's inventory at pickup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Vec<Mapping>>,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    #[serde(default)]
    pub progress: JobProgress,
    /// Hash of the proof handed to the agent with the job ([`crate::marker::proof_hash`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_hash: Option<String>,
}

impl JobRecord {
    /// The job as handed to its agent: resolved mappings.
    pub fn to_job(&self) -> Job {
        Job {
            id: self.id.clone(),
            snapshot: self.snapshot.clone(),
            mappings: self
                .resolved
                .clone()
                .unwrap_or_else(|| self.mappings.clone()),
            requested: self.mappings.clone(),
            proof: String::new(),
            then: self.then,
            overwrite: self.overwrite,
            options: self.options.clone(),
            state: self.state.clone(),
        }
    }
}

/// What an agent is doing, as the appliance last heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Enrolled, asking for a job.
    Waiting,
    /// Running its job.
    Running,
    Succeeded,
    Failed,
}

/// An enrolled agent (`appliance agents --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    pub agent: String,
    pub version: String,
    pub inventory: Inventory,
    /// RFC 3339 UTC of the last enrollment.
    pub enrolled: String,
    /// RFC 3339 UTC of the last request.
    pub last_seen: String,
    pub state: AgentState,
    /// The job it runs or ran last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Who trusted this agent with jobs, and when; `None`: not approved, given no job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Approval>,
}

/// Why an agent may be given jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// RFC 3339 UTC.
    pub time: String,
    pub by: ApprovedBy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ApprovedBy {
    /// `appliance agents approve` (or the admin API).
    Operator,
    /// It enrolled showing the in-progress marker of this running job, found on its disks.
    ResumeProof { job: String },
}

impl fmt::Display for ApprovedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApprovedBy::Operator => f.write_str("the operator"),
            ApprovedBy::ResumeProof { job } => {
                write!(f, "the in-progress marker of job {job} on its disks")
            }
        }
    }
}

/// A snapshot disk to place: its name and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskNeed {
    pub disk: String,
    pub size: u64,
}

/// Resolve a job's mappings against an agent's inventory, before anything is written. Explicit
/// targets must exist, be large enough and be blank unless `overwrite`; `auto` takes the single
/// blank, non-removable disk of at least the snapshot disk's size that no other mapping uses. Every failure is a
/// sentence that says what to do. `needs` holds each mapped disk's size (from the manifest).
pub fn resolve_mappings(
    mappings: &[Mapping],
    needs: &[DiskNeed],
    inv: &Inventory,
    overwrite: bool,
) -> Result<Vec<Mapping>, String> {
    let size_of = |disk: &str| {
        needs.iter().find(|n| n.disk == disk).map(|n| n.size).ok_or_else(|| {
            let names: Vec<&str> = needs.iter().map(|n| n.disk.as_str()).collect();
            format!("the snapshot has no disk {disk:?} (it has: {}): create the job again with --map for one of those", names.join(", "))
        })
    };
    let mut used: Vec<String> = Vec::new();
    let mut chosen: Vec<Option<String>> = vec![None; mappings.len()];
    // Explicit targets first, so `auto` never takes a disk that is named elsewhere.
    for (i, m) in mappings.iter().enumerate() {
        if mappings[..i].iter().any(|o| o.disk == m.disk) {
            return Err(format!(
                "disk {} is mapped twice: give one --map per disk",
                m.disk
            ));
        }
        let by_serial;
        let dev = match &m.target {
            MapTarget::Device(dev) => dev,
            MapTarget::Serial(serial) => {
                let Some(d) = inv
                    .disks
                    .iter()
                    .find(|d| d.serial.as_deref() == Some(serial))
                else {
                    return Err(format!(
                        "no disk with serial {serial:?} for disk {} on this machine (its disks: {}): create the job again with a serial from `appliance agents`, a device or auto",
                        m.disk,
                        disk_list(inv)
                    ));
                };
                by_serial = d.name.clone();
                &by_serial
            }
            MapTarget::Auto => continue,
        };
        let need = size_of(&m.disk)?;
        let Some(d) = inv.disk(dev) else {
            return Err(format!(
                "target /dev/{dev} for disk {} does not exist on this machine (its disks: {}): create the job again with one of those or auto",
                m.disk,
                disk_list(inv)
            ));
        };
        if d.size < need {
            return Err(format!(
                "target /dev/{dev} is too small for disk {}: {} bytes, the snapshot's disk needs {need} bytes ({} more); attach a larger disk or map another one",
                m.disk,
                d.size,
                need - d.size
            ));
        }
        if let Some(why) = &d.protected {
            return Err(format!(
                "target /dev/{dev} for disk {} is never written: {why}; map the disk onto another device",
                m.disk
            ));
        }
        if !d.blank && !overwrite {
            return Err(format!(
                "target /dev/{dev} for disk {} holds data ({}): if it may be overwritten, create the job again with --overwrite",
                m.disk,
                d.holds.as_deref().unwrap_or("it is not all zeros")
            ));
        }
        if used.contains(dev) {
            return Err(format!(
                "/dev/{dev} is the target of two disks: map each disk to its own device"
            ));
        }
        used.push(dev.clone());
        chosen[i] = Some(dev.clone());
    }
    for (i, m) in mappings.iter().enumerate() {
        if m.target != MapTarget::Auto {
            continue;
        }
        let need = size_of(&m.disk)?;
        let fits: Vec<&Disk> = inv
            .disks
            .iter()
            .filter(|d| {
                d.blank
                    && d.protected.is_none()
                    && !d.removable
                    && d.size >= need
                    && !used.contains(&d.name)
            })
            .collect();
        match fits.as_slice() {
            [one] => {
                used.push(one.name.clone());
                chosen[i] = Some(one.name.clone());
            }
            [] => {
                return Err(format!(
                    "auto: no blank disk of at least {need} bytes for disk {} (this machine has: {}): attach one, or name the target with --map {}=/dev/NAME --overwrite",
                    m.disk,
                    disk_list(inv),
                    m.disk
                ))
            }
            many => {
                let names: Vec<String> = many.iter().map(|d| format!("/dev/{}", d.name)).collect();
                return Err(format!(
                    "auto is ambiguous for disk {}: {} are all blank and large enough; name the target with --map {}=/dev/NAME",
                    m.disk,
                    names.join(", "),
                    m.disk
                ));
            }
        }
    }
    Ok(mappings
        .iter()
        .zip(chosen)
        .map(|(m, dev)| Mapping {
            disk: m.disk.clone(),
            target: MapTarget::Device(dev.unwrap_or_default()),
        })
        .collect())
}

fn disk_list(inv: &Inventory) -> String {
    if inv.disks.is_empty() {
        return "no disks".into();
    }
    let each: Vec<String> = inv
        .disks
        .iter()
        .map(|d| {
            format!(
                "/dev/{} {} bytes{}",
                d.name,
                d.size,
                if d.blank { " blank" } else { " holding data" }
            )
        })
        .collect();
    each.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;

    fn disk(name: &str, size: u64, blank: bool) -> Disk {
        Disk {
            name: name.into(),
            size,
            model: None,
            serial: None,
            wwn: None,
            logical_sector_size: 512,
            physical_sector_size: 512,
            blank,
            removable: false,
            holds: (!blank).then(|| "an ext2/3/4 filesystem at offset 1 MiB".into()),
            protected: None,
        }
    }

    fn inv(disks: Vec<Disk>) -> Inventory {
        Inventory {
            disks,
            ..Default::default()
        }
    }

    fn map(s: &str) -> Mapping {
        s.parse().unwrap()
    }

    #[test]
    fn the_boot_medium_is_never_a_target_whatever_the_flags() {
        let need = [DiskNeed {
            disk: "sda".into(),
            size: GB,
        }];
        let mut iso = disk("sdb", 2 * GB, false);
        iso.protected = Some("it holds an ISO 9660 filesystem (FERRY_RESCUE)".into());
        let machine = inv(vec![iso]);
        for overwrite in [false, true] {
            let e =
                resolve_mappings(&[map("sda=/dev/sdb")], &need, &machine, overwrite).unwrap_err();
            assert!(e.contains("never written") && e.contains("ISO 9660"), "{e}");
        }
        let e = resolve_mappings(&[map("sda=auto")], &need, &machine, true).unwrap_err();
        assert!(e.contains("no blank disk"), "{e}");
        let e = resolve_mappings(
            &[map("sda=/dev/vda")],
            &need,
            &inv(vec![disk("vda", GB, false)]),
            false,
        )
        .unwrap_err();
        assert!(
            e.contains("ext2/3/4 filesystem at offset 1 MiB") && e.contains("--overwrite"),
            "{e}"
        );
    }

    #[test]
    fn inventories_are_bounded() {
        let mut i = inv(vec![disk("vda", GB, true); MAX_INVENTORY_DISKS]);
        assert!(i.check_bounds().is_ok());
        i.disks.push(disk("vdb", GB, true));
        assert!(i.check_bounds().unwrap_err().contains("at most"));
        let mut i = inv(vec![disk("vda", GB, true)]);
        i.disks[0].serial = Some("x".repeat(MAX_INVENTORY_TEXT + 1));
        assert!(i.check_bounds().is_err());
        let mut i = inv(vec![]);
        i.nics.push(Nic {
            name: "eth0".into(),
            mac: "not-a-mac".into(),
            carrier: None,
        });
        assert!(i.check_bounds().is_err());
    }

    #[test]
    fn auto_resolution_table() {
        let need = [DiskNeed {
            disk: "sda".into(),
            size: 10 * GB,
        }];
        let auto = [map("sda=auto")];
        // (disks, Ok(target) or Err(fragment))
        let cases: Vec<(Vec<Disk>, Result<&str, &str>)> = vec![
            (vec![disk("vda", 20 * GB, true)], Ok("vda")),
            (vec![disk("vda", 10 * GB, true)], Ok("vda")),
            (
                vec![disk("vda", 20 * GB, false), disk("vdb", 20 * GB, true)],
                Ok("vdb"),
            ),
            (
                vec![disk("vda", 5 * GB, true), disk("vdb", 20 * GB, true)],
                Ok("vdb"),
            ),
            (vec![], Err("no blank disk")),
            (vec![disk("vda", 20 * GB, false)], Err("no blank disk")),
            (
                vec![disk("vda", 9 * GB, true)],
                Err("no blank disk of at least 10000000000 bytes"),
            ),
            (
                vec![disk("vda", 20 * GB, true), disk("vdb", 30 * GB, true)],
                Err("ambiguous for disk sda: /dev/vda, /dev/vdb"),
            ),
        ];
        for (disks, want) in cases {
            let got = resolve_mappings(&auto, &need, &inv(disks.clone()), false);
            match (want, got) {
                (Ok(dev), Ok(m)) => assert_eq!(
                    m,
                    vec![Mapping {
                        disk: "sda".into(),
                        target: MapTarget::Device(dev.into())
                    }],
                    "{disks:?}"
                ),
                (Err(frag), Err(e)) => assert!(e.contains(frag), "{disks:?}: {e}"),
                (want, got) => panic!("{disks:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn explicit_targets_are_checked() {
        let needs = [
            DiskNeed {
                disk: "sda".into(),
                size: 10 * GB,
            },
            DiskNeed {
                disk: "sdb".into(),
                size: GB,
            },
        ];
        let machine = inv(vec![
            disk("vda", 20 * GB, true),
            disk("vdb", 5 * GB, true),
            disk("vdc", 20 * GB, false),
        ]);
        let r = |maps: &[&str], overwrite: bool| {
            let maps: Vec<Mapping> = maps.iter().map(|m| map(m)).collect();
            resolve_mappings(&maps, &needs, &machine, overwrite)
        };
        let err = |maps: &[&str]| r(maps, false).unwrap_err();
        assert!(err(&["sda=/dev/vdb"]).contains("too small"));
        assert!(err(&["sda=/dev/vdx"]).contains("does not exist"));
        assert!(err(&["sda=/dev/vdc"]).contains("--overwrite"));
        assert!(r(&["sda=/dev/vdc"], true).is_ok());
        assert!(err(&["sdz=auto"]).contains("has no disk \"sdz\""));
        assert!(err(&["sda=vda", "sda=vdb"]).contains("mapped twice"));
        assert!(err(&["sda=vda", "sdb=vda"]).contains("two disks"));
        // auto never takes a disk named explicitly: vdb is then the only blank one that fits sdb.
        let ok = r(&["sdb=auto", "sda=/dev/vda"], false).unwrap();
        assert_eq!(ok[0].target, MapTarget::Device("vdb".into()));
        assert_eq!(ok[1].target, MapTarget::Device("vda".into()));
    }

    #[test]
    fn targets_by_serial() {
        let needs = [
            DiskNeed {
                disk: "sda".into(),
                size: 10 * GB,
            },
            DiskNeed {
                disk: "sdb".into(),
                size: GB,
            },
        ];
        let mut a = disk("vda", 20 * GB, true);
        a.serial = Some("SN-BIG".into());
        let mut b = disk("vdb", 20 * GB, true);
        b.serial = Some("SN-OTHER".into());
        let machine = inv(vec![a, b]);
        let maps = |m: &[&str]| -> Vec<Mapping> { m.iter().map(|x| map(x)).collect() };
        // By serial, in the opposite order of the device names; auto then takes what is left.
        let ok = resolve_mappings(
            &maps(&["sda=serial:SN-OTHER", "sdb=auto"]),
            &needs,
            &machine,
            false,
        )
        .unwrap();
        assert_eq!(ok[0].target, MapTarget::Device("vdb".into()));
        assert_eq!(ok[1].target, MapTarget::Device("vda".into()));
        let e = resolve_mappings(&maps(&["sda=serial:NOPE"]), &needs, &machine, false).unwrap_err();
        assert!(e.contains("no disk with serial \"NOPE\""), "{e}");
        let e = resolve_mappings(
            &maps(&["sda=serial:SN-BIG", "sdb=serial:SN-BIG"]),
            &needs,
            &machine,
            false,
        )
        .unwrap_err();
        assert!(e.contains("two disks"), "{e}");
    }

    #[test]
    fn job_json_round_trips() {
        let job = Job {
            id: "job-0011aabb".into(),
            snapshot: "web01-20250101T000000Z".into(),
            mappings: vec![map("sda=/dev/vda"), map("sdb=auto")],
            requested: vec![map("sda=/dev/vda"), map("sdb=auto")],
            proof: "ab".repeat(32),
            then: Then::Reboot,
            overwrite: false,
            options: JobOptions {
                grow: true,
                grow_lv: Some("vg0/root".into()),
                fixup: true,
            },
            state: JobState::Failed {
                reason: "no disk".into(),
            },
        };
        let text = serde_json::to_string(&job).unwrap();
        assert!(
            text.contains(r#""target":"/dev/vda""#) && text.contains(r#""target":"auto""#),
            "{text}"
        );
        assert!(
            text.contains(r#""state":{"failed":{"reason":"no disk"}}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
        let pending = Job {
            state: JobState::Pending,
            ..job.clone()
        };
        let text = serde_json::to_string(&pending).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), pending);
        // Records written before options existed read with the defaults.
        let old = text.replace(
            r#""options":{"grow":true,"grow_lv":"vg0/root","fixup":true},"#,
            "",
        );
        assert_ne!(old, text);
        assert_eq!(
            serde_json::from_str::<Job>(&old).unwrap().options,
            JobOptions::default()
        );
        // Unknown fields are refused.
        let extra = text.replace("\"then\"", "\"bogus\":1,\"then\"");
        assert!(serde_json::from_str::<Job>(&extra).is_err());
        assert!(serde_json::from_str::<JobState>(r#"{"failed":{}}"#).is_err());
        assert!(
            serde_json::from_str::<JobState>(r#"{"failed":{"reason":"x","extra":1}}"#).is_err()
        );
        assert_eq!(
            serde_json::from_str::<JobState>(r#""running""#).unwrap(),
            JobState::Running
        );

        let rec = JobRecord {
            id: job.id.clone(),
            snapshot: job.snapshot.clone(),
            for_: JobFor::Mac("52:54:00:12:34:56".into()),
            mappings: job.mappings.clone(),
            then: Then::Poweroff,
            overwrite: true,
            options: JobOptions::default(),
            created: "2025-01-01T00:00:00Z".into(),
            agent: Some("agent-525400123456".into()),
            resolved: Some(vec![map("sda=vda"), map("sdb=vdb")]),
            state: JobState::Running,
            started: None,
            finished: None,
            progress: JobProgress::default(),
            proof_hash: Some(crate::marker::proof_hash(&"ab".repeat(32))),
        };
        let text = serde_json::to_string_pretty(&rec).unwrap();
        assert_eq!(serde_json::from_str::<JobRecord>(&text).unwrap(), rec);
        assert_eq!(
            rec.to_job().mappings[1].target,
            MapTarget::Device("vdb".into())
        );
    }

    #[test]
    fn names_and_macs_parse() {
        assert_eq!(
            normalize_mac("52-54-00-AB-cd-EF").unwrap(),
            "52:54:00:ab:cd:ef"
        );
        assert!(normalize_mac("52:54:00:ab:cd").is_err());
        assert!("../etc".parse::<MapTarget>().is_err());
        assert_eq!(
            "serial:QM0001".parse::<MapTarget>().unwrap(),
            MapTarget::Serial("QM0001".into())
        );
        assert_eq!(
            MapTarget::Serial("QM0001".into()).to_string(),
            "serial:QM0001"
        );
        assert!("serial:".parse::<MapTarget>().is_err());
        assert!("serial:a b".parse::<MapTarget>().is_err());
        assert!("sda".parse::<Mapping>().is_err());
        assert_eq!(
            "/dev/nvme0n1".parse::<MapTarget>().unwrap(),
            MapTarget::Device("nvme0n1".into())
        );
        assert!(!JobState::Succeeded.may_become(&JobState::Running));
        assert!(JobState::Pending.may_become(&JobState::Failed {
            reason: String::new()
        }));
    }
}
