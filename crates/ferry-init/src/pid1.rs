//! PID 1: the init steps, then the agent in a child process under a minimal supervisor, then the
//! outcome (reboot, power off, or an emergency shell). Never panics, never returns.
//!
//! Process design. After the init steps, PID 1 forks once: the child ("worker") runs the caller's
//! `main` and ends with an exit code that encodes its [`Outcome`]; PID 1 stays single-threaded and
//! only supervises. Because the worker is an ordinary process, the agent may spawn and wait for
//! its own children with `std::process` freely: their exit statuses belong to the worker, never
//! to PID 1's reaper. Orphans (whose parent died) are re-parented to PID 1, which reaps every
//! child it does not know with `waitpid(-1)`. A crash of the worker (panic, abort, SIGSEGV, OOM
//! kill) is seen by PID 1 as a failure and handled by policy — it cannot take PID 1 down.
//!
//! Signals are blocked in PID 1 and taken synchronously with `sigtimedwait` (1 s ticks, which also
//! pet the watchdog): SIGCHLD → reap; busybox `reboot` (SIGTERM) → reboot; `poweroff` (SIGUSR2),
//! `halt` (SIGUSR1), SIGPWR → power off. Children get an empty mask before `main` / `exec`.

use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::reboot::RebootMode;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::console;
use crate::kmod::{self, ColdplugOptions, Finit, ModIndex};
use crate::settings::{self, FailurePolicy, Settings};
use crate::steps::{panic_message, Steps};
use crate::sys;

/// How the agent's `main` ended; PID 1 carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sync and reboot (e.g. into the restored system).
    Reboot,
    /// Sync and power off.
    PowerOff,
    /// Report the reason, then follow `ferry.on_failure` (default: a shell on the console).
    Failed(String),
}

/// Exit codes of the worker process (private to this module: PID 1 ↔ its own child).
const EXIT_REBOOT: i32 = 10;
const EXIT_POWEROFF: i32 = 11;
const EXIT_FAILED: i32 = 12;
const EXIT_PANICKED: i32 = 13;
/// The worker's failure reason, for the shell banner and for the operator (`cat`).
const FAILURE_FILE: &str = "/run/ferry/failure";
/// How long the entropy step waits for the kernel's random pool.
const ENTROPY_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the operator shell lives (busybox in the image).
const SHELL: &str = "/bin/sh";

/// Runs PID 1 of the rescue image. Call it first thing in `main` when `std::process::id() == 1`.
///
/// Order: mounts (proc, sys, dev, dev/pts, run, tmp) → console → settings → clock → kernel modules
/// by modalias → efivarfs → entropy; then the filesystem modules in a background process and
/// `main(&settings)` in a worker process (PID 1 supervises both, pets a watchdog if present); then
/// the [`Outcome`]. `main` is not run when the settings cannot be parsed (the error is the
/// failure).
pub fn run_pid1(main: impl FnOnce(&Settings) -> Outcome) -> ! {
    // The kernel starts init without PATH; the agent runs blkid, lvm, mount, chroot from /sbin.
    // Set before any thread exists.
    if std::env::var_os("PATH").is_none() {
        std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    }
    console::install_logger();
    std::panic::set_hook(Box::new(|info| {
        console::say(tracing::Level::ERROR, "", &format!("init: {info}"));
    }));
    tracing::info!(
        "init: ferry-init {} starting as PID 1",
        env!("CARGO_PKG_VERSION")
    );
    let (settings, settings_error) = init_steps();
    let mut sup = Supervisor::new();
    spawn_late_modules();
    let outcome = match settings_error {
        Some(e) => Outcome::Failed(e),
        None => sup.run_worker(main, &settings),
    };
    sup.finish(outcome, settings.on_failure)
}

/// The init steps, in order. Returns the settings (defaults if unreadable) and the settings error.
fn init_steps() -> (Settings, Option<String>) {
    let mut steps = Steps::default();
    for m in sys::MOUNTS {
        steps.run(m.step, || sys::mount(m).map(|r| mount_detail(r, m)));
    }
    steps.run("console", || {
        console::attach(Path::new("/dev/console")).map(|()| "stdio on /dev/console".to_string())
    });
    let mut settings = Settings::default();
    let mut settings_error = None;
    steps.run("read-settings", || match settings::load(Path::new("/")) {
        Ok(s) => {
            settings = s;
            Ok(settings.to_string())
        }
        Err(e) => {
            settings_error = Some(e.to_string());
            Err(e)
        }
    });
    console::set_debug(settings.debug);
    steps.run("clock", step_clock);
    steps.run("load-modules", step_modules);
    steps.run(sys::EFIVARFS.step, || {
        sys::mount(&sys::EFIVARFS).map(|r| mount_detail(r, &sys::EFIVARFS))
    });
    steps.run("entropy", || match sys::wait_for_entropy(ENTROPY_TIMEOUT) {
        Some(t) => Ok(format!("random pool ready after {} ms", t.as_millis())),
        None => Err(format!(
            "the kernel's random pool is still not ready after {} s; TLS may block",
            ENTROPY_TIMEOUT.as_secs()
        )),
    });
    tracing::info!("init: {}", steps.summary());
    (settings, settings_error)
}

