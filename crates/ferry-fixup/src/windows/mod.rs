//! Windows fix-up: make a restored Windows boot on virtio (KVM) hardware.
//!
//! Input: the mounted Windows volume (`root`), a virtio-win-shaped driver directory
//! (`<driver>/<os>/<arch>/{x.inf,x.sys,x.cat}`, e.g. `viostor/2k19/amd64`), options.
//! Steps, each a named function: refuse a hibernated volume; read the current control set
//! (SYSTEM\Select\Current) and the Windows version (SOFTWARE, or a guess from SYSTEM);
//! pick each driver's OS folder; parse its INF; plan the file copies and the registry
//! edits (see [`registry`]); then [`apply`] copies the drivers first and writes SOFTWARE,
//! then SYSTEM — the boot-critical bytes — last, each atomically with a backup.

pub mod facts;
pub mod inf;
pub mod registry;
pub mod version;

use crate::fsutil::{self, ci_resolve, ci_target};
use crate::hive::{Hive, RegValue};
use crate::{Change, FixupError};
use registry::{DriverKind, HiveEdit};
use std::path::{Path, PathBuf};
use version::WindowsVersion;

pub const SYSTEM_HIVE: &str = "Windows/System32/config/SYSTEM";
pub const SOFTWARE_HIVE: &str = "Windows/System32/config/SOFTWARE";
pub const SYSTEM_DRIVERS: &str = "Windows/System32/drivers";
/// Where the whole driver packages go; DevicePath gets `%SystemRoot%\Drivers\VirtIO`.
pub const VIRTIO_STORE: &str = "Windows/Drivers/VirtIO";
/// Driver folders of a virtio-win tree that are injected, in this order: viostor and vioscsi
/// (boot-start storage), NetKVM (network), Balloon (class System: only copied, into
/// System32\drivers and the store, for PnP to bind on the first boot). `image-builder
/// --virtio-win` carries exactly these folders into the rescue image.
pub const DRIVER_NAMES: &[&str] = &["viostor", "vioscsi", "NetKVM", "Balloon"];
/// Suffix of a driver file that was replaced.
pub const OLD_SUFFIX: &str = ".ferry-old";
/// Suffix of the untouched copy of an edited hive.
pub const HIVE_BACKUP_SUFFIX: &str = ".ferry-orig";

#[derive(Debug, Clone, Default)]
pub struct WindowsOptions {
    /// Edit even a hibernated volume (its resume would discard the edits).
    pub force: bool,
    /// Leave the old hypervisor's tools services as they are.
    pub keep_old_tools: bool,
}

/// A driver chosen for injection.
#[derive(Debug, Clone)]
pub struct InjectedDriver {
    pub inf: inf::InfDriver,
    pub kind: DriverKind,
    /// e.g. "2k19"
    pub os_folder: String,
    pub source_dir: PathBuf,
}

/// Everything [`apply`] will do, computed without writing anything.
#[derive(Debug)]
pub struct WindowsPlan {
    pub version: WindowsVersion,
    pub control_set: String,
    pub drivers: Vec<InjectedDriver>,
    pub changes: Vec<Change>,
    pub notes: Vec<String>,
    copies: Vec<(PathBuf, PathBuf)>,
    /// New hive contents, in write order (SYSTEM last).
    hives: Vec<(PathBuf, Vec<u8>)>,
}

/// Refuses a volume whose hiberfil.sys holds a hibernation image.
pub fn check_hibernation(root: &Path, force: bool) -> Result<Option<String>, FixupError> {
    let Some(signature) = facts::hibernation_signature(root)? else {
        return Ok(None);
    };
    let path = ci_resolve(root, "hiberfil.sys").unwrap_or_else(|| root.join("hiberfil.sys"));
    if force {
        return Ok(Some(format!(
            "hiberfil.sys holds a hibernation image ({signature:?}); edited anyway (force)"
        )));
    }
    Err(FixupError::Hibernated { path, signature })
}

fn load_hive(path: &Path) -> Result<Hive, FixupError> {
    Hive::from_bytes(fsutil::read(path)?).map_err(|source| FixupError::Hive {
        path: path.to_owned(),
        source,
    })
}

/// `ControlSet00N` from SYSTEM\Select\Current.
pub fn current_control_set(h: &Hive) -> Result<String, crate::hive::HiveError> {
    let n = h
        .get("Select", "Current")?
        .and_then(|v| v.as_dword())
        .unwrap_or(1);
    let name = format!("ControlSet{n:03}");
    match h.open(&name)? {
        Some(_) => Ok(name),
        None => Err(crate::hive::HiveError {
            offset: 0,
            what: format!("Select\\Current names {name}, which does not exist"),
        }),
    }
}

