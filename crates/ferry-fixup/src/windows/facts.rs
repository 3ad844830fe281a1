//! What a backup records of a Windows volume (issue 13, item 4): its version from the SOFTWARE
//! hive (or guessed from SYSTEM), the firmware it was installed for, and whether its files
//! are consistent: a `hiberfil.sys` holding a hibernation image means Windows hibernated, or
//! shut down with Fast Startup (`HiberbootEnabled`), and left its kernel session and file
//! system state in that image, not on the volume.

use std::io::Read;
use std::path::Path;

use ferry_format::manifest::OsFacts;

use super::{current_control_set, load_hive, version, SOFTWARE_HIVE, SYSTEM_HIVE};
use crate::fsutil::ci_resolve;
use crate::FixupError;

/// The first four bytes of `hiberfil.sys` under `root` when it holds a hibernation image
/// (`hibr`, `HIBR`, `rstr`, `RSTR`; a cleared file starts with zeros or `wake`).
pub fn hibernation_signature(root: &Path) -> Result<Option<String>, FixupError> {
    let Some(path) = ci_resolve(root, "hiberfil.sys") else {
        return Ok(None);
    };
    let mut sig = [0u8; 4];
    let mut f = std::fs::File::open(&path).map_err(FixupError::io("open", &path))?;
    let n = f.read(&mut sig).map_err(FixupError::io("read", &path))?;
    let signature = String::from_utf8_lossy(&sig[..n]).into_owned();
    Ok(["hibr", "rstr"]
        .iter()
        .any(|s| signature.eq_ignore_ascii_case(s))
        .then_some(signature))
}

/// The facts of the Windows volume mounted at `root` (read only: nothing is written).
/// `volume` names it for the record (`vda2`).
pub fn facts(root: &Path, volume: &str) -> Result<OsFacts, FixupError> {
    let system_path = ci_resolve(root, SYSTEM_HIVE).ok_or_else(|| FixupError::Missing {
        what: "the SYSTEM hive".into(),
        detail: format!("no {SYSTEM_HIVE} under {}", root.display()),
    })?;
    let hive_err = |path: &Path| {
        let path = path.to_owned();
        move |source| FixupError::Hive { path, source }
    };
    let sys = load_hive(&system_path)?;
    let ccs = current_control_set(&sys).map_err(hive_err(&system_path))?;
    let from_soft = match ci_resolve(root, SOFTWARE_HIVE) {
        Some(p) => version::from_software(&load_hive(&p)?).map_err(hive_err(&p))?,
        None => None,
    };
    let v = match from_soft {
        Some(v) => v,
        None => version::guess_from_system(&sys, &ccs).map_err(hive_err(&system_path))?,
    };
    let dword = |key: &str, name: &str| -> Result<Option<u32>, FixupError> {
        Ok(sys
            .get(&format!("{ccs}\\{key}"), name)
            .map_err(hive_err(&system_path))?
            .and_then(|v| v.as_dword()))
    };
    let boot_mode = match dword("Control", "PEFirmwareType")? {
        Some(1) => Some("bios".to_owned()),
        Some(2) => Some("uefi".to_owned()),
        _ => None,
    };
    let fast_startup = dword("Control\\Session Manager\\Power", "HiberbootEnabled")? == Some(1);
    let hibernated = hibernation_signature(root)?.is_some();
    Ok(OsFacts {
        family: "windows".into(),
        distro: None,
        version: Some(v.to_string()),
        boot_mode,
        boot_loader: None,
        volume: Some(volume.to_owned()),
        hibernated: Some(hibernated),
        fast_startup: Some(fast_startup),
    })
}
