//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::report::Settings;

/// Longest `--give-up-after` (one boot should not try for longer).
const MAX_GIVE_UP: Duration = Duration::from_secs(24 * 3600);

#[derive(Parser)]
#[command(
    version,
    about = "Tell the Ferry appliance once that this restored system is up, then remove this beacon"
)]
pub struct Cli {
    /// The system's root: the config is read and the beacon's files removed under it
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// The config file [default: ROOT/etc/ferry/beacon.conf]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Keep trying this long, then give up until the next boot (1s to 1d; 90s, 10m)
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = give_up)]
    give_up_after: Duration,
}

fn give_up(s: &str) -> Result<Duration, String> {
    let d = ferry_client::parse_duration(s)?;
    if d < Duration::from_secs(1) || d > MAX_GIVE_UP {
        return Err(format!("{s} is outside 1s..1d"));
    }
    Ok(d)
}

impl Cli {
    pub fn settings(&self) -> Settings {
        Settings {
            config: self
                .config
                .clone()
                .unwrap_or_else(|| self.root.join(ferry_fixup::linux::beacon::CONFIG)),
            root: self.root.clone(),
            give_up_after: self.give_up_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_bounded() {
        assert_eq!(give_up("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(give_up("2s"), Ok(Duration::from_secs(2)));
        assert!(give_up("0s").is_err());
        assert!(give_up("2d").is_err());
        assert!(give_up("soon").is_err());
    }

    #[test]
    fn root_moves_the_config() {
        let cli = Cli::parse_from(["beacon", "--root", "/mnt/t"]);
        assert_eq!(
            cli.settings().config,
            PathBuf::from("/mnt/t/etc/ferry/beacon.conf")
        );
        let cli = Cli::parse_from(["beacon"]);
        assert_eq!(
            cli.settings().config,
            PathBuf::from("/etc/ferry/beacon.conf")
        );
        assert_eq!(cli.settings().give_up_after, Duration::from_secs(600));
    }

    #[test]
    fn every_flag_and_subcommand_has_help_text() {
        use clap::CommandFactory;
        ferry_test_support::cli::assert_documented(super::Cli::command());
    }
}
