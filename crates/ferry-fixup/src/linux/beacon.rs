//! The first-boot beacon step (docs/migration.md, "Cutover" step 2): install the beacon program,
//! its one-shot systemd unit (enabled by the wants link `systemctl enable` would make, so no
//! systemctl runs in a chroot) and its config with the one-time credential (0600).
//!
//! Only into a systemd system; otherwise the plan gets a note saying why nothing was installed.
//! Every path is checked component by component: a symlinked directory in the target (an
//! absolute link points into the rescue system) is never written through.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Change, FixupError};

/// Where the rescue image carries the beacon program (image-builder, initramfs/rootfs.txt).
pub const RESCUE_PROGRAM: &str = "usr/lib/ferry/beacon";
/// Where the beacon program goes in the restored system.
pub const BINARY: &str = "usr/local/lib/ferry/beacon";
/// Its unit.
pub const UNIT: &str = "etc/systemd/system/ferry-beacon.service";
/// The link that enables it.
pub const WANTS_LINK: &str = "etc/systemd/system/multi-user.target.wants/ferry-beacon.service";
/// The link's target, as `systemctl enable` writes it.
pub const WANTS_TARGET: &str = "/etc/systemd/system/ferry-beacon.service";
/// Its config: appliance, CA, job, one-time credential (mode 0600).
pub const CONFIG: &str = "etc/ferry/beacon.conf";
/// systemd's own binary; one of them marks a systemd system.
pub const SYSTEMD: [&str; 2] = ["usr/lib/systemd/systemd", "lib/systemd/systemd"];
/// How long the beacon keeps trying in one boot; the unit's start timeout is a minute more.
pub const GIVE_UP_AFTER_SECS: u64 = 600;

/// The unit. It never holds up the boot: no target waits for it (DefaultDependencies=no drops
/// the After= a target adds to what it wants), it is bounded by TimeoutStartSec, and it is
/// wanted, not required, by multi-user.target.
pub fn unit_text() -> String {
    format!(
        "# Installed by Ferry's fix-up: report this system's first boot to the appliance once,\n\
         # then remove this unit, its link, the program and its one-time credential.\n\
         [Unit]\n\
         Description=Ferry first-boot beacon\n\
         Wants=network-online.target\n\
         After=network-online.target basic.target\n\
         DefaultDependencies=no\n\
         Conflicts=shutdown.target\n\
         Before=shutdown.target\n\
         ConditionPathExists=/{CONFIG}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart=/{BINARY} --give-up-after {GIVE_UP_AFTER_SECS}s\n\
         TimeoutStartSec={}s\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        GIVE_UP_AFTER_SECS + 60
    )
}

/// What the caller gives the fix-up to install: the program (a file of the rescue system) and
/// the config text (it holds the credential: never printed or serialized).
#[derive(Clone)]
pub struct BeaconInstall {
    pub program: PathBuf,
    pub config_text: String,
    /// For the plan's text: the appliance URL and the job.
    pub appliance: String,
    pub job: String,
}

impl std::fmt::Debug for BeaconInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeaconInstall")
            .field("program", &self.program)
            .field("appliance", &self.appliance)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// The planned install (what `apply` writes).
#[derive(Clone, Serialize)]
pub struct BeaconPlan {
    pub program: PathBuf,
    pub appliance: String,
    pub job: String,
    #[serde(skip)]
    config_text: String,
}

impl std::fmt::Debug for BeaconPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeaconPlan")
            .field("program", &self.program)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl BeaconPlan {
    pub fn change(&self) -> Change {
        Change::Beacon {
            unit: UNIT.into(),
            link: WANTS_LINK.into(),
            program: BINARY.into(),
            config: CONFIG.into(),
            appliance: self.appliance.clone(),
            job: self.job.clone(),
        }
    }
}

/// Plans the install, or says in a note why there is none.
pub fn plan(root: &Path, b: &BeaconInstall) -> Result<BeaconPlan, String> {
    let not = "the first-boot beacon is not installed";
    let systemd = SYSTEMD
        .iter()
        .any(|rel| no_symlink_dirs(root, rel) && root.join(rel).is_file());
    if !systemd {
        return Err(format!(
            "{not}: the restored system does not use systemd (neither /usr/lib/systemd/systemd \
             nor /lib/systemd/systemd); confirm its first boot by hand"
        ));
    }
    if !b.program.is_file() {
        return Err(format!(
            "{not}: this rescue system has no beacon program at {} (build the image with it)",
            b.program.display()
        ));
    }
    for rel in [BINARY, UNIT, WANTS_LINK, CONFIG] {
        if !no_symlink_dirs(root, rel) {
            return Err(format!(
                "{not}: a directory on the way to /{rel} is a symlink; Ferry does not write through it"
            ));
        }
    }
    Ok(BeaconPlan {
        program: b.program.clone(),
        appliance: b.appliance.clone(),
        job: b.job.clone(),
        config_text: b.config_text.clone(),
    })
}

