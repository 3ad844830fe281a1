//! Build-time tasks of the workspace. `assets DIR` renders, from the clap definitions the
//! binaries parse with (so they cannot drift), what a package ships beside them:
//!
//! ```text
//! DIR/man/NAME.1, DIR/man/NAME-SUB.1, ...        one page per command and visible subcommand
//! DIR/completions/bash/NAME                      /usr/share/bash-completion/completions/NAME
//! DIR/completions/zsh/_NAME                      /usr/share/zsh/vendor-completions/_NAME
//! DIR/completions/fish/NAME.fish                 /usr/share/fish/vendor_completions.d/NAME.fish
//! ```
//!
//! Man pages carry no date, so the output is a function of the sources.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// The shipped binaries and their command lines.
pub fn commands() -> Vec<clap::Command> {
    vec![
        appliance::cli::Cli::command(),
        backup_agent::cli::Cli::command(),
        restore_agent::cli::Cli::command(),
        image_builder::cli::Cli::command(),
    ]
}

/// The shells completions are written for, and each file's name for binary `name`.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash"),
    (Shell::Zsh, "zsh"),
    (Shell::Fish, "fish"),
];

pub fn completion_path(dir: &Path, shell: Shell, name: &str) -> PathBuf {
    let d = dir.join("completions");
    match shell {
        Shell::Zsh => d.join("zsh").join(format!("_{name}")),
        Shell::Fish => d.join("fish").join(format!("{name}.fish")),
        _ => d.join("bash").join(name),
    }
}

/// Write the man pages and completions of every binary under `dir`; returns the files written.
pub fn assets(dir: &Path) -> Result<Vec<PathBuf>> {
    let man = dir.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("create {}", man.display()))?;
    let mut written = Vec::new();
    for cmd in commands() {
        let name = cmd.get_name().to_string();
        written.extend(man_pages(cmd.clone(), &man)?);
        for (shell, _) in SHELLS {
            let path = completion_path(dir, shell, &name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
            }
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
            std::fs::write(&path, buf).with_context(|| format!("write {}", path.display()))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// `NAME.1` and one page per visible subcommand, `NAME-SUB[-SUB].1` (clap_mangen's names).
fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    page(&cmd, dir, &mut written)?;
    Ok(written)
}

fn page(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let path = clap_mangen::Man::new(cmd.clone())
        .generate_to(dir)
        .with_context(|| {
            format!(
                "write the man page of {} into {}",
                cmd.get_name(),
                dir.display()
            )
        })?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub, dir, written)?;
    }
    Ok(())
}
