//! restore-agent's command line as a library ([`cli`]): `main.rs` dispatches; `xtask` renders
//! the man page and completions from [`cli::Cli`].

#![forbid(unsafe_code)]

pub mod cli;
