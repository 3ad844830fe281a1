//! The task loop: long-poll the appliance for a sync task, run it, report its end; back off
//! with jitter while the appliance stays unreachable; stop taking tasks once told to stop.
//!
//! One task, as named steps:
//! 1. report `running` (also for the running task an appliance hands out again after this
//!    agent restarted: it is run again; chunks already stored are not sent again);
//! 2. `cutover` only: `pre_cutover` (stop the services);
//! 3. the backup (`ferry_engine::backup` runs `pre_capture` and `post_capture` around its
//!    capture, the post hook whenever the pre hook ran);
//! 4. report `succeeded` with the snapshot and figures, or `failed` with the reason. A failed
//!    cutover runs `post_cutover_abort` first, so the source serves again.
//!
//! A `cutover-abort` task (the appliance aborted a cutover after this source's final sync
//! succeeded, e.g. the standby could not take it) runs `post_cutover_abort` and reports `done`.
//! A `poweroff` task (a cutover asked with `--poweroff-source` passed its point of no return)
//! reports `done` and then powers the source off, when the agent's own config allows it
//! (`poweroff_after_cutover = true`: the appliance alone cannot switch a server off); else it
//! reports `failed` saying so.
//!
//! An end the appliance could not be told (it stayed unreachable for the retry window) is kept
//! and delivered when the appliance hands out the same task again, instead of syncing again.
//! The appliance and the source are traits ([`Appliance`], [`Source`]) so the state machine is
//! tested with mocks; `super::live` has the real ones.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ferry_client::ClientError;
use ferry_format::source::{SyncFigures, SyncTask, TaskKind, TaskState};
use ferry_format::units::human_bytes;

use super::config::HookMoment;

/// First pause after the appliance stayed unreachable; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A sync that committed its snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Synced {
    pub snapshot: String,
    pub figures: SyncFigures,
    pub seconds: f64,
}

/// How a task that did not fail ended.
enum Ended {
    /// A sync (or the cutover's final sync) committed its snapshot.
    Synced(Synced),
    /// A task that takes no snapshot ran; what it did.
    Done(String),
}

/// A step of a task that failed, and whether the appliance was what failed.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncFailed {
    pub reason: String,
    /// The appliance stayed unreachable (or kept failing) for the retry window.
    pub appliance_gone: bool,
}

impl SyncFailed {
    pub fn new(reason: impl Into<String>) -> SyncFailed {
        SyncFailed {
            reason: reason.into(),
            appliance_gone: false,
        }
    }
}

/// The appliance's source routes for this machine.
pub trait Appliance {
    fn poll(&self, wait: Duration) -> Result<Option<SyncTask>, ClientError>;
    fn report(&self, task: &str, state: &TaskState) -> Result<(), ClientError>;
}

/// What runs on the source.
pub trait Source {
    /// Run the hook of `moment` (the cutover's; the engine runs the capture's); `Ok` when none
    /// is configured.
    fn hook(&self, moment: HookMoment) -> Result<(), SyncFailed>;
    /// Back up the disks with the task's limits and consistency, capture hooks included.
    fn backup(&self, task: &SyncTask) -> Result<Synced, SyncFailed>;
    /// Whether this source may be powered off when the appliance asks (its own config).
    fn may_power_off(&self) -> Result<(), SyncFailed>;
    /// Power the source off (an orderly shutdown); called after the task's end was reported.
    fn power_off(&self);
}

/// The task being run, as the stop path needs to know it.
#[derive(Clone, Debug, Default)]
struct InFlight {
    task: String,
    /// `pre_cutover` was started and `post_cutover_abort` has not been claimed yet.
    services_stopped: bool,
}

