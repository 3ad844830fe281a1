//! A fixed set of chunk buffers passed between pipeline stages: bounds memory and avoids
//! allocating 4 MiB per chunk.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

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

    /// Wait for a free buffer (cleared). `None` only if the pool is gone.
    pub(crate) fn take(&self) -> Option<Vec<u8>> {
        let rx = self.rx.lock().ok()?;
        let mut b = rx.recv().ok()?;
        b.clear();
        Some(b)
    }

    pub(crate) fn give(&self, b: Vec<u8>) {
        let _ = self.tx.send(b);
    }
}
