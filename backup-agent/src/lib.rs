//! backup-agent as a library: the clap definitions ([`cli`]), the one-shot backup
//! ([`commands`]) and the long-running source agent ([`service`]). `main.rs` dispatches; `xtask`
//! renders the man page and completions from [`cli::Cli`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod hooks_config;
pub mod network;
pub mod service;