fn mount_detail(r: sys::MountResult, m: &sys::Mount) -> String {
    match r {
        sys::MountResult::Mounted => format!("{} on {}", m.fstype, m.target),
        sys::MountResult::AlreadyMounted => format!("{} already on {}", m.fstype, m.target),
        sys::MountResult::Skipped => {
            format!("skipped ({} does not exist)", m.only_if.unwrap_or("?"))
        }
    }
}

fn step_clock() -> Result<String, String> {
    let (now, floor) = (sys::now(), sys::clock_floor());
    match sys::clock_decision(now, floor) {
        None => Ok(format!("{} (not before this build)", sys::format_utc(now))),
        Some(to) => {
            sys::set_clock(to)
                .map_err(|e| format!("set the clock to {}: {e}", sys::format_utc(to)))?;
            tracing::warn!(
                "init: the system time {} is before this build; set it to {} so certificate checks can pass",
                sys::format_utc(now),
                sys::format_utc(to)
            );
            Ok(format!(
                "moved forward from {} to {}",
                sys::format_utc(now),
                sys::format_utc(to)
            ))
        }
    }
}

fn module_dir() -> Result<PathBuf, String> {
    let release = sys::kernel_release().map_err(|e| format!("uname: {e}"))?;
    Ok(PathBuf::from("/lib/modules").join(release))
}

/// Loads [`kmod::LATE_LOAD`] in a child process while the agent starts; PID 1 reaps it.
fn spawn_late_modules() {
    // SAFETY: PID 1 is single-threaded here; the child only loads modules and exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {}
        Ok(ForkResult::Parent { .. }) => return,
        Err(e) => {
            let e = std::io::Error::from(e);
            tracing::warn!("modules: fork the background loader: {e}");
            return;
        }
    }
    let start = Instant::now();
    let result = module_dir().and_then(|d| {
        ModIndex::read(&d)
            .map(|i| (d, i))
            .map_err(|e| e.to_string())
    });
    match result {
        Ok((dir, index)) => {
            let r = kmod::load_list(&index, &dir, &mut Finit, kmod::LATE_LOAD);
            let names: Vec<&str> = r.loaded.iter().map(|(m, _)| m.as_str()).collect();
            tracing::info!(
                "modules: background: {} loaded in {} ms: {}",
                names.len(),
                start.elapsed().as_millis(),
                names.join(" ")
            );
            for (m, e) in &r.failed {
                tracing::warn!("modules: background: {m} failed: {e}");
            }
        }
        Err(e) => tracing::warn!("modules: background: {e}"),
    }
    // SAFETY: ends this child without running PID 1's state teardown.
    unsafe { libc::_exit(0) }
}

fn step_modules() -> Result<String, String> {
    let moddir = module_dir()?;
    let release = moddir
        .file_name()
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !moddir.is_dir() {
        return Err(format!(
            "{} does not exist: this image has no modules for kernel {release}",
            moddir.display()
        ));
    }
    let index = ModIndex::read(&moddir).map_err(|e| e.to_string())?;
    let report = kmod::coldplug(
        &index,
        &moddir,
        Path::new("/sys/bus"),
        &mut Finit,
        kmod::ALWAYS_LOAD,
        ColdplugOptions::default(),
    );
    if report.failed.is_empty() {
        Ok(report.to_string())
    } else {
        Err(report.to_string())
    }
}

/// Why PID 1 should stop waiting: a signal asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Reboot,
    PowerOff,
}

struct Supervisor {
    signals: SigSet,
    watchdog: Option<Watchdog>,
}

