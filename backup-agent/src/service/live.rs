//! The real [`Appliance`] (the client's source routes with the source credential) and the real
//! [`Source`] (the config's hooks and `ferry_engine::backup`).

use std::time::Duration;

use ferry_client::{Client, ClientError};
use ferry_engine::backup::{self, BackupOptions, ConsistencyRequest, SourceLimits};
use ferry_engine::EngineError;
use ferry_format::source::{Consistency, SyncFigures, SyncTask, TaskKind, TaskState};

use super::config::{hook_argv, Config, HookMoment};
use super::hooks;
use super::run::{Appliance, Source, SyncFailed, Synced};

/// Uploads in flight during a sync (the one-shot `backup --parallel` default).
const PARALLEL: usize = 4;

/// The appliance, as source `machine` with its credential.
pub struct Remote {
    pub client: Client,
    pub machine: String,
}

impl Appliance for Remote {
    fn poll(&self, wait: Duration) -> Result<Option<SyncTask>, ClientError> {
        self.client.poll_source_task(&self.machine, wait)
    }

    fn report(&self, task: &str, state: &TaskState) -> Result<(), ClientError> {
        self.client
            .set_source_task_state(&self.machine, task, state)
    }
}

/// This machine: its disks and hooks from the config.
pub struct Machine<'a> {
    pub config: &'a Config,
    /// The source credential's client.
    pub client: &'a Client,
}

impl Source for Machine<'_> {
    fn hook(&self, moment: HookMoment) -> Result<(), SyncFailed> {
        let Some(argv) = hook_argv(&self.config.hooks, moment) else {
            return Ok(());
        };
        tracing::info!("hook {moment}: running {}", argv.join(" "));
        match hooks::run(moment, argv, self.config.hooks.timeout) {
            Ok(took) => {
                tracing::info!("hook {moment}: done in {:.1}s", took.as_secs_f64());
                Ok(())
            }
            Err(e) => Err(SyncFailed::new(e.to_string())),
        }
    }

    fn may_power_off(&self) -> Result<(), SyncFailed> {
        if self.config.poweroff_after_cutover {
            Ok(())
        } else {
            Err(SyncFailed::new(format!(
                "the appliance asked to power this source off, but {} does not allow it \
                 (poweroff_after_cutover = true); it stays on with its services stopped",
                self.config.path.display()
            )))
        }
    }

    fn power_off(&self) {
        // An orderly shutdown by systemd; the agent gets SIGTERM like every service.
        tracing::info!("powering the source off (systemctl poweroff)");
        match std::process::Command::new("systemctl")
            .args(["--no-block", "poweroff"])
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::error!("systemctl poweroff: {s}; power the source off by hand"),
            Err(e) => tracing::error!("systemctl poweroff: {e}; power the source off by hand"),
        }
    }

    fn backup(&self, task: &SyncTask) -> Result<Synced, SyncFailed> {
        let opts = BackupOptions {
            machine: self.config.machine.clone(),
            disks: self.config.disks.clone(),
            parallel: PARALLEL,
            quiet: true,
            limits: SourceLimits::from(&task.limits),
            chunk_size: task.chunk_size,
            consistency: consistency_request(task),
            // pre_capture and post_capture run around the capture, inside the engine.
            hooks: self.config.hooks.capture(),
            // Read again at every sync: the source's configuration may have changed.
            network: crate::network::gather(&self.config.network, &self.config.disks),
            ..Default::default()
        };
        match backup::backup(self.client, &opts) {
            Ok(s) => Ok(Synced {
                figures: SyncFigures {
                    cpu_seconds: s.cpu_seconds,
                    peak_rss_bytes: s.peak_rss_bytes,
                    bytes_read: s.bytes_read,
                    bytes_sent: s.bytes_sent,
                    freeze_seconds: held(&s.consistency).then(|| s.consistency.held_seconds()),
                    hook_seconds: None,
                    consistency: if held(&s.consistency) {
                        Consistency::PointInTime
                    } else {
                        Consistency::Live
                    },
                },
                snapshot: s.snapshot,
                seconds: s.seconds,
            }),
            Err(e) => Err(SyncFailed {
                appliance_gone: gave_up(&e),
                reason: e.to_string(),
            }),
        }
    }
}

/// What the engine is asked for: a scheduled sync asking for point-in-time falls back to live
/// with a warning when the source cannot be held still (docs/migration.md, "Schedules and
/// retention"); a cutover's final sync is point-in-time or fails.
fn consistency_request(task: &SyncTask) -> ConsistencyRequest {
    match (task.kind, task.consistency) {
        // A cutover-abort takes no backup; were one asked, it would be held still too.
        (TaskKind::Cutover | TaskKind::CutoverAbort | TaskKind::Poweroff, _) => {
            ConsistencyRequest::PointInTime
        }
        (TaskKind::Sync, Consistency::PointInTime) => ConsistencyRequest::Auto,
        (TaskKind::Sync, Consistency::Live) => ConsistencyRequest::Live,
    }
}

/// The snapshot was taken point-in-time (as its manifest records).
fn held(c: &backup::Consistency) -> bool {
    matches!(c, backup::Consistency::PointInTime { .. })
}

fn gave_up(e: &EngineError) -> bool {
    matches!(e, EngineError::Client(c) if c.gave_up_retrying())
}

/// Connections the credential's client keeps: the uploads, an index or commit, and the poll.
pub const CONNECTIONS: usize = PARALLEL + 2;