/// What the loop and the signal path share: the stop request and the task in flight.
#[derive(Default)]
pub struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    in_flight: Mutex<Option<InFlight>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Take no more tasks; wakes a loop that is backing off.
    pub fn stop(&self) {
        *lock(&self.stop) = true;
        self.wake.notify_all();
    }

    pub fn stopping(&self) -> bool {
        *lock(&self.stop)
    }

    /// Sleep for `d` or until [`Shared::stop`]; true when stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = lock(&self.stop);
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    /// The id of the task in flight, if any.
    pub fn task_in_flight(&self) -> Option<String> {
        lock(&self.in_flight).as_ref().map(|f| f.task.clone())
    }

    /// The duty to run `post_cutover_abort`: true once for a cutover whose `pre_cutover` was
    /// started, whoever asks first (the loop after a failure, or the stop path).
    pub fn claim_abort(&self) -> bool {
        lock(&self.in_flight)
            .as_mut()
            .is_some_and(|f| std::mem::take(&mut f.services_stopped))
    }

    fn set_in_flight(&self, f: Option<InFlight>) {
        *lock(&self.in_flight) = f;
    }

    fn services_stopping(&self) {
        if let Some(f) = lock(&self.in_flight).as_mut() {
            f.services_stopped = true;
        }
    }
}

/// What one turn of the loop did.
#[derive(Debug)]
pub enum Step {
    /// No task came within the wait (or one came while stopping: not started).
    Idle,
    /// A task ran (or its kept end was delivered).
    Ran {
        /// The appliance was unreachable for a whole retry window during it: back off.
        appliance_gone: bool,
    },
    /// The appliance stayed unreachable for the retry window: back off, then poll again.
    Unreachable(ClientError),
    /// Trying again changes nothing (wrong CA, credential refused): the service ends.
    Fatal(ClientError),
}

/// A poll or report error: worth waiting out, or final.
fn classify(e: ClientError) -> Step {
    match e {
        e if e.gave_up_retrying() => Step::Unreachable(e),
        // An answer that did not parse (a proxy's page, a cut-off body): try again later.
        e @ ClientError::BadAnswer { .. } => Step::Unreachable(e),
        e => Step::Fatal(e),
    }
}

/// How long to pause after the `failures`-th failure in a row: doubling from
/// [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], scaled by 0.5 to 1.5 with `jitter` in [0, 1) so many
/// sources that lost the same appliance do not come back at the same instant.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF);
    base.mul_f64(0.5 + jitter.clamp(0.0, 1.0))
}

/// The loop over one appliance and one source.
pub struct TaskLoop<'a, A: Appliance, S: Source> {
    app: &'a A,
    src: &'a S,
    shared: &'a Shared,
    wait: Duration,
    /// A task's end the appliance could not be told yet.
    unreported: Option<(String, TaskState)>,
}

impl<'a, A: Appliance, S: Source> TaskLoop<'a, A, S> {
    pub fn new(app: &'a A, src: &'a S, shared: &'a Shared, wait: Duration) -> Self {
        TaskLoop {
            app,
            src,
            shared,
            wait,
            unreported: None,
        }
    }

    /// Turn until stopped (`Ok`) or a fatal error; `jitter` gives numbers in [0, 1).
    pub fn run(&mut self, mut jitter: impl FnMut() -> f64) -> Result<(), ClientError> {
        let mut failures = 0u32;
        while !self.shared.stopping() {
            let unreachable = match self.step() {
                Step::Fatal(e) => return Err(e),
                Step::Idle => false,
                Step::Ran { appliance_gone } => appliance_gone,
                Step::Unreachable(e) => {
                    tracing::warn!("{e}");
                    true
                }
            };
            if !unreachable {
                failures = 0;
                continue;
            }
            failures = failures.saturating_add(1);
            let pause = backoff(failures, jitter());
            tracing::warn!(
                "the appliance is unreachable: polling again in {:.0}s",
                pause.as_secs_f64()
            );
            if self.shared.sleep(pause) {
                break;
            }
        }
        Ok(())
    }

