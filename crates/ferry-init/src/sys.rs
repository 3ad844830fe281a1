//! Thin system-call wrappers PID 1 needs, with the decisions pulled out as pure functions:
//! mounts ([`MOUNTS`] is data), the clock floor ([`clock_decision`]), entropy readiness, hostname,
//! sync and reboot.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use nix::sys::reboot::RebootMode;
use nix::sys::signal::{kill, Signal};
use nix::sys::time::TimeSpec;
use nix::sys::wait::waitpid;
use nix::time::{clock_settime, ClockId};
use nix::unistd::{fork, ForkResult};

/// One filesystem PID 1 mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount {
    /// The step name.
    pub step: &'static str,
    pub fstype: &'static str,
    pub target: &'static str,
    pub flags: libc::c_ulong,
    pub data: &'static str,
    /// Mount only if this path exists (e.g. efivarfs needs /sys/firmware/efi).
    pub only_if: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// The early mounts, in order. efivarfs comes later (its module may need loading first).
pub const MOUNTS: &[Mount] = &[
    Mount {
        step: "mount-proc",
        fstype: "proc",
        target: "/proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        only_if: None,
    },
    Mount {
        step: "mount-sys",
        fstype: "sysfs",
        target: "/sys",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        only_if: None,
    },
    Mount {
        step: "mount-dev",
        fstype: "devtmpfs",
        target: "/dev",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
        only_if: None,
    },
    Mount {
        step: "mount-devpts",
        fstype: "devpts",
        target: "/dev/pts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "gid=5,mode=0620,ptmxmode=0666",
        only_if: None,
    },
    Mount {
        step: "mount-run",
        fstype: "tmpfs",
        target: "/run",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=0755",
        only_if: None,
    },
    Mount {
        step: "mount-tmp",
        fstype: "tmpfs",
        target: "/tmp",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
        only_if: None,
    },
];

/// Mounted only on UEFI machines, after modules are loaded.
pub const EFIVARFS: Mount = Mount {
    step: "mount-efivarfs",
    fstype: "efivarfs",
    target: "/sys/firmware/efi/efivars",
    flags: NOSUID_NODEV_NOEXEC,
    data: "",
    only_if: Some("/sys/firmware/efi"),
};

/// What a mount step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountResult {
    Mounted,
    AlreadyMounted,
    Skipped,
}

/// Is `target` a mount point of `fstype` according to `/proc/mounts` text?
pub fn is_mounted(proc_mounts: &str, target: &str, fstype: &str) -> bool {
    proc_mounts.lines().any(|l| {
        let mut w = l.split_whitespace();
        let (_, t, f) = (w.next(), w.next(), w.next());
        t == Some(target) && f == Some(fstype)
    })
}

/// Performs `m` (creating the mount point), unless it is already mounted or not applicable.
pub fn mount(m: &Mount) -> io::Result<MountResult> {
    if m.only_if.is_some_and(|p| !Path::new(p).exists()) {
        return Ok(MountResult::Skipped);
    }
    if std::fs::read_to_string("/proc/mounts").is_ok_and(|s| is_mounted(&s, m.target, m.fstype)) {
        return Ok(MountResult::AlreadyMounted);
    }
    std::fs::create_dir_all(m.target)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", m.target)))?;
    let flags = MsFlags::from_bits_retain(m.flags);
    nix::mount::mount(
        Some(m.fstype),
        m.target,
        Some(m.fstype),
        flags,
        Some(m.data),
    )
    .map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("mount {} on {}: {e}", m.fstype, m.target))
    })?;
    Ok(MountResult::Mounted)
}

/// The release of the running kernel (`uname -r`).
pub fn kernel_release() -> io::Result<String> {
    let u = nix::sys::utsname::uname()?;
    Ok(u.release().to_string_lossy().into_owned())
}

