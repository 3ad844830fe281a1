//! What a fix-up changes (or, in a dry run, would change), as data: a file edit, a note for the
//! operator, or a command the restored system must run itself. Callers match on the kind; the
//! human text is made only by `Display`, at the edge. `--json` prints the serde form, tagged by
//! `kind` (`edit`, `note`, `guest_command`, `beacon`).

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
    /// The first-boot beacon installed: its program, its one-shot unit enabled by `link`, and
    /// its config (0600) holding the one-time credential of `job` (never shown).
    Beacon {
        unit: PathBuf,
        link: PathBuf,
        program: PathBuf,
        config: PathBuf,
        appliance: String,
        job: String,
    },
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
            Change::Beacon { unit, .. } => Some(unit),
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
            Change::Beacon {
                link,
                program,
                config,
                appliance,
                job,
                ..
            } => write!(
                f,
                "install the first-boot beacon of job {job} (reports to {appliance}): enabled by \
                 {}, program {}, credential in {} (0600)",
                link.display(),
                program.display(),
                config.display()
            ),
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
            (
                Change::Beacon {
                    unit: "etc/systemd/system/ferry-beacon.service".into(),
                    link: "etc/systemd/system/multi-user.target.wants/ferry-beacon.service".into(),
                    program: "usr/local/lib/ferry/beacon".into(),
                    config: "etc/ferry/beacon.conf".into(),
                    appliance: "https://10.0.2.2:8443".into(),
                    job: "job-00aa".into(),
                },
                "etc/systemd/system/ferry-beacon.service: install the first-boot beacon of job \
                 job-00aa (reports to https://10.0.2.2:8443): enabled by \
                 etc/systemd/system/multi-user.target.wants/ferry-beacon.service, program \
                 usr/local/lib/ferry/beacon, credential in etc/ferry/beacon.conf (0600)",
            ),
        ];
        for (c, want) in cases {
            assert_eq!(c.to_string(), want);
        }
    }
}