    /// Poll once and run what came.
    pub fn step(&mut self) -> Step {
        let task = match self.app.poll(self.wait) {
            Ok(Some(t)) => t,
            Ok(None) => return Step::Idle,
            Err(e) => return classify(e),
        };
        if let Some((id, state)) = self.unreported.take() {
            if id == task.id {
                tracing::info!(
                    "task {id}: telling the appliance it {} (it could not be told before)",
                    state.name()
                );
                return self.finish(&id, state, false);
            }
        }
        if self.shared.stopping() {
            // Not started: the appliance hands it out again when the service is back.
            return Step::Idle;
        }
        self.run_task(task)
    }

    fn run_task(&mut self, task: SyncTask) -> Step {
        let id = task.id.clone();
        tracing::info!(
            "task {id}: {} started ({}, rate {}, {} reads in flight, idle I/O {})",
            task.kind.name(),
            task.consistency,
            ferry_format::source::format_rate(task.limits.rate_bytes_per_s),
            task.limits.reads_in_flight,
            if task.limits.idle_io { "on" } else { "off" },
        );
        if let Err(e) = self.app.report(&id, &TaskState::Running) {
            if matches!(e.status(), Some(404 | 409)) {
                tracing::warn!("task {id}: not run: {e}");
                return Step::Idle;
            }
            return classify(e);
        }
        self.shared.set_in_flight(Some(InFlight {
            task: id.clone(),
            services_stopped: false,
        }));
        let result = match task.kind {
            TaskKind::Sync => self.sync(&task).map(Ended::Synced),
            TaskKind::Cutover => self.cutover(&task).map(Ended::Synced),
            TaskKind::CutoverAbort => self.restart_services().map(|()| {
                Ended::Done("post_cutover_abort ran: the source's services start again".into())
            }),
            TaskKind::Poweroff => self.src.may_power_off().map(|()| {
                Ended::Done(
                    "the cutover passed its point of no return: powering the source off".into(),
                )
            }),
        };
        let power_off = task.kind == TaskKind::Poweroff && result.is_ok();
        let (state, gone) = match result {
            Ok(Ended::Done(detail)) => {
                tracing::info!("task {id}: {detail}");
                (TaskState::Done { detail }, false)
            }
            Ok(Ended::Synced(s)) => {
                tracing::info!("task {id}: succeeded: {}", figures_line(&s));
                (
                    TaskState::Succeeded {
                        snapshot: s.snapshot,
                        figures: s.figures,
                    },
                    false,
                )
            }
            Err(f) => {
                tracing::error!("task {id}: failed: {}", f.reason);
                (TaskState::Failed { reason: f.reason }, f.appliance_gone)
            }
        };
        let step = self.finish(&id, state, gone);
        self.shared.set_in_flight(None);
        if power_off {
            self.src.power_off();
        }
        step
    }

    /// Report a task's end; keep it for the next poll when the appliance cannot be told.
    fn finish(&mut self, id: &str, state: TaskState, gone: bool) -> Step {
        match self.app.report(id, &state) {
            Ok(()) => Step::Ran {
                appliance_gone: gone,
            },
            Err(e) if e.gave_up_retrying() => {
                tracing::warn!("task {id}: {e}; its end is reported when the appliance is back");
                self.unreported = Some((id.to_string(), state));
                Step::Ran {
                    appliance_gone: true,
                }
            }
            Err(e) => {
                tracing::error!("task {id}: the appliance did not take its end: {e}");
                Step::Ran {
                    appliance_gone: gone,
                }
            }
        }
    }

    /// The backup (the engine runs `pre_capture` and `post_capture` around its capture).
    fn sync(&self, task: &SyncTask) -> Result<Synced, SyncFailed> {
        self.src.backup(task)
    }

