//! `image-builder build`: a list of named steps, each a short function.
//!
//! Output directory:
//! ```text
//! DIR/ferry-rescue.iso     hybrid ISO (CD/USB, BIOS/UEFI); site layer in /boot/site.img
//! DIR/initramfs.img        the base initramfs (zstd newc), reproducible, never stamped
//! DIR/pxe/vmlinuz          kernel
//! DIR/pxe/initrd.img       initramfs.img + the site layer appended when stamped
//! DIR/pxe/boot.ipxe        iPXE script with relative URLs
//! DIR/manifest.json        artifacts (path, size, sha256), kernel, modules, SOURCE_DATE_EPOCH,
//!                          virtio-win drivers carried, firmware files with their packages' licences
//! ```

use std::path::{Path, PathBuf};

use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_format::units::human_bytes;

use crate::catalog::Catalog;
use crate::cpio::Archive;
use crate::manifest::{Artifact, Manifest, ModuleReport};
use crate::modules::{self, ModuleIndex};
use crate::site::{self, Site};
use crate::{boot, firmware, iso, kernel, rootfs, tools, virtio_win};

/// zstd level of the initramfs (and of a `customize --virtio-win` layer). Measured on the default image (56 MB of cpio, 2 cores): level 9
/// gives 11.8 MB in 2 s, level 19 10.7 MB in about a minute; decompression at boot costs the same.
pub const ZSTD_LEVEL: i32 = 9;

pub struct BuildOptions {
    pub out: PathBuf,
    pub kernel_deb: Option<PathBuf>,
    pub cache: PathBuf,
    pub agent: PathBuf,
    /// The first-boot beacon program (`/usr/lib/ferry/beacon`); `None`: the image has none.
    pub beacon: Option<PathBuf>,
    pub busybox: PathBuf,
    pub drivers_dir: PathBuf,
    pub initramfs_dir: PathBuf,
    pub site: Option<Site>,
    /// `--virtio-win PATH`: the virtio-win ISO or tree whose drivers the image carries.
    pub virtio_win: Option<PathBuf>,
    /// `--firmware`: which packages the modules' firmware files come from.
    pub firmware: firmware::Level,
    /// `--firmware-deb`: packages to use instead of fetching.
    pub firmware_debs: Vec<PathBuf>,
    pub append: String,
    /// From `SOURCE_DATE_EPOCH`; `None` → the kernel image's mtime in its package.
    pub source_date_epoch: Option<u64>,
}

pub fn build(opts: &BuildOptions) -> Result<Manifest> {
    let t0 = Instant::now();
    let step = |name: &str| eprintln!("[{:6.1}s] {name}", t0.elapsed().as_secs_f64());
    step("check inputs");
    check_inputs(opts)?;
    let virtio_win = opts
        .virtio_win
        .as_deref()
        .map(virtio_win::load)
        .transpose()?;
    let work = tempfile::Builder::new()
        .prefix("ferry-imgb-")
        .tempdir()
        .context("create a work directory")?;
    step("kernel");
    let kernel = step_kernel(opts, work.path())?;
    let epoch = opts.source_date_epoch.unwrap_or(kernel.build_epoch);
    step("modules");
    let (mut archive, report) = step_modules(opts, &kernel, work.path())?;
    step("firmware");
    let firmware = step_firmware(opts, &kernel, work.path(), &mut archive)?;
    step("rootfs");
    step_rootfs(opts, &mut archive)?;
    if let Some(p) = &virtio_win {
        step("virtio-win");
        p.add_to(&mut archive)?;
        eprintln!("{}", p.summary());
    }
    step("initramfs");
    let initramfs = step_compress(&archive, epoch)?;
    std::fs::create_dir_all(opts.out.join("pxe"))
        .with_context(|| format!("create {}", opts.out.display()))?;
    std::fs::write(opts.out.join("initramfs.img"), &initramfs)?;
    let cmdline = boot::cmdline(&opts.append);
    step("pxe");
    step_pxe(opts, &kernel, &initramfs, &cmdline)?;
    step("iso");
    step_iso(opts, &kernel, &initramfs, &cmdline, epoch, work.path())?;
    step("manifest");
    let virtio_win = virtio_win.map(|p| p.report);
    let manifest = step_manifest(opts, &kernel, report, virtio_win, firmware, epoch, &cmdline)?;
    step("done");
    Ok(manifest)
}

