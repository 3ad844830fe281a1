//! The beacon's steps: read the config, wait for the network while trying, report once, clean
//! up. Each attempt is one request (no retries inside the client); between attempts the delay
//! doubles from [`FIRST_DELAY`] to [`MAX_DELAY`], never past the bound.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_client::{Client, ClientConfig, ClientError};
use ferry_fixup::linux::beacon::{BINARY, CONFIG, UNIT, WANTS_LINK};
use ferry_format::agent::beacon::{BeaconConfig, BeaconReport};
use ferry_format::signing::TrustBundle;

const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(30);

pub struct Settings {
    pub root: PathBuf,
    pub config: PathBuf,
    pub give_up_after: Duration,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The appliance recorded the boot; the beacon's files are gone.
    Reported,
    /// The appliance says the credential was used or is unknown: nothing will ever succeed, so
    /// the files are gone too.
    Spent,
    /// Not reported (bound reached, a refusal, a broken config): the files stay for the next boot.
    Kept,
}

pub fn run(s: &Settings, log: &mut dyn FnMut(&str)) -> Outcome {
    let config = match load(&s.config) {
        Ok(c) => c,
        Err(e) => {
            log(&format!("{e}; nothing reported"));
            return Outcome::Kept;
        }
    };
    let client = match client(&config) {
        Ok(c) => c,
        Err(e) => {
            log(&format!(
                "use {}: {e}; nothing reported",
                s.config.display()
            ));
            return Outcome::Kept;
        }
    };
    let report = BeaconReport {
        job: config.job.clone(),
        hostname: hostname(&s.root),
    };
    let start = Instant::now();
    let mut delay = FIRST_DELAY;
    let mut said_no_route = false;
    loop {
        if !said_no_route
            && !has_default_route(&read("/proc/net/route"), &read("/proc/net/ipv6_route"))
        {
            log("no default route yet; trying anyway");
            said_no_route = true;
        }
        match client.report_beacon(&report) {
            Ok(reply) => {
                log(&format!(
                    "job {}: the appliance at {} recorded this system's first boot at {}",
                    reply.job, config.url, reply.booted
                ));
                clean_up(s, log);
                return Outcome::Reported;
            }
            Err(e) if matches!(e.status(), Some(401 | 410)) => {
                log(&format!(
                    "{e}; the credential is spent, removing the beacon"
                ));
                clean_up(s, log);
                return Outcome::Spent;
            }
            Err(e @ ClientError::Refused { .. }) => {
                log(&format!("{e}; kept for the next boot"));
                return Outcome::Kept;
            }
            Err(e) => {
                let left = s.give_up_after.saturating_sub(start.elapsed());
                if left.is_zero() {
                    log(&format!(
                        "{e}; gave up after {:.0}s, kept for the next boot",
                        start.elapsed().as_secs_f64()
                    ));
                    return Outcome::Kept;
                }
                let wait = delay.min(left);
                log(&format!("{e}; trying again in {:.0}s", wait.as_secs_f64()));
                std::thread::sleep(wait);
                delay = (delay * 2).min(MAX_DELAY);
            }
        }
    }
}

fn load(path: &Path) -> Result<BeaconConfig, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    BeaconConfig::parse(&text).map_err(|e| format!("check {}: {e}", path.display()))
}

/// One attempt per request: the beacon does its own backoff.
fn client(c: &BeaconConfig) -> Result<Client, String> {
    let trust = TrustBundle::from_pem(&c.ca_pem).map_err(|e| e.to_string())?;
    Client::new(ClientConfig {
        url: c.url.clone(),
        trust,
        token: c.credential.clone(),
        retry_window: Duration::ZERO,
        connections: 1,
    })
    .map_err(|e| e.to_string())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The running kernel's hostname; else the system's configured one; else "unknown".
fn hostname(root: &Path) -> String {
    let from_kernel = if root == Path::new("/") {
        read("/proc/sys/kernel/hostname")
    } else {
        String::new()
    };
    let name = if from_kernel.trim().is_empty() {
        std::fs::read_to_string(root.join("etc/hostname")).unwrap_or_default()
    } else {
        from_kernel
    };
    match name.trim() {
        "" => "unknown".into(),
        n => n.to_string(),
    }
}

/// A default route in `/proc/net/route` (destination 00000000 and mask 00000000, up) or
/// `/proc/net/ipv6_route` (::/0 not on lo).
fn has_default_route(ipv4: &str, ipv6: &str) -> bool {
    let v4 = ipv4.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8
            && f[1] == "00000000"
            && f[7] == "00000000"
            && u16::from_str_radix(f[3], 16).is_ok_and(|flags| flags & 1 == 1)
    });
    let v6 = ipv6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo"
    });
    v4 || v6
}

/// Remove the config (with the credential) first, then the unit's link and unit, then the
/// program. What is already gone is fine; what cannot be removed is said.
fn clean_up(s: &Settings, log: &mut dyn FnMut(&str)) {
    let mut paths = vec![s.config.clone()];
    let default_config = s.root.join(CONFIG);
    if default_config != s.config {
        paths.push(default_config);
    }
    paths.extend([WANTS_LINK, UNIT, BINARY].iter().map(|r| s.root.join(r)));
    for p in paths {
        match std::fs::remove_file(&p) {
            Ok(()) => log(&format!("removed {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log(&format!("remove {}: {e}", p.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_are_found_in_proc() {
        let v4_head =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let default = "eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        let link = "eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let down = "eth0\t00000000\t0202000A\t0002\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert!(has_default_route(&format!("{v4_head}{link}{default}"), ""));
        assert!(!has_default_route(&format!("{v4_head}{link}"), ""));
        assert!(!has_default_route(&format!("{v4_head}{down}"), ""));
        assert!(!has_default_route("", ""));
        let v6_default = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n";
        let v6_lo = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert!(has_default_route("", v6_default));
        assert!(!has_default_route("", v6_lo));
    }

    #[test]
    fn a_missing_or_broken_config_keeps_everything() {
        let w = tempfile_dir();
        let s = Settings {
            root: w.clone(),
            config: w.join(CONFIG),
            give_up_after: Duration::from_secs(1),
        };
        let mut lines = Vec::new();
        assert_eq!(run(&s, &mut |l| lines.push(l.to_string())), Outcome::Kept);
        std::fs::create_dir_all(w.join("etc/ferry")).unwrap();
        std::fs::write(w.join(CONFIG), "{}").unwrap();
        assert_eq!(run(&s, &mut |l| lines.push(l.to_string())), Outcome::Kept);
        assert!(w.join(CONFIG).exists());
        assert!(
            lines.iter().all(|l| l.contains("nothing reported")),
            "{lines:?}"
        );
        let _ = std::fs::remove_dir_all(&w);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("beacon-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
