//! The unattended restore agent (ARCHITECTURE §3, docs/protocol.md "Agents and jobs"): the loop
//! the rescue image's PID 1 runs, and `restore-agent agent` runs on an ordinary host.
//!
//! [`run`] is a short list of named steps:
//! 1. **inventory**: [`inventory::collect`] reads /sys and /proc under `root` (a seam: tests use
//!    a directory tree, and image files stand in for `/dev` nodes);
//! 2. **enroll** with the enrollment token stamped into the image (retried through the client's
//!    retry window), showing the in-progress markers found on its disks; the reply is this
//!    agent's own credential, used from then on, and whether it is approved (else it shows its
//!    code and waits: the appliance gives an unapproved agent no job);
//! 3. **wait** for a job (long poll, `wait=30`); a 401 means another enrollment replaced the
//!    credential: enroll again;
//! 4. **run** it ([`job`]): announce it, plan (writes nothing), check the plan against the
//!    inventory, apply with events every 2 s to the appliance and the console, report the result;
//!    A `standby` job ([`standby`]) stays: it applies each new snapshot of a migration's
//!    machine until the migration ends;
//! 5. return an [`Outcome`] (the job's `then` and whether it succeeded) once a job succeeded, or
//!    after the first job with `once`. A failed job is shown and the agent waits for the next.
//!
//! The agent never reboots or powers off by itself: its caller (PID 1) does what the outcome
//! says; host mode only prints it. Console output is plain timestamped lines ([`console`]).

#![forbid(unsafe_code)]

mod backup;
pub mod cli;
pub mod console;
pub mod events;
mod fixup;
pub mod inventory;
pub mod job;
mod standby;

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_client::{Client, ClientConfig, ClientError};
use ferry_format::agent::{
    challenge_answer, challenge_key, EnrollRequest, Inventory, JobKind, ResumeClaim,
    StandbyChallenge, StandbyProof, Then, MAX_CHALLENGE_RANGES, MAX_RESUME_CLAIMS,
};
use ferry_format::chunk::MAX_CHUNK_SIZE;
use ferry_format::marker::RestoreMarker;
use ferry_format::signing::TrustBundle;

use crate::console::Console;

/// How long one job poll waits on the appliance.
pub const POLL_WAIT: Duration = Duration::from_secs(30);
/// How often "still waiting" is repeated on the console.
const WAITING_NOTE_EVERY: Duration = Duration::from_secs(300);
/// Pause after the appliance stayed unreachable for a whole retry window, before trying again.
const UNREACHABLE_PAUSE: Duration = Duration::from_secs(10);

/// Where the appliance is and how to act; the image stamps these in (PID 1) or the command line
/// gives them (host mode).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `https://host:port`
    pub appliance: String,
    pub trust: TrustBundle,
    /// A token of role `enroll`.
    pub enroll_token: String,
    /// How long network failures are retried before a step gives up.
    pub retry_window: Duration,
    /// Chunk fetches in flight.
    pub parallel: usize,
    /// Return after the first job, succeeded or not (except a succeeded backup job that says
    /// `--then none`: the agent waits for the next).
    pub once: bool,
}

/// How the agent's work ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What the job says to do now (the caller does it; only after success is advisable).
    pub then: Then,
    pub succeeded: bool,
    pub job: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("enroll with the appliance: {0}")]
    Enroll(ClientError),
    #[error("ask the appliance for a job: {0}")]
    Poll(ClientError),
    #[error("report job {job} to the appliance: {source}")]
    Report { job: String, source: ClientError },
}

/// The enrolled agent: its id, a client carrying its credential, and the in-progress markers
/// found on its disks at start (the proofs of jobs it may resume).
pub struct Session {
    pub agent: String,
    pub client: Client,
    pub approved: bool,
    pub code: String,
    pub markers: Vec<(String, RestoreMarker)>,
    /// The standby job whose disks the appliance found holding its last applied snapshot
    /// (a standby challenge answered in this boot): they may be written although they carry
    /// no marker.
    pub proven_standby: Option<String>,
}

