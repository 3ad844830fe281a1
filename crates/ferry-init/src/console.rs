//! The console: stdio on `/dev/console`, and log lines for people on a serial line.
//!
//! Every line is `[ SSSSS.UUUUUU] ferry TARGET: message key=value…` — the uptime in the same
//! format and clock (`CLOCK_BOOTTIME`) as the kernel's own lines, so both interleave readably;
//! `WARN`/`ERROR`/`DEBUG` are spelled out before the target, INFO is not; no colour. Each line is
//! one `write(2)`, so lines from PID 1 and the agent process do not tear.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// `ferry.debug`: DEBUG events are shown too. Process-wide like the console itself.
static DEBUG: AtomicBool = AtomicBool::new(false);

/// Time since boot, the clock of the kernel's log timestamps.
pub fn uptime() -> Duration {
    let Ok(ts) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) else {
        return Duration::ZERO;
    };
    Duration::new(
        ts.tv_sec().max(0) as u64,
        ts.tv_nsec().clamp(0, 999_999_999) as u32,
    )
}

/// Formats one console line (without the trailing newline). ferry-init's own messages start with
/// their area (`net: …`, `step …`); other crates' lines get their target as the area.
pub fn format_line(uptime: Duration, level: Level, target: &str, message: &str) -> String {
    let level = match level {
        Level::INFO => "",
        Level::WARN => "WARN ",
        Level::ERROR => "ERROR ",
        Level::DEBUG => "DEBUG ",
        Level::TRACE => "TRACE ",
    };
    let area = if target.starts_with("ferry_init") || target.is_empty() {
        String::new()
    } else {
        format!("{target}: ")
    };
    format!(
        "[{:5}.{:06}] ferry {level}{area}{message}",
        uptime.as_secs(),
        uptime.subsec_micros()
    )
}

/// Writes a line straight to stderr (the console once [`attach`] ran), bypassing tracing.
pub fn say(level: Level, target: &str, message: &str) {
    let mut line = format_line(uptime(), level, target, message);
    line.push('\n');
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// Points stdin, stdout and stderr at `console` (normally `/dev/console`).
pub fn attach(console: &Path) -> io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(console)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", console.display())))?;
    nix::unistd::dup2_stdin(&f)?;
    nix::unistd::dup2_stdout(&f)?;
    nix::unistd::dup2_stderr(&f)?;
    Ok(())
}

/// Shows DEBUG lines from now on (or stops showing them).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Installs the console logger as the global tracing subscriber (once; later calls do nothing).
pub fn install_logger() {
    let _ = tracing::subscriber::set_global_default(ConsoleLog);
}

/// A minimal tracing subscriber: events become console lines; spans are accepted and ignored.
struct ConsoleLog;

impl Subscriber for ConsoleLog {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes() // `ferry.debug` can change after a callsite was first seen
    }

    fn enabled(&self, m: &Metadata<'_>) -> bool {
        *m.level() <= Level::INFO || (*m.level() == Level::DEBUG && DEBUG.load(Ordering::Relaxed))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut v = Fields::default();
        event.record(&mut v);
        let m = event.metadata();
        say(*m.level(), m.target(), &(v.message + &v.rest));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_the_kernels() {
        let t = Duration::new(3, 141_592_653);
        assert_eq!(
            format_line(t, Level::INFO, "ferry_init::net", "net: eth0: link up"),
            "[    3.141592] ferry net: eth0: link up"
        );
        assert_eq!(
            format_line(t, Level::ERROR, "ferry_agent::enroll", "x"),
            "[    3.141592] ferry ERROR ferry_agent::enroll: x"
        );
        assert_eq!(
            format_line(Duration::from_secs(123_456), Level::WARN, "agent", "y"),
            "[123456.000000] ferry WARN agent: y"
        );
        assert!(uptime() > Duration::ZERO);
    }
}
