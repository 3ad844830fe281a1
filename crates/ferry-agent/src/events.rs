//! The job's event stream: each event goes to the console at once (a plain line with a level
//! prefix) and to the appliance in batches, best effort. Both the job runner and the fix-up step
//! emit through it.

use std::time::Duration;

use ferry_client::Client;
use ferry_format::agent::{Event, EventBatch, Level, Phase, MAX_EVENT_BATCH};

use crate::console::{now_rfc3339, Console};

/// How long one event post keeps retrying before the events wait for the next one.
const EVENT_RETRY: Duration = Duration::from_secs(5);
/// How long asking for the beacon credential keeps retrying (the fix-up goes on without it).
const BEACON_ISSUE_RETRY: Duration = Duration::from_secs(60);
/// Events kept while the appliance cannot be reached; older progress events are dropped first.
const MAX_PENDING_EVENTS: usize = 5000;

/// The job's event stream: each event goes to the console at once and to the appliance in
/// batches (best effort; the job's state report is the one that must arrive).
pub struct Events<'a> {
    client: Client,
    agent: &'a str,
    job: String,
    pending: Vec<Event>,
}

impl<'a> Events<'a> {
    pub fn new(client: &Client, agent: &'a str, job: &str) -> Self {
        Events {
            client: client.with_retry_window(EVENT_RETRY),
            agent,
            job: job.to_string(),
            pending: Vec::new(),
        }
    }

    /// A one-time credential for the first-boot beacon of this job (the fix-up installs it).
    pub fn issue_beacon(
        &self,
    ) -> Result<ferry_format::agent::beacon::BeaconIssued, ferry_client::ClientError> {
        self.client
            .with_retry_window(BEACON_ISSUE_RETRY)
            .issue_beacon(self.agent, &self.job)
    }

    pub fn emit(
        &mut self,
        out: &mut Console,
        level: Level,
        phase: Phase,
        message: String,
        bytes: Option<Bytes>,
    ) {
        let prefix = match level {
            Level::Error => "ERROR: ",
            Level::Warn => "warning: ",
            Level::Info => "",
        };
        out.line(&format!("{prefix}{message}"));
        self.pending.push(Event {
            time: now_rfc3339(),
            level,
            phase,
            message,
            bytes_done: bytes.map(|b| b.done),
            bytes_total: bytes.map(|b| b.total),
            rate: bytes.map(|b| b.rate),
            eta: bytes.map(|b| b.eta),
        });
        if self.pending.len() > MAX_PENDING_EVENTS {
            if let Some(i) = self.pending.iter().position(|e| e.bytes_total.is_some()) {
                self.pending.remove(i);
            }
        }
        self.flush();
    }

    pub fn flush(&mut self) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(MAX_EVENT_BATCH);
            let batch = EventBatch {
                job: self.job.clone(),
                events: self.pending[..n].to_vec(),
            };
            match self.client.post_events(self.agent, &batch) {
                Ok(()) => {
                    self.pending.drain(..n);
                }
                Err(e) => {
                    tracing::warn!(
                        "send {} events of job {}: {e}; keeping them for later",
                        self.pending.len(),
                        self.job
                    );
                    return;
                }
            }
        }
    }
}

/// Progress carried by an event: bytes done of total, the rate (bytes/s) and the ETA (seconds).
#[derive(Clone, Copy, Debug)]
pub struct Bytes {
    pub done: u64,
    pub total: u64,
    pub rate: u64,
    pub eta: u64,
}
