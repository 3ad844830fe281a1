//! A stand-alone /init for the QEMU smoke test (tests/init/run.sh --example): the same main as
//! restore-agent's temporary PID-1 hook, without the agent's dependencies, so ferry-init can be
//! booted while the rest of the workspace is in flux.

use ferry_init::{net, Outcome, Settings};

fn main() {
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
