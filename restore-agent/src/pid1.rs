//! The rescue image's PID 1 entry, kept apart from the host CLI. TEMPORARY main closure: it logs
//! the settings and the network result, then powers off; the agent loop (enroll → job → restore)
//! replaces it. Everything PID-1 (mounts, modules, reaping, shell, reboot) is in ferry-init.

use ferry_init::{net, Outcome, Settings};

/// Never returns: ferry-init reboots, powers off or keeps a shell on the console.
pub fn run() -> ! {
    ferry_init::run_pid1(agent_main)
}

fn agent_main(settings: &Settings) -> Outcome {
    tracing::info!(target: "agent", "settings: {settings}");
    match net::up(&settings.net) {
        Ok(report) => {
            tracing::info!(target: "agent", "network up: {report}");
            Outcome::PowerOff
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
