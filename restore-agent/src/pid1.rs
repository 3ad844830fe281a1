//! The rescue image's PID 1 entry, kept apart from the host CLI. ferry-init does everything a
//! PID 1 must (mounts, modules, reaping, shell, reboot); this is the one step it runs: network,
//! then the unattended agent loop (enroll → job → restore → report), mapped to an outcome.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ferry_agent::AgentConfig;
use ferry_format::agent::Then;
use ferry_init::{net, Outcome, Settings};

/// Default chunk fetches in flight in the image: enough to fill a NIC, small enough for 512 MB.
const PARALLEL: usize = 4;
/// How long an unreachable appliance is retried before the job pauses (ARCHITECTURE §4).
const RETRY_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Never returns: ferry-init reboots, powers off or keeps a shell on the console.
pub fn run() -> ! {
    ferry_init::run_pid1(agent_main)
}

fn agent_main(settings: &Settings) -> Outcome {
    match agent(settings) {
        Ok(o) => o,
        Err(why) => Outcome::Failed(why),
    }
}

fn agent(settings: &Settings) -> Result<Outcome, String> {
    let report = net::up(&settings.net).map_err(|e| e.to_string())?;
    tracing::info!(target: "agent", "network up: {report}");
    let appliance = settings.appliance.clone().ok_or(
        "no appliance configured: stamp the image (`image-builder customize --appliance URL --ca FILE --token TOKEN`) \
         or add ferry.appliance=https://HOST:PORT to the kernel command line",
    )?;
    let token = settings.token.clone().ok_or(
        "no enrollment token: stamp the image with --token or add ferry.token=TOKEN to the kernel command line \
         (`appliance token create --role enroll`)",
    )?;
    let trust = ferry_client::load_trust(&settings.ca_path).map_err(|e| {
        format!(
            "{e}: stamp the appliance's ca.pem into the image with `image-builder customize --ca`"
        )
    })?;
    if let Some(pin) = settings.ca_sha256 {
        let have = ring_sha256(&trust.ca_certs[0]);
        if have != pin {
            return Err(format!(
                "the CA in {} is not the one ferry.ca_sha256 pins (it is {}): stamp the right ca.pem or fix the pin",
                settings.ca_path.display(),
                trust.ca_fingerprint()
            ));
        }
    }
    let cfg = AgentConfig {
        appliance,
        trust,
        enroll_token: token,
        retry_window: settings.retry_window.unwrap_or(RETRY_WINDOW),
        parallel: PARALLEL,
        once: true,
    };
    let mut console = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let outcome = ferry_agent::run(cfg, Path::new("/"), &mut console).map_err(|e| e.to_string())?;
    Ok(match (outcome.succeeded, outcome.then) {
        (false, _) => Outcome::Failed(format!(
            "job {} failed (see the lines above and `appliance jobs show`); no disk was touched after the failure",
            outcome.job.unwrap_or_default()
        )),
        (true, Then::Reboot) => Outcome::Reboot,
        (true, Then::Poweroff) => Outcome::PowerOff,
        (true, Then::None) => Outcome::Failed("the job succeeded and asked to stay up: the console shell stays".into()),
    })
}

fn ring_sha256(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    out
}
