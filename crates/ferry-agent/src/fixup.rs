//! After the data: adapt the restored OS to this machine (ferry-fixup's system step) and
//! report whether it will boot. Each step is an event; a system that will not boot fails the
//! job with the checks that failed, so an unattended run does not reboot into it.

use std::path::Path;
use std::time::Duration;

use ferry_engine::restore::RestorePlan;
use ferry_fixup::linux::beacon::{self, BeaconInstall};
use ferry_fixup::linux::NetworkParams;
use ferry_fixup::network::{self, NetworkRules, TargetNic};
use ferry_fixup::system::{self, LogLine, Options, RestoredDisk};
use ferry_format::agent::beacon::{BeaconConfig, BeaconConfigError};
use ferry_format::agent::{Inventory, JobNetwork, Level, Phase};
use ferry_format::manifest::Manifest;
use ferry_format::signing::pem_block;

use crate::console::Console;
use crate::events::Events;
use crate::AgentConfig;

/// Where the rescue image keeps a virtio-win shaped driver package for Windows guests.
pub const DRIVERS_DIR: &str = ferry_fixup::RESCUE_VIRTIO_WIN;
/// The longest one guest tool (update-initramfs, grub-install) may take under emulation.
const TOOL_TIMEOUT: Duration = Duration::from_secs(600);

/// What the restored system is, for the fix-up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restored {
    /// A restore: the machine comes back as itself.
    Restore,
    /// A live migration's cutover: a copy of a source that still exists, whose agent and
    /// credential must not run here.
    MigratedSource,
}

/// A job's network rules and this machine's NICs, parsed and checked when the job starts
/// (before anything is written); [`Network::params`] checks them again against the snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    rules: NetworkRules,
    targets: Vec<TargetNic>,
}

impl Network {
    /// Parses the rules and checks their target sides against this machine's NICs.
    pub(crate) fn new(j: &JobNetwork, fresh: &Inventory) -> Result<Network, String> {
        let rules = NetworkRules::parse(j).map_err(|e| e.to_string())?;
        let targets: Vec<TargetNic> = fresh.nics.iter().map(TargetNic::from).collect();
        rules.check_targets(&targets).map_err(|e| e.to_string())?;
        Ok(Network { rules, targets })
    }

