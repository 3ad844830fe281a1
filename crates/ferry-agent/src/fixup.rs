//! After the data: adapt the restored OS to this machine (ferry-fixup's system step) and
//! report whether it will boot. Each step is an event; a system that will not boot fails the
//! job with the checks that failed, so an unattended run does not reboot into it.

use std::path::Path;
use std::time::Duration;

use ferry_engine::restore::RestorePlan;
use ferry_fixup::system::{self, LogLine, Options, RestoredDisk};
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
