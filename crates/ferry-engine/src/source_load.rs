//! Keeping a backup light on the production server it reads ("the source").
//!
//! The defaults are what migration tools use in the field, so a backup of a running server
//! can start without tuning:
//!
//! | knob | default | what it does |
//! |---|---|---|
//! | `rate_bytes_per_s` | 37 500 000 (300 Mbit/s) | cap on chunk bytes sent ([`crate::throttle`]); `None` = unlimited |
//! | `reads_in_flight` | 4 | source reads running at once (reader threads) |
//! | `idle_io` | on | I/O class idle: the disk serves the agent only when nothing else wants it |
//! | `nice` | on | CPU nice 19: hashing and compression yield to every other process |
//! | `drop_cache` | on | `POSIX_FADV_DONTNEED` on each range read: the disk's page cache is not filled with backup data |
//!
//! Priorities are per thread on Linux and inherited by the threads a thread starts, so
//! [`lower_priorities`] is called on the backup's thread before it starts its workers. A
//! priority the kernel refuses is a warning, never a failed backup.
//!
//! [`Usage`] is what the backup reports about itself: CPU seconds (user + system) of the whole
//! process over the backup, its peak RSS, from `getrusage(RUSAGE_SELF)`.

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeVal;
use serde::Serialize;

/// 300 Mbit/s in bytes per second (the appliance's default for source machines too).
pub use ferry_format::source::DEFAULT_RATE_BYTES_PER_S;
/// Source reads in flight by default.
pub const DEFAULT_READS_IN_FLIGHT: usize = 4;
/// The nice value of a backup that yields the CPU.
pub const LOW_CPU_NICE: i32 = 19;

/// How hard a backup may press on the source (see the module docs for each knob).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourceLimits {
    /// Cap on bytes sent per second; `None` (or 0) is unlimited.
    pub rate_bytes_per_s: Option<u64>,
    /// Source reads running at once (at least 1).
    pub reads_in_flight: usize,
    /// Run in the idle I/O class.
    pub idle_io: bool,
    /// Run at nice 19.
    pub nice: bool,
    /// Drop what was read from the page cache.
    pub drop_cache: bool,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            rate_bytes_per_s: Some(DEFAULT_RATE_BYTES_PER_S),
            reads_in_flight: DEFAULT_READS_IN_FLIGHT,
            idle_io: true,
            nice: true,
            drop_cache: true,
        }
    }
}

impl SourceLimits {
    /// No limits at all: full speed, normal priorities, the page cache left alone.
    pub fn unlimited() -> Self {
        SourceLimits {
            rate_bytes_per_s: None,
            reads_in_flight: DEFAULT_READS_IN_FLIGHT,
            idle_io: false,
            nice: false,
            drop_cache: false,
        }
    }

    /// The rate cap, with 0 meaning unlimited.
    pub fn rate(&self) -> Option<u64> {
        self.rate_bytes_per_s.filter(|&r| r > 0)
    }
}

/// A rate cap as an operator types it on the command line: what
/// [`ferry_format::source::parse_rate`] accepts (`300Mbit`, `1Gbit`, `50MB`, `64MiB`, `off`),
/// and `0` for no cap. `None` is no cap.
pub fn parse_rate_limit(text: &str) -> Result<Option<u64>, ferry_format::source::SourceError> {
    if text.trim() == "0" {
        return Ok(None);
    }
    ferry_format::source::parse_rate(text)
}

/// The limits as the appliance sets them per source machine (`ferry_format::source`), where one
/// `idle_io` switch stands for both the idle I/O class and the low CPU priority.
impl From<&ferry_format::source::SourceLimits> for SourceLimits {
    fn from(w: &ferry_format::source::SourceLimits) -> Self {
        SourceLimits {
            rate_bytes_per_s: w.rate_bytes_per_s,
            reads_in_flight: usize::try_from(w.reads_in_flight)
                .unwrap_or(DEFAULT_READS_IN_FLIGHT)
                .max(1),
            idle_io: w.idle_io,
            nice: w.idle_io,
            drop_cache: w.drop_cache,
        }
    }
}

