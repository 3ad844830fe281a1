//! Restore, standby and backup jobs: the [`Job`] an agent is given, the appliance's [`JobRecord`], their states and
//! options.

use serde::{Deserialize, Serialize};

use super::{Mapping, Phase};

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
    /// How the restored OS's network configuration follows it (docs/network.md).
    #[serde(skip_serializing_if = "JobNetwork::is_empty")]
    pub network: JobNetwork,
    /// Restore a snapshot whose Windows volume was hibernated when it was read (its files are
    /// inconsistent; `appliance jobs create --allow-hibernated`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_hibernated: bool,
}

/// A job's network rules, as the operator wrote them (`--nic`, `--reip`, `--ip`). The
/// appliance parses and checks them when the job is created, the agent again before it
/// writes anything (`ferry_fixup::network::NetworkRules`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobNetwork {
    /// `OLD=NEW`: a source interface (name or MAC) onto a target NIC (name or MAC).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nic: Vec<String>,
    /// `FROM/PREFIX=TO/PREFIX`: move addresses in a subnet into another, keeping host parts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reip: Vec<String>,
    /// `IFACE=ADDR/PREFIX[,gw=GW][,dns=DNS]...`: one interface's new static address.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip: Vec<String>,
}

impl JobNetwork {
    pub fn is_empty(&self) -> bool {
        self.nic.is_empty() && self.reip.is_empty() && self.ip.is_empty()
    }
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            grow: false,
            grow_lv: None,
            fixup: true,
            network: JobNetwork::default(),
            allow_hibernated: false,
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

/// What a job does. Absent on the wire and in records: `restore` (so restore jobs read and
/// write exactly as before this field existed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Restore the job's snapshot once.
    #[default]
    Restore,
    /// The standby target of a migration (docs/migration.md, "Standby target"): restore the
    /// newest snapshot the standby routes hand out, then apply each newer one, until the
    /// migration ends. `Job::migration` names it.
    Standby,
    /// Back up this machine's own disks from the rescue image (docs/agent.md, "Backup
    /// jobs"): `Job::backup` says which, under which machine name; the snapshot records
    /// [`crate::consistency::Consistency::Offline`].
    Backup,
}

/// What a backup job reads: `disks` as the operator gave them (`auto`, `all` or kernel
/// names), resolved against the agent's inventory by [`resolve_backup_disks`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSpec {
    /// The machine the snapshot is stored under.
    pub machine: String,
    pub disks: Vec<String>,
    /// The snapshot the job committed, recorded by the appliance when it accepted the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// Most disks one backup job names.
pub const MAX_BACKUP_DISKS: usize = 64;

/// The words of `--disk` before any inventory is known: 1 to [`MAX_BACKUP_DISKS`] of `auto`,
/// `all`, a kernel name (`sda`, `/dev/nvme0n1`) or `serial:SERIAL`.
pub fn check_backup_disks(requested: &[String]) -> Result<(), String> {
    if requested.is_empty() || requested.len() > MAX_BACKUP_DISKS {
        return Err(format!(
            "a backup job names 1 to {MAX_BACKUP_DISKS} disks (--disk auto|all|DEV)"
        ));
    }
    for r in requested {
        let ok = match r.strip_prefix("serial:") {
            Some(serial) => {
                !serial.is_empty() && serial.len() <= 256 && !serial.chars().any(char::is_control)
            }
            None => {
                let n = r.strip_prefix("/dev/").unwrap_or(r);
                !n.is_empty()
                    && n.len() <= 32
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            }
        };
        if !ok {
            return Err(format!(
                "--disk {r:?} is not auto, all, a disk's kernel name (sda, /dev/vda) or serial:SERIAL"
            ));
        }
    }
    Ok(())
}

