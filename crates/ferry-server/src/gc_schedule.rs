//! Garbage collection on its own schedule in `appliance serve --gc-every` (docs/store.md,
//! "Garbage collection"): a background thread runs [`Store::gc`] every interval, counted from
//! the end of the previous run. The store's own rules keep it safe next to running backups: GC
//! holds `gc.lock` (a run that finds another GC running, e.g. `appliance gc` by hand, is skipped)
//! and never removes a chunk touched after the oldest live session's pin (crate `ferry_store::gc`).

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use ferry_format::units::human_bytes;
use ferry_store::gc::GcReport;
use ferry_store::{Store, StoreError};

/// `appliance serve`'s default interval.
pub const DEFAULT_GC_EVERY: Duration = Duration::from_secs(24 * 3600);

/// A running schedule; [`GcSchedule::stop`] ends it (a run in progress finishes first).
pub struct GcSchedule {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

/// Run GC on the store at `data` every `every`; `None` when `every` is zero (disabled). Each
/// run's result goes to `done` (the server logs it).
pub fn spawn(
    data: PathBuf,
    every: Duration,
    mut done: impl FnMut(Result<GcReport, StoreError>) + Send + 'static,
) -> std::io::Result<Option<GcSchedule>> {
    if every.is_zero() {
        return Ok(None);
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("gc-schedule".into())
        .spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => {
                    done(Store::open(&data).and_then(|s| s.gc(SystemTime::now())))
                }
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        })?;
    Ok(Some(GcSchedule { stop, thread }))
}

impl GcSchedule {
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// The log line of one scheduled run.
pub fn log_run(r: Result<GcReport, StoreError>) {
    match r {
        Ok(g) => tracing::info!(
            "scheduled gc: freed {} chunks ({}), kept {} ({}); {} snapshots, {} live sessions, \
             {} dead sessions removed, cutoff {}{}",
            g.removed_chunks,
            human_bytes(g.removed_bytes),
            g.kept_chunks,
            human_bytes(g.kept_bytes),
            g.snapshots,
            g.live_sessions,
            g.dead_sessions_removed,
            g.cutoff,
            if g.missing_chunks > 0 {
                format!(
                    "; {} referenced chunks are MISSING (run appliance verify)",
                    g.missing_chunks
                )
            } else {
                String::new()
            }
        ),
        Err(StoreError::Conflict(why)) => tracing::info!("scheduled gc skipped: {why}"),
        Err(e) => tracing::error!("scheduled gc failed: {e}; the next run is in one interval"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_format::ChunkId;
    use std::time::Instant;

    fn chunk(store: &Store, seed: u8) -> ChunkId {
        let plain = vec![seed; 4096];
        let id = ChunkId::of(&plain);
        store
            .put_chunk(&id, &zstd::bulk::compress(&plain, 1).unwrap())
            .unwrap();
        id
    }

    #[test]
    fn runs_at_its_interval_and_spares_what_a_running_backup_uses() {
        let dir = tempfile::tempdir().unwrap();
        crate::commands::init_store(dir.path(), &[]).unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A backup is running: its session has learned about this chunk (fresh mtime).
        let _session = store
            .start_session("web01", 65536, SystemTime::now())
            .unwrap();
        let used = chunk(&store, 1);
        // Garbage: referenced by nothing, last touched two days ago.
        let orphan = chunk(&store, 2);
        std::fs::File::options()
            .write(true)
            .open(store.chunk_path(&orphan))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(2 * 86400))
            .unwrap();

        assert!(spawn(dir.path().into(), Duration::ZERO, |_| {})
            .unwrap()
            .is_none());
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let every = Duration::from_millis(300);
        let s = spawn(dir.path().into(), every, move |r| {
            let _ = tx.send((start.elapsed(), r.map_err(|e| e.to_string())));
        })
        .unwrap()
        .unwrap();
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(rx.recv_timeout(Duration::from_secs(10)).unwrap());
            assert!(
                store.has_chunk(&used),
                "GC removed a chunk a running backup uses"
            );
        }
        s.stop();
        let (t1, first) = &runs[0];
        let first = first.as_ref().unwrap();
        assert!(*t1 >= every, "first run after {t1:?}");
        assert_eq!(first.removed_chunks, 1, "{first:?}");
        assert_eq!(first.live_sessions, 1, "{first:?}");
        assert!(!store.has_chunk(&orphan));
        for w in runs.windows(2) {
            assert!(
                w[1].0 - w[0].0 >= every,
                "runs at {:?} and {:?}",
                w[0].0,
                w[1].0
            );
        }
        assert_eq!(runs[2].1.as_ref().unwrap().removed_chunks, 0);
    }
}
