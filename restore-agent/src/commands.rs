//! What each subcommand does, in terms of the libraries.

use std::path::{Path, PathBuf};

use ferry_client::cli::ConnectArgs;
use ferry_client::exit::ExitStatus;
use ferry_client::ClientError;
use ferry_engine::restore::{self, RestoreOptions};
use ferry_engine::EngineError;
use ferry_fixup::Change;

/// The exit status for `e` (docs/configuration.md, "Exit codes"), from the typed error under
/// its context: 4 refused before anything was written, 5 verification failed, 3 the appliance
/// stayed unreachable for the retry window, else 1 (clap exits 2 itself).
pub fn exit_status(e: &anyhow::Error) -> ExitStatus {
    if let Some(e) = e.downcast_ref::<EngineError>() {
        return e.exit_status();
    }
    if let Some(c) = e.downcast_ref::<ClientError>() {
        return c.exit_status();
    }
    ExitStatus::Failure
}

/// `restore`: gather (with `--basis`, the basis snapshot's indexes too), print the plan, execute.
pub fn restore(
    connect: &ConnectArgs,
    opts: &RestoreOptions,
    basis: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let client = connect.client(opts.parallel + 1)?;
    let inputs = restore::gather_with_basis(&client, opts, basis)?;
    let plan = restore::plan(&inputs, opts)?;
    eprintln!("{plan}");
    let s = restore::execute(&client, &plan, &opts.exec())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let verb = if s.dry_run { "would fetch" } else { "fetched" };
        eprintln!(
            "snapshot {}: {verb} {} chunks ({} bytes), {} already present, {} zero chunks skipped, {} zeroed; {} bytes written, {} bytes of the targets read; {:.1}s ({:.0} MB/s)",
            s.snapshot, s.chunks_fetched, s.bytes_fetched, s.chunks_present, s.chunks_zero_skipped, s.chunks_zero_written, s.bytes_written, s.target_bytes_read, s.seconds, s.mb_per_s
        );
    }
    Ok(())
}

/// `--beacon FILE [--beacon-program FILE]`: what the fix-up installs as the first-boot beacon.
pub fn beacon_install(
    config: Option<&Path>,
    program: Option<PathBuf>,
) -> anyhow::Result<Option<ferry_fixup::linux::beacon::BeaconInstall>> {
    use anyhow::Context;
    let Some(path) = config else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the beacon config {}", path.display()))?;
    let c = ferry_format::agent::beacon::BeaconConfig::parse(&text)
        .with_context(|| format!("check the beacon config {}", path.display()))?;
    Ok(Some(ferry_fixup::linux::beacon::BeaconInstall {
        program: program
            .unwrap_or_else(|| Path::new("/").join(ferry_fixup::linux::beacon::RESCUE_PROGRAM)),
        config_text: c.to_text()?,
        appliance: c.url,
        job: c.job,
    }))
}

pub fn fixup(
    root: &Path,
    os: ferry_fixup::OsChoice,
    drivers: Option<&Path>,
    beacon: anyhow::Result<Option<ferry_fixup::linux::beacon::BeaconInstall>>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let changes = ferry_fixup::run_with(root, os, drivers, beacon?, dry_run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
        return Ok(());
    }
    let verb = if dry_run { "would change" } else { "changed" };
    let mut not_done = 0;
    for c in &changes {
        match c {
            Change::Note { text, .. } => println!("note: {text}"),
            Change::GuestCommand { argv, .. } => {
                not_done += usize::from(!run_in_chroot(root, argv, dry_run));
            }
            Change::Edit { .. } | Change::Beacon { .. } => println!("{verb}: {c}"),
        }
    }
    if changes.is_empty() {
        println!("nothing to change under {}", root.display());
    }
    if not_done > 0 {
        anyhow::bail!("fix-up incomplete: {not_done} command(s) could not run in the restored system (see NOT DONE above)");
    }
    Ok(())
}

