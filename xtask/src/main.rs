//! `cargo run -p xtask -- assets DIR` (scripts/gen-assets): see the library's doc.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build-time tasks of the Ferry workspace")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the man pages and bash/zsh/fish completions of every binary under DIR
    Assets {
        /// Output directory (DIR/man, DIR/completions/{bash,zsh,fish})
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let Cmd::Assets { dir } = Cli::parse().cmd;
    match xtask::assets(&dir) {
        Ok(files) => {
            println!("wrote {} files under {}", files.len(), dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
