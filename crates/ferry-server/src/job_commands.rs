//! The appliance's commands for unattended restores and backups: `agents`, `jobs
//! create|list|show|cancel`, through [`Admin`]: on the store directly (beside `serve`, another
//! process; a waiting agent's long poll sees a new job within about a second) or on a remote
//! appliance's admin API.

use std::io::Write;

use anyhow::{Context, Result};
use ferry_format::admin::JobCreate;
use ferry_format::agent::{AgentInfo, Event, JobFor, JobOptions, JobRecord, JobState, Mapping};
use ferry_format::units::human_bytes;
use ferry_store::Store;
use serde::{Deserialize, Serialize};

use crate::ops::Admin;

/// `appliance jobs show --json`: the record, its first-boot beacon and its event log.
#[derive(Serialize, Deserialize)]
pub struct JobView {
    pub job: JobRecord,
    /// Present once the fix-up asked for a beacon credential (docs/migration.md, "Cutover").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beacon: Option<BeaconView>,
    pub events: Vec<Event>,
}

/// A job's beacon: issued, and whether and when the restored system reported its boot.
#[derive(Serialize, Deserialize)]
pub struct BeaconView {
    pub issued: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booted: Option<String>,
    /// Seconds from the job's end (the restore finished) to the report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_after_finish: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl BeaconView {
    fn of(job: &JobRecord, b: ferry_format::agent::beacon::BeaconRecord) -> BeaconView {
        let secs = |t: &str| ferry_store::tokens::parse_rfc3339(t);
        let seconds_after_finish = match (
            b.booted.as_deref().and_then(secs),
            job.finished.as_deref().and_then(secs),
        ) {
            (Some(boot), Some(end)) => Some(match boot.duration_since(end) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            }),
            _ => None,
        };
        BeaconView {
            issued: b.issued,
            booted: b.booted,
            seconds_after_finish,
            address: b.address,
            hostname: b.hostname,
        }
    }

    /// `booted: T (N s after the restore finished) from ADDR (HOST)`, or that it has not yet.
    fn line(&self) -> String {
        let Some(t) = &self.booted else {
            return format!(
                "booted    not reported yet (beacon installed at {})",
                self.issued
            );
        };
        let after = self.seconds_after_finish.map_or(String::new(), |s| {
            format!(" ({s} s after the restore finished)")
        });
        format!(
            "booted    {t}{after} from {} ({})",
            self.address.as_deref().unwrap_or("?"),
            self.hostname.as_deref().unwrap_or("?")
        )
    }
}

pub fn agents(a: &dyn Admin, json: bool) -> Result<()> {
    let list = a.agents().context("list agents")?;
    if json {
        return print_json(&list);
    }
    let mut out = std::io::stdout().lock();
    write_agent_table(&mut out, &list)?;
    Ok(())
}

