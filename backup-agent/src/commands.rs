//! What the subcommand does, in terms of the libraries, and what the process exits with.

use ferry_client::exit::ExitStatus;
use ferry_client::ClientError;
use ferry_engine::backup::{self, BackupSummary};
use ferry_engine::EngineError;

use crate::cli::BackupArgs;
use crate::hooks_config::{Hooks, HooksError};
use crate::network;
use crate::service::config::ConfigError;

/// Back up, then print the summary: JSON on stdout with `--json`, else a line on stderr and the
/// snapshot id on stdout.
pub fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    let mut opts = args.options();
    if let Some(path) = &args.hooks {
        opts.hooks = Hooks::load(path)?.capture();
    }
    let client = args.connect.client(args.parallel + 1)?;
    opts.network = network::gather(&args.network, &opts.disks);
    if opts.consistency != backup::ConsistencyRequest::Live {
        // A previous run killed mid-capture may have left filesystems frozen or snapshots.
        backup::recover_capture(&opts.run_dir);
    }
    let s = backup::backup(&client, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
    } else {
        eprintln!("{}", summary_line(&s));
        println!("{}", s.snapshot);
    }
    Ok(())
}

/// The exit status for `e` (docs/configuration.md, "Exit codes"), from the typed error under
/// its context: 3 when retrying for the whole window did not help (a scheduler may try again
/// later), 4 refused, 5 verification failed, 2 a bad config or hooks file (clap exits 2 on bad
/// arguments itself), else 1.
pub fn exit_status(e: &anyhow::Error) -> ExitStatus {
    if let Some(e) = e.downcast_ref::<EngineError>() {
        return e.exit_status();
    }
    if let Some(c) = e.downcast_ref::<ClientError>() {
        return c.exit_status();
    }
    if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<HooksError>().is_some() {
        return ExitStatus::Usage;
    }
    ExitStatus::Failure
}

fn summary_line(s: &BackupSummary) -> String {
    format!(
        "snapshot {} ({}): read {} bytes in {:.1}s; {} chunks ({} zero), {} new uploaded ({} \
         bytes), {} already stored; sent {} bytes; agent CPU {:.2}s, peak RSS {} MiB; {} \
         network interfaces recorded",
        s.snapshot,
        s.consistency,
        s.bytes_read,
        s.seconds,
        s.chunks_total,
        s.chunks_zero,
        s.chunks_new,
        s.bytes_uploaded,
        s.chunks_present,
        s.bytes_sent,
        s.cpu_seconds,
        s.peak_rss_bytes >> 20,
        s.network_interfaces
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use anyhow::Context;
    use ferry_client::exit::ExitStatus;
    use ferry_client::ClientError;
    use ferry_engine::EngineError;

    use super::exit_status;
    use crate::service::config::Config;

    #[test]
    fn the_exit_status_comes_from_the_typed_error_under_the_context() {
        let gave_up = || ClientError::Unreachable {
            url: "https://a".into(),
            what: "PUT chunk".into(),
            detail: "refused".into(),
            waited: std::time::Duration::from_secs(20),
        };
        let e = anyhow::Error::new(EngineError::Client(gave_up())).context("back up sda");
        assert_eq!(exit_status(&e), ExitStatus::GaveUp);
        let e = anyhow::Error::new(gave_up()).context("enroll");
        assert_eq!(exit_status(&e), ExitStatus::GaveUp);
        let refused = ClientError::Refused {
            what: "commit".into(),
            status: 403,
            message: "not your machine".into(),
        };
        assert_eq!(exit_status(&refused.into()), ExitStatus::Refused);
        let bad_config = Config::parse(Path::new("/etc/ferry/agent.toml"), "colour = 1")
            .expect_err("unknown key");
        let e = Err::<(), _>(bad_config).context("start").unwrap_err();
        assert_eq!(exit_status(&e), ExitStatus::Usage);
        assert_eq!(
            exit_status(&anyhow::anyhow!("disk gone")),
            ExitStatus::Failure
        );
    }
}
