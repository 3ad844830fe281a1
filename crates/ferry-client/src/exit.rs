//! The exit statuses every Ferry binary uses (docs/configuration.md, "Exit codes"), so a
//! script or a scheduler can tell "try again later" from "fix the input" from "the data is
//! bad" without reading messages. Each binary maps its typed errors onto these; the numbers are
//! an interface: never renumber one.

use crate::ClientError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done.
    Success,
    /// 1: any other failure (I/O, a tool that failed, a job that failed).
    Failure,
    /// 2: bad usage: a flag (clap's own exit status), a `FERRY_*` variable or a config file
    /// refused before anything ran.
    Usage,
    /// 3: the appliance stayed unreachable or kept failing for the whole retry window; nothing
    /// was committed or half-written that a later run cannot resume. Try again later.
    GaveUp,
    /// 4: refused before anything was written: a target too small, holding data or in use, a
    /// layout with no safe plan, a certificate the pinned CA does not vouch for, a request the
    /// appliance refused (401/403/404/409...).
    Refused,
    /// 5: verification failed: a chunk whose bytes do not match its id, a manifest whose
    /// signature or an index whose digest does not verify, a store `verify` found damaged.
    Verification,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::GaveUp => 3,
            ExitStatus::Refused => 4,
            ExitStatus::Verification => 5,
        }
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s.code())
    }
}

impl ClientError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            ClientError::Unreachable { .. } | ClientError::ServerFailing { .. } => {
                ExitStatus::GaveUp
            }
            ClientError::Certificate { .. } | ClientError::Refused { .. } => ExitStatus::Refused,
            ClientError::Untrusted { .. } | ClientError::IndexDigest { .. } => {
                ExitStatus::Verification
            }
            ClientError::BadAnswer { .. } => ExitStatus::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ExitStatus;
    use crate::ClientError;

    #[test]
    fn codes_are_stable_and_distinct() {
        use ExitStatus::*;
        let all = [Success, Failure, Usage, GaveUp, Refused, Verification];
        let codes: Vec<u8> = all.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn client_errors_map_by_kind() {
        let s = |s: &str| s.to_string();
        let cases = [
            (
                ClientError::Unreachable {
                    url: s("u"),
                    what: s("w"),
                    detail: s("d"),
                    waited: Duration::ZERO,
                },
                ExitStatus::GaveUp,
            ),
            (
                ClientError::ServerFailing {
                    url: s("u"),
                    what: s("w"),
                    status: 507,
                    message: s("m"),
                    waited: Duration::ZERO,
                },
                ExitStatus::GaveUp,
            ),
            (
                ClientError::Certificate {
                    url: s("u"),
                    detail: s("d"),
                },
                ExitStatus::Refused,
            ),
            (
                ClientError::Refused {
                    what: s("w"),
                    status: 403,
                    message: s("m"),
                },
                ExitStatus::Refused,
            ),
            (
                ClientError::IndexDigest {
                    snapshot: s("s"),
                    disk: s("d"),
                },
                ExitStatus::Verification,
            ),
            (
                ClientError::Untrusted {
                    snapshot: s("s"),
                    source: ferry_format::FormatError::Signature("bad".into()),
                },
                ExitStatus::Verification,
            ),
            (
                ClientError::BadAnswer {
                    what: s("w"),
                    detail: s("d"),
                },
                ExitStatus::Failure,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.exit_status(), want, "{e}");
        }
    }
}
