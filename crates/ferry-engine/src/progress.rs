//! Progress for people: one line that redraws on a terminal, a plain line every few seconds
//! otherwise (serial consoles, logs). Counters are atomics the pipeline bumps.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_format::units::human_bytes;

#[derive(Default)]
pub struct Progress {
    pub total: AtomicU64,
    pub done: AtomicU64,
    stop: AtomicBool,
    /// Every byte added here is also added there (a whole restore's progress, for observers).
    parent: Option<Arc<Progress>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("total", &self.total.load(Ordering::Relaxed))
            .field("done", &self.done.load(Ordering::Relaxed))
            .finish()
    }
}

impl Progress {
    pub fn new() -> Arc<Self> {
        Arc::new(Progress::default())
    }

    /// A progress whose bytes also count into `parent`.
    pub fn with_parent(parent: &Arc<Progress>) -> Arc<Self> {
        Arc::new(Progress {
            parent: Some(Arc::clone(parent)),
            ..Progress::default()
        })
    }

    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.add(bytes);
        }
    }

    /// Print progress on stderr until [`Progress::finish`]; `quiet` prints nothing.
    pub fn report(
        self: &Arc<Self>,
        label: String,
        quiet: bool,
    ) -> Option<std::thread::JoinHandle<()>> {
        if quiet {
            return None;
        }
        let me = Arc::clone(self);
        let tty = std::io::stderr().is_terminal();
        let every = if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        Some(std::thread::spawn(move || {
            let start = Instant::now();
            let mut last_print = Instant::now();
            while !me.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last_print.elapsed() < every {
                    continue;
                }
                last_print = Instant::now();
                let line = me.line(&label, start.elapsed());
                let mut err = std::io::stderr().lock();
                let _ = if tty {
                    write!(err, "\r{line}\x1b[K")
                } else {
                    writeln!(err, "{line}")
                };
            }
            if tty {
                let _ = writeln!(
                    std::io::stderr(),
                    "\r{}\x1b[K",
                    me.line(&label, start.elapsed())
                );
            }
        }))
    }

    fn line(&self, label: &str, elapsed: Duration) -> String {
        let total = self.total.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed).min(total);
        let secs = elapsed.as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let pct = if total > 0 {
            done as f64 * 100.0 / total as f64
        } else {
            100.0
        };
        let eta = if rate > 0.0 {
            (total - done) as f64 / rate
        } else {
            0.0
        };
        format!(
            "{label}: {pct:5.1}% {} of {} at {}/s, {:.0}s elapsed, ETA {:.0}s",
            human_bytes(done),
            human_bytes(total),
            human_bytes(rate as u64),
            secs,
            eta
        )
    }

    pub fn finish(&self, handle: Option<std::thread::JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}
