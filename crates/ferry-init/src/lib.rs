//! ferry-init: PID 1 of Ferry's rescue image, a library the static `restore-agent` calls first
//! thing when it runs as PID 1.
//!
//! [`run_pid1`] performs named init steps — mounts, console, settings, clock floor, kernel modules
//! by modalias, efivarfs, entropy — each reported on the console by name, a failure not stopping
//! the rest; then runs the agent's `main` in a supervised worker process and carries out its
//! [`Outcome`]: reboot, power off, or (on failure or panic) an emergency shell on the console.
//! See [`pid1`] for the process and signal design (why the agent's own `std::process` children
//! are never reaped by PID 1).
//!
//! The agent brings the network up itself with [`net::up`] (so it can retry and report), using
//! [`Settings::net`].
//!
//! Invariants:
//! - PID 1 never panics and never returns; the agent's panics and crashes are outcomes.
//! - Everything touching /sys, /proc, /dev or the network is a thin wrapper; the decisions are pure
//!   and table-tested: [`settings`] (kernel command line + site.conf, dracut `ip=`), [`kmod`]
//!   (alias globs, load order), [`net::plan`], [`net::dhcp`] (fuzzed), [`sys`] (clock floor).
//! - Console lines carry the uptime like the kernel's, never colour.
//!
//! No async runtime: a few blocking syscalls and, for DHCP on several NICs, scoped threads.

pub mod console;
pub mod kmod;
pub mod net;
pub mod pid1;
pub mod settings;
pub mod steps;
pub mod sys;

pub use pid1::{run_pid1, Outcome};
pub use settings::{NetConfig, Settings};