/// True when no existing directory on the way to `rel` (below `root`) is a symlink.
pub(crate) fn no_symlink_dirs(root: &Path, rel: &str) -> bool {
    let mut cur = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        cur.push(part);
        match cur.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => return false,
            Ok(_) => {}
            Err(_) => return true,
        }
    }
    true
}

/// Writes the program (0755), the unit (0644), the config (0600, never readable by others even
/// for a moment) and the wants link. A second run replaces them.
pub fn apply(root: &Path, p: &BeaconPlan) -> Result<(), FixupError> {
    let program = std::fs::read(&p.program).map_err(FixupError::io("read", &p.program))?;
    write_file(&root.join(BINARY), &program, 0o755)?;
    write_file(&root.join(UNIT), unit_text().as_bytes(), 0o644)?;
    write_file(&root.join(CONFIG), p.config_text.as_bytes(), 0o600)?;
    let link = root.join(WANTS_LINK);
    mkdirs(&link)?;
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).map_err(FixupError::io("replace", &link))?;
    }
    std::os::unix::fs::symlink(WANTS_TARGET, &link).map_err(FixupError::io("create link", &link))
}

fn mkdirs(path: &Path) -> Result<(), FixupError> {
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).map_err(FixupError::io("create directory", dir)),
        None => Ok(()),
    }
}

/// Write a temp file created with `mode`, fsync, rename over `path`.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), FixupError> {
    mkdirs(path)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".ferry-tmp");
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(FixupError::io("create", &tmp))?;
    f.write_all(data).map_err(FixupError::io("write", &tmp))?;
    // The umask may have taken bits away from an executable.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(FixupError::io("set permissions of", &tmp))?;
    f.sync_all().map_err(FixupError::io("sync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(FixupError::io("rename into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_never_holds_up_the_boot() {
        let u = unit_text();
        for line in [
            "Type=oneshot",
            "Wants=network-online.target",
            "After=network-online.target basic.target",
            "DefaultDependencies=no",
            "TimeoutStartSec=660s",
            "ExecStart=/usr/local/lib/ferry/beacon --give-up-after 600s",
            "WantedBy=multi-user.target",
            "ConditionPathExists=/etc/ferry/beacon.conf",
        ] {
            assert!(u.lines().any(|l| l == line), "missing {line:?} in\n{u}");
        }
        for bad in [
            "RequiredBy",
            "Requires=",
            "Before=multi-user",
            "Type=simple",
        ] {
            assert!(!u.contains(bad), "{bad} in\n{u}");
        }
        assert_eq!(format!("/{UNIT}"), WANTS_TARGET);
    }

    fn install(dir: &Path) -> BeaconInstall {
        let program = dir.join("beacon-prog");
        std::fs::write(&program, b"\x7fELF").unwrap();
        BeaconInstall {
            program,
            config_text: "{\"secret\":1}\n".into(),
            appliance: "https://a:1".into(),
            job: "job-00aa".into(),
        }
    }

    #[test]
    fn installs_only_into_a_systemd_system_and_never_through_a_symlink() {
        let w = tempfile::tempdir().unwrap();
        let root = w.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let b = install(w.path());
        let e = plan(&root, &b).unwrap_err();
        assert!(e.contains("does not use systemd"), "{e}");

        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd"), b"").unwrap();
        let missing = BeaconInstall {
            program: w.path().join("nope"),
            ..b.clone()
        };
        assert!(plan(&root, &missing)
            .unwrap_err()
            .contains("no beacon program"));

        std::fs::create_dir_all(w.path().join("host-etc")).unwrap();
        std::os::unix::fs::symlink(w.path().join("host-etc"), root.join("etc")).unwrap();
        assert!(plan(&root, &b).unwrap_err().contains("symlink"));
        std::fs::remove_file(root.join("etc")).unwrap();

        let p = plan(&root, &b).unwrap();
        assert!(!format!("{p:?}").contains("secret"));
        apply(&root, &p).unwrap();
        apply(&root, &p).unwrap(); // a second run replaces, never fails on what is there
        let mode = |rel: &str| {
            std::fs::metadata(root.join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(BINARY), 0o755);
        assert_eq!(mode(UNIT), 0o644);
        assert_eq!(mode(CONFIG), 0o600);
        assert_eq!(
            std::fs::read_link(root.join(WANTS_LINK)).unwrap(),
            Path::new(WANTS_TARGET)
        );
        assert_eq!(
            std::fs::read_to_string(root.join(UNIT)).unwrap(),
            unit_text()
        );
    }
}
