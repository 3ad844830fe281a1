//! What a fix-up changes (or, in a dry run, would change), as data: a file edit, a note for the
//! operator, or a command the restored system must run itself. Callers match on the kind; the
//! human text is made only by `Display`, at the edge. `--json` prints the serde form, tagged by
//! `kind` (`edit`, `note`, `guest_command`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What a command run in the restored system is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestTask {
    /// Rebuild the initramfs so that it holds the new hardware's drivers.
    Initramfs,
    /// Regenerate the boot loader's configuration from its defaults (`grub-mkconfig`).
    BootConfig,
    /// Install the BIOS boot loader on the boot disk (`grub-install --target=i386-pc`).
    BiosBootLoader,
}

impl fmt::Display for GuestTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestTask::Initramfs => "rebuild the initramfs",
            GuestTask::BootConfig => "regenerate the boot loader configuration",
            GuestTask::BiosBootLoader => "install the BIOS boot loader",
        })
    }
}

/// One change a fix-up makes (or, in a dry run, would make).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A file written, created or removed, or a registry value set; `file` is the file or
    /// the hive, `what` says which part.
    Edit {
        file: PathBuf,
        what: String,
        before: Option<String>,
        after: Option<String>,
    },
    /// Something the operator must know or do that the fix-up did not change; `file` is the
    /// file it is about, when there is one.
    Note { file: Option<PathBuf>, text: String },
    /// A command to run inside the restored system (a chroot) after the edits, in order.
    GuestCommand { argv: Vec<String>, why: GuestTask },
}

impl Change {
    pub fn edit(
        file: impl Into<PathBuf>,
        what: impl Into<String>,
        before: Option<String>,
        after: Option<String>,
    ) -> Change {
        Change::Edit {
            file: file.into(),
            what: what.into(),
            before,
            after,
        }
    }

    pub fn note(file: Option<&Path>, text: impl Into<String>) -> Change {
        Change::Note {
            file: file.map(Path::to_owned),
            text: text.into(),
        }
    }

    /// The file an edit or a note is about.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Change::Edit { file, .. } => Some(file),
            Change::Note { file, .. } => file.as_deref(),
            Change::GuestCommand { .. } => None,
        }
    }
}

/// The human line: `file: what: before -> after`, `[file: ]note: text`, `run in chroot: argv`.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = self.file().filter(|p| !p.as_os_str().is_empty()) {
            write!(f, "{}: ", file.display())?;
        }
        match self {
            Change::Edit {
                what,
                before,
                after,
                ..
            } => {
                write!(f, "{what}")?;
                match (before, after) {
                    (Some(b), Some(a)) => write!(f, ": {b} -> {a}"),
                    (None, Some(a)) => write!(f, ": {a}"),
                    (Some(b), None) => write!(f, " (was {b})"),
                    (None, None) => Ok(()),
                }
            }
            Change::Note { text, .. } => write!(f, "note: {text}"),
            Change::GuestCommand { argv, .. } => write!(f, "run in chroot: {}", argv.join(" ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_keeps_the_human_text() {
        let cases = [
            (
                Change::edit(
                    "etc/fstab",
                    "device names",
                    Some("a".into()),
                    Some("b".into()),
                ),
                "etc/fstab: device names: a -> b",
            ),
            (
                Change::edit("x", "removed", Some("present".into()), None),
                "x: removed (was present)",
            ),
            (
                Change::edit("y", "create key A", None, None),
                "y: create key A",
            ),
            (Change::note(None, "check eth0"), "note: check eth0"),
            (
                Change::note(Some(Path::new("SYSTEM")), "guessed"),
                "SYSTEM: note: guessed",
            ),
            (
                Change::GuestCommand {
                    argv: vec!["update-initramfs".into(), "-u".into()],
                    why: GuestTask::Initramfs,
                },
                "run in chroot: update-initramfs -u",
            ),
        ];
        for (c, want) in cases {
            assert_eq!(c.to_string(), want);
        }
    }
}
