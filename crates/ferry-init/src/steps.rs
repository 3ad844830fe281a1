//! Named init steps: each runs once, is timed, and its result is one console line. A failed (or
//! panicking) step is reported by name and the next step still runs; the summary lists failures.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    pub millis: u128,
}

/// The steps run so far.
#[derive(Debug, Default)]
pub struct Steps {
    pub results: Vec<StepResult>,
}

impl Steps {
    /// Runs `f` as step `name`. `Ok(detail)` and `Err(error)` are both printed; a panic is a failure.
    /// Returns whether the step succeeded.
    pub fn run<E: std::fmt::Display>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<String, E>,
    ) -> bool {
        let start = Instant::now();
        let result = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(detail)) => Ok(detail),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(format!("panicked: {}", panic_message(&*panic))),
        };
        let millis = start.elapsed().as_millis();
        let (ok, detail) = match result {
            Ok(d) => {
                if d.is_empty() {
                    tracing::info!("step {name}: ok ({millis} ms)");
                } else {
                    tracing::info!("step {name}: ok: {d} ({millis} ms)");
                }
                (true, d)
            }
            Err(e) => {
                tracing::error!("step {name}: FAILED: {e} ({millis} ms)");
                (false, e)
            }
        };
        self.results.push(StepResult {
            name,
            ok,
            detail,
            millis,
        });
        ok
    }

    /// Names of the failed steps.
    pub fn failed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.name)
            .collect()
    }

    /// `init: 12 steps in 840 ms, all ok` or `… 1 failed: mount-efivarfs`.
    pub fn summary(&self) -> String {
        let total: u128 = self.results.iter().map(|r| r.millis).sum();
        let failed = self.failed();
        let n = self.results.len();
        if failed.is_empty() {
            format!("{n} steps in {total} ms, all ok")
        } else {
            format!(
                "{n} steps in {total} ms, {} failed: {}",
                failed.len(),
                failed.join(", ")
            )
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic payload)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_panics_are_reported_and_do_not_stop_later_steps() {
        let mut s = Steps::default();
        assert!(s.run("one", || Ok::<_, String>("fine".into())));
        assert!(!s.run("two", || Err::<String, _>("mount x: ENODEV")));
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        assert!(!s.run("three", || -> Result<String, String> { panic!("boom") }));
        std::panic::set_hook(prev);
        assert!(s.run("four", || Ok::<_, String>(String::new())));
        assert_eq!(s.failed(), ["two", "three"]);
        assert_eq!(s.results[2].detail, "panicked: boom");
        assert!(s.summary().starts_with("4 steps in "), "{}", s.summary());
        assert!(
            s.summary().ends_with("2 failed: two, three"),
            "{}",
            s.summary()
        );
    }
}
