//! The UEFI removable-media fallback loader, `\EFI\BOOT\BOOTX64.EFI`: what firmware with
//! empty NVRAM (a new VM) boots. A system installed without `--removable` has only its
//! vendor directory (`EFI/debian`, `EFI/centos`, `EFI/Microsoft/Boot`); the fix-up copies
//! that directory's loader — shim when there is one, else GRUB, else Windows Boot Manager —
//! to `EFI/BOOT`, with its siblings (shim loads `grubx64.efi` from its own directory, a
//! signed GRUB reads `grub.cfg` from there too).

use std::path::{Path, PathBuf};

use crate::fsutil::ci_resolve;
use crate::{Change, FixupError};

/// The fallback loader's path on the ESP.
pub const FALLBACK: &str = "EFI/BOOT/BOOTX64.EFI";

/// One file to copy on the ESP, both paths relative to the ESP's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub from: PathBuf,
    pub to: PathBuf,
}

/// Loaders in order of preference: (directory glob, loader file).
const LOADERS: &[(&str, &str)] = &[
    ("*", "shimx64.efi"),
    ("*", "grubx64.efi"),
    ("Microsoft/Boot", "bootmgfw.efi"),
];

/// The copies that create the fallback loader on the ESP mounted at `esp`, or an empty list
/// when it already exists. Errors when there is no loader to copy.
pub fn plan(esp: &Path) -> Result<Vec<Copy>, FixupError> {
    if ci_resolve(esp, FALLBACK).is_some() {
        return Ok(Vec::new());
    }
    let efi = ci_resolve(esp, "EFI").ok_or_else(|| FixupError::Missing {
        what: "UEFI boot loader".into(),
        detail: format!(
            "{} has no EFI directory: install the boot loader (grub-install --removable)",
            esp.display()
        ),
    })?;
    let mut vendors: Vec<PathBuf> = std::fs::read_dir(&efi)
        .map_err(FixupError::io("list", &efi))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.eq_ignore_ascii_case("BOOT"))
        })
        .collect();
    vendors.sort();
    for (dir, loader) in LOADERS {
        let dirs: Vec<PathBuf> = if *dir == "*" {
            vendors.clone()
        } else {
            ci_resolve(&efi, dir).into_iter().collect()
        };
        for d in dirs {
            let Some(found) = ci_resolve(&d, loader) else {
                continue;
            };
            return siblings(esp, &d, &found);
        }
    }
    Err(FixupError::Missing {
        what: "UEFI boot loader".into(),
        detail: format!(
            "no shimx64.efi, grubx64.efi or Microsoft/Boot/bootmgfw.efi under {}: reinstall \
             the boot loader with its removable fallback (grub-install --removable)",
            efi.display()
        ),
    })
}

/// Copies of every regular file of `dir` into EFI/BOOT, `loader` renamed to BOOTX64.EFI.
fn siblings(esp: &Path, dir: &Path, loader: &Path) -> Result<Vec<Copy>, FixupError> {
    let rel = |p: &Path| p.strip_prefix(esp).unwrap_or(p).to_path_buf();
    let mut out = vec![Copy {
        from: rel(loader),
        to: FALLBACK.into(),
    }];
    let mut rest: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(FixupError::io("list", dir))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p != loader)
        .collect();
    rest.sort();
    for p in rest {
        let name = p.file_name().unwrap_or_default();
        // fbx64.efi would rewrite NVRAM and reset; BOOTX64.CSV is its input.
        let n = name.to_string_lossy().to_ascii_lowercase();
        if n == "fbx64.efi" || n == "bootx64.csv" {
            continue;
        }
        out.push(Copy {
            from: rel(&p),
            to: Path::new("EFI/BOOT").join(name),
        });
    }
    Ok(out)
}

/// The plan as changes for printing.
pub fn changes(copies: &[Copy]) -> Vec<Change> {
    copies
        .iter()
        .map(|c| {
            Change::edit(
                &c.to,
                "UEFI fallback loader",
                None,
                Some(format!("copy of {}", c.from.display())),
            )
        })
        .collect()
}

/// Carries out the copies (directories created; existing files are left alone).
pub fn apply(esp: &Path, copies: &[Copy]) -> Result<(), FixupError> {
    for c in copies {
        let to = esp.join(&c.to);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(FixupError::io("create", parent))?;
        }
        if to.exists() {
            continue;
        }
        let data = crate::fsutil::read(&esp.join(&c.from))?;
        crate::fsutil::write_atomic(&to, &data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn grub_only_vendor_dir_gets_a_fallback_with_its_siblings() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "EFI/debian/grubx64.efi", b"grub");
        touch(d.path(), "EFI/debian/grub.cfg", b"cfg");
        let copies = plan(d.path()).unwrap();
        assert_eq!(copies[0].from, Path::new("EFI/debian/grubx64.efi"));
        assert_eq!(copies[0].to, Path::new(FALLBACK));
        assert_eq!(copies[1].to, Path::new("EFI/BOOT/grub.cfg"));
        apply(d.path(), &copies).unwrap();
        assert_eq!(std::fs::read(d.path().join(FALLBACK)).unwrap(), b"grub");
        assert!(
            plan(d.path()).unwrap().is_empty(),
            "second run: nothing to do"
        );
    }

    #[test]
    fn shim_is_preferred_and_fallback_tool_is_not_copied() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "EFI/debian/grubx64.efi", b"grub");
        touch(d.path(), "EFI/debian/shimx64.efi", b"shim");
        touch(d.path(), "EFI/debian/fbx64.efi", b"fb");
        touch(d.path(), "EFI/debian/BOOTX64.CSV", b"csv");
        let copies = plan(d.path()).unwrap();
        assert_eq!(copies[0].from, Path::new("EFI/debian/shimx64.efi"));
        let tos: Vec<_> = copies.iter().map(|c| c.to.clone()).collect();
        assert!(tos.contains(&PathBuf::from("EFI/BOOT/grubx64.efi")));
        assert!(!tos.iter().any(|t| t.ends_with("fbx64.efi")));
    }

    #[test]
    fn windows_boot_manager_and_missing_loader() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "EFI/Microsoft/Boot/bootmgfw.efi", b"mgr");
        touch(d.path(), "EFI/Microsoft/Boot/BCD", b"bcd");
        let copies = plan(d.path()).unwrap();
        assert_eq!(copies[0].from, Path::new("EFI/Microsoft/Boot/bootmgfw.efi"));
        let e = tempfile::tempdir().unwrap();
        touch(e.path(), "EFI/empty/readme.txt", b"");
        let err = plan(e.path()).unwrap_err().to_string();
        assert!(err.contains("grub-install --removable"), "{err}");
        // An existing fallback loader is left alone.
        let f = tempfile::tempdir().unwrap();
        touch(f.path(), "efi/boot/bootx64.efi", b"x");
        assert!(plan(f.path()).unwrap().is_empty());
    }
}
