//! The hybrid ISO: `grub-mkrescue` over a staged tree gives one image that boots as a CD (El Torito,
//! BIOS and UEFI) and as a USB or hard disk (MBR with grub's hybrid boot code plus an EFI system
//! partition), from packages grub-pc-bin, grub-efi-amd64-bin, grub-common, mtools and xorriso.
//!
//! Staged tree: `boot/grub/grub.cfg`, `boot/vmlinuz`, `boot/initrd.img`, `boot/site.img` (the
//! embed area, see [`crate::site`]). ISO bytes are not reproducible (grub's EFI image carries a
//! random FAT serial); the initramfs inside is.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::tools::run;

/// GRUB modules the image needs beyond what grub-mkrescue always installs; everything else is
/// left out to keep the image small (fonts, themes and locales are dropped too).
const GRUB_MODULES: &str =
    "linux normal iso9660 part_msdos part_gpt fat search search_fs_uuid search_label \
                            serial terminal echo test all_video gzio";

/// Runs grub-mkrescue on `stage` writing `out`; `epoch` is passed as SOURCE_DATE_EPOCH so xorriso
/// dates the volume deterministically.
pub fn make(stage: &Path, out: &Path, epoch: u64) -> Result<()> {
    let mut cmd = Command::new("grub-mkrescue");
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .arg("-o")
        .arg(out)
        .arg(format!("--install-modules={GRUB_MODULES}"))
        .args(["--fonts=", "--locales=", "--themes=", "--compress=xz"])
        .arg(stage)
        .args(["--", "-volid", "FERRY_RESCUE"]);
    run(
        &mut cmd,
        "grub-common grub-pc-bin grub-efi-amd64-bin mtools xorriso",
    )
    .with_context(|| format!("make ISO {}", out.display()))?;
    Ok(())
}