/// Enroll, wait for jobs and run them (see the crate docs for the steps).
pub fn run(
    cfg: AgentConfig,
    root: &Path,
    console: &mut dyn FnMut(&str),
) -> Result<Outcome, AgentError> {
    let mut out = Console::new(console);
    out.line(&format!(
        "ferry restore agent {} starting; appliance {}",
        env!("CARGO_PKG_VERSION"),
        cfg.appliance
    ));
    let inventory = inventory::collect(root);
    show_inventory(&mut out, &inventory);
    let markers = inventory::markers(root, &inventory);
    for (disk, m) in &markers {
        out.line(&format!(
            "disk /dev/{disk} holds the partial restore of disk {} of snapshot {} by job {}: it resumes if the appliance confirms the job",
            m.disk, m.snapshot, m.job
        ));
    }
    let enroll_client = Client::new(ClientConfig {
        url: cfg.appliance.clone(),
        trust: cfg.trust.clone(),
        token: cfg.enroll_token.clone(),
        retry_window: cfg.retry_window,
        connections: cfg.parallel + 2,
    })
    .map_err(AgentError::Enroll)?;
    let mut session = enroll(&enroll_client, &inventory, &markers, root, &mut out)?;
    let mut last_note: Option<Instant> = None;
    loop {
        if last_note.is_none_or(|t| t.elapsed() >= WAITING_NOTE_EVERY) {
            if session.approved {
                out.line(&format!("agent {}: waiting for a job (create one with `appliance jobs create --agent {} ...`)", session.agent, session.agent));
            } else {
                out.line(&format!(
                    "agent {} (code {}): waiting for the operator to approve this machine: `appliance agents approve {} --code {}`; no job runs before",
                    session.agent, session.code, session.agent, session.code
                ));
            }
            last_note = Some(Instant::now());
        }
        let job = match session.client.poll_job(&session.agent, POLL_WAIT) {
            Ok(Some(job)) => job,
            Ok(None) => continue,
            Err(e) if e.status() == Some(401) => {
                out.line(
                    "the appliance no longer accepts this agent's credential: enrolling again",
                );
                session = enroll(&enroll_client, &inventory, &markers, root, &mut out)?;
                continue;
            }
            Err(e) if e.gave_up_retrying() && !cfg.once => {
                out.line(&format!("warning: {e}; trying again"));
                std::thread::sleep(UNREACHABLE_PAUSE);
                continue;
            }
            Err(e) => return Err(AgentError::Poll(e)),
        };
        let outcome = job::run_job(&session, &job, &inventory, root, &cfg, &mut out)?;
        // A backup job that succeeded and says `--then none` leaves the machine as it was:
        // wait for the next job (a restore here, or the final cold delta of a migration), even
        // with `once` (PID 1 would otherwise end in the console shell).
        if outcome.succeeded && job.kind == JobKind::Backup && outcome.then == Then::None {
            out.line("waiting for the next job (the backup job said --then none)");
            last_note = None;
            continue;
        }
        if outcome.succeeded || cfg.once {
            return Ok(outcome);
        }
        last_note = None;
    }
}

fn enroll(
    client: &Client,
    inventory: &Inventory,
    markers: &[(String, RestoreMarker)],
    root: &Path,
    out: &mut Console,
) -> Result<Session, AgentError> {
    let mut resume: Vec<ResumeClaim> = Vec::new();
    for (_, m) in markers {
        if !resume.iter().any(|c| c.job == m.job && c.proof == m.proof) {
            resume.push(ResumeClaim {
                job: m.job.clone(),
                proof: m.proof.clone(),
            });
        }
    }
    resume.truncate(MAX_RESUME_CLAIMS);
    let req = EnrollRequest {
        inventory: inventory.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        resume,
    };
    let reply = client.enroll(&req).map_err(AgentError::Enroll)?;
    if reply.approved {
        out.line(&format!(
            "enrolled as agent {} (approved: its disks prove it was running a job)",
            reply.agent
        ));
    } else {
        out.line(&format!(
            "enrolled as agent {} (code {}): waiting for approval",
            reply.agent, reply.code
        ));
    }
    let mut session = Session {
        client: client.with_token(&reply.credential),
        agent: reply.agent,
        approved: reply.approved,
        code: reply.code,
        markers: markers.to_vec(),
        proven_standby: None,
    };
    if let (false, Some(ch)) = (reply.approved, &reply.challenge) {
        prove_standby(&mut session, ch, inventory, root, out);
    }
    Ok(session)
}

