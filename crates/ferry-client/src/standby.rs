//! A migration's standby target (docs/protocol.md, "Standby"): the long poll for the next
//! snapshot to apply and the report of what the disks hold, with the agent's credential.

use std::time::Duration;

use ferry_format::agent::{StandbyNext, StandbyProof, StandbyProven, StandbyReport};
use ferry_format::source::StandbyCutover;

use crate::{read_json, Client, ClientError};

impl Client {
    /// Wait up to `wait` (the appliance grants at most 55 s) for the newest snapshot of the
    /// standby's machine that is not `basis` (`None`: the disks' content is unknown, so the
    /// newest is the answer). `Ok(None)` when nothing newer came; a refusal with status 410
    /// means the migration ended and the standby stops.
    pub fn standby_next(
        &self,
        agent_id: &str,
        basis: Option<&str>,
        wait: Duration,
    ) -> Result<Option<StandbyNext>, ClientError> {
        let path = format!(
            "/agents/{agent_id}/standby/next?basis={}&wait={}",
            basis.unwrap_or(""),
            wait.as_secs()
        );
        self.call("GET", &path, None, &[], |status, body| match status {
            204 => Ok(None),
            _ => read_json(&path, body).map(Some),
        })
    }

    /// Report that the standby's disks hold `report.basis`. It must arrive: like a job's state
    /// it gets a whole retry window of its own.
    pub fn standby_report(
        &self,
        agent_id: &str,
        report: &StandbyReport,
    ) -> Result<(), ClientError> {
        self.put_own_window(&format!("/agents/{agent_id}/standby/state"), report)
    }

    /// Answer the standby challenge of this agent's enrollment. A refusal with status 403
    /// means the disks do not hold what the challenge asked for: wait for the operator.
    pub fn standby_proof(
        &self,
        agent_id: &str,
        proof: &StandbyProof,
    ) -> Result<StandbyProven, ClientError> {
        self.send_json("POST", &format!("/agents/{agent_id}/standby/proof"), proof)
    }

    /// Report a step of the cutover with the final snapshot (a retry window of its own). A
    /// refusal with status 409 on `applying` means the cutover was aborted: write nothing.
    pub fn standby_cutover(
        &self,
        agent_id: &str,
        report: &StandbyCutover,
    ) -> Result<(), ClientError> {
        self.put_own_window(&format!("/agents/{agent_id}/standby/cutover"), report)
    }
}
