//! `image-builder customize`: a copy of a built ISO or PXE initrd with site settings stamped
//! ([`crate::site`]) and/or the virtio-win drivers added ([`crate::virtio_win`]).
//!
//! The drivers are a zstd newc layer appended to the initrd (the kernel unpacks concatenated
//! archives in order, later files win), so the base image is not rebuilt. In an ISO the layer is
//! appended to `/boot/initrd.img`, and xorriso writes the copy with `-boot_image any replay`:
//! the El Torito records, the hybrid MBR and the EFI partition of the input are replayed onto the
//! new image (without grub-mkrescue's HFS+/APM part, for Macs). Site settings then go into the copy's embed area as usual. Everything is checked
//! (inputs, settings, the driver package) before the output is written; a failed write removes it.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build::ZSTD_LEVEL;
use crate::site::{self, Site};
use crate::tools::run;
use crate::virtio_win::Package;

/// Path of the base initramfs inside the ISO (grub.cfg's first initrd).
const ISO_INITRD: &str = "/boot/initrd.img";
/// mtime of the virtio-win layer's entries: fixed, so the same package gives the same bytes.
const LAYER_MTIME: u32 = 0;

/// What to add to the copy.
pub struct Additions<'a> {
    pub site: Option<&'a Site>,
    pub virtio_win: Option<&'a Package>,
}

impl Additions<'_> {
    fn check(&self) -> Result<()> {
        if self.site.is_none() && self.virtio_win.is_none() {
            bail!("customize: pass --appliance, --ca and --token, or --virtio-win PATH, or both");
        }
        if let Some(s) = self.site {
            s.area()?;
        }
        Ok(())
    }
}

/// Copies the ISO `input` to `output` with the additions.
pub fn iso(input: &Path, output: &Path, add: &Additions) -> Result<()> {
    add.check()?;
    site::check_distinct(input, output)?;
    site::check_area(input)?;
    let Some(drivers) = add.virtio_win else {
        return match add.site {
            Some(s) => site::customize_iso(input, output, s),
            None => Ok(()),
        };
    };
    let work = tempfile::Builder::new()
        .prefix("ferry-customize-")
        .tempdir()
        .context("create a work directory")?;
    let initrd = work.path().join("initrd.img");
    xorriso(
        input,
        &[
            "-osirrox",
            "on",
            "-extract",
            ISO_INITRD,
            &initrd.display().to_string(),
        ],
    )
    .with_context(|| format!("read {ISO_INITRD} of {}", input.display()))?;
    let mut bytes = std::fs::read(&initrd).with_context(|| format!("read {}", initrd.display()))?;
    site::append_layer(&mut bytes, &drivers.layer(LAYER_MTIME, ZSTD_LEVEL)?);
    // A new file: the extracted one keeps the ISO's read-only mode.
    let initrd = work.path().join("initrd-virtio-win.img");
    std::fs::write(&initrd, bytes).with_context(|| format!("write {}", initrd.display()))?;
    if output.exists() {
        std::fs::remove_file(output).with_context(|| format!("replace {}", output.display()))?;
    }
    let written = xorriso(
        input,
        &[
            "-outdev",
            &output.display().to_string(),
            "-boot_image",
            "any",
            "replay",
            // grub-mkrescue's HFS+/APM part (Mac booting) makes xorriso's replayed GPT overlap;
            // the copy drops it and keeps BIOS and UEFI El Torito, the MBR and the EFI partition.
            "-hfsplus",
            "off",
            "-map",
            &initrd.display().to_string(),
            ISO_INITRD,
            "-commit",
        ],
    );
    if let Err(e) = written {
        let _ = std::fs::remove_file(output);
        return Err(e.context(format!("write {}", output.display())));
    }
    match add.site {
        Some(s) => site::stamp_iso(output, s),
        None => Ok(()),
    }
}

/// Runs xorriso on the ISO `indev` with `args`.
fn xorriso(indev: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("xorriso");
    cmd.args(["-abort_on", "FAILURE", "-indev"])
        .arg(indev)
        .args(args);
    run(&mut cmd, "xorriso")?;
    Ok(())
}

/// Copies the PXE initrd `input` to `output` and appends the layers: drivers, then site.
pub fn initrd(input: &Path, output: &Path, add: &Additions) -> Result<()> {
    add.check()?;
    site::check_distinct(input, output)?;
    let mut bytes = std::fs::read(input).with_context(|| format!("read {}", input.display()))?;
    if let Some(p) = add.virtio_win {
        site::append_layer(&mut bytes, &p.layer(LAYER_MTIME, ZSTD_LEVEL)?);
    }
    if let Some(s) = add.site {
        site::append_layer(&mut bytes, &s.cpio()?);
    }
    std::fs::write(output, bytes).with_context(|| format!("write {}", output.display()))
}

/// Where `customize` records the drivers it added: `OUT.virtio-win.json`, the `virtio_win`
/// section of manifest.json for a customized image.
pub fn record_path(output: &Path) -> std::path::PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".virtio-win.json");
    output.with_file_name(name)
}
