//! The source agent on a migrated system (docs/migration.md, "Cutover"). A live migration's
//! target is a copy of the running source: it has the source agent's unit enabled and the
//! source's credential. Left alone it would boot, dial the appliance as the source machine and
//! sync its own disks into the source's snapshots, and two machines would hold one credential.
//! So a cutover's fix-up disables the unit (removes its `.wants` links, as `systemctl disable`
//! would) and deletes the credential (not kept aside: it is a secret). The config stays; a note
//! says how to enroll the migrated server as a machine of its own.
//!
//! Paths are checked like the beacon's: nothing is removed through a symlinked directory.

use std::path::{Component, Path, PathBuf};

use super::beacon::no_symlink_dirs;
use super::{FileAction, FileEdit};

/// The source agent's unit (packaging/systemd).
pub const UNIT: &str = "ferry-backup-agent.service";
/// Its config, which may move the state directory.
pub const CONFIG: &str = "etc/ferry/agent.toml";
/// The config's earlier name, which the agent still reads when [`CONFIG`] does not exist.
pub const LEGACY_CONFIG: &str = "etc/ferry/backup-agent.toml";
/// The state directory when the config does not set `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferry";
/// The credential file in the state directory (backup-agent's `service::state`).
pub const CREDENTIAL_FILE: &str = "source.cred";
/// Where units are enabled by the administrator.
const UNIT_DIR: &str = "etc/systemd/system";

/// The edits that retire the source agent under `root`, and the notes that go with them.
/// Nothing when the system has no source agent.
pub(super) fn plan(root: &Path) -> (Vec<FileEdit>, Vec<String>) {
    let mut edits = Vec::new();
    let mut notes = Vec::new();
    let why = "the source's agent: this system is its migrated copy";
    for rel in wants_links(root) {
        if let Ok(target) = std::fs::read_link(root.join(&rel)) {
            edits.push(FileEdit {
                path: rel,
                what: format!("disable {UNIT} ({why})"),
                action: FileAction::RemoveLink {
                    target: target.display().to_string(),
                },
            });
        }
    }
    // The file the agent reads: agent.toml, else its earlier name.
    let (config_rel, config) = match std::fs::read_to_string(root.join(CONFIG)) {
        Ok(c) => (CONFIG, Some(c)),
        Err(_) => (
            LEGACY_CONFIG,
            std::fs::read_to_string(root.join(LEGACY_CONFIG)).ok(),
        ),
    };
    let shown = if config.is_some() { config_rel } else { CONFIG };
    match credential_path(config.as_deref()) {
        Ok(rel) => {
            let file = root.join(&rel);
            let rel_str = rel.to_string_lossy();
            if !no_symlink_dirs(root, &rel_str) {
                notes.push(format!(
                    "/{rel_str}: a directory on the way is a symlink; the source's credential \
                     was not removed: delete it on the migrated system before its agent starts"
                ));
            } else if file.symlink_metadata().is_ok_and(|m| m.is_file()) {
                edits.push(FileEdit {
                    path: rel,
                    what: format!("delete the source's credential ({why})"),
                    action: FileAction::DeleteSecret,
                });
            }
        }
        Err(why) => notes.push(format!(
            "/{shown}: {why}; the source's credential was not looked for: delete it on the \
             migrated system before its agent starts"
        )),
    }
    if !edits.is_empty() || config.is_some() {
        notes.push(format!(
            "the source's agent ({UNIT}) is disabled on the migrated system and its credential \
             deleted; to back up the migrated server from now on, give it an enroll token of its \
             own (`appliance token create --role backup --machine NAME`), set it and that \
             machine name in /{shown} and run `systemctl enable --now {UNIT}`"
        ));
    }
    (edits, notes)
}