/// The agent `agents approve` means: `id`, or the single unapproved agent with `mac`.
pub fn approve_target(list: &[AgentInfo], id: Option<&str>, mac: Option<&str>) -> Result<String> {
    Ok(match (id, mac) {
        (Some(id), _) => id.to_string(),
        (None, Some(mac)) => {
            let mac = ferry_format::agent::normalize_mac(mac).map_err(anyhow::Error::msg)?;
            let claims: Vec<&AgentInfo> = list
                .iter()
                .filter(|a| a.approved.is_none() && a.inventory.macs().contains(&mac))
                .collect();
            match claims.as_slice() {
                [one] => one.agent.clone(),
                [] => anyhow::bail!(
                    "no unapproved agent has MAC {mac}: see `appliance agents` (has it enrolled yet?)"
                ),
                many => anyhow::bail!(
                    "{} unapproved agents claim MAC {mac} ({}): one of them is not the machine you expect; approve by id with --code, checking the code on the machine's console",
                    many.len(),
                    many.iter().map(|a| a.agent.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        (None, None) => anyhow::bail!("name the agent: an id, or --mac MAC"),
    })
}

/// `appliance agents approve`: by id, or the single unapproved agent with a MAC.
pub fn agents_approve(
    a: &dyn Admin,
    id: Option<&str>,
    mac: Option<&str>,
    code: Option<&str>,
    json: bool,
) -> Result<()> {
    let id = match (id, mac) {
        (Some(id), _) => id.to_string(),
        _ => approve_target(&a.agents().context("list agents")?, id, mac)?,
    };
    let info = a
        .agent_approve(&id, code)
        .with_context(|| format!("approve agent {id}"))?;
    if json {
        return print_json(&info);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "approved agent {id}; it is given its jobs at its next poll:"
    )?;
    write_agent_table(&mut out, std::slice::from_ref(&info))?;
    Ok(())
}

pub fn agents_remove(a: &dyn Admin, id: &str) -> Result<()> {
    a.agent_remove(id)
        .with_context(|| format!("remove agent {id}"))?;
    println!("removed agent {id}");
    Ok(())
}

/// One line per agent: id, state, approval, last seen, job, MACs, disks.
pub fn write_agent_table(out: &mut impl Write, list: &[AgentInfo]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<20}  {:<9}  {:<8}  {:<20}  {:<12}  {:<17}  DISKS",
        "AGENT", "STATE", "APPROVED", "LAST SEEN", "JOB", "MACS"
    )?;
    for a in list {
        let inv = &a.inventory;
        let disks: Vec<String> = inv
            .disks
            .iter()
            .map(|d| {
                format!(
                    "{} {}{}",
                    d.name,
                    human_bytes(d.size),
                    if d.protected.is_some() {
                        " protected"
                    } else if d.blank {
                        " blank"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let state = serde_json::to_value(a.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let approved = match &a.approved {
            None => "no",
            Some(ap) if ap.by == ferry_format::agent::ApprovedBy::Operator => "yes",
            Some(_) => "resumed",
        };
        writeln!(
            out,
            "{:<20}  {:<9}  {:<8}  {:<20}  {:<12}  {:<17}  {}",
            a.agent,
            state,
            approved,
            a.last_seen,
            a.job.as_deref().unwrap_or("-"),
            inv.macs().join(","),
            disks.join(", ")
        )?;
    }
    Ok(())
}

/// `--agent ID` or `--mac MAC` (exactly one) as the job's target machine.
pub fn job_for(agent: Option<String>, mac: Option<String>) -> Result<JobFor> {
    Ok(match (agent, mac) {
        (Some(a), None) => JobFor::Agent(a),
        (None, Some(m)) => {
            JobFor::Mac(ferry_format::agent::normalize_mac(&m).map_err(anyhow::Error::msg)?)
        }
        _ => anyhow::bail!("give exactly one of --agent ID or --mac MAC"),
    })
}

fn who(for_: &JobFor) -> String {
    match for_ {
        JobFor::Agent(a) => format!("agent {a}"),
        JobFor::Mac(m) => format!("the machine with MAC {m}"),
    }
}

/// `appliance jobs create [--backup]`: checked and recorded (on the store or by the remote
/// appliance); prints the id on stdout, what it will do on stderr.
pub fn jobs_create(a: &dyn Admin, req: &JobCreate, json: bool) -> Result<()> {
    let job = a.job_create(req).context("create the job")?;
    if json {
        return print_json(&job);
    }
    println!("{}", job.id);
    match &job.backup {
        Some(b) => eprintln!(
            "Created job {}: back up disks {} of {} as machine {}; it starts when that agent asks for work.",
            job.id,
            b.disks.join(","),
            who(&job.for_),
            b.machine,
        ),
        None => eprintln!(
            "Created job {} ({}): snapshot {} onto {}; it starts when that agent asks for work.",
            job.id,
            mappings_text(&job.mappings),
            job.snapshot,
            who(&job.for_)
        ),
    }
    Ok(())
}

/// `appliance jobs cancel ID`.
pub fn jobs_cancel(a: &dyn Admin, id: &str) -> Result<()> {
    let job = a
        .job_cancel(id)
        .with_context(|| format!("cancel job {id}"))?;
    println!(
        "{}: cancelled; {} never runs it (an agent that already took it is refused before it writes)",
        job.id,
        who(&job.for_)
    );
    Ok(())
}

pub fn jobs_list(a: &dyn Admin, json: bool) -> Result<()> {
    let list = a.jobs().context("list jobs")?;
    if json {
        return print_json(&list);
    }
    println!(
        "{:<13}  {:<9}  {:<20}  {:<22}  {:<6}  SNAPSHOT",
        "JOB", "STATE", "CREATED", "AGENT", "DONE"
    );
    for j in &list {
        println!(
            "{:<13}  {:<9}  {:<20}  {:<22}  {:<6}  {}",
            j.id,
            j.state.name(),
            j.created,
            j.agent.as_deref().unwrap_or("-"),
            percent(j),
            j.snapshot
        );
    }
    Ok(())
}

/// A job with its beacon and events (`jobs show --json`, `GET /jobs/{id}`).
pub fn job_view(store: &Store, id: &str) -> Result<JobView, ferry_store::StoreError> {
    let job = store.job(id)?;
    let events = store.job_events(id)?;
    let beacon = store.beacon(id)?.map(|b| BeaconView::of(&job, b));
    Ok(JobView {
        job,
        beacon,
        events,
    })
}

pub fn jobs_show(a: &dyn Admin, id: &str, json: bool) -> Result<()> {
    let view = a.job(id)?;
    if json {
        return print_json(&view);
    }
    let JobView {
        job,
        beacon,
        events,
    } = view;
    println!("job       {}", job.id);
    println!("state     {}", job.state.name());
    if let JobState::Failed { reason } = &job.state {
        println!("reason    {reason}");
    }
    if let Some(b) = &job.backup {
        println!(
            "kind      backup of machine {} (offline, from the rescue image)",
            b.machine
        );
        println!("disks     {}", b.disks.join(", "));
        if let Some(r) = &job.backup_resolved {
            println!("resolved  {}", r.join(", "));
        }
        println!(
            "snapshot  {}",
            b.snapshot.as_deref().unwrap_or("- (not committed yet)")
        );
    } else {
        println!("snapshot  {}", job.snapshot);
        println!("mappings  {}", mappings_text(&job.mappings));
        if let Some(r) = &job.resolved {
            println!("resolved  {}", mappings_text(r));
        }
    }
    println!(
        "agent     {}",
        job.agent.as_deref().unwrap_or("- (not picked up yet)")
    );
    println!(
        "then      {:?}{}",
        job.then,
        if job.overwrite { ", overwrite" } else { "" }
    );
    println!("options   {}", options_text(&job.options));
    println!("created   {}", job.created);
    let p = &job.progress;
    if p.bytes_total > 0 {
        println!(
            "progress  {} of {} ({}), {}/s, ETA {}s",
            human_bytes(p.bytes_done),
            human_bytes(p.bytes_total),
            percent(&job),
            human_bytes(p.rate),
            p.eta
        );
    }
    if let Some(b) = &beacon {
        println!("{}", b.line());
    }
    println!("events:");
    for e in &events {
        println!("  {} {:?} {:?}: {}", e.time, e.level, e.phase, e.message);
    }
    Ok(())
}

fn percent(j: &JobRecord) -> String {
    match j.progress.bytes_total {
        0 => "-".into(),
        t => format!("{:.0}%", j.progress.bytes_done as f64 * 100.0 / t as f64),
    }
}

fn mappings_text(maps: &[Mapping]) -> String {
    maps.iter()
        .map(|m| format!("{} -> {}", m.disk, m.target))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `grow (LV vg/root), fix-up` — what the job will do besides writing the data.
fn options_text(o: &JobOptions) -> String {
    let mut parts = Vec::new();
    if o.grow {
        parts.push(match &o.grow_lv {
            Some(lv) => format!("grow (LV {lv})"),
            None => "grow (LV mounted at /)".to_string(),
        });
    }
    parts.push(if o.fixup { "fix-up" } else { "no fix-up" }.to_string());
    let n = &o.network;
    for (flag, rules) in [("--nic", &n.nic), ("--reip", &n.reip), ("--ip", &n.ip)] {
        parts.extend(rules.iter().map(|r| format!("{flag} {r}")));
    }
    parts.join(", ")
}