/// Answer the appliance's standby challenge (this machine may be a migration's standby that
/// rebooted between applies). Proven, the session is approved and each proven disk counts as
/// carrying the standby job's marker (its new proof); otherwise the agent waits for the
/// operator as any new agent does. Only reads.
fn prove_standby(
    s: &mut Session,
    ch: &StandbyChallenge,
    inventory: &Inventory,
    root: &Path,
    out: &mut Console,
) {
    out.line(&format!(
        "the appliance asks whether this machine is the standby of migration {}: reading {} ranges of its disks",
        ch.migration,
        ch.ranges.len()
    ));
    let answers = match challenge_answers(ch, inventory, root) {
        Ok(a) => a,
        Err(why) => {
            out.line(&format!("cannot answer the standby challenge: {why}"));
            return;
        }
    };
    let proof = StandbyProof {
        migration: ch.migration.clone(),
        answers,
    };
    match s.client.standby_proof(&s.agent, &proof) {
        Ok(p) => {
            out.line(&format!(
                "approved: this machine's disks hold {} of migration {}; standby job {} continues here",
                p.snapshot, ch.migration, p.job
            ));
            s.approved = true;
            s.proven_standby = Some(p.job.clone());
            for (disk, dev) in &p.disks {
                s.markers.push((
                    dev.clone(),
                    RestoreMarker::new(&p.job, &p.snapshot, disk, &p.proof),
                ));
            }
        }
        Err(e) => out.line(&format!("the standby proof was not accepted: {e}")),
    }
}

/// The keyed BLAKE3 of each challenged range of this machine's disks.
fn challenge_answers(
    ch: &StandbyChallenge,
    inventory: &Inventory,
    root: &Path,
) -> Result<Vec<String>, String> {
    use std::io::{Read, Seek, SeekFrom};
    if ch.ranges.len() > MAX_CHALLENGE_RANGES {
        return Err(format!(
            "{} ranges, at most {MAX_CHALLENGE_RANGES}",
            ch.ranges.len()
        ));
    }
    let key = challenge_key(&ch.nonce).ok_or("the nonce is not 64 hex digits")?;
    let mut answers = Vec::new();
    for r in &ch.ranges {
        let disk = inventory
            .disk(&r.device)
            .ok_or_else(|| format!("this machine has no disk {}", r.device))?;
        let end = r.offset.checked_add(r.len).filter(|&e| e <= disk.size);
        if end.is_none() || r.len > u64::from(MAX_CHUNK_SIZE) {
            return Err(format!(
                "{} bytes at {} are not within /dev/{} (or more than a chunk)",
                r.len, r.offset, r.device
            ));
        }
        let path = root.join("dev").join(&disk.name);
        let mut buf = vec![0u8; r.len as usize];
        std::fs::File::open(&path)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(r.offset))?;
                f.read_exact(&mut buf)
            })
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        answers.push(challenge_answer(&key, &buf));
    }
    Ok(answers)
}