/// `etc/systemd/system/*.wants/ferry-backup-agent.service` that exist (links or not).
fn wants_links(root: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(root.join(UNIT_DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wants"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| Path::new(UNIT_DIR).join(e.file_name()).join(UNIT))
        .filter(|rel| root.join(rel).symlink_metadata().is_ok())
        .collect();
    out.sort();
    out
}

/// The credential's path relative to the root, from the config's `state_dir` (absolute, no
/// `..`) or the default.
fn credential_path(config: Option<&str>) -> Result<PathBuf, String> {
    let state_dir = match config {
        None => DEFAULT_STATE_DIR.to_string(),
        Some(text) => {
            let value: toml::Table = toml::from_str(text).map_err(|e| format!("not TOML: {e}"))?;
            match value.get("state_dir") {
                None => DEFAULT_STATE_DIR.to_string(),
                Some(toml::Value::String(s)) => s.clone(),
                Some(_) => return Err("state_dir is not a string".into()),
            }
        }
    };
    let path = Path::new(&state_dir);
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("state_dir {state_dir:?} names a parent directory"))
            }
        }
    }
    if !path.is_absolute() || rel.as_os_str().is_empty() {
        return Err(format!(
            "state_dir {state_dir:?} is not an absolute directory"
        ));
    }
    Ok(rel.join(CREDENTIAL_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_agent(config: Option<&str>, state: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let wants = r.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/etc/systemd/system/ferry-backup-agent.service",
            wants.join(UNIT),
        )
        .unwrap();
        std::fs::create_dir_all(r.join("etc/systemd/system/other.target.wants")).unwrap();
        if let Some(c) = config {
            std::fs::create_dir_all(r.join("etc/ferry")).unwrap();
            std::fs::write(r.join(CONFIG), c).unwrap();
        }
        let dir = r.join(state);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CREDENTIAL_FILE), "src-m.secret\n").unwrap();
        t
    }

    #[test]
    fn the_configs_earlier_name_still_moves_the_state_directory() {
        let t = root_with_agent(None, "srv/state");
        std::fs::create_dir_all(t.path().join("etc/ferry")).unwrap();
        std::fs::write(t.path().join(LEGACY_CONFIG), "state_dir = \"/srv/state\"\n").unwrap();
        let (edits, notes) = plan(t.path());
        assert!(
            edits
                .iter()
                .any(|e| e.path == Path::new("srv/state/source.cred")),
            "{edits:?}"
        );
        assert!(notes.iter().any(|n| n.contains(LEGACY_CONFIG)), "{notes:?}");
    }

    #[test]
    fn disables_the_unit_and_deletes_the_credential() {
        let t = root_with_agent(Some("appliance = \"https://a\"\n"), "var/lib/ferry");
        let (edits, notes) = plan(t.path());
        let paths: Vec<_> = edits
            .iter()
            .map(|e| e.path.to_string_lossy().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "etc/systemd/system/multi-user.target.wants/ferry-backup-agent.service",
                "var/lib/ferry/source.cred"
            ]
        );
        assert!(matches!(edits[0].action, FileAction::RemoveLink { .. }));
        assert_eq!(edits[1].action, FileAction::DeleteSecret);
        assert!(
            notes.iter().any(|n| n.contains("enroll token of its own")),
            "{notes:?}"
        );
    }

    #[test]
    fn follows_state_dir_and_refuses_odd_ones() {
        let t = root_with_agent(
            Some("state_dir = \"/srv/ferry-state\"\n"),
            "srv/ferry-state",
        );
        let (edits, _) = plan(t.path());
        assert!(edits
            .iter()
            .any(|e| e.path == Path::new("srv/ferry-state/source.cred")));
        for bad in [
            "state_dir = \"../x\"",
            "state_dir = \"/a/../../x\"",
            "state_dir = 3",
            "[",
        ] {
            assert!(credential_path(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            credential_path(None).unwrap(),
            Path::new("var/lib/ferry/source.cred")
        );
    }

    #[test]
    fn never_through_a_symlinked_directory() {
        let t = root_with_agent(None, "elsewhere/ferry");
        let r = t.path();
        std::fs::create_dir_all(r.join("var/lib")).unwrap();
        std::os::unix::fs::symlink(r.join("elsewhere/ferry"), r.join("var/lib/ferry")).unwrap();
        let (edits, notes) = plan(r);
        assert!(edits.iter().all(|e| e.action != FileAction::DeleteSecret));
        assert!(notes.iter().any(|n| n.contains("symlink")), "{notes:?}");
    }

    #[test]
    fn a_system_without_the_agent_gets_nothing() {
        let t = tempfile::tempdir().unwrap();
        let (edits, notes) = plan(t.path());
        assert!(edits.is_empty() && notes.is_empty());
    }
}
