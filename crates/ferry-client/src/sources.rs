//! Source machines (docs/protocol.md, "Sources"): a `backup-agent service` enrolls once with a
//! backup token scoped to its machine, then long-polls its sync task and reports the task's
//! state with the per-source credential ([`Client::with_token`]). The backups themselves use
//! the ordinary backup routes with that credential.

use std::time::Duration;

use ferry_format::source::{SourceEnrollReply, SourceEnrollRequest, SyncTask, TaskState};

use crate::{read_json, Client, ClientError};

/// Longest wait the appliance grants a task poll (it caps `?wait=` there too).
pub const MAX_TASK_WAIT: Duration = Duration::from_secs(55);

impl Client {
    /// Exchange a backup token whose scope includes `req.machine` for the source's own
    /// credential (`src-<machine>.<64 hex>`), shown once.
    pub fn enroll_source(
        &self,
        req: &SourceEnrollRequest,
    ) -> Result<SourceEnrollReply, ClientError> {
        self.send_json("POST", "/sources/enroll", req)
    }

    /// Wait up to `wait` (at most [`MAX_TASK_WAIT`]) for `machine`'s sync task: the running one
    /// again (an agent that restarted resumes it), a new one when due, `None` when none came.
    pub fn poll_source_task(
        &self,
        machine: &str,
        wait: Duration,
    ) -> Result<Option<SyncTask>, ClientError> {
        let wait = wait.min(MAX_TASK_WAIT).as_secs();
        let path = format!("/sources/{machine}/task?wait={wait}");
        self.call("GET", &path, None, &[], |status, body| match status {
            204 => Ok(None),
            _ => read_json(&path, body).map(Some),
        })
    }

    /// Report a task's state. Like a job's state it must arrive: it gets a whole retry window
    /// of its own even when an outage has already ended the sync's other requests. A task that
    /// already ended answers 409 ([`ClientError::Refused`]).
    pub fn set_source_task_state(
        &self,
        machine: &str,
        task: &str,
        state: &TaskState,
    ) -> Result<(), ClientError> {
        self.put_own_window(&format!("/sources/{machine}/tasks/{task}/state"), state)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::ClientConfig;
    use ferry_format::signing::{SigningKey, TrustBundle};

    fn client_of_closed_port(window: Duration) -> Client {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Client::new(ClientConfig {
            url: format!("https://127.0.0.1:{port}"),
            trust: TrustBundle {
                ca_certs: Vec::new(),
                signing_key: SigningKey([0; 32]),
            },
            token: "t".into(),
            retry_window: window,
            connections: 2,
        })
        .expect("client")
    }

    #[test]
    fn a_task_report_gets_its_own_window_after_an_outage() {
        let c = client_of_closed_port(Duration::from_secs(2));
        let e = c
            .poll_source_task("m", Duration::from_secs(30))
            .expect_err("nothing listens");
        assert!(e.gave_up_retrying(), "{e}");
        assert!(e.to_string().contains("/sources/m/task?wait=30"), "{e}");
        // The outage has lasted a window: another poll gives up after one attempt ...
        let t = Instant::now();
        c.poll_source_task("m", Duration::from_secs(90))
            .expect_err("nothing listens");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // ... but the task's state still gets a whole window.
        let t = Instant::now();
        let state = TaskState::Failed { reason: "x".into() };
        let e = c
            .set_source_task_state("m", "task-1", &state)
            .expect_err("nothing listens");
        assert!(e.gave_up_retrying(), "{e}");
        assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn the_wait_is_capped_at_the_appliances_maximum() {
        let c = client_of_closed_port(Duration::from_millis(10));
        let e = c
            .poll_source_task("m", Duration::from_secs(600))
            .expect_err("nothing listens");
        assert!(e.to_string().contains("wait=55"), "{e}");
    }
}