fn show_inventory(out: &mut Console, inv: &Inventory) {
    use ferry_format::units::human_bytes;
    out.line(&format!(
        "machine: {:?} firmware, {} CPUs{}, {} memory",
        inv.firmware,
        inv.cpu.count,
        inv.cpu
            .model
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default(),
        human_bytes(inv.memory_bytes)
    ));
    for d in &inv.disks {
        out.line(&format!(
            "disk /dev/{}: {}, sectors {}/{}{}{}{}",
            d.name,
            human_bytes(d.size),
            d.logical_sector_size,
            d.physical_sector_size,
            d.model
                .as_deref()
                .map(|m| format!(", model {m}"))
                .unwrap_or_default(),
            d.serial
                .as_deref()
                .map(|s| format!(", serial {s}"))
                .unwrap_or_default(),
            match (&d.protected, d.blank, &d.holds) {
                (Some(why), _, _) => format!(", never written: {why}"),
                (None, true, _) => ", blank".to_string(),
                (None, false, Some(h)) => format!(", holds {h}"),
                (None, false, None) => ", holds data".to_string(),
            }
        ));
    }
    for n in &inv.nics {
        let link = match n.carrier {
            Some(true) => "link up",
            Some(false) => "no link",
            None => "link unknown",
        };
        let hw: Vec<&str> = [n.driver.as_deref(), n.pci_path.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let hw = if hw.is_empty() {
            String::new()
        } else {
            format!(", {}", hw.join(" at "))
        };
        let os = n
            .predictable
            .as_deref()
            .map_or(String::new(), |p| format!(" [{p} in a restored OS]"));
        out.line(&format!("nic {}: {}{hw} ({link}){os}", n.name, n.mac));
    }
    for p in &inv.problems {
        out.line(&format!("warning: {p}"));
    }
    if inv.disks.is_empty() {
        out.line("warning: no disks found: a job has nothing to restore onto (is the storage driver loaded?)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_format::agent::{ChallengeRange, Disk};

    fn disk(name: &str, size: u64) -> Disk {
        Disk {
            name: name.into(),
            size,
            model: None,
            serial: None,
            wwn: None,
            logical_sector_size: 512,
            physical_sector_size: 512,
            blank: false,
            removable: false,
            holds: None,
            protected: None,
        }
    }

    fn challenge(ranges: &[(&str, u64, u64)]) -> StandbyChallenge {
        StandbyChallenge {
            migration: "mig-00000001".into(),
            nonce: "ab".repeat(32),
            ranges: ranges
                .iter()
                .map(|&(d, offset, len)| ChallengeRange {
                    device: d.into(),
                    offset,
                    len,
                })
                .collect(),
        }
    }

    #[test]
    fn challenge_answers_read_only_the_disks_it_has_within_their_size() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("dev")).unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.path().join("dev/vda"), &data).unwrap();
        let inv = Inventory {
            disks: vec![disk("vda", 8192)],
            ..Default::default()
        };
        let key = challenge_key(&"ab".repeat(32)).unwrap();
        let got = challenge_answers(
            &challenge(&[("vda", 4096, 4096), ("vda", 0, 512)]),
            &inv,
            root.path(),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                challenge_answer(&key, &data[4096..]),
                challenge_answer(&key, &data[..512])
            ]
        );
        // Past the end, a disk it lacks, a path for a device, too many ranges, a bad nonce.
        let e = challenge_answers(&challenge(&[("vda", 4096, 8192)]), &inv, root.path());
        assert!(e.unwrap_err().contains("not within /dev/vda"));
        let e = challenge_answers(&challenge(&[("vdb", 0, 512)]), &inv, root.path());
        assert!(e.unwrap_err().contains("no disk vdb"));
        let e = challenge_answers(&challenge(&[("../etc/passwd", 0, 512)]), &inv, root.path());
        assert!(e.is_err());
        let many = vec![("vda", 0, 512); MAX_CHALLENGE_RANGES + 1];
        assert!(challenge_answers(&challenge(&many), &inv, root.path()).is_err());
        let mut bad = challenge(&[("vda", 0, 512)]);
        bad.nonce = "zz".repeat(32);
        assert!(challenge_answers(&bad, &inv, root.path()).is_err());
    }
}