    /// `pre_cutover`, then the final sync; any failure runs `post_cutover_abort`. After a
    /// successful final sync the source stays stopped: the appliance has no abort signal for
    /// a cutover yet (ferry-format's `TaskKind` has only `sync` and `cutover`). The figures
    /// carry how long `pre_cutover` ran (`hook_seconds`, for the cutover's timeline).
    fn cutover(&self, task: &SyncTask) -> Result<Synced, SyncFailed> {
        self.shared.services_stopping();
        let hook_start = std::time::Instant::now();
        let result = self
            .src
            .hook(HookMoment::PreCutover)
            .map_err(|f| SyncFailed {
                reason: format!("{}; no final sync was taken", f.reason),
                ..f
            })
            .and_then(|()| {
                let hook_seconds = hook_start.elapsed().as_secs_f64();
                let mut s = self.sync(task)?;
                s.figures.hook_seconds = Some(hook_seconds);
                Ok(s)
            });
        match result {
            Ok(s) => {
                tracing::info!(
                    "cutover: final sync {} taken; the source's services stay stopped",
                    s.snapshot
                );
                Ok(s)
            }
            Err(f) => {
                self.abort_cutover();
                Err(SyncFailed {
                    reason: format!("cutover aborted: {}", f.reason),
                    ..f
                })
            }
        }
    }

    /// The appliance aborted the cutover after the final sync: start the services again.
    fn restart_services(&self) -> Result<(), SyncFailed> {
        self.src
            .hook(HookMoment::PostCutoverAbort)
            .map_err(|f| SyncFailed {
                reason: format!("the appliance aborted the cutover: {}", f.reason),
                ..f
            })
    }

    fn abort_cutover(&self) {
        if !self.shared.claim_abort() {
            return;
        }
        match self.src.hook(HookMoment::PostCutoverAbort) {
            Ok(()) => tracing::info!("cutover aborted: post_cutover_abort ran"),
            Err(e) => tracing::error!("cutover aborted: {}", e.reason),
        }
    }
}

