//! Logging of the host binaries (`appliance`, `backup-agent`, `restore-agent` off PID 1): one
//! line per event on stderr, filtered by `RUST_LOG` (default: info), as plain text or, with
//! `FERRY_LOG_FORMAT=json`, one JSON object per line for log collectors. Colour only when
//! stderr is a terminal and `NO_COLOR` is unset: the journal and log files get plain lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// `FERRY_LOG_FORMAT`'s value: `text` (or unset) or `json`; anything else is an error that
/// names the variable.
pub fn format_from(value: Option<&str>) -> Result<Format, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(Format::Text),
        Some(v) if v.eq_ignore_ascii_case("text") => Ok(Format::Text),
        Some(v) if v.eq_ignore_ascii_case("json") => Ok(Format::Json),
        Some(v) => Err(format!(
            "FERRY_LOG_FORMAT={v:?} is not a log format: use text or json"
        )),
    }
}

/// Installs the subscriber (once; later calls do nothing). `with_target`: prefix lines with the
/// module that logged (useful in a server's log, noise in a CLI's).
pub fn init(with_target: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match format_from(std::env::var("FERRY_LOG_FORMAT").ok().as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: {e}; logging as text");
            Format::Text
        }
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(with_target);
    let _ = match format {
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        Format::Text => builder.with_ansi(ansi).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_variable_is_checked() {
        assert_eq!(format_from(None), Ok(Format::Text));
        assert_eq!(format_from(Some("JSON")), Ok(Format::Json));
        assert_eq!(format_from(Some("text")), Ok(Format::Text));
        assert!(format_from(Some("yaml"))
            .unwrap_err()
            .contains("FERRY_LOG_FORMAT"));
    }
}