fn check_inputs(opts: &BuildOptions) -> Result<()> {
    boot::check_append(&opts.append)?;
    let agent = std::fs::read(&opts.agent).map_err(|e| {
        anyhow::anyhow!(
            "read agent {}: {e}\nBuild it with `cargo build --release --target x86_64-unknown-linux-musl -p \
             restore-agent` (after `rustup target add x86_64-unknown-linux-musl` and `apt-get install \
             musl-tools`), or pass --agent FILE",
            opts.agent.display()
        )
    })?;
    if !tools::is_static_elf(&agent) {
        bail!("use agent {}: not a static x86_64 ELF executable (build it for x86_64-unknown-linux-musl)", opts.agent.display());
    }
    let busybox = std::fs::read(&opts.busybox).map_err(|e| {
        anyhow::anyhow!(
            "read {}: {e}; install it with `apt-get install busybox-static` or pass --busybox FILE",
            opts.busybox.display()
        )
    })?;
    if !tools::is_static_elf(&busybox) {
        bail!("use {}: not a static binary; install busybox-static (not busybox) or pass --busybox FILE", opts.busybox.display());
    }
    Ok(())
}

fn step_kernel(opts: &BuildOptions, work: &Path) -> Result<kernel::Kernel> {
    let deb = match &opts.kernel_deb {
        Some(d) => d.clone(),
        None => kernel::fetch_default_deb(&opts.cache)?,
    };
    eprintln!("kernel: unpack {}", deb.display());
    let k = kernel::unpack(&deb, &work.join("kernel"))?;
    modules::ensure_depmod(&k.root, &k.version)?;
    eprintln!(
        "kernel: {} ({} {})",
        k.version, k.package, k.package_version
    );
    Ok(k)
}

fn step_modules(
    opts: &BuildOptions,
    k: &kernel::Kernel,
    work: &Path,
) -> Result<(Archive, ModuleReport)> {
    let path = opts.drivers_dir.join("catalog.txt");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read driver catalog {}", path.display()))?;
    let catalog = Catalog::parse(&text, &path.display().to_string())?;
    let index = ModuleIndex::read(&k.modules_dir())?;
    let closure = index.closure(&catalog.modules());
    for name in &closure.missing {
        eprintln!(
            "warning: module {name} (driver catalog) is not in kernel {}; skipped",
            k.version
        );
    }
    let mut archive = Archive::new();
    modules::stage(
        &index,
        &closure,
        &k.modules_dir(),
        &work.join("stage"),
        &k.version,
        &mut archive,
    )?;
    eprintln!(
        "modules: {} catalog entries -> {} modules shipped, {} built in, {} missing",
        catalog.modules().len(),
        closure.modules.len(),
        closure.builtin.len(),
        closure.missing.len()
    );
    Ok((archive, ModuleReport::from(closure)))
}

fn step_firmware(
    opts: &BuildOptions,
    k: &kernel::Kernel,
    work: &Path,
    archive: &mut Archive,
) -> Result<firmware::Report> {
    if opts.firmware == firmware::Level::None && !opts.firmware_debs.is_empty() {
        bail!("use --firmware-deb with --firmware common or all, not none");
    }
    let requests = firmware::requests(&work.join("stage/lib/modules").join(&k.version))?;
    let debs = firmware::fetch(opts.firmware, &opts.firmware_debs, &opts.cache)?;
    let packages = debs
        .iter()
        .map(|d| firmware::unpack(d, &work.join("firmware")))
        .collect::<Result<Vec<_>>>()?;
    let report = firmware::select(opts.firmware, &requests, &packages)?.add_to(archive)?;
    eprintln!("{}", firmware::summary(&report));
    Ok(report)
}

fn step_rootfs(opts: &BuildOptions, archive: &mut Archive) -> Result<()> {
    let path = opts.initramfs_dir.join("rootfs.txt");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let decls = rootfs::parse(&text, &path.display().to_string())?;
    let sources = rootfs::Sources {
        base: &opts.initramfs_dir,
        agent: &opts.agent,
        busybox: &opts.busybox,
    };
    rootfs::add_to(archive, &decls, &sources)?;
    if let Some(path) = &opts.beacon {
        let data = std::fs::read(path).with_context(|| {
            format!(
                "read the beacon {}: build it with `cargo build --release --target \
                 x86_64-unknown-linux-musl -p ferry-beacon`, or pass --beacon FILE",
                path.display()
            )
        })?;
        if !tools::is_static_elf(&data) {
            bail!(
                "use beacon {}: not a static x86_64 ELF executable (build it for x86_64-unknown-linux-musl)",
                path.display()
            );
        }
        archive.insert(crate::cpio::Entry {
            path: format!("/{BEACON_PATH}"),
            perm: 0o755,
            kind: crate::cpio::Kind::File(data),
        })?;
    }
    Ok(())
}

/// Where the rescue image carries the first-boot beacon (ferry-fixup's `RESCUE_PROGRAM`).
pub const BEACON_PATH: &str = "usr/lib/ferry/beacon";

/// `--beacon FILE` must exist; without it the default build is used when it exists, else the
/// image carries no beacon (the agent's fix-up then says the first boot will not be reported).
pub fn beacon_choice(given: Option<PathBuf>, default: PathBuf) -> Option<PathBuf> {
    if given.is_some() {
        return given;
    }
    if default.is_file() {
        return Some(default);
    }
    eprintln!(
        "warning: no first-boot beacon at {}: the image carries none (build it with `cargo build \
         --release --target x86_64-unknown-linux-musl -p ferry-beacon`)",
        default.display()
    );
    None
}