    /// Against what the snapshot recorded of its network (when it did): the mapping and each
    /// interface as it will come up, as plan lines. Refused: a rule that names an interface
    /// the snapshot lacks or gives an unusable address.
    pub(crate) fn params(&self, m: &Manifest) -> Result<(NetworkParams, Vec<String>), String> {
        let mut lines = Vec::new();
        match &m.network {
            Some(cfg) => {
                let plan = self
                    .rules
                    .check(cfg, &self.targets)
                    .map_err(|e| e.to_string())?;
                lines.extend(plan.to_string().lines().map(str::to_owned));
                let shown = network::preview(cfg, &plan, &self.rules).map_err(|e| e.to_string())?;
                lines.push("network as it will come up:".into());
                lines.extend(shown.iter().map(|i| format!("  {i}")));
            }
            None => lines.push(format!(
                "network: snapshot {} records no network configuration; the fix-up maps the \
                 restored files' interfaces onto this machine's NICs ({})",
                m.snapshot,
                self.targets
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        let params = NetworkParams {
            targets: self.targets.clone(),
            rules: self.rules.clone(),
        };
        Ok((params, lines))
    }
}

pub(crate) fn run(
    plan: &RestorePlan,
    root: &Path,
    cfg: &AgentConfig,
    events: &mut Events,
    out: &mut Console,
    restored: Restored,
    network: NetworkParams,
) -> Result<(), String> {
    let disks: Vec<RestoredDisk> = plan
        .disks
        .iter()
        .map(|d| RestoredDisk {
            name: d.disk.clone(),
            source: plan
                .manifest
                .disk(&d.disk)
                .map(|m| m.source.clone())
                .unwrap_or_default(),
            device: d.target.path.clone(),
        })
        .collect();
    let drivers = root.join(DRIVERS_DIR);
    let opts = Options {
        uefi: root.join("sys/firmware/efi").exists(),
        drivers: drivers.is_dir().then_some(drivers),
        work: root.join("run/ferry/fixup"),
        tool_timeout: TOOL_TIMEOUT,
        beacon: beacon(root, cfg, events, out),
        retire_source_agent: restored == Restored::MigratedSource,
        network: Some(network),
    };
    events.emit(
        out,
        Level::Info,
        Phase::Fixup,
        format!(
            "fix-up: adapt the restored system to this machine ({} firmware)",
            if opts.uefi { "UEFI" } else { "BIOS" }
        ),
        None,
    );
    let mut live = |l: &LogLine| {
        events.emit(out, event_level(l.level), Phase::Fixup, l.to_string(), None);
    };
    let outcome = system::run(&disks, &opts, &mut live).map_err(|e| format!("fix-up: {e}"))?;
    for c in &outcome.report.checks {
        let (level, mark) = match (c.ok, c.critical) {
            (true, _) => (Level::Info, "ok"),
            (false, true) => (Level::Error, "FAIL"),
            (false, false) => (Level::Warn, "warn"),
        };
        events.emit(
            out,
            level,
            Phase::Fixup,
            format!("bootability {mark}: {}: {}", c.name, c.detail),
            None,
        );
    }
    let failed: Vec<String> = outcome
        .report
        .checks
        .iter()
        .filter(|c| !c.ok && c.critical)
        .map(|c| format!("{} ({})", c.name, c.detail))
        .collect();
    if outcome.os.is_some() && !failed.is_empty() {
        return Err(format!(
            "the data is restored, but the system will most likely not boot: {}. Fix it from \
             the rescue shell (restore-agent fixup --disk ...) or create the job again",
            failed.join("; ")
        ));
    }
    let summary = match &outcome.os {
        Some(os) => format!(
            "bootability: {os} on {} will boot on this machine ({} checks passed; fix-up took {:.1}s, {} changes)",
            outcome.root.as_deref().unwrap_or("?"),
            outcome.report.checks.iter().filter(|c| c.ok).count(),
            outcome.seconds,
            outcome.changes.len()
        ),
        None => "bootability: no operating system found on the restored disks; not checked".into(),
    };
    let level = if outcome.os.is_some() {
        Level::Info
    } else {
        Level::Warn
    };
    events.emit(out, level, Phase::Fixup, summary, None);
    Ok(())
}

/// The first-boot beacon to install: the rescue image's program and a config holding a
/// one-time credential the appliance issues for this job now. Without either, a warning says the
/// first boot will not be reported, and the fix-up goes on.
fn beacon(
    root: &Path,
    cfg: &AgentConfig,
    events: &mut Events,
    out: &mut Console,
) -> Option<BeaconInstall> {
    let program = root.join(beacon::RESCUE_PROGRAM);
    let made = if program.is_file() {
        events
            .issue_beacon()
            .map_err(|e| format!("the appliance issued no beacon credential: {e}"))
            .and_then(|issued| {
                beacon_install(program, cfg, issued.job, issued.credential)
                    .map_err(|e| e.to_string())
            })
    } else {
        Err(format!(
            "this rescue image has no beacon program (/{})",
            beacon::RESCUE_PROGRAM
        ))
    };
    made.map_err(|why| {
        events.emit(
            out,
            Level::Warn,
            Phase::Fixup,
            format!("fix-up: first-boot beacon: {why}; the migrated system's first boot will not be reported"),
            None,
        )
    })
    .ok()
}

/// The install of a beacon that reports `job` with `credential` to the appliance this agent
/// uses, pinning the CA this agent pins.
fn beacon_install(
    program: std::path::PathBuf,
    cfg: &AgentConfig,
    job: String,
    credential: String,
) -> Result<BeaconInstall, BeaconConfigError> {
    let trust = &cfg.trust;
    let mut ca_pem: String = trust
        .ca_certs
        .iter()
        .map(|der| pem_block("CERTIFICATE", der))
        .collect();
    ca_pem.push_str(&trust.signing_key.to_pem());
    let config = BeaconConfig {
        url: cfg.appliance.clone(),
        job,
        credential,
        ca_pem,
    };
    Ok(BeaconInstall {
        program,
        config_text: config.to_text()?,
        appliance: config.url,
        job: config.job,
    })
}

/// The event level of a fix-up log line: a failed step is a warning, not an error (the fix-up
/// goes on; the bootability report's critical checks decide the job).
fn event_level(l: system::Level) -> Level {
    match l {
        system::Level::Info => Level::Info,
        system::Level::Warn => Level::Warn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: system::Level, detail: &str) -> LogLine {
        LogLine {
            level,
            step: "update-initramfs -u -k all".into(),
            detail: detail.into(),
            seconds: Some(1.0),
        }
    }

    #[test]
    fn event_level_follows_the_log_line_level_not_its_text() {
        // The detail is the guest tool's own output: its words must not pick the level.
        let cases = [
            (line(system::Level::Info, "done"), Level::Info),
            (line(system::Level::Warn, "exit status: 1"), Level::Warn),
            (
                line(system::Level::Info, "grub: FAILED: to probe, retrying"),
                Level::Info,
            ),
            (line(system::Level::Warn, "ok"), Level::Warn),
        ];
        for (l, want) in cases {
            assert_eq!(event_level(l.level), want, "{l}");
        }
    }
}
