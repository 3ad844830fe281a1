//! Names that become path components and URL segments: machines, disks, snapshots, sessions,
//! agents and jobs.

use crate::FormatError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Machine,
    Disk,
    Snapshot,
    Session,
    Agent,
    Job,
}

impl NameKind {
    fn label(self) -> &'static str {
        match self {
            NameKind::Machine => "machine name",
            NameKind::Disk => "disk name",
            NameKind::Snapshot => "snapshot id",
            NameKind::Session => "session id",
            NameKind::Agent => "agent id",
            NameKind::Job => "job id",
        }
    }
}

/// 1–64 characters of `[A-Za-z0-9._-]`, starting with a letter or digit: safe as a file name and
/// in a URL path without escaping.
pub fn check_name(kind: NameKind, name: &str) -> Result<(), FormatError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(FormatError::Name {
            kind: kind.label(),
            name: name.chars().take(80).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_path_safe() {
        for good in ["web01", "sda", "db.example.com", "a-b_c"] {
            assert!(check_name(NameKind::Machine, good).is_ok(), "{good}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a b", "-x", &"x".repeat(65)] {
            assert!(check_name(NameKind::Disk, bad).is_err(), "{bad}");
        }
    }
}
