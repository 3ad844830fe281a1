//! What each subcommand does, in terms of the libraries.

use std::path::Path;

use ferry_client::cli::ConnectArgs;
use ferry_engine::restore::{self, RestoreOptions};

pub fn restore(connect: &ConnectArgs, opts: &RestoreOptions, json: bool) -> anyhow::Result<()> {
    let client = connect.client(opts.parallel + 1)?;
    let plan = restore::plan(&client, opts)?;
    eprintln!("{plan}");
    let s = restore::apply(&client, &plan, opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let verb = if s.dry_run { "would fetch" } else { "fetched" };
        eprintln!(
            "snapshot {}: {verb} {} chunks ({} bytes), {} already present, {} zero chunks skipped, {} zeroed; {} bytes written in {:.1}s ({:.0} MB/s)",
            s.snapshot, s.chunks_fetched, s.bytes_fetched, s.chunks_present, s.chunks_zero_skipped, s.chunks_zero_written, s.bytes_written, s.seconds, s.mb_per_s
        );
    }
    Ok(())
}

pub fn fixup(
    root: &Path,
    os: ferry_fixup::OsChoice,
    drivers: Option<&Path>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let changes = ferry_fixup::run(root, os, drivers, dry_run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
        return Ok(());
    }
    let verb = if dry_run { "would change" } else { "changed" };
    let mut not_done = 0;
    for c in &changes {
        if c.what.starts_with("note:") {
            println!("{}", c.what);
        } else if let Some(cmd) = c.what.strip_prefix("run in chroot:") {
            not_done += usize::from(!run_in_chroot(root, cmd.trim(), dry_run));
        } else {
            println!("{verb}: {c}");
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

/// Run one of the fix-up's commands with the restored system's own tools (update-initramfs,
/// dracut, grub-install) in a chroot; say plainly when that cannot be done here.
fn run_in_chroot(root: &Path, cmd: &str, dry_run: bool) -> bool {
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
    let status = std::process::Command::new("chroot")
        .arg(root)
        .args(["sh", "-c", cmd])
        .status();
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
