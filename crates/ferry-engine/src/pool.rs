//! A fixed set of chunk buffers passed between pipeline stages: bounds memory and avoids
//! allocating 4 MiB per chunk.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Mutex;
use std::time::Duration;

use crate::pipeline::Abort;

/// How often a stage waiting for a free buffer looks at the abort flag: a buffer held by a
/// stage that died never comes back, so this wait cannot rely on a disconnection.
const ABORT_POLL: Duration = Duration::from_millis(50);

pub(crate) struct Pool {
    tx: SyncSender<Vec<u8>>,
    rx: Mutex<Receiver<Vec<u8>>>,
}

impl Pool {
    pub(crate) fn new(count: usize, capacity: usize) -> Self {
        let (tx, rx) = sync_channel(count);
        for _ in 0..count {
            let _ = tx.send(Vec::with_capacity(capacity));
        }
        Pool {
            tx,
            rx: Mutex::new(rx),
        }
    }

    /// Wait for a free buffer (cleared). `None` when the pipeline is aborting.
    pub(crate) fn take(&self, abort: &Abort) -> Option<Vec<u8>> {
        let rx = self.rx.lock().ok()?;
        loop {
            if abort.is_set() {
                return None;
            }
            match rx.recv_timeout(ABORT_POLL) {
                Ok(mut b) => {
                    b.clear();
                    return Some(b);
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    pub(crate) fn give(&self, b: Vec<u8>) {
        let _ = self.tx.send(b);
    }
}
