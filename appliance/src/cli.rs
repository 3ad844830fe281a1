//! The command line of `appliance` (see docs/store.md and docs/protocol.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferry_format::api::Role;

#[derive(Parser)]
#[command(
    name = "appliance",
    version,
    about = "Ferry backup appliance: stores snapshots, serves agents over HTTPS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a store: CA, server certificate, signing key, admin token, trust bundle DIR/ca.pem.
    Init {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// DNS name or IP of the appliance for its certificate (repeatable); 127.0.0.1, 10.0.2.2
        /// and localhost are always included.
        #[arg(long = "name", value_name = "DNS-OR-IP")]
        names: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTPS API until SIGTERM or SIGINT.
    Serve {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long, value_name = "ADDR:PORT")]
        listen: SocketAddr,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// List snapshots, oldest first.
    Snapshots {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long)]
        machine: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Keep the newest N snapshots of a machine and remove the others.
    Prune {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long)]
        machine: String,
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=10))]
        keep: u8,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove chunks no snapshot references (safe while `serve` runs backups).
    Gc {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it (only its hash is stored).
    Create {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// backup, restore or admin.
        #[arg(long)]
        role: Role,
    },
}
