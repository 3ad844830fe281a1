//! What `appliance` exits with (docs/configuration.md, "Exit codes"), from the typed error under
//! the context: a config file or variable it cannot use is bad usage (2, as clap's own); a
//! remote appliance unreachable for the retry window 3, a request it refused or a certificate
//! the pinned CA does not vouch for 4; `verify` finding damage 5; anything else 1.

use ferry_client::exit::ExitStatus;
use ferry_client::ClientError;
use ferry_server::commands::StoreDamaged;

use crate::config::ConfigError;

pub fn exit_status(e: &anyhow::Error) -> ExitStatus {
    if e.downcast_ref::<ConfigError>().is_some() {
        return ExitStatus::Usage;
    }
    if let Some(c) = e.downcast_ref::<ClientError>() {
        return c.exit_status();
    }
    if e.downcast_ref::<StoreDamaged>().is_some() {
        return ExitStatus::Verification;
    }
    ExitStatus::Failure
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use anyhow::Context;
    use ferry_client::exit::ExitStatus;
    use ferry_client::ClientError;
    use ferry_server::commands::StoreDamaged;

    use super::exit_status;
    use crate::config::FileLayer;

    #[test]
    fn each_typed_error_has_its_status_under_any_context() {
        let bad = FileLayer::parse(Path::new("/etc/ferry/appliance.toml"), "colour = 1")
            .expect_err("unknown key");
        let e = Err::<(), _>(bad).context("read the config").unwrap_err();
        assert_eq!(exit_status(&e), ExitStatus::Usage);
        let refused = ClientError::Refused {
            what: "GET /jobs".into(),
            status: 403,
            message: "admin only".into(),
        };
        let e = Err::<(), _>(refused).context("jobs list").unwrap_err();
        assert_eq!(exit_status(&e), ExitStatus::Refused);
        let damaged = StoreDamaged {
            bad_chunks: 1,
            damaged: "/srv/ferry/damaged".into(),
            missing_chunks: 0,
            damaged_snapshots: 1,
        };
        assert_eq!(exit_status(&damaged.into()), ExitStatus::Verification);
        assert_eq!(
            exit_status(&anyhow::anyhow!("no such job")),
            ExitStatus::Failure
        );
    }
}
