//! `appliance`'s command line as a library: the clap definitions ([`cli`]), where settings come
//! from ([`config`]) and the commands that are the CLI's own (sources, migrations, webhook, the
//! remote admin client). `main.rs` dispatches; `xtask` renders the man pages and completions
//! from [`cli::Cli`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod exit;
pub mod migrations;
pub mod remote;
pub mod sources;
pub mod storage;
pub mod webhook;