/// The disks a backup job reads, by kernel name, in inventory order. `auto`: every disk
/// that is not removable, not blank and not protected; `all`: every disk not protected;
/// otherwise each name (`sda` or `/dev/sda`; `serial:SERIAL` for the disk with that serial
/// number, as bare metal's names follow probe order) must be a disk of `inv` that is not protected
/// (the medium the rescue image booted from is never read). Refused with the reason.
pub fn resolve_backup_disks(
    requested: &[String],
    inv: &super::Inventory,
) -> Result<Vec<String>, String> {
    check_backup_disks(requested)?;
    let names: Vec<&str> = inv.disks.iter().map(|d| d.name.as_str()).collect();
    let mut out: Vec<String> = Vec::new();
    let add = |n: &str, out: &mut Vec<String>| {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_owned());
        }
    };
    for r in requested {
        match r.as_str() {
            "auto" | "all" => {
                let auto = r == "auto";
                for d in &inv.disks {
                    if d.protected.is_none() && (!auto || (!d.removable && !d.blank)) {
                        add(&d.name, &mut out);
                    }
                }
            }
            other => {
                let found = match other.strip_prefix("serial:") {
                    Some(serial) => inv
                        .disks
                        .iter()
                        .find(|d| d.serial.as_deref() == Some(serial)),
                    None => {
                        let name = other.strip_prefix("/dev/").unwrap_or(other);
                        inv.disks.iter().find(|d| d.name == name)
                    }
                };
                let Some(d) = found else {
                    return Err(format!(
                        "this machine has no disk {other} (it has: {}); name one of its disks, or auto",
                        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                    ));
                };
                if let Some(why) = &d.protected {
                    return Err(format!(
                        "disk {} is never backed up by a job: {why}; name another disk",
                        d.name
                    ));
                }
                add(&d.name, &mut out);
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "--disk {} chose no disk on this machine (its disks: {}): every one is blank, \
             removable or the rescue medium; name the disk to read",
            requested.join(","),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    Ok(out)
}

impl JobKind {
    pub fn is_restore(&self) -> bool {
        *self == JobKind::Restore
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
    #[serde(default, skip_serializing_if = "JobKind::is_restore")]
    pub kind: JobKind,
    /// The migration a standby job serves (`mig-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
    /// What a backup job reads (its disks resolved when it is handed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
}

/// `GET /agents/{id}/standby/next`: the snapshot a standby job is to apply next (the newest
/// of its machine, newer than the basis the agent named).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyNext {
    pub migration: String,
    pub snapshot: String,
    /// When the snapshot was taken (its manifest's `created`, RFC 3339 UTC).
    pub created: String,
    /// The cutover's final snapshot: apply it, run the fix-up, reboot (report each step on
    /// `PUT /agents/{id}/standby/cutover`). Absent (false) for the syncs before.
    #[serde(default, rename = "final", skip_serializing_if = "std::ops::Not::not")]
    pub final_: bool,
}

/// `PUT /agents/{id}/standby/state`: the standby's disks now hold `basis`, written and verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyReport {
    pub basis: String,
    /// When the apply finished, RFC 3339 UTC (the agent's clock).
    pub applied: String,
    /// Bytes the apply wrote to the disks.
    pub bytes_written: u64,
    /// How long the apply took.
    pub seconds: f64,
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
    #[serde(default, skip_serializing_if = "JobKind::is_restore")]
    pub kind: JobKind,
    /// The migration a standby job serves (`mig-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
    /// A backup job's request (as given; `backup_resolved` holds the disks at pickup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_resolved: Option<Vec<String>>,
    /// Creation order among jobs created in the same second (`created` has whole seconds):
    /// one more than the highest at creation; 0 in records from before the field.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl JobRecord {
    /// A new pending job of `kind` for `for_`, nothing else said yet (the caller fills in
    /// what its kind needs with struct update syntax).
    pub fn pending(id: String, for_: JobFor, kind: JobKind, created: String, seq: u64) -> Self {
        JobRecord {
            id,
            snapshot: String::new(),
            for_,
            mappings: Vec::new(),
            then: Then::None,
            overwrite: false,
            options: JobOptions::default(),
            created,
            agent: None,
            resolved: None,
            state: JobState::Pending,
            started: None,
            finished: None,
            progress: JobProgress::default(),
            proof_hash: None,
            kind,
            migration: None,
            backup: None,
            backup_resolved: None,
            seq,
        }
    }

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
            kind: self.kind,
            migration: self.migration.clone(),
            backup: self.backup.as_ref().map(|b| BackupSpec {
                machine: b.machine.clone(),
                disks: self
                    .backup_resolved
                    .clone()
                    .unwrap_or_else(|| b.disks.clone()),
                snapshot: b.snapshot.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::map;
    use super::super::MapTarget;
    use super::*;

    #[test]
    fn backup_disks_resolve_against_the_inventory() {
        use super::super::testing::{disk, inv, GB};
        let mut usb = disk("sdb", 8 * GB, false);
        usb.removable = true;
        let mut medium = disk("sdc", GB, false);
        medium.protected = Some("it holds the medium the rescue image booted from".into());
        let i = inv(vec![
            disk("sda", 100 * GB, false),
            usb,
            medium,
            disk("vdb", 10 * GB, true),
        ]);
        let r = |d: &[&str]| {
            let d: Vec<String> = d.iter().map(|s| s.to_string()).collect();
            resolve_backup_disks(&d, &i)
        };
        assert_eq!(r(&["auto"]).unwrap(), ["sda"]);
        assert_eq!(r(&["all"]).unwrap(), ["sda", "sdb", "vdb"]);
        assert_eq!(r(&["/dev/vdb", "sda", "auto"]).unwrap(), ["vdb", "sda"]);
        let e = r(&["sdc"]).unwrap_err();
        assert!(
            e.contains("disk sdc is never backed up") && e.contains("booted from"),
            "{e}"
        );
        let e = r(&["nvme0n1"]).unwrap_err();
        assert!(
            e.contains("no disk nvme0n1 (it has: sda, sdb, sdc, vdb)"),
            "{e}"
        );
        assert!(r(&[]).is_err());
        assert!(r(&["../sda"])
            .unwrap_err()
            .contains("not auto, all, a disk"));
        let mut by_serial = i.clone();
        by_serial.disks[3].serial = Some("WIN-CLEAN".into());
        let s = |d: &str| resolve_backup_disks(&[d.to_string()], &by_serial);
        assert_eq!(s("serial:WIN-CLEAN").unwrap(), ["vdb"]);
        assert!(s("serial:NOPE")
            .unwrap_err()
            .contains("no disk serial:NOPE"));
        let only_blank = inv(vec![disk("vda", GB, true)]);
        let e = resolve_backup_disks(&["auto".into()], &only_blank).unwrap_err();
        assert!(e.contains("chose no disk"), "{e}");
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
                network: JobNetwork::default(),
                allow_hibernated: false,
            },
            state: JobState::Failed {
                reason: "no disk".into(),
            },
            kind: JobKind::Restore,
            migration: None,
            backup: None,
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
        // Network rules only appear when there are some.
        assert!(!text.contains("network"), "{text}");
        let mut with_net = pending.clone();
        with_net.options.network = JobNetwork {
            nic: vec!["ens192=enp1s0".into()],
            reip: vec![],
            ip: vec!["enp1s0=10.2.0.5/24,gw=10.2.0.1".into()],
        };
        let t = serde_json::to_string(&with_net).unwrap();
        assert!(
            t.contains(
                r#""network":{"nic":["ens192=enp1s0"],"ip":["enp1s0=10.2.0.5/24,gw=10.2.0.1"]}"#
            ),
            "{t}"
        );
        assert_eq!(serde_json::from_str::<Job>(&t).unwrap(), with_net);
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
            kind: JobKind::Restore,
            migration: None,
            backup: None,
            backup_resolved: None,
            seq: 7,
        };
        let text = serde_json::to_string_pretty(&rec).unwrap();
        assert_eq!(serde_json::from_str::<JobRecord>(&text).unwrap(), rec);
        assert_eq!(
            rec.to_job().mappings[1].target,
            MapTarget::Device("vdb".into())
        );
    }

    #[test]
    fn restore_jobs_keep_their_old_json_and_standby_jobs_say_so() {
        let job = Job {
            id: "job-0011aabb".into(),
            snapshot: "web01-20250101T000000Z".into(),
            mappings: vec![map("sda=/dev/vda")],
            requested: vec![],
            proof: String::new(),
            then: Then::None,
            overwrite: false,
            options: JobOptions::default(),
            state: JobState::Pending,
            kind: JobKind::Restore,
            migration: None,
            backup: None,
        };
        let text = serde_json::to_string(&job).unwrap();
        // An agent built before standby jobs existed reads a restore job unchanged.
        assert!(
            !text.contains("kind") && !text.contains("migration"),
            "{text}"
        );
        let standby = Job {
            kind: JobKind::Standby,
            migration: Some("mig-0011aabb".into()),
            ..job
        };
        let text = serde_json::to_string(&standby).unwrap();
        assert!(
            text.contains(r#""kind":"standby""#) && text.contains(r#""migration":"mig-0011aabb""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), standby);
        assert!(serde_json::from_str::<Job>(&text.replace("standby", "sideways")).is_err());
    }

    #[test]
    fn job_states_move_forward() {
        assert!(!JobState::Succeeded.may_become(&JobState::Running));
        assert!(JobState::Pending.may_become(&JobState::Failed {
            reason: String::new()
        }));
    }
}
