//! The CLI help check every binary runs (docs/development.md): clap's own consistency check, then
//! every visible subcommand has an about line and every visible argument a help line, so the
//! `--help` output, the man pages and the completions describe everything they offer.

/// Panics with every subcommand and argument of `cmd` (hidden ones excepted) that has no help
/// text, by its path (`appliance jobs create --json`).
pub fn assert_documented(cmd: clap::Command) {
    cmd.clone().debug_assert();
    let missing = undocumented(cmd);
    assert!(
        missing.is_empty(),
        "without help text (add a doc comment):\n  {}",
        missing.join("\n  ")
    );
}

/// The paths of `cmd`'s visible subcommands and arguments that have no help text.
pub fn undocumented(mut cmd: clap::Command) -> Vec<String> {
    cmd.build();
    let mut missing = Vec::new();
    walk(&cmd, cmd.get_name(), &mut missing);
    missing
}

fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let builtin = matches!(arg.get_id().as_str(), "help" | "version");
        if arg.is_hide_set() || builtin {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            let name = match (arg.get_long(), arg.get_short()) {
                (Some(l), _) => format!("--{l}"),
                (None, Some(s)) => format!("-{s}"),
                (None, None) => format!("<{}>", arg.get_id()),
            };
            missing.push(format!("{path} {name}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            missing.push(sub_path.clone());
        }
        walk(sub, &sub_path, missing);
    }
}

#[cfg(test)]
mod tests {
    use super::{assert_documented, undocumented};

    #[test]
    fn finds_what_has_no_help_and_passes_what_has() {
        let documented = clap::Command::new("t")
            .about("a tool")
            .arg(
                clap::Arg::new("json")
                    .long("json")
                    .help("print JSON")
                    .action(clap::ArgAction::SetTrue),
            )
            .arg(clap::Arg::new("secret").long("secret").hide(true))
            .subcommand(clap::Command::new("go").about("go somewhere"));
        assert_documented(documented);
        let bare = clap::Command::new("t")
            .arg(
                clap::Arg::new("json")
                    .long("json")
                    .action(clap::ArgAction::SetTrue),
            )
            .subcommand(clap::Command::new("go").arg(clap::Arg::new("id")));
        assert_eq!(undocumented(bare), ["t --json", "t go", "t go <id>"]);
    }
}