/// Lower the calling thread's I/O class and CPU priority as `limits` asks; threads it starts
/// afterwards inherit them. Returns a warning for each the kernel refused (also logged).
pub fn lower_priorities(limits: &SourceLimits) -> Vec<String> {
    let mut warnings = Vec::new();
    if limits.idle_io {
        if let Err(e) = ferry_sys::sched::set_io_priority(ferry_sys::sched::IOPRIO_CLASS_IDLE, 0) {
            warnings.push(format!(
                "could not set the idle I/O class (ioprio_set): {e}; reads compete with the server's"
            ));
        }
    }
    if limits.nice {
        if let Err(e) = ferry_sys::sched::set_nice(LOW_CPU_NICE) {
            warnings.push(format!(
                "could not lower the CPU priority to nice {LOW_CPU_NICE} (setpriority): {e}"
            ));
        }
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    warnings
}

/// The process's resource usage at one instant (`getrusage(RUSAGE_SELF)`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User plus system CPU time of every thread so far.
    pub cpu: Duration,
    /// Peak resident set size of the process's life so far, in bytes.
    pub peak_rss_bytes: u64,
}

impl Usage {
    /// Now; zeros if the call fails (it cannot for `RUSAGE_SELF`).
    pub fn now() -> Usage {
        match getrusage(UsageWho::RUSAGE_SELF) {
            Ok(u) => Usage {
                cpu: timeval(u.user_time()) + timeval(u.system_time()),
                // Linux reports ru_maxrss in KiB.
                peak_rss_bytes: u64::try_from(u.max_rss()).unwrap_or(0).saturating_mul(1024),
            },
            Err(e) => {
                tracing::warn!("getrusage: {e}; CPU and memory figures are not reported");
                Usage::default()
            }
        }
    }

    /// CPU seconds spent since `earlier`.
    pub fn cpu_seconds_since(&self, earlier: &Usage) -> f64 {
        self.cpu.saturating_sub(earlier.cpu).as_secs_f64()
    }
}

fn timeval(t: TimeVal) -> Duration {
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let micros = u64::try_from(t.tv_usec()).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_fields_and_the_appliances() {
        let wire = ferry_format::source::SourceLimits::default();
        assert_eq!(SourceLimits::from(&wire), SourceLimits::default());
        let d = SourceLimits::default();
        assert_eq!(d.rate(), Some(37_500_000));
        assert_eq!(d.reads_in_flight, 4);
        assert!(d.idle_io && d.nice && d.drop_cache);
        let mut zero = d;
        zero.rate_bytes_per_s = Some(0);
        assert_eq!(zero.rate(), None);
    }

    /// This thread's CPU time in clock ticks (usually 10 ms) as /proc tells it: a clock
    /// independent of getrusage, and unaffected by how loaded the machine is.
    fn thread_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let after_comm = &stat[stat.rfind(')').expect("comm") + 1..];
        let f: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime); `f[0]` is field 3.
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    }

    #[test]
    fn rate_limits_parse_with_zero_as_no_cap() {
        let cases: &[(&str, Option<Option<u64>>)] = &[
            ("300Mbit", Some(Some(37_500_000))),
            ("300Mbit/s", Some(Some(37_500_000))),
            ("1Gbit", Some(Some(125_000_000))),
            ("50MB", Some(Some(50_000_000))),
            ("40MiB", Some(Some(40 << 20))),
            ("0", Some(None)),
            (" 0 ", Some(None)),
            ("off", Some(None)),
            ("300", None),
            ("300Mb", None),
            ("fast", None),
            ("", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_rate_limit(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn usage_counts_cpu_burnt_and_memory_touched() {
        let before = Usage::now();
        // Burn 25 ticks (about 250 ms) of CPU and touch 64 MiB.
        let t0 = thread_ticks();
        let mut x = 1u64;
        while thread_ticks() < t0 + 25 {
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        let mem = vec![x as u8 | 1; 64 << 20];
        let after = Usage::now();
        assert!(std::hint::black_box(&mem).iter().all(|&b| b != 0));
        let cpu = after.cpu_seconds_since(&before);
        assert!((0.2..30.0).contains(&cpu), "{cpu} CPU seconds");
        assert!(after.peak_rss_bytes >= 64 << 20, "{}", after.peak_rss_bytes);
    }

    /// On a thread of its own: priorities are per thread.
    #[test]
    fn priorities_are_lowered_as_asked() {
        std::thread::spawn(|| {
            let w = lower_priorities(&SourceLimits::default());
            assert!(w.is_empty(), "{w:?}");
            assert_eq!(ferry_sys::sched::nice().expect("nice"), LOW_CPU_NICE);
            let prio = ferry_sys::sched::io_priority().expect("ioprio");
            assert_eq!(prio >> 13, ferry_sys::sched::IOPRIO_CLASS_IDLE);
        })
        .join()
        .expect("thread");
    }
}