impl Supervisor {
    fn new() -> Self {
        let mut signals = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGPWR,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            signals.add(s);
        }
        // Blocked in PID 1: they are taken one at a time by sigtimedwait in next_signal.
        let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None);
        Supervisor {
            signals,
            watchdog: None,
        }
    }

    /// Forks the worker, runs `main` there, and waits for it (reaping orphans meanwhile).
    fn run_worker(
        &mut self,
        main: impl FnOnce(&Settings) -> Outcome,
        settings: &Settings,
    ) -> Outcome {
        let _ = std::fs::create_dir_all("/run/ferry");
        let _ = std::fs::remove_file(FAILURE_FILE);
        // SAFETY: PID 1 is single-threaded here, so the child starts in a consistent state.
        let pid = match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => child.as_raw(),
            Ok(ForkResult::Child) => worker(main, settings),
            Err(e) => {
                let e = std::io::Error::from(e);
                return Outcome::Failed(format!("fork the agent process: {e}"));
            }
        };
        tracing::info!("init: agent running as pid {pid}");
        self.watchdog = Watchdog::open(); // after the fork: the worker must not hold it
        let status = match self.wait_for(pid) {
            Ok(status) => status,
            Err(req) => {
                tracing::warn!("init: {req:?} requested while the agent runs; stopping it");
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                return match req {
                    Request::Reboot => Outcome::Reboot,
                    Request::PowerOff => Outcome::PowerOff,
                };
            }
        };
        let reason = || {
            std::fs::read_to_string(FAILURE_FILE)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        match status {
            WaitStatus::Exited(_, code) => match code {
                EXIT_REBOOT => Outcome::Reboot,
                EXIT_POWEROFF => Outcome::PowerOff,
                EXIT_FAILED => Outcome::Failed(reason()),
                EXIT_PANICKED => Outcome::Failed(format!("the agent panicked: {}", reason())),
                code => Outcome::Failed(format!(
                    "the agent exited with status {code} without an outcome"
                )),
            },
            WaitStatus::Signaled(_, sig, _) => {
                Outcome::Failed(format!("the agent was killed by signal {}", sig as i32))
            }
            other => Outcome::Failed(format!("the agent ended with wait status {other:?}")),
        }
    }

    /// Waits until `pid` ends (its wait status), reaping every other child; a reboot/poweroff
    /// signal ends the wait early.
    fn wait_for(&mut self, pid: libc::pid_t) -> Result<WaitStatus, Request> {
        loop {
            if let Some(status) = self.reap(pid) {
                return Ok(status);
            }
            if let Some(req) = self.next_signal() {
                return Err(req);
            }
        }
    }

    /// Reaps all exited children; the status of `pid` if it was among them.
    fn reap(&self, pid: libc::pid_t) -> Option<WaitStatus> {
        let mut found = None;
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return found,
                Ok(s) => s,
            };
            match status.pid() {
                Some(got) if got.as_raw() == pid => found = Some(status),
                got => tracing::debug!("init: reaped orphan {got:?}"),
            }
        }
    }

    /// Waits up to a second for a blocked signal; pets the watchdog.
    fn next_signal(&mut self) -> Option<Request> {
        if let Some(w) = &mut self.watchdog {
            w.pet();
        }
        let ts = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // nix has no sigtimedwait (SigSet::wait is sigwait, without a timeout).
        // SAFETY: a valid set and timeout; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(self.signals.as_ref(), std::ptr::null_mut(), &ts) };
        match sig {
            libc::SIGTERM => Some(Request::Reboot),
            libc::SIGUSR1 | libc::SIGUSR2 | libc::SIGPWR => Some(Request::PowerOff),
            _ => None, // SIGCHLD, timeout, EINTR: the caller reaps and loops
        }
    }

    /// Carries out the outcome. Never returns.
    fn finish(mut self, outcome: Outcome, policy: FailurePolicy) -> ! {
        match outcome {
            Outcome::Reboot => self.shutdown(RebootMode::RB_AUTOBOOT, "rebooting"),
            Outcome::PowerOff => self.shutdown(RebootMode::RB_POWER_OFF, "powering off"),
            Outcome::Failed(reason) => {
                tracing::error!("init: the agent failed: {reason}");
                match policy {
                    FailurePolicy::Shell => self.emergency_shell(&reason),
                    FailurePolicy::Reboot => {
                        tracing::error!("init: ferry.on_failure=reboot: rebooting in 10 s");
                        std::thread::sleep(Duration::from_secs(10));
                        self.shutdown(RebootMode::RB_AUTOBOOT, "rebooting")
                    }
                    FailurePolicy::PowerOff => {
                        tracing::error!("init: ferry.on_failure=poweroff: powering off in 10 s");
                        std::thread::sleep(Duration::from_secs(10));
                        self.shutdown(RebootMode::RB_POWER_OFF, "powering off")
                    }
                }
            }
        }
    }

    /// Stops every process, syncs, and reboots or powers off. Falls back to the shell if the
    /// kernel refuses.
    fn shutdown(mut self, cmd: RebootMode, what: &str) -> ! {
        tracing::info!("init: {what}: stopping processes and syncing disks");
        // Every process but ourselves (PID 1 is exempt from kill(-1)). SIGHUP too: an
        // interactive shell ignores SIGTERM.
        let everyone = Pid::from_raw(-1);
        let _ = kill(everyone, Signal::SIGTERM);
        let _ = kill(everyone, Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            self.reap(0);
            // Probing whether any child remains.
            if waitpid(None, Some(WaitPidFlag::WNOHANG)).is_err() {
                break; // ECHILD: none left
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(everyone, Signal::SIGKILL);
        self.reap(0);
        sys::sync();
        tracing::info!("init: {what} now");
        let e = sys::reboot(cmd);
        self.emergency_shell(&format!("{what} failed: {e}"))
    }

    /// A shell on the console, respawned whenever it exits; `reboot` / `poweroff` in it end this.
    fn emergency_shell(&mut self, reason: &str) -> ! {
        if let Some(w) = self.watchdog.take() {
            w.disarm(); // an operator is looking; do not reset the machine under them
        }
        let mut last_start: Option<Instant> = None;
        loop {
            if last_start.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
                std::thread::sleep(Duration::from_secs(2)); // /bin/sh exiting at once: do not spin
            }
            last_start = Some(Instant::now());
            banner(reason);
            let pid = match spawn_shell() {
                Ok(pid) => pid,
                Err(e) => {
                    tracing::error!("init: start {SHELL}: {e}; retrying in 10 s");
                    self.sleep_reaping(Duration::from_secs(10));
                    continue;
                }
            };
            match self.wait_for(pid) {
                Ok(_) => tracing::info!(
                    "init: the shell exited; starting a new one (`reboot` or `poweroff` to leave)"
                ),
                Err(Request::Reboot) => {
                    self.shutdown_from_shell(RebootMode::RB_AUTOBOOT, "rebooting")
                }
                Err(Request::PowerOff) => {
                    self.shutdown_from_shell(RebootMode::RB_POWER_OFF, "powering off")
                }
            }
        }
    }

    fn shutdown_from_shell(&mut self, cmd: RebootMode, what: &str) -> ! {
        let me = Supervisor {
            signals: self.signals,
            watchdog: None,
        };
        me.shutdown(cmd, what)
    }

    fn sleep_reaping(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.reap(0);
            if self.next_signal().is_some() {
                return;
            }
        }
    }
}