/// `snapshot S (live): read X, sent Y, CPU c s, peak RSS R, t s`.
pub fn figures_line(s: &Synced) -> String {
    let f = &s.figures;
    let freeze = f
        .freeze_seconds
        .map(|t| format!(", frozen {t:.1} s"))
        .unwrap_or_default();
    format!(
        "snapshot {} ({}): read {}, sent {}, CPU {:.2} s, peak RSS {}{freeze}, {:.1} s",
        s.snapshot,
        f.consistency,
        human_bytes(f.bytes_read),
        human_bytes(f.bytes_sent),
        f.cpu_seconds,
        human_bytes(f.peak_rss_bytes),
        s.seconds
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use ferry_format::source::{Consistency, SourceLimits};

    use super::*;

    type Events = RefCell<Vec<String>>;

    fn task(id: &str, kind: TaskKind) -> SyncTask {
        SyncTask {
            id: id.into(),
            kind,
            consistency: Consistency::Live,
            limits: SourceLimits::default(),
            chunk_size: ferry_engine::backup::DEFAULT_CHUNK_SIZE,
        }
    }

    fn gone() -> ClientError {
        ClientError::Unreachable {
            url: "https://a".into(),
            what: "GET /x".into(),
            detail: "connection refused".into(),
            waited: Duration::from_secs(60),
        }
    }

    fn refused(status: u16) -> ClientError {
        ClientError::Refused {
            what: "x".into(),
            status,
            message: "no".into(),
        }
    }

    struct MockAppliance<'e> {
        polls: RefCell<VecDeque<Result<Option<SyncTask>, ClientError>>>,
        /// Answers to reports, in order; `Ok` once they run out.
        reports: RefCell<VecDeque<Result<(), ClientError>>>,
        events: &'e Events,
    }

    impl Appliance for MockAppliance<'_> {
        fn poll(&self, _wait: Duration) -> Result<Option<SyncTask>, ClientError> {
            self.events.borrow_mut().push("poll".into());
            self.polls.borrow_mut().pop_front().unwrap_or(Ok(None))
        }
        fn report(&self, task: &str, state: &TaskState) -> Result<(), ClientError> {
            // A cutover's success says how long its hook ran.
            let hook = match state {
                TaskState::Succeeded { figures, .. } if figures.hook_seconds.is_some() => {
                    " (hook timed)"
                }
                _ => "",
            };
            self.events
                .borrow_mut()
                .push(format!("report {task} {}{hook}", state.name()));
            self.reports.borrow_mut().pop_front().unwrap_or(Ok(()))
        }
    }

    struct MockSource<'e> {
        failing_hooks: Vec<HookMoment>,
        backup: Result<Synced, SyncFailed>,
        poweroff_allowed: bool,
        events: &'e Events,
    }

    impl Source for MockSource<'_> {
        fn hook(&self, moment: HookMoment) -> Result<(), SyncFailed> {
            self.events.borrow_mut().push(format!("hook {moment}"));
            if self.failing_hooks.contains(&moment) {
                return Err(SyncFailed::new(format!("hook {moment} failed (exit 1)")));
            }
            Ok(())
        }
        fn backup(&self, task: &SyncTask) -> Result<Synced, SyncFailed> {
            self.events
                .borrow_mut()
                .push(format!("backup {}", task.consistency));
            self.backup.clone()
        }
        fn may_power_off(&self) -> Result<(), SyncFailed> {
            self.events.borrow_mut().push("may power off?".into());
            if self.poweroff_allowed {
                Ok(())
            } else {
                Err(SyncFailed::new("poweroff_after_cutover is not set"))
            }
        }
        fn power_off(&self) {
            self.events.borrow_mut().push("power off".into());
        }
    }

    fn synced() -> Synced {
        Synced {
            snapshot: "m-20261204T200000Z".into(),
            figures: SyncFigures {
                cpu_seconds: 0.5,
                peak_rss_bytes: 40 << 20,
                bytes_read: 64 << 20,
                bytes_sent: 60 << 20,
                freeze_seconds: None,
                hook_seconds: None,
                consistency: Consistency::Live,
            },
            seconds: 1.5,
        }
    }

    struct Case {
        name: &'static str,
        polls: Vec<Result<Option<SyncTask>, ClientError>>,
        reports: Vec<Result<(), ClientError>>,
        failing_hooks: Vec<HookMoment>,
        backup: Result<Synced, SyncFailed>,
        poweroff_allowed: bool,
        /// Loop turns to take.
        steps: usize,
        want_events: &'static [&'static str],
        /// The last step's kind: "idle", "ran", "ran, appliance gone", "unreachable", "fatal".
        want_last: &'static str,
    }

    fn case(name: &'static str) -> Case {
        Case {
            name,
            polls: Vec::new(),
            reports: Vec::new(),
            failing_hooks: Vec::new(),
            backup: Ok(synced()),
            poweroff_allowed: false,
            steps: 1,
            want_events: &[],
            want_last: "idle",
        }
    }

    fn step_kind(s: &Step) -> &'static str {
        match s {
            Step::Idle => "idle",
            Step::Ran {
                appliance_gone: false,
            } => "ran",
            Step::Ran { .. } => "ran, appliance gone",
            Step::Unreachable(_) => "unreachable",
            Step::Fatal(_) => "fatal",
        }
    }

    #[test]
    fn the_task_state_machine() {
        let sync = || Ok(Some(task("task-1", TaskKind::Sync)));
        let cutover = || Ok(Some(task("task-2", TaskKind::Cutover)));
        let abort = || Ok(Some(task("task-3", TaskKind::CutoverAbort)));
        let poweroff = || Ok(Some(task("task-4", TaskKind::Poweroff)));
        let cases = [
            Case {
                polls: vec![poweroff()],
                poweroff_allowed: true,
                want_events: &[
                    "poll",
                    "report task-4 running",
                    "may power off?",
                    "report task-4 done",
                    "power off",
                ],
                want_last: "ran",
                ..case("poweroff allowed by the config: done is reported, then the power goes")
            },
            Case {
                polls: vec![poweroff()],
                want_events: &[
                    "poll",
                    "report task-4 running",
                    "may power off?",
                    "report task-4 failed",
                ],
                want_last: "ran",
                ..case("poweroff not allowed by the config: failed, the source stays on")
            },
            Case {
                polls: vec![Ok(None)],
                want_events: &["poll"],
                ..case("no task: nothing runs")
            },
            Case {
                polls: vec![sync()],
                want_events: &[
                    "poll",
                    "report task-1 running",
                    "backup live",
                    "report task-1 succeeded",
                ],
                want_last: "ran",
                ..case("a sync: running, the backup, succeeded")
            },
            Case {
                polls: vec![sync()],
                backup: Err(SyncFailed::new("disk vda: read error")),
                want_events: &[
                    "poll",
                    "report task-1 running",
                    "backup live",
                    "report task-1 failed",
                ],
                want_last: "ran",
                ..case("a failed backup is reported failed")
            },
            Case {
                polls: vec![sync()],
                reports: vec![Err(refused(409))],
                want_events: &["poll", "report task-1 running"],
                ..case("a task that already ended is not run")
            },
            Case {
                polls: vec![Err(gone())],
                want_events: &["poll"],
                want_last: "unreachable",
                ..case("an appliance gone for the window: back off")
            },
            Case {
                polls: vec![Err(ClientError::Certificate {
                    url: "https://a".into(),
                    detail: "UnknownIssuer".into(),
                })],
                want_events: &["poll"],
                want_last: "fatal",
                ..case("a certificate the CA does not vouch for ends the service")
            },
            Case {
                polls: vec![Err(refused(403))],
                want_events: &["poll"],
                want_last: "fatal",
                ..case("a refused credential ends the service")
            },
            Case {
                polls: vec![cutover()],
                want_events: &[
                    "poll",
                    "report task-2 running",
                    "hook pre_cutover",
                    "backup live",
                    "report task-2 succeeded (hook timed)",
                ],
                want_last: "ran",
                ..case("a cutover: pre_cutover, the final sync, the source stays stopped")
            },
            Case {
                polls: vec![cutover(), abort()],
                steps: 2,
                want_events: &[
                    "poll",
                    "report task-2 running",
                    "hook pre_cutover",
                    "backup live",
                    "report task-2 succeeded (hook timed)",
                    "poll",
                    "report task-3 running",
                    "hook post_cutover_abort",
                    "report task-3 done",
                ],
                want_last: "ran",
                ..case("aborted by the appliance after the final sync: post_cutover_abort, done")
            },
            Case {
                polls: vec![cutover()],
                failing_hooks: vec![HookMoment::PreCutover],
                want_events: &[
                    "poll",
                    "report task-2 running",
                    "hook pre_cutover",
                    "hook post_cutover_abort",
                    "report task-2 failed",
                ],
                want_last: "ran",
                ..case("a failed pre_cutover: no sync, post_cutover_abort")
            },
            Case {
                polls: vec![cutover()],
                backup: Err(SyncFailed {
                    reason: "appliance gone".into(),
                    appliance_gone: true,
                }),
                want_events: &[
                    "poll",
                    "report task-2 running",
                    "hook pre_cutover",
                    "backup live",
                    "hook post_cutover_abort",
                    "report task-2 failed",
                ],
                want_last: "ran, appliance gone",
                ..case("a failed final sync aborts the cutover: the source serves again")
            },
            Case {
                // The end could not be told; the appliance hands the task out again: the end
                // is delivered, nothing is backed up twice.
                polls: vec![sync(), sync()],
                reports: vec![Ok(()), Err(gone()), Ok(())],
                steps: 2,
                want_events: &[
                    "poll",
                    "report task-1 running",
                    "backup live",
                    "report task-1 succeeded",
                    "poll",
                    "report task-1 succeeded",
                ],
                want_last: "ran",
                ..case("an end kept through an outage is delivered, not synced again")
            },
        ];
        for c in cases {
            let events = Events::default();
            let app = MockAppliance {
                polls: RefCell::new(c.polls.into()),
                reports: RefCell::new(c.reports.into()),
                events: &events,
            };
            let src = MockSource {
                failing_hooks: c.failing_hooks,
                backup: c.backup,
                poweroff_allowed: c.poweroff_allowed,
                events: &events,
            };
            let shared = Shared::default();
            let mut l = TaskLoop::new(&app, &src, &shared, Duration::from_secs(1));
            let mut last = Step::Idle;
            for _ in 0..c.steps {
                last = l.step();
            }
            assert_eq!(*events.borrow(), c.want_events, "{}", c.name);
            assert_eq!(step_kind(&last), c.want_last, "{}: {last:?}", c.name);
            assert_eq!(shared.task_in_flight(), None, "{}", c.name);
        }
    }

    #[test]
    fn a_task_handed_out_while_stopping_is_not_started() {
        let events = Events::default();
        let app = MockAppliance {
            polls: RefCell::new(vec![Ok(Some(task("task-1", TaskKind::Sync)))].into()),
            reports: RefCell::default(),
            events: &events,
        };
        let src = MockSource {
            failing_hooks: Vec::new(),
            backup: Ok(synced()),
            poweroff_allowed: false,
            events: &events,
        };
        let shared = Shared::default();
        shared.stop();
        let mut l = TaskLoop::new(&app, &src, &shared, Duration::from_secs(1));
        assert!(matches!(l.step(), Step::Idle));
        assert_eq!(*events.borrow(), ["poll"]);
        // run() returns at once when stopped.
        assert!(l.run(|| 0.5).is_ok());
        assert_eq!(events.borrow().len(), 1);
    }

    #[test]
    fn run_backs_off_through_an_outage_then_takes_the_next_task_and_ends_on_a_fatal_error() {
        let events = Events::default();
        let app = MockAppliance {
            polls: RefCell::new(
                vec![
                    Err(gone()),
                    Ok(Some(task("task-3", TaskKind::Sync))),
                    Err(refused(401)),
                ]
                .into(),
            ),
            reports: RefCell::default(),
            events: &events,
        };
        let src = MockSource {
            failing_hooks: Vec::new(),
            backup: Ok(synced()),
            poweroff_allowed: false,
            events: &events,
        };
        let shared = Shared::default();
        let mut l = TaskLoop::new(&app, &src, &shared, Duration::from_secs(1));
        // jitter 0 halves the first pause: 2.5 s.
        let t = std::time::Instant::now();
        let e = l.run(|| 0.0).expect_err("401 is fatal");
        assert_eq!(e.status(), Some(401));
        assert!(
            t.elapsed() >= Duration::from_millis(2400),
            "{:?}",
            t.elapsed()
        );
        assert!(events
            .borrow()
            .contains(&"report task-3 succeeded".to_string()));
    }

    #[test]
    fn the_stop_path_claims_the_abort_hook_once() {
        let shared = Shared::default();
        assert!(!shared.claim_abort(), "no task");
        shared.set_in_flight(Some(InFlight {
            task: "task-1".into(),
            services_stopped: false,
        }));
        assert!(!shared.claim_abort(), "a sync stops no service");
        shared.services_stopping();
        assert!(shared.claim_abort());
        assert!(!shared.claim_abort(), "claimed once");
        assert_eq!(shared.task_in_flight().as_deref(), Some("task-1"));
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        let cases = [
            (1, 0.5, 5.0),
            (2, 0.5, 10.0),
            (3, 0.5, 20.0),
            (7, 0.5, 300.0),
            (40, 0.5, 300.0),
            (1, 0.0, 2.5),
            (1, 0.999, 7.495),
            (7, 1.0, 450.0),
        ];
        for (failures, jitter, want) in cases {
            let got = backoff(failures, jitter).as_secs_f64();
            assert!(
                (got - want).abs() < 0.01,
                "{failures} {jitter}: {got} != {want}"
            );
        }
    }

    #[test]
    fn sleep_wakes_on_stop() {
        let shared = Shared::default();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                shared.stop();
            });
            let t = std::time::Instant::now();
            assert!(shared.sleep(Duration::from_secs(30)));
            assert!(t.elapsed() < Duration::from_secs(5));
        });
    }
}