/// `fixup --disk`: the rescue system's whole fix-up on restored disks, with the report.
pub fn fixup_disks(
    disks: &[PathBuf],
    uefi: Option<bool>,
    drivers: Option<PathBuf>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    if dry_run {
        anyhow::bail!(
            "--dry-run needs --root (a mounted system): --disk mounts and changes the disks"
        );
    }
    let disks: Vec<ferry_fixup::system::RestoredDisk> = disks
        .iter()
        .map(|d| ferry_fixup::system::RestoredDisk {
            name: d.display().to_string(),
            source: String::new(),
            device: d.clone(),
        })
        .collect();
    let opts = ferry_fixup::system::Options {
        uefi: uefi.unwrap_or_else(|| Path::new("/sys/firmware/efi").exists()),
        drivers,
        work: std::env::temp_dir().join(format!("ferry-fixup-{}", std::process::id())),
        tool_timeout: std::time::Duration::from_secs(600),
        beacon: None,
        retire_source_agent: false,
        // The network follows through jobs only (the target NICs and rules come with the job).
        network: None,
    };
    let mut log = |l: &ferry_fixup::system::LogLine| {
        if !json {
            println!("{l}");
        }
    };
    let out = ferry_fixup::system::run(&disks, &opts, &mut log)?;
    let _ = std::fs::remove_dir_all(&opts.work);
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for c in &out.changes {
            println!("changed: {c}");
        }
        println!("{}", out.report);
    }
    if out.os.is_some() && !out.report.bootable() {
        anyhow::bail!("the restored system will most likely not boot (see FAIL above)");
    }
    Ok(())
}

/// Run one of the fix-up's commands with the restored system's own tools (update-initramfs,
/// dracut, grub-install) in a chroot; say plainly when that cannot be done here.
fn run_in_chroot(root: &Path, argv: &[String], dry_run: bool) -> bool {
    let cmd = argv.join(" ");
    if dry_run {
        println!("would run in the restored system: {cmd}");
        return true;
    }
    let mounts = ["proc", "sys", "dev"];
    let mounted: Vec<_> = mounts
        .iter()
        .filter(|m| {
            let dir = root.join(m);
            dir.is_dir()
                && std::process::Command::new("mount")
                    .arg("--bind")
                    .arg(format!("/{m}"))
                    .arg(&dir)
                    .status()
                    .is_ok_and(|s| s.success())
        })
        .collect();
    let status = chroot_command(root, argv).status();
    for m in mounted.iter().rev() {
        let _ = std::process::Command::new("umount")
            .arg(root.join(m))
            .status();
    }
    match status {
        Ok(s) if s.success() => {
            println!("ran in the restored system: {cmd}");
            true
        }
        Ok(s) => {
            println!("NOT DONE: `{cmd}` failed in the restored system ({s}): run it there before rebooting");
            false
        }
        Err(e) => {
            println!(
                "NOT DONE: cannot chroot into {} ({e}): run `{cmd}` in the restored system",
                root.display()
            );
            false
        }
    }
}

/// `chroot <root> <argv...>`: the argument vector as it is, no shell in between (the restored
/// system needs none), with the system directories on PATH whatever the caller's PATH is.
fn chroot_command(root: &Path, argv: &[String]) -> std::process::Command {
    let mut c = std::process::Command::new("chroot");
    c.arg(root).args(argv).env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_commands_run_as_argv_without_a_shell() {
        let argv: Vec<String> = ["grub-install", "--target=i386-pc", "/dev/disk by id"]
            .map(String::from)
            .to_vec();
        let c = chroot_command(Path::new("/mnt/root"), &argv);
        assert_eq!(c.get_program(), "chroot");
        let args: Vec<&std::ffi::OsStr> = c.get_args().collect();
        assert_eq!(
            args,
            [
                "/mnt/root",
                "grub-install",
                "--target=i386-pc",
                "/dev/disk by id"
            ]
        );
    }
}
