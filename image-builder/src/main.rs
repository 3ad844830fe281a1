//! image-builder: builds and customizes Ferry's rescue image. Parses arguments and dispatches.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use image_builder::cli::{Cli, Cmd};
use image_builder::{build, paths, site};

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
            };
            let m = build::build(&opts)?;
            println!("{}", build::summary(&m));
        }
        Cmd::Customize {
            iso,
            initrd,
            out,
            site,
        } => {
            let site = site
                .load()?
                .ok_or_else(|| anyhow::anyhow!("customize: pass --appliance, --ca and --token"))?;
            match (iso, initrd) {
                (Some(iso), _) => site::customize_iso(&iso, &out, &site)?,
                (None, Some(initrd)) => site::customize_initrd(&initrd, &out, &site)?,
                (None, None) => unreachable!("clap requires --iso or --initrd"),
            }
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