/// The floor for the wall clock: certificates are checked against it, so a machine whose RTC says
/// 1970 (dead battery, blank VM) must not be earlier than the software it runs.
/// `SOURCE_DATE_EPOCH` at build time, else [`CLOCK_FLOOR_FALLBACK`].
pub fn clock_floor() -> i64 {
    option_env!("SOURCE_DATE_EPOCH")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CLOCK_FLOOR_FALLBACK)
}

/// 2026-11-01T00:00:00Z. Raise it now and then; it only needs to be before any real "now".
pub const CLOCK_FLOOR_FALLBACK: i64 = 1_793_491_200;

/// `Some(floor)` if the clock at `now` must be moved forward to `floor`.
pub fn clock_decision(now: i64, floor: i64) -> Option<i64> {
    (now < floor).then_some(floor)
}

/// The wall clock, seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Sets the system clock (not the RTC: its timezone convention is the installed OS's business).
pub fn set_clock(secs: i64) -> io::Result<()> {
    clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::new(secs as _, 0))?;
    Ok(())
}

/// `2026-11-22T01:02:03Z` (proleptic Gregorian, UTC).
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Is the kernel's random pool initialised (getrandom would not block)?
pub fn entropy_ready() -> bool {
    let mut b = [0u8; 1];
    // nix has no getrandom.
    // SAFETY: writes at most 1 byte into b.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) == 1 }
}

/// Waits up to `timeout` for the random pool. A blocking getrandom is what makes recent kernels
/// generate jitter entropy, so a short-lived child process does one while we poll; PID 1 stays
/// single-threaded and never blocks unboundedly. Returns how long it took, or `None` on timeout.
pub fn wait_for_entropy(timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    if entropy_ready() {
        return Some(start.elapsed());
    }
    // SAFETY: the child only calls async-signal-safe functions (getrandom, _exit).
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let mut b = [0u8; 1];
            // SAFETY: getrandom writes at most 1 byte into b; _exit ends the child at once
            // (nix has neither getrandom nor _exit).
            unsafe {
                libc::getrandom(b.as_mut_ptr().cast(), 1, 0);
                libc::_exit(0)
            }
        }
        Ok(ForkResult::Parent { child }) => Some(child),
        Err(_) => None,
    };
    let result = loop {
        if entropy_ready() {
            break Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(child) = child {
        // Our own child; reap it so it does not linger as a zombie.
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
    }
    result
}

pub fn set_hostname(name: &str) -> io::Result<()> {
    nix::unistd::sethostname(name)?;
    Ok(())
}

pub fn sync() {
    nix::unistd::sync();
}

/// `reboot(2)` with `cmd` (RB_AUTOBOOT, RB_POWER_OFF). Returns only on failure.
pub fn reboot(cmd: RebootMode) -> io::Error {
    match nix::sys::reboot::reboot(cmd) {
        Err(e) => e.into(),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_detected_from_proc_mounts() {
        let pm = "rootfs / rootfs rw 0 0\nproc /proc proc rw,nosuid 0 0\nnone /sys sysfs rw 0 0\n";
        assert!(is_mounted(pm, "/proc", "proc"));
        assert!(!is_mounted(pm, "/proc", "sysfs"));
        assert!(!is_mounted(pm, "/dev", "devtmpfs"));
        let steps: Vec<&str> = MOUNTS.iter().map(|m| m.step).collect();
        assert_eq!(steps[..3], ["mount-proc", "mount-sys", "mount-dev"]);
    }

    #[test]
    fn clock_floor_and_formatting() {
        assert_eq!(clock_decision(5, 1_000), Some(1_000));
        assert_eq!(clock_decision(1_000, 1_000), None);
        assert_eq!(clock_decision(2_000, 1_000), None);
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(CLOCK_FLOOR_FALLBACK), "2026-11-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert!(clock_floor() >= 1_700_000_000);
        assert!(entropy_ready(), "the test host's pool is initialised");
        assert!(kernel_release()
            .unwrap()
            .chars()
            .next()
            .unwrap()
            .is_ascii_digit());
    }
}