/// The virtio-win architecture folder for this Windows.
fn arch_folder(h: &Hive, ccs: &str) -> &'static str {
    let env = format!("{ccs}\\Control\\Session Manager\\Environment");
    match h.get(&env, "PROCESSOR_ARCHITECTURE").ok().flatten() {
        Some(RegValue::Sz(a)) | Some(RegValue::ExpandSz(a)) if a.eq_ignore_ascii_case("x86") => {
            "x86"
        }
        Some(RegValue::Sz(a)) | Some(RegValue::ExpandSz(a)) if a.eq_ignore_ascii_case("ARM64") => {
            "ARM64"
        }
        _ => "amd64",
    }
}

/// For each driver present in the package, the best OS folder that exists.
fn find_drivers(
    drivers: &Path,
    version: &WindowsVersion,
    arch: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<InjectedDriver>, FixupError> {
    let candidates = version::folder_candidates(version);
    let mut out = Vec::new();
    for name in DRIVER_NAMES {
        let Some(dir) = ci_resolve(drivers, name) else {
            continue;
        };
        let Some((os, src)) = candidates
            .iter()
            .find_map(|os| Some((*os, ci_resolve(&dir, &format!("{os}/{arch}"))?)))
        else {
            notes.push(format!(
                "no {name} folder for {version} ({arch}) in {}",
                dir.display()
            ));
            continue;
        };
        if Some(&os) != candidates.first() {
            notes.push(format!(
                "{name}: no {} folder, using the older {os}",
                candidates.first().unwrap_or(&"?")
            ));
        }
        let inf_path = std::fs::read_dir(&src)
            .map_err(FixupError::io("list", &src))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("inf")))
            .ok_or_else(|| FixupError::Missing {
                what: format!("{name} INF"),
                detail: format!("no .inf in {}", src.display()),
            })?;
        let inf = inf::driver_from_bytes(&fsutil::read(&inf_path)?).map_err(|source| {
            FixupError::Inf {
                path: inf_path.clone(),
                source,
            }
        })?;
        let kind = DriverKind::of(&inf);
        out.push(InjectedDriver {
            inf,
            kind,
            os_folder: os.to_owned(),
            source_dir: src,
        });
    }
    if !out.iter().any(|d| d.kind == DriverKind::Storage) {
        return Err(FixupError::Missing {
            what: "a virtio storage driver".into(),
            detail: format!(
                "neither viostor nor vioscsi in {} fits {version}; the guest would not boot",
                drivers.display()
            ),
        });
    }
    Ok(out)
}

fn same_contents(a: &Path, b: &Path) -> bool {
    matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
}

/// The driver files to copy: the .sys into System32\drivers, the package into the store.
fn plan_copies(
    root: &Path,
    d: &InjectedDriver,
    changes: &mut Vec<Change>,
) -> Result<Vec<(PathBuf, PathBuf)>, FixupError> {
    let sys = ci_resolve(&d.source_dir, &d.inf.binary).ok_or_else(|| FixupError::Missing {
        what: format!("{} driver binary", d.inf.service),
        detail: format!("{} is not in {}", d.inf.binary, d.source_dir.display()),
    })?;
    let mut copies = vec![(
        sys,
        ci_target(
            root,
            &format!("{SYSTEM_DRIVERS}/{}", d.inf.binary.to_lowercase()),
        ),
    )];
    let entries =
        std::fs::read_dir(&d.source_dir).map_err(FixupError::io("list", &d.source_dir))?;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().to_lowercase();
        if [".inf", ".cat", ".sys"].iter().any(|x| name.ends_with(x)) {
            copies.push((e.path(), ci_target(root, &format!("{VIRTIO_STORE}/{name}"))));
        }
    }
    copies.retain(|(from, to)| !same_contents(from, to));
    for (from, to) in &copies {
        let before = to
            .exists()
            .then(|| format!("existing file, kept as {}{OLD_SUFFIX}", to.display()));
        changes.push(Change::edit(
            to,
            "copy driver file",
            before,
            Some(from.display().to_string()),
        ));
    }
    Ok(copies)
}