fn step_compress(archive: &Archive, epoch: u64) -> Result<Vec<u8>> {
    let mtime = u32::try_from(epoch).context("use SOURCE_DATE_EPOCH: beyond 2106")?;
    let raw = archive.to_bytes(mtime);
    let out = zstd::bulk::compress(&raw, ZSTD_LEVEL).context("compress initramfs")?;
    eprintln!(
        "initramfs: {} entries, {} bytes cpio, {} bytes zstd",
        archive.len(),
        raw.len(),
        out.len()
    );
    Ok(out)
}

fn step_pxe(
    opts: &BuildOptions,
    k: &kernel::Kernel,
    initramfs: &[u8],
    cmdline: &str,
) -> Result<()> {
    let pxe = opts.out.join("pxe");
    std::fs::copy(&k.vmlinuz, pxe.join("vmlinuz")).context("copy vmlinuz")?;
    let mut initrd = initramfs.to_vec();
    if let Some(site) = &opts.site {
        site::append_layer(&mut initrd, &site.cpio()?);
    }
    std::fs::write(pxe.join("initrd.img"), initrd)?;
    std::fs::write(pxe.join("boot.ipxe"), boot::ipxe_script(cmdline))?;
    Ok(())
}

fn step_iso(
    opts: &BuildOptions,
    k: &kernel::Kernel,
    initramfs: &[u8],
    cmdline: &str,
    epoch: u64,
    work: &Path,
) -> Result<()> {
    let stage = work.join("iso");
    std::fs::create_dir_all(stage.join("boot/grub"))?;
    std::fs::copy(&k.vmlinuz, stage.join("boot/vmlinuz"))?;
    std::fs::write(stage.join("boot/initrd.img"), initramfs)?;
    let area = match &opts.site {
        Some(site) => site.area()?,
        None => site::empty_area(),
    };
    std::fs::write(stage.join("boot/site.img"), area)?;
    std::fs::write(stage.join("boot/grub/grub.cfg"), boot::grub_cfg(cmdline))?;
    let iso_path = opts.out.join(ISO_NAME);
    iso::make(&stage, &iso_path, epoch)?;
    let size = std::fs::metadata(&iso_path)?.len();
    eprintln!("iso: {} ({})", iso_path.display(), human_bytes(size));
    Ok(())
}

/// File name of the ISO in the output directory.
pub const ISO_NAME: &str = "ferry-rescue.iso";
const ARTIFACTS: [&str; 5] = [
    ISO_NAME,
    "initramfs.img",
    "pxe/vmlinuz",
    "pxe/initrd.img",
    "pxe/boot.ipxe",
];

fn step_manifest(
    opts: &BuildOptions,
    k: &kernel::Kernel,
    modules: ModuleReport,
    virtio_win: Option<virtio_win::Report>,
    firmware: firmware::Report,
    epoch: u64,
    cmdline: &str,
) -> Result<Manifest> {
    let artifacts = ARTIFACTS
        .iter()
        .map(|p| Artifact::of(&opts.out, p))
        .collect::<Result<Vec<_>>>()?;
    let m = Manifest {
        format: 1,
        kernel_version: k.version.clone(),
        kernel_package: k.package.clone(),
        kernel_package_version: k.package_version.clone(),
        source_date_epoch: epoch,
        cmdline: cmdline.to_string(),
        site_stamped: opts.site.is_some(),
        artifacts,
        modules,
        virtio_win,
        firmware,
    };
    let path = opts.out.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&m)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    Ok(m)
}

/// Human summary printed after a build: one line per artifact, then modules and kernel.
pub fn summary(m: &Manifest) -> String {
    let mut s = String::new();
    for a in &m.artifacts {
        s.push_str(&format!(
            "{:<18} {:>11} bytes ({:>10})  sha256 {}\n",
            a.path,
            a.size,
            human_bytes(a.size),
            a.sha256
        ));
    }
    s.push_str(&format!(
        "kernel {} from {} {}; {} modules shipped ({} missing); SOURCE_DATE_EPOCH={}{}",
        m.kernel_version,
        m.kernel_package,
        m.kernel_package_version,
        m.modules.count,
        m.modules.missing.len(),
        m.source_date_epoch,
        if m.site_stamped {
            "; site settings stamped"
        } else {
            ""
        }
    ));
    match &m.virtio_win {
        Some(v) => s.push_str(&format!(
            "\nvirtio-win {}: {} drivers, {} files, {} bytes",
            v.version.as_deref().unwrap_or(&v.label),
            v.drivers.len(),
            v.files,
            v.bytes
        )),
        None => s.push_str("\nno virtio-win: Windows restores inject nothing (pass --virtio-win)"),
    }
    s.push('\n');
    s.push_str(&firmware::summary(&m.firmware));
    s
}