fn banner(reason: &str) {
    let text = format!(
        "\n==== Ferry rescue: the restore agent stopped ====\n{reason}\n\
         A shell follows. Look around (dmesg, ip addr, cat /run/ferry/failure); type `reboot` or `poweroff` to leave.\n\
         Kernel options: ferry.debug=1 for details, ferry.on_failure=reboot|poweroff for unattended machines.\n\n"
    );
    let _ = std::io::stderr().write_all(text.as_bytes());
}

fn spawn_shell() -> std::io::Result<libc::pid_t> {
    let mut cmd = Command::new(SHELL);
    cmd.env_clear()
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .env("HOME", "/root")
        .env("TERM", "linux")
        .env("PS1", "ferry-rescue# ")
        .current_dir("/");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY as _, 1);
            Ok(())
        });
    }
    // Not waited on with Child::wait: the supervisor's waitpid(-1) loop collects it.
    Ok(cmd.spawn()?.id() as libc::pid_t)
}

/// The worker process: runs `main`, turns its outcome (or panic) into an exit code.
fn worker(main: impl FnOnce(&Settings) -> Outcome, settings: &Settings) -> ! {
    // Reset the signal mask inherited from PID 1.
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let code = match catch_unwind(AssertUnwindSafe(|| main(settings))) {
        Ok(Outcome::Reboot) => EXIT_REBOOT,
        Ok(Outcome::PowerOff) => EXIT_POWEROFF,
        Ok(Outcome::Failed(reason)) => {
            let _ = std::fs::write(FAILURE_FILE, &reason);
            EXIT_FAILED
        }
        Err(panic) => {
            let _ = std::fs::write(FAILURE_FILE, panic_message(&*panic));
            EXIT_PANICKED
        }
    };
    std::process::exit(code)
}

/// `/dev/watchdog`, if the kernel has a watchdog driver: petted every supervisor tick, disarmed
/// (magic close) before the emergency shell.
struct Watchdog(std::fs::File);

impl Watchdog {
    fn open() -> Option<Watchdog> {
        if !Path::new("/dev/watchdog").exists() {
            tracing::debug!("init: no /dev/watchdog");
            return None;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/watchdog")
        {
            Ok(f) => {
                tracing::info!("init: /dev/watchdog armed; PID 1 pets it every second");
                Some(Watchdog(f))
            }
            Err(e) => {
                tracing::warn!("init: open /dev/watchdog: {e}");
                None
            }
        }
    }

    fn pet(&mut self) {
        let _ = self.0.write_all(b"\0");
    }

    fn disarm(mut self) {
        let _ = self.0.write_all(b"V");
        tracing::info!("init: watchdog disarmed for the shell");
    }
}
