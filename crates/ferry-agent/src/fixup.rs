//! After the data: adapt the restored OS to this machine (ferry-fixup's system step) and
//! report whether it will boot. Each step is an event; a system that will not boot fails the
//! job with the checks that failed, so an unattended run does not reboot into it.

use std::path::Path;
use std::time::Duration;

use ferry_engine::restore::RestorePlan;
use ferry_fixup::system::{self, Options, RestoredDisk};
use ferry_format::agent::{Level, Phase};

use crate::console::Console;
use crate::events::Events;
use crate::AgentConfig;

/// Where the rescue image keeps a virtio-win shaped driver package for Windows guests.
pub const DRIVERS_DIR: &str = "usr/share/ferry/virtio-win";
/// The longest one guest tool (update-initramfs, grub-install) may take under emulation.
const TOOL_TIMEOUT: Duration = Duration::from_secs(600);

pub(crate) fn run(
    plan: &RestorePlan,
    root: &Path,
    _cfg: &AgentConfig,
    events: &mut Events,
    out: &mut Console,
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
    let mut live = |l: &str| {
        let level = if l.contains("FAILED:") {
            Level::Warn
        } else {
            Level::Info
        };
        events.emit(out, level, Phase::Fixup, l.to_owned(), None);
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
