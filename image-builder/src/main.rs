//! image-builder: builds and customizes Ferry's rescue image. Parses arguments and dispatches.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use image_builder::cli::{Cli, Cmd};
use image_builder::{build, customize, paths, virtio_win};

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Build {
            out,
            kernel_deb,
            cache,
            agent,
            beacon,
            busybox,
            drivers_dir,
            initramfs_dir,
            append,
            source_date_epoch,
            virtio_win,
            firmware,
            firmware_deb,
            site,
        } => {
            let root = paths::workspace_root();
            let opts = build::BuildOptions {
                agent: agent.unwrap_or_else(|| paths::default_agent(&root)),
                beacon: build::beacon_choice(beacon, paths::default_beacon(&root)),
                drivers_dir: drivers_dir.unwrap_or_else(|| root.join("drivers")),
                initramfs_dir: initramfs_dir.unwrap_or_else(|| root.join("initramfs")),
                cache: cache.unwrap_or_else(paths::default_cache),
                site: site.load()?,
                out,
                kernel_deb,
                busybox,
                append,
                source_date_epoch,
                virtio_win,
                firmware,
                firmware_debs: firmware_deb,
            };
            let m = build::build(&opts)?;
            println!("{}", build::summary(&m));
        }
        Cmd::Customize {
            iso,
            initrd,
            out,
            virtio_win,
            site,
        } => {
            let site = site.load()?;
            let drivers = virtio_win.as_deref().map(virtio_win::load).transpose()?;
            let add = customize::Additions {
                site: site.as_ref(),
                virtio_win: drivers.as_ref(),
            };
            match (iso, initrd) {
                (Some(iso), _) => customize::iso(&iso, &out, &add)?,
                (None, Some(initrd)) => customize::initrd(&initrd, &out, &add)?,
                (None, None) => anyhow::bail!("customize: pass --iso or --initrd"),
            }
            if let Some(p) = &drivers {
                let record = customize::record_path(&out);
                std::fs::write(&record, serde_json::to_string_pretty(&p.report)? + "\n")?;
                println!("{}\nrecorded in {}", p.summary(), record.display());
            }
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // RUST_LOG, FERRY_LOG_FORMAT=json; colour only on a terminal (the fix-up's driver checks log).
    ferry_sys::log::init(false);
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