/// Plans the fix-up of the Windows volume at `root` with drivers from `drivers`.
pub fn plan(root: &Path, drivers: &Path, opts: &WindowsOptions) -> Result<WindowsPlan, FixupError> {
    let mut notes: Vec<String> = check_hibernation(root, opts.force)?.into_iter().collect();
    let system_path = ci_resolve(root, SYSTEM_HIVE).ok_or_else(|| FixupError::Missing {
        what: "the SYSTEM hive".into(),
        detail: format!("no {SYSTEM_HIVE} under {}", root.display()),
    })?;
    let mut sys = HiveEdit::new(load_hive(&system_path)?, system_path.clone());
    let ccs = current_control_set(&sys.hive).map_err(sys.err())?;
    let mut soft = match ci_resolve(root, SOFTWARE_HIVE) {
        Some(p) => Some(HiveEdit::new(load_hive(&p)?, p)),
        None => None,
    };
    let from_soft = match &soft {
        Some(s) => version::from_software(&s.hive).map_err(s.err())?,
        None => None,
    };
    let version = match from_soft {
        Some(v) => v,
        None => {
            let v = version::guess_from_system(&sys.hive, &ccs).map_err(sys.err())?;
            notes.push(format!(
                "no Windows version in a SOFTWARE hive; guessed {v} from SYSTEM"
            ));
            v
        }
    };
    for (path, hive) in [
        (Some(&system_path), Some(&sys.hive)),
        (
            soft.as_ref().map(|s| &s.file),
            soft.as_ref().map(|s| &s.hive),
        ),
    ] {
        if let (Some(p), Some(h)) = (path, hive) {
            if h.was_dirty() {
                notes.push(format!(
                    "{} was not cleanly closed; changes still in its .LOG files are not replayed",
                    p.display()
                ));
            }
        }
    }
    let arch = arch_folder(&sys.hive, &ccs);
    let drivers = find_drivers(drivers, &version, arch, &mut notes)?;

    let mut changes = Vec::new();
    let mut copies = Vec::new();
    let use_ddb = sys.exists("DriverDatabase")?;
    for d in &drivers {
        copies.extend(plan_copies(root, d, &mut changes)?);
        registry::add_service(&mut sys, &ccs, &d.inf, d.kind)?;
        let guid = match d.kind {
            DriverKind::Storage => registry::SCSI_CLASS_GUID,
            DriverKind::Net => registry::NET_CLASS_GUID,
            DriverKind::Other => continue,
        };
        if use_ddb {
            registry::add_ddb(&mut sys, &d.inf, guid)?;
        } else {
            registry::add_cddb(&mut sys, &ccs, &d.inf, guid)?;
        }
    }
    if !opts.keep_old_tools {
        notes.extend(registry::disable_old_tools(&mut sys, &ccs)?);
    }
    match &mut soft {
        Some(s) => registry::add_device_path(s)?,
        None => notes.push("no SOFTWARE hive: DevicePath not extended; PnP will not find the copied INFs by itself".into()),
    }

    let mut hives = Vec::new();
    if let Some(s) = soft {
        changes.extend(s.changes.iter().cloned());
        if !s.changes.is_empty() {
            hives.push((s.file.clone(), s.hive.to_bytes()));
        }
    }
    changes.extend(sys.changes.iter().cloned());
    if !sys.changes.is_empty() {
        hives.push((system_path.clone(), sys.hive.to_bytes()));
    }
    for n in &notes {
        tracing::info!(note = %n, "windows fix-up");
        changes.push(Change::note(Some(&system_path), n));
    }
    Ok(WindowsPlan {
        version,
        control_set: ccs,
        drivers,
        changes,
        notes,
        copies,
        hives,
    })
}

/// Carries out a plan: driver files first (an existing file is kept as `.ferry-old`),
/// then SOFTWARE, then SYSTEM, each hive backed up once as `.ferry-orig` and replaced
/// atomically.
pub fn apply(plan: &WindowsPlan) -> Result<(), FixupError> {
    for (from, to) in &plan.copies {
        let data = fsutil::read(from)?;
        if to.exists() {
            let mut name = to.file_name().unwrap_or_default().to_os_string();
            name.push(OLD_SUFFIX);
            let old = to.with_file_name(name);
            if !old.exists() {
                std::fs::rename(to, &old).map_err(FixupError::io("keep old driver file", to))?;
            }
        }
        fsutil::write_atomic(to, &data)?;
    }
    for (path, bytes) in &plan.hives {
        fsutil::backup_once(path, HIVE_BACKUP_SUFFIX)?;
        fsutil::write_atomic(path, bytes)?;
    }
    Ok(())
}
